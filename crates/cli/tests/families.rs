//! The Llama family members the quantizer knows: Llama, Mistral and Qwen2 (with q/k/v
//! biases). Linear weights are quantized; biases, norms and embeddings are copied
//! byte for byte.

mod common;

use common::*;
use temper_core::checkpoint::Checkpoint;

#[test]
fn llama_mistral_and_qwen2_quantize_and_keep_everything_else() {
    for model_type in ["llama", "mistral", "qwen2"] {
        let model = tempfile::tempdir().unwrap();
        TinyModel {
            model_type,
            ..Default::default()
        }
        .write(model.path());
        let parent = tempfile::tempdir().unwrap();
        let out = parent.path().join("out");
        let o = run(&[
            "--model",
            model.path().to_str().unwrap(),
            "--instance-type",
            "ml.g6e.xlarge",
            "--quantize",
            "fp8",
            "--output",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{model_type}: {}", stderr(&o));
        assert_eq!(stdout_json(&o)["tensors_quantized"], 14, "{model_type}");
        let source = Checkpoint::open(model.path()).unwrap();
        let artifact = Checkpoint::open(&out).unwrap();
        for t in source
            .tensors()
            .iter()
            .filter(|t| t.shape.len() == 1 || t.name.contains("embed"))
        {
            let a = artifact
                .get(&t.name)
                .unwrap_or_else(|| panic!("{model_type}: {} missing", t.name));
            assert_eq!(
                artifact.bytes(a),
                source.bytes(t),
                "{model_type}: {} changed",
                t.name
            );
        }
        let biases = source
            .tensors()
            .iter()
            .filter(|t| t.name.ends_with(".bias"))
            .count();
        assert_eq!(biases, if model_type == "qwen2" { 6 } else { 0 });
        assert_eq!(
            artifact.config.raw["architectures"],
            source.config.raw["architectures"]
        );
    }
}
