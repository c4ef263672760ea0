//! The real SmolLM2-135M-Instruct through every scheme: the artifact re-opens, every
//! quantized tensor dequantizes to within what its format allows of the source, and the
//! manifest's statistics are the ones measured here.

mod common;

use common::*;
use safetensors::Dtype;
use serde_json::Value;
use std::path::Path;
use temper_core::checkpoint::Checkpoint;
use temper_core::dtype::FloatData;
use temper_kernels::Isa;

struct Case {
    args: &'static [&'static str],
    format: &'static str,
    /// Bound on each tensor's relative RMS error for this format on this model (measured
    /// maxima: FP8 ~2.7%, INT8 per channel 1.17%, INT8 group 64 0.77%). The strict check is
    /// the per-element bound (`max_error_over_bound`) below.
    max_relative_rms: f64,
}

const CASES: &[Case] = &[
    Case {
        args: &["--quantize", "fp8"],
        format: "float-quantized",
        max_relative_rms: 0.03,
    },
    Case {
        args: &["--quantize", "int8"],
        format: "pack-quantized",
        max_relative_rms: 0.0125,
    },
    Case {
        args: &["--quantize", "int8", "--group-size", "64"],
        format: "pack-quantized",
        max_relative_rms: 0.008,
    },
    Case {
        args: &["--quantize", "int8", "--scheme", "W8A8"],
        format: "int-quantized",
        max_relative_rms: 0.0125,
    },
];

fn quantize_case(case: &Case, out: &Path) -> Value {
    let model = smollm2();
    let mut args = vec![
        "--model",
        model.to_str().unwrap(),
        "--instance-type",
        "ml.g6.12xlarge",
        "--output",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(case.args);
    let o = run(&args);
    assert!(o.status.success(), "{:?} failed: {}", case.args, stderr(&o));
    stdout_json(&o)
}

/// Dequantizes one module of the artifact to f32 with the kernels.
fn dequantize(artifact: &Checkpoint, prefix: &str, rows: usize, cols: usize) -> Vec<f32> {
    let scale_entry = artifact
        .get(&format!("{prefix}.weight_scale"))
        .expect("weight_scale");
    let scale_data = FloatData::from_bytes(scale_entry.dtype, artifact.bytes(scale_entry)).unwrap();
    let scales: Vec<f32> = (0..scale_data.len()).map(|i| scale_data.get(i)).collect();
    let (codes, fp8): (Vec<u8>, bool) = match artifact.get(&format!("{prefix}.weight")) {
        Some(w) => (artifact.bytes(w).to_vec(), w.dtype == Dtype::F8_E4M3),
        None => {
            let packed = artifact
                .get(&format!("{prefix}.weight_packed"))
                .expect("weight_packed");
            assert_eq!(packed.shape, vec![rows, cols / 4]);
            // Undo the +128 offset of pack-quantized: lanes are bytes in order.
            (
                artifact.bytes(packed).iter().map(|b| b ^ 0x80).collect(),
                false,
            )
        }
    };
    let shape = &scale_entry.shape;
    let mut out = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let s = if shape[0] == rows {
                scales[r * shape[1] + c / (cols / shape[1])]
            } else {
                scales[(r / 128) * shape[1] + c / 128]
            };
            let i = r * cols + c;
            let mut v = [0f32];
            if fp8 {
                temper_kernels::dequantize_fp8(Isa::Scalar, &codes[i..i + 1], s, &mut v);
            } else {
                temper_kernels::dequantize_int8(Isa::Scalar, &[codes[i] as i8], s, &mut v);
            }
            out[i] = v[0];
        }
    }
    out
}

#[test]
fn every_scheme_round_trips_on_the_real_model() {
    let source = Checkpoint::open(smollm2()).unwrap();
    for case in CASES {
        let parent = tempfile::tempdir().unwrap();
        let out = parent.path().join("artifact");
        let summary = quantize_case(case, &out);
        assert_eq!(summary["status"], "completed");
        assert_eq!(summary["format"], case.format);
        assert_eq!(summary["tensors_quantized"], 30 * 7);
        let artifact = Checkpoint::open(&out).unwrap();
        let config = &artifact.config.raw["quantization_config"];
        assert_eq!(config["format"], case.format);
        assert_eq!(config["ignore"], serde_json::json!(["lm_head"]));
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        let stats = manifest["passes"][0]["report"]["tensors"]
            .as_array()
            .unwrap();
        assert_eq!(stats.len(), 210);
        for t in source.tensors() {
            let prefix = t.name.trim_end_matches(".weight");
            if artifact.get(&t.name).is_some_and(|a| a.dtype == t.dtype) {
                assert_eq!(
                    artifact.bytes(artifact.get(&t.name).unwrap()),
                    source.bytes(t),
                    "{} changed",
                    t.name
                );
                continue;
            }
            let (rows, cols) = (t.shape[0], t.shape[1]);
            let deq = dequantize(&artifact, prefix, rows, cols);
            let src = FloatData::from_bytes(t.dtype, source.bytes(t)).unwrap();
            let (mut err_sq, mut w_sq) = (0f64, 0f64);
            for (i, d) in deq.iter().enumerate() {
                let w = src.get(i);
                err_sq += ((w - d) as f64).powi(2);
                w_sq += (w as f64).powi(2);
            }
            let rel = (err_sq / w_sq).sqrt();
            assert!(
                rel < case.max_relative_rms,
                "{:?} {}: relative RMS error {rel}",
                case.args,
                t.name
            );
            let stat = stats.iter().find(|s| s["name"] == t.name.as_str()).unwrap();
            let reported = stat["relative_rms_error"].as_f64().unwrap();
            assert!(
                (reported - rel).abs() <= 1e-3 * rel,
                "{}: manifest says {reported}, measured {rel}",
                t.name
            );
            let over = stat["max_error_over_bound"].as_f64().unwrap();
            assert!(
                over <= 1.001,
                "{:?} {}: an element is {over}x its format's error bound",
                case.args,
                t.name
            );
        }
    }
}

#[test]
fn artifact_files_and_manifest() {
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("artifact");
    quantize_case(&CASES[0], &out);
    for f in [
        "config.json",
        "model.safetensors",
        "manifest.json",
        "serving.properties",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing from the artifact");
    }
    let props = std::fs::read_to_string(out.join("serving.properties")).unwrap();
    assert!(
        props.contains("option.quantize=compressed-tensors"),
        "{props}"
    );
    // 9 heads on 4 GPUs: vLLM needs a degree that divides the heads.
    assert!(props.contains("option.tensor_parallel_degree=3"), "{props}");
    let m: Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["schema_version"], 1);
    assert_eq!(m["target"]["instance_type"], "ml.g6.12xlarge");
    assert_eq!(m["target"]["fit"]["fits"], true);
    assert!(m["recommended_image"]
        .as_str()
        .unwrap()
        .contains("djl-inference"));
    assert!(m["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["path"] == "model.safetensors" && i["sha256"].as_str().unwrap().len() == 64));
    for o in m["outputs"].as_array().unwrap() {
        let (sha, bytes) =
            temper_core::hash::sha256_file(&out.join(o["path"].as_str().unwrap())).unwrap();
        assert_eq!(o["sha256"], sha.as_str());
        assert_eq!(o["bytes"], bytes);
    }
    // FP8 on an A10G (no native FP8) is said to run weight-only.
    let out2 = parent.path().join("g5");
    let o = quantize(
        smollm2(),
        "ml.g5.2xlarge",
        &out2,
        &["--quantize", "fp8", "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout_json(&o)["notes"].to_string().contains("weight-only"));
}

#[test]
fn shards_split_at_the_limit_with_an_index() {
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("artifact");
    let o = quantize(
        smollm2(),
        "ml.g6.xlarge",
        &out,
        &[
            "--quantize",
            "int8",
            "--env",
            "OPTION_MAX_SHARD_BYTES=50000000",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    let files: std::collections::BTreeSet<&str> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(files.len() >= 3, "{files:?}");
    let a = Checkpoint::open(&out).unwrap();
    assert_eq!(a.weight_files().count(), files.len());
    assert!(a
        .get("model.layers.29.mlp.down_proj.weight_packed")
        .is_some());
}

#[test]
fn ctrl_c_leaves_no_output() {
    // A synthetic model (~0.8 GB of f32) that takes seconds to quantize, so the signal
    // lands mid-run: the test must take the cancel path, not race past it.
    let model = tempfile::tempdir().unwrap();
    TinyModel {
        layers: 200,
        dtype: Dtype::F32,
        hidden: 256,
        ffn: 768,
        ..Default::default()
    }
    .write(model.path());
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("out");
    let child = optimize()
        .args([
            "--model",
            model.path().to_str().unwrap(),
            "--instance-type",
            "ml.g6.xlarge",
            "--quantize",
            "fp8",
        ])
        .args(["--output", out.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the staging directory appears, then interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while listing(parent.path()).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(
        !listing(parent.path()).is_empty(),
        "the job never started staging"
    );
    let interrupted = std::time::Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let result = child.wait_with_output().unwrap();
    let waited = interrupted.elapsed();
    let err = String::from_utf8_lossy(&result.stderr);
    assert_eq!(
        result.status.code(),
        Some(130),
        "the run was not cancelled: {err}"
    );
    assert!(err.contains("cancelled"), "{err}");
    assert_eq!(listing(parent.path()), Vec::<String>::new());
    // Cancelling stops the input hashing too instead of reading the whole model first.
    assert!(
        waited < std::time::Duration::from_secs(3),
        "cancelling took {waited:?}"
    );
}

#[test]
fn gguf_import_through_the_cli() {
    let gguf = workspace().join(".cache/assets/SmolLM2-135M-Instruct.Q4_1.gguf");
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("hf");
    let o = run(&[
        "import-gguf",
        gguf.to_str().unwrap(),
        out.to_str().unwrap(),
        "--dtype",
        "f32",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = Checkpoint::open(&out).unwrap();
    assert_eq!(
        c.get("model.layers.0.self_attn.k_proj.weight")
            .unwrap()
            .dtype,
        Dtype::F32
    );
    assert!(out.join("tokenizer.json").is_file());
}

#[test]
fn fp8_block_is_refused_where_vllm_would_refuse_it_and_aligned_models_get_a_valid_degree() {
    // SmolLM2's 576-wide q/k projections are not 128-aligned: vLLM's block-FP8 layers
    // refuse them, so the plan does too, before any work.
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("artifact");
    let o = quantize(
        smollm2(),
        "ml.g6.12xlarge",
        &out,
        &["--quantize", "fp8", "--scheme", "FP8_BLOCK"],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("FP8_BLOCK")
            && err.contains("not a multiple of 128")
            && err.contains("FP8_DYNAMIC"),
        "{err}"
    );
    assert!(listing(parent.path()).is_empty());
    // A 128-aligned model quantizes, with partial edge blocks in the scales where a
    // dimension is not a multiple of 128 (k/v: 128 rows; down_proj input 384 = 3 blocks).
    let model = parent.path().join("aligned");
    TinyModel {
        hidden: 256,
        ffn: 384,
        ..Default::default()
    }
    .write(&model);
    let o = quantize(
        &model,
        "ml.p5.48xlarge",
        &out,
        &["--quantize", "fp8", "--scheme", "FP8_BLOCK", "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let a = Checkpoint::open(&out).unwrap();
    assert_eq!(
        a.get("model.layers.0.mlp.down_proj.weight_scale")
            .unwrap()
            .shape,
        vec![2, 3]
    );
    assert_eq!(
        a.get("model.layers.0.self_attn.k_proj.weight_scale")
            .unwrap()
            .shape,
        vec![1, 2]
    );
    // 4 heads and 2 kv heads on 8 GPUs would allow degree 4, but k/v's 128 rows split over
    // two or more ranks are no longer 128-aligned, so the degree drops to 1.
    let props = std::fs::read_to_string(out.join("serving.properties")).unwrap();
    assert!(props.contains("option.tensor_parallel_degree=1"), "{props}");
}
