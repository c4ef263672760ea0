//! The model runtime on the real SmolLM2-135M-Instruct: quantized kernels against plain f32
//! arithmetic on the dequantized weights, `generate` and `eval` end to end, the quality
//! evaluation every quantization job writes into its manifest, static FP8 calibration, and
//! bad input.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use temper_runtime::{LoadOptions, Logits, Model};

fn hamlet() -> PathBuf {
    let p = workspace().join(".cache/assets/hamlet.txt");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-assets.sh",
        p.display()
    );
    p
}

/// Quantizes SmolLM2 with `args` (no quality evaluation) into `dir/name`.
fn artifact(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut all = vec!["--no-eval", "--json"];
    all.extend_from_slice(args);
    let o = quantize(smollm2(), "ml.g6.12xlarge", &out, &all);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    out
}

fn logits(model: &Model, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache(tokens.len()).unwrap();
    model
        .forward(tokens, &mut cache, Logits::All)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

const TOKENS: &[u32] = &[
    504, 3575, 282, 4649, 314, 7042, 30, 378, 2616, 282, 5027, 314,
];

#[test]
fn quantized_kernels_match_plain_arithmetic_on_dequantized_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("fp8", &["--quantize", "fp8"]),
        ("int8", &["--quantize", "int8"]),
        ("int8-g64", &["--quantize", "int8", "--group-size", "64"]),
        ("w8a8", &["--quantize", "int8", "--scheme", "W8A8"]),
    ];
    for (name, args) in cases {
        let dir = artifact(tmp.path(), name, args);
        let weight_only = LoadOptions {
            weight_only: true,
            ..Default::default()
        };
        let quantized = Model::load(&dir, &weight_only).unwrap();
        let plain = Model::load(
            &dir,
            &LoadOptions {
                dequantize: true,
                ..Default::default()
            },
        )
        .unwrap();
        let (a, b) = (logits(&quantized, TOKENS), logits(&plain, TOKENS));
        let worst = a
            .iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        // Only the order of additions differs (scale applied per group vs per weight).
        assert!(worst < 2e-3, "{name}: logits differ by {worst}");
        let argmax_same = a
            .iter()
            .zip(&b)
            .all(|(x, y)| temper_runtime::eval::argmax(x) == temper_runtime::eval::argmax(y));
        assert!(argmax_same, "{name}: greedy choices differ");
    }
}

fn generate(args: &[&str]) -> Value {
    let mut all = vec!["generate", "--model", smollm2().to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    let o = run(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout_json(&o)
}

#[test]
fn generate_greedy_text_and_timings() {
    let v = generate(&["--prompt", "The capital of France is", "--max-tokens", "8"]);
    let r = &v["report"];
    assert!(
        r["text"].as_str().unwrap().contains("Paris"),
        "{}",
        r["text"]
    );
    assert_eq!(r["finish_reason"], "length");
    assert_eq!(r["generated_tokens"], 8);
    assert_eq!(r["decode_steps"], 7);
    assert!(r["prefill_tokens_per_second"].as_f64().unwrap() > 0.0);
    assert!(r["decode_tokens_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn chat_generation_ends_at_the_end_of_turn_token() {
    let v = generate(&[
        "--chat",
        "--prompt",
        "What is the capital of France? Answer in one word.",
        "--max-tokens",
        "40",
    ]);
    let r = &v["report"];
    assert_eq!(r["finish_reason"], "eos", "{r}");
    let text = r["text"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text}");
    assert!(!text.contains("<|im_end|>"), "{text}");
}

#[test]
fn stop_strings_and_seeded_sampling() {
    let v = generate(&[
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "20",
        "--stop",
        "Paris",
    ]);
    let r = &v["report"];
    assert_eq!(r["finish_reason"], "stop");
    assert!(!r["text"].as_str().unwrap().contains("Paris"));
    let sample = |seed: &str| {
        generate(&[
            "--prompt",
            "Once upon a time",
            "--max-tokens",
            "12",
            "--temperature",
            "0.9",
            "--top-p",
            "0.95",
            "--seed",
            seed,
        ])["report"]["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(sample("7"), sample("7"));
}

#[test]
fn eval_compares_an_artifact_with_its_source() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = artifact(tmp.path(), "int8", &["--quantize", "int8"]);
    let o = run(&[
        "eval",
        "--model",
        dir.to_str().unwrap(),
        "--reference",
        smollm2().to_str().unwrap(),
        "--data",
        hamlet().to_str().unwrap(),
        "--window",
        "256",
        "--max-windows",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = &stdout_json(&o)["comparison"];
    assert_eq!(c["windows"], 2);
    assert_eq!(c["reference"]["tokens"], 2 * 255);
    let (r, q) = (
        c["reference"]["perplexity"].as_f64().unwrap(),
        c["candidate"]["perplexity"].as_f64().unwrap(),
    );
    assert!(r > 1.0 && r < 1000.0, "reference perplexity {r}");
    let change = c["perplexity_change"].as_f64().unwrap();
    assert!((q / r - 1.0 - change).abs() < 1e-9);
    let kl = c["mean_kl"].as_f64().unwrap();
    assert!(kl > 0.0 && kl < 0.05, "KL {kl}");
    let top1 = c["top1_agreement"].as_f64().unwrap();
    assert!(top1 > 0.9 && top1 <= 1.0, "top-1 {top1}");

    // The model against itself: no change at all.
    let o = run(&[
        "eval",
        "--model",
        smollm2().to_str().unwrap(),
        "--reference",
        smollm2().to_str().unwrap(),
        "--data",
        hamlet().to_str().unwrap(),
        "--window",
        "64",
        "--max-windows",
        "1",
        "--json",
    ]);
    let c = &stdout_json(&o)["comparison"];
    assert_eq!(c["perplexity_change"].as_f64().unwrap(), 0.0);
    assert_eq!(c["top1_agreement"].as_f64().unwrap(), 1.0);
    assert!(c["mean_kl"].as_f64().unwrap() < 1e-9);
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn every_job_measures_what_quantization_cost() {
    let tmp = tempfile::tempdir().unwrap();
    // L4 (g6) runs FP8 natively: activations are quantized in the evaluation too.
    let native = tmp.path().join("fp8-g6");
    let o = quantize(
        smollm2(),
        "ml.g6.12xlarge",
        &native,
        &["--quantize", "fp8", "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let e = &manifest(&native)["evaluation"];
    assert_eq!(e["measured"], true, "{e}");
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        &summary["evaluation"], e,
        "the JSON summary carries the manifest's evaluation"
    );
    assert!(
        e["activations"].as_str().unwrap().contains("fp8 per token"),
        "{e}"
    );
    assert_eq!(e["windows"], 4);
    assert_eq!(e["window_len"], 256);
    assert!(e["data"].as_str().unwrap().contains("built-in sample"));
    for key in ["perplexity_change", "mean_kl", "top1_agreement"] {
        assert!(e[key].as_f64().is_some(), "{key} missing: {e}");
    }
    // A10G (g5) has no FP8 matmul: engines run the checkpoint weight-only, and so does the
    // evaluation.
    let ampere = tmp.path().join("fp8-g5");
    let o = quantize(
        smollm2(),
        "ml.g5.12xlarge",
        &ampere,
        &["--quantize", "fp8", "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let w = &manifest(&ampere)["evaluation"];
    assert!(
        w["activations"].as_str().unwrap().contains("weight-only"),
        "{w}"
    );
    let kl = |v: &Value| v["mean_kl"].as_f64().unwrap();
    assert!(
        kl(w) < kl(e),
        "weight-only FP8 must lose less than FP8 with FP8 activations: {} vs {}",
        kl(w),
        kl(e)
    );
    // No tokenizer: the job still succeeds and says why quality was not measured.
    let tiny = tmp.path().join("tiny");
    TinyModel::default().write(&tiny);
    let out = tmp.path().join("tiny-fp8");
    let o = quantize(
        &tiny,
        "ml.g6.12xlarge",
        &out,
        &["--quantize", "fp8", "--json"],
    );
    assert!(
        o.status.success(),
        "{}{}",
        stderr(&o),
        String::from_utf8_lossy(&o.stdout)
    );
    let m = manifest(&out);
    assert_eq!(m["evaluation"]["measured"], false);
    assert!(m["evaluation"]["reason"]
        .as_str()
        .unwrap()
        .contains("tokenizer.json"));
    assert!(m["warnings"].to_string().contains("quality not measured"));
}

#[test]
fn static_fp8_is_calibrated_loaded_and_evaluated() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fp8-static");
    let o = quantize(
        smollm2(),
        "ml.g6.12xlarge",
        &out,
        &[
            "--quantize",
            "fp8",
            "--scheme",
            "FP8",
            "--calib-data",
            hamlet().to_str().unwrap(),
            "--env",
            "OPTION_CALIB_SIZE=4",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let config: Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    let acts = &config["quantization_config"]["config_groups"]["group_0"]["input_activations"];
    assert_eq!(acts["dynamic"], false);
    assert_eq!(acts["strategy"], "tensor");
    let ckpt = temper_core::checkpoint::Checkpoint::open(&out).unwrap();
    let scale = ckpt
        .get("model.layers.0.self_attn.q_proj.input_scale")
        .unwrap();
    assert_eq!(scale.shape, vec![1]);
    let wscale = ckpt
        .get("model.layers.0.mlp.down_proj.weight_scale")
        .unwrap();
    assert_eq!(wscale.shape, vec![1]);
    let m = manifest(&out);
    let calib = &m["passes"][0]["options"]["calibration"];
    assert_eq!(calib["windows"], 4, "{calib}");
    assert!(calib["source"].as_str().unwrap().ends_with("hamlet.txt"));
    let e = &m["evaluation"];
    assert_eq!(e["measured"], true, "{e}");
    assert!(e["activations"].as_str().unwrap().contains("static"), "{e}");
    // q, k and v read the same input, so calibration gives them the same input scale.
    let read = |name: &str| {
        let t = ckpt.get(name).unwrap();
        ckpt.bytes(t).to_vec()
    };
    assert_eq!(
        read("model.layers.3.self_attn.q_proj.input_scale"),
        read("model.layers.3.self_attn.v_proj.input_scale")
    );
}

/// A copy of SmolLM2 (weights and tokenizer linked) with `edit` applied to config.json.
fn edited_model(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let out = dir.join("edited");
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(smollm2()).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap();
        if name != "config.json" {
            std::os::unix::fs::symlink(&p, out.join(name)).unwrap();
        }
    }
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(smollm2().join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(out.join("config.json"), config.to_string()).unwrap();
    out
}

fn generate_error(model: &Path, prompt: &str) -> String {
    let o = run(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        prompt,
        "--max-tokens",
        "4",
    ]);
    assert!(!o.status.success());
    stderr(&o)
}

#[test]
fn a_prompt_longer_than_the_context_window_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = edited_model(tmp.path(), |c| c["max_position_embeddings"] = 8.into());
    let err = generate_error(
        &model,
        "This prompt has clearly more than eight tokens in it, by a wide margin.",
    );
    assert!(
        err.contains("context window")
            && err.contains("max_position_embeddings")
            && err.contains('8'),
        "{err}"
    );
}

#[test]
fn a_sliding_window_caps_the_context() {
    // Past the window sliding-window attention differs from full attention, so the runtime
    // refuses to go there rather than answer differently from transformers and vLLM.
    let tmp = tempfile::tempdir().unwrap();
    let model = edited_model(tmp.path(), |c| c["sliding_window"] = 8.into());
    let err = generate_error(
        &model,
        "This prompt has clearly more than eight tokens in it, by a wide margin.",
    );
    assert!(err.contains("sliding_window") && err.contains('8'), "{err}");
}

#[test]
fn config_and_tensors_that_disagree_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = edited_model(tmp.path(), |c| c["intermediate_size"] = 1024.into());
    let err = generate_error(&model, "Hello");
    assert!(
        err.contains("model.layers.0.mlp.gate_proj.weight")
            && err.contains("[1536, 576]")
            && err.contains("[1024, 576]"),
        "{err}"
    );
}

#[test]
fn unsupported_quantization_configs_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let model = edited_model(tmp.path(), |c| {
        c["quantization_config"] = serde_json::json!({"quant_method": "gptq", "bits": 4});
    });
    let err = generate_error(&model, "Hello");
    assert!(
        err.contains("quant_method") && err.contains("gptq") && err.contains("compressed-tensors"),
        "{err}"
    );
    // Settings that change what the tensors mean are refused, not ignored.
    let ct = |extra: serde_json::Value| {
        let mut q = serde_json::json!({
            "quant_method": "compressed-tensors",
            "format": "float-quantized",
            "quantization_status": "compressed",
            "config_groups": {"group_0": {
                "targets": ["Linear"],
                "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": true, "dynamic": false},
                "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "symmetric": true, "dynamic": true}
            }}
        });
        for (k, v) in extra.as_object().unwrap() {
            q[k] = v.clone();
        }
        q
    };
    for (name, q, needle) in [
        (
            "sparse",
            ct(serde_json::json!({"sparsity_config": {"format": "sparse-24-bitmask"}})),
            "sparsity_config",
        ),
        (
            "rotated",
            ct(serde_json::json!({"transform_config": {"config_groups": {}}})),
            "transform_config",
        ),
        (
            "asymmetric",
            {
                let mut q = ct(serde_json::json!({}));
                q["config_groups"]["group_0"]["input_activations"]["symmetric"] = false.into();
                q
            },
            "asymmetric",
        ),
    ] {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let model = edited_model(&dir, |c| c["quantization_config"] = q.clone());
        let err = generate_error(&model, "Hello");
        assert!(err.contains(needle), "{name}: {err}");
    }
}

#[test]
fn empty_and_malformed_eval_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let eval = |data: &Path| {
        let o = run(&[
            "eval",
            "--model",
            smollm2().to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ]);
        assert!(!o.status.success());
        stderr(&o)
    };
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "  \n").unwrap();
    let err = eval(&empty);
    assert!(err.contains("empty.txt"), "{err}");
    let broken = tmp.path().join("broken.jsonl");
    std::fs::write(&broken, "{\"messages\": [\n{not json\n").unwrap();
    let err = eval(&broken);
    assert!(
        err.contains("broken.jsonl") && err.contains("line 1"),
        "{err}"
    );
    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "Too short for a window.").unwrap();
    let err = eval(&short);
    assert!(err.contains("short.txt") || err.contains("tokens"), "{err}");
}

#[test]
fn an_fp8_nan_code_is_refused_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fp8");
    let o = quantize(
        smollm2(),
        "ml.g6.12xlarge",
        &out,
        &["--quantize", "fp8", "--no-eval"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Overwrite one code of a weight with 0x7F (NaN in E4M3 "fn") in the safetensors file.
    let path = out.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let name = "model.layers.3.mlp.up_proj.weight";
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    let cols = header[name]["shape"][1].as_u64().unwrap() as usize;
    bytes[8 + n + start + 2 * cols + 5] = 0x7F;
    std::fs::write(&path, bytes).unwrap();
    let err = generate_error(&out, "Hello");
    assert!(
        err.contains(name) && err.contains("row 2, column 5") && err.contains("NaN"),
        "{err}"
    );
}
