//! Calibrated quantization on the real SmolLM2-135M-Instruct: INT4 W4A16 round-to-nearest codes
//! dequantize (through the runtime's loader and kernels) to within half a step of the source,
//! the 576-column layers get the smaller group in their own config group, AWQ and GPTQ
//! measurably beat round-to-nearest on the same held-out text, and SmoothQuant beats plain
//! W8A8.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use temper_core::checkpoint::Checkpoint;
use temper_core::dtype::FloatData;
use temper_runtime::load::load_linear;
use temper_runtime::quant_config::QuantConfig;

fn job(out: &Path, method: &str) -> (Value, Value) {
    let o = quantize(
        smollm2(),
        "ml.g6.xlarge",
        out,
        &["--quantize", method, "--json"],
    );
    assert!(o.status.success(), "{method}: {}", stderr(&o));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    (stdout_json(&o), manifest)
}

#[test]
fn round_to_nearest_int4_round_trips_through_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("int4");
    let (summary, manifest) = job(&out, "int4");
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["format"], "pack-quantized");
    let artifact = Checkpoint::open(&out).unwrap();
    let config = QuantConfig::from_config(&artifact.config).unwrap().unwrap();
    let raw = &artifact.config.raw["quantization_config"]["config_groups"];
    assert_eq!(raw["group_0"]["weights"]["group_size"], 128);
    assert_eq!(raw["group_1"]["weights"]["group_size"], 64);
    let named = raw["group_1"]["targets"].as_array().unwrap();
    assert_eq!(named.len(), 30 * 6, "q/k/v/o/gate/up of every layer");
    let source = Checkpoint::open(smollm2()).unwrap();
    for layer in [0usize, 29] {
        for (module, rows, cols, group) in [
            ("self_attn.q_proj", 576, 576, 64),
            ("self_attn.k_proj", 192, 576, 64),
            ("mlp.down_proj", 576, 1536, 128),
        ] {
            let prefix = format!("model.layers.{layer}.{module}");
            let lin = load_linear(&artifact, &prefix, rows, cols, config.scheme_for(&prefix))
                .unwrap_or_else(|e| panic!("{prefix}: {e}"));
            let t = source.get(&format!("{prefix}.weight")).unwrap();
            let src = FloatData::from_bytes(t.dtype, source.bytes(t)).unwrap();
            let scale = artifact.get(&format!("{prefix}.weight_scale")).unwrap();
            assert_eq!(scale.shape, vec![rows, cols / group], "{prefix}");
            let scales = FloatData::from_bytes(scale.dtype, artifact.bytes(scale)).unwrap();
            let mut row = vec![0f32; cols];
            for r in 0..rows {
                lin.matrix.row(r, &mut row);
                for (c, &d) in row.iter().enumerate() {
                    let w = src.get(r * cols + c);
                    let half_step = 0.5 * scales.get(r * (cols / group) + c / group);
                    assert!(
                        (w - d).abs() <= half_step * 1.0001,
                        "{prefix}[{r},{c}]: {d} vs source {w} (half step {half_step})"
                    );
                }
            }
        }
    }
    let report = &manifest["passes"][0]["report"];
    assert!(report["scheme"].as_str().unwrap().starts_with("INT4 W4A16"));
    for t in report["tensors"].as_array().unwrap() {
        assert!(t["max_error_over_bound"].as_f64().unwrap() <= 1.001, "{t}");
    }
    let notes = manifest["target"]["notes"].to_string();
    assert!(notes.contains("576 input columns"), "{notes}");
}

#[test]
fn mse_scale_search_lowers_the_weight_error_of_every_round_to_nearest_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let error = |method: &str, search: &str| -> (f64, Value) {
        let out = dir.path().join(format!("{method}-{search}"));
        let o = quantize(
            smollm2(),
            "ml.g6.xlarge",
            &out,
            &[
                "--quantize",
                method,
                "--env",
                &format!("OPTION_QUANT_SCALE_SEARCH={search}"),
                "--json",
            ],
        );
        assert!(o.status.success(), "{method} {search}: {}", stderr(&o));
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        let report = &manifest["passes"][0]["report"];
        (
            report["mean_relative_rms_error"].as_f64().unwrap(),
            manifest["evaluation"].clone(),
        )
    };
    for method in ["int4", "int8", "fp8"] {
        let (minmax, _) = error(method, "minmax");
        let (mse, evaluation) = error(method, "mse");
        // The full range is one of the ratios searched, so the error can only go down; it
        // does go down on real weights.
        assert!(mse < minmax, "{method}: mse {mse} vs minmax {minmax}");
        assert_eq!(evaluation["measured"], true, "{method}: {evaluation}");
    }
}

#[test]
fn awq_and_gptq_beat_round_to_nearest_on_the_same_held_out_text() {
    // 32 windows of ShareGPT conversations (scripts/fetch-assets.sh) for calibration, the
    // 4 held-out windows before them for the evaluation: GPTQ's Hessians need more tokens than
    // the built-in sample has.
    let data = workspace().join(".cache/assets/ShareGPT_V3_unfiltered_cleaned_split.json");
    assert!(data.exists(), "run scripts/fetch-assets.sh first");
    let dir = tempfile::tempdir().unwrap();
    let run_with = |name: &str, method: &str, extra: &[&str]| -> Value {
        let out = dir.path().join(name);
        let mut args = vec![
            "--quantize",
            method,
            "--json",
            "--calib-data",
            data.to_str().unwrap(),
            "--env",
            "OPTION_CALIB_SIZE=32",
        ];
        args.extend_from_slice(extra);
        let o = quantize(smollm2(), "ml.g6.xlarge", &out, &args);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
    };
    let run_method = |method: &str| run_with(method, method, &[]);
    let (rtn, awq, gptq) = (run_method("int4"), run_method("awq"), run_method("gptq"));
    let kl = |m: &Value| m["evaluation"]["mean_kl"].as_f64().unwrap();
    let ppl = |m: &Value| m["evaluation"]["perplexity_change"].as_f64().unwrap();
    for (name, m) in [("AWQ", &awq), ("GPTQ", &gptq)] {
        assert_eq!(m["evaluation"]["data"], rtn["evaluation"]["data"]);
        assert!(
            kl(m) < 0.75 * kl(&rtn),
            "{name} KL {} vs round-to-nearest {}",
            kl(m),
            kl(&rtn)
        );
        assert!(ppl(m) < ppl(&rtn), "{name} {} vs {}", ppl(m), ppl(&rtn));
    }
    let calibration = &awq["passes"][0]["options"]["calibration"];
    let mappings = calibration["mappings"].as_array().unwrap();
    assert_eq!(
        mappings.len(),
        30 * 3,
        "norm->qkv, norm->gate/up, up->down per layer"
    );
    assert!(calibration["mappings_scaled"].as_u64().unwrap() > 0);
    // Every scaled mapping's loss is below round-to-nearest's, and its norm was rewritten.
    let source = Checkpoint::open(smollm2()).unwrap();
    let artifact = Checkpoint::open(&dir.path().join("awq")).unwrap();
    for m in mappings {
        let producer = m["producer"].as_str().unwrap();
        let scaled = !m["alpha"].is_null();
        if scaled {
            assert!(
                m["mse_awq"].as_f64() < m["mse_round_to_nearest"].as_f64(),
                "{m}"
            );
        }
        if producer.ends_with("norm.weight") {
            let a = artifact.bytes(artifact.get(producer).unwrap());
            let s = source.bytes(source.get(producer).unwrap());
            assert_eq!(a != s, scaled, "{producer}");
        }
    }
    // 32 windows give GPTQ 8,192 Hessian rows, over twice the widest input (1,536): no
    // warning that it fits its calibration text.
    assert!(
        !gptq["warnings"].to_string().contains("GPTQ's Hessians"),
        "{}",
        gptq["warnings"]
    );
    // GPTQ leaves norms alone and reports every Linear.
    let gptq_record = &gptq["passes"][0]["options"]["calibration"];
    assert_eq!(gptq_record["modules"].as_array().unwrap().len(), 30 * 7);
    assert_eq!(gptq_record["actorder"], true);
    let artifact = Checkpoint::open(&dir.path().join("gptq")).unwrap();
    let norm = "model.layers.3.input_layernorm.weight";
    assert_eq!(
        artifact.bytes(artifact.get(norm).unwrap()),
        source.bytes(source.get(norm).unwrap())
    );
    // AWQ's scales with GPTQ's rounding: below AWQ's KL, with both records in the manifest.
    let awq_gptq = run_with("awq-gptq", "awq", &["--env", "OPTION_AWQ_ROUNDING=gptq"]);
    assert!(
        kl(&awq_gptq) < kl(&awq),
        "AWQ + GPTQ KL {} vs AWQ {}",
        kl(&awq_gptq),
        kl(&awq)
    );
    let record = &awq_gptq["passes"][0]["options"]["calibration"];
    assert_eq!(record["mappings"].as_array().unwrap().len(), 30 * 3);
    assert_eq!(record["gptq"]["modules"].as_array().unwrap().len(), 30 * 7);
    // GPTQ W8A16 (per channel) against round-to-nearest INT8 W8A16, same data.
    let int8 = run_with("int8", "int8", &[]);
    let gptq8 = run_with(
        "gptq8",
        "gptq",
        &["--env", "OPTION_GPTQ_WEIGHT_BIT_WIDTH=8"],
    );
    assert_eq!(gptq8["passes"][0]["options"]["calibration"]["bits"], 8);
    assert!(
        kl(&gptq8) < 0.75 * kl(&int8),
        "GPTQ W8A16 KL {} vs round-to-nearest INT8 {}",
        kl(&gptq8),
        kl(&int8)
    );
    let artifact = Checkpoint::open(&dir.path().join("gptq8")).unwrap();
    let config = &artifact.config.raw["quantization_config"];
    assert_eq!(config["format"], "pack-quantized");
    assert_eq!(config["config_groups"]["group_0"]["weights"]["num_bits"], 8);
}

#[test]
fn smoothquant_beats_plain_w8a8_with_int8_activations() {
    let dir = tempfile::tempdir().unwrap();
    let run_method = |name: &str, args: &[&str]| -> Value {
        let out = dir.path().join(name);
        let mut all = args.to_vec();
        all.push("--json");
        let o = quantize(smollm2(), "ml.g6.xlarge", &out, &all);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
    };
    let plain = run_method("w8a8", &["--quantize", "int8", "--scheme", "W8A8"]);
    let smooth = run_method("sq", &["--quantize", "smoothquant"]);
    assert_eq!(
        smooth["evaluation"]["activations"],
        "int8 per token, as served"
    );
    let kl = |m: &Value| m["evaluation"]["mean_kl"].as_f64().unwrap();
    let ppl = |m: &Value| m["evaluation"]["perplexity_change"].as_f64().unwrap();
    assert!(
        kl(&smooth) < 0.8 * kl(&plain),
        "{} vs {}",
        kl(&smooth),
        kl(&plain)
    );
    assert!(
        ppl(&smooth) < ppl(&plain),
        "{} vs {}",
        ppl(&smooth),
        ppl(&plain)
    );
    let artifact = Checkpoint::open(&dir.path().join("sq")).unwrap();
    let config = &artifact.config.raw["quantization_config"];
    assert_eq!(config["format"], "int-quantized");
    let record = &smooth["passes"][0]["options"]["calibration"];
    assert_eq!(record["alpha"], 0.5);
    let mappings = record["mappings"].as_array().unwrap();
    assert_eq!(mappings.len(), 30 * 2);
    for m in mappings {
        // Smoothing flattens the outlier channels the per-token INT8 range has to cover.
        let (before, after) = (
            m["input_outlier_ratio_before"].as_f64().unwrap(),
            m["input_outlier_ratio_after"].as_f64().unwrap(),
        );
        assert!(after < before, "{m}");
    }
    // GPTQ's rounding of the smoothed weights (llm-compressor's SmoothQuant then GPTQ): lower
    // KL, same W8A8 format, GPTQ's record beside SmoothQuant's.
    let sq_gptq = run_method(
        "sq-gptq",
        &[
            "--quantize",
            "smoothquant",
            "--env",
            "OPTION_SMOOTHQUANT_ROUNDING=gptq",
        ],
    );
    assert!(
        kl(&sq_gptq) < kl(&smooth),
        "SmoothQuant + GPTQ KL {} vs SmoothQuant {}",
        kl(&sq_gptq),
        kl(&smooth)
    );
    let record = &sq_gptq["passes"][0]["options"]["calibration"];
    assert_eq!(record["mappings"].as_array().unwrap().len(), 30 * 2);
    assert_eq!(record["gptq"]["modules"].as_array().unwrap().len(), 30 * 7);
    assert_eq!(record["gptq"]["bits"], 8);
    let artifact = Checkpoint::open(&dir.path().join("sq-gptq")).unwrap();
    assert_eq!(
        artifact.config.raw["quantization_config"]["format"],
        "int-quantized"
    );
}
