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
        let o = quantize(
            model.path(),
            "ml.g6e.xlarge",
            &out,
            &["--quantize", "fp8", "--json"],
        );
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
        let biases: Vec<_> = artifact
            .tensors()
            .iter()
            .filter(|t| t.name.ends_with(".bias"))
            .collect();
        assert_eq!(
            biases.len(),
            if model_type == "qwen2" { 6 } else { 0 },
            "{model_type}: biases in the artifact"
        );
        for l in 0..2 {
            for m in [
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.o_proj",
                "mlp.gate_proj",
                "mlp.up_proj",
                "mlp.down_proj",
            ] {
                let w = artifact
                    .get(&format!("model.layers.{l}.{m}.weight"))
                    .unwrap();
                assert_eq!(w.dtype, safetensors::Dtype::F8_E4M3, "{model_type} {m}");
                let scale = artifact
                    .get(&format!("model.layers.{l}.{m}.weight_scale"))
                    .unwrap();
                assert_eq!(scale.shape, vec![w.shape[0], 1], "{model_type} {m}");
                assert_eq!(scale.dtype, safetensors::Dtype::BF16);
            }
        }
        let q = &artifact.config.raw["quantization_config"];
        assert_eq!(q["format"], "float-quantized");
        assert_eq!(
            q["config_groups"]["group_0"]["weights"]["strategy"],
            "channel"
        );
        assert_eq!(
            artifact.config.raw["architectures"],
            source.config.raw["architectures"]
        );
    }
}
