//! Bad input: each case gets a clear error naming what is wrong and where, and leaves
//! nothing behind in the output's parent directory.

mod common;

use common::*;
use safetensors::Dtype;
use std::path::Path;

/// Runs a quantization of `model` into `<parent>/out` and expects failure whose message
/// contains every needle; checks that `parent` holds nothing new afterwards.
fn expect_failure(model: &Path, extra: &[&str], needles: &[&str]) -> String {
    let parent = tempfile::tempdir().unwrap();
    let out_dir = parent.path().join("out");
    let mut args = vec![
        "--model",
        model.to_str().unwrap(),
        "--instance-type",
        "ml.g6.xlarge",
        "--quantize",
        "fp8",
        "--output",
        out_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "expected failure, got success: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    for n in needles {
        assert!(err.contains(n), "error should mention `{n}`:\n{err}");
    }
    assert_eq!(
        listing(parent.path()),
        Vec::<String>::new(),
        "left behind after: {err}"
    );
    err
}

fn tiny(model: TinyModel) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    model.write(dir.path());
    dir
}

#[test]
fn missing_model_directory() {
    expect_failure(
        Path::new("/nonexistent/model"),
        &[],
        &["/nonexistent/model", "does not exist"],
    );
}

#[test]
fn missing_config_and_missing_weights() {
    let dir = tempfile::tempdir().unwrap();
    expect_failure(dir.path(), &[], &["no config.json", "import-gguf"]);
    let m = tiny(TinyModel::default());
    std::fs::remove_file(m.path().join("model.safetensors")).unwrap();
    expect_failure(m.path(), &[], &["no model.safetensors"]);
}

#[test]
fn truncated_safetensors() {
    let m = tiny(TinyModel::default());
    let path = m.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    expect_failure(m.path(), &[], &["model.safetensors", "truncated"]);
}

#[test]
fn header_offsets_past_the_end() {
    let m = tiny(TinyModel::default());
    let header = br#"{"model.layers.0.mlp.up_proj.weight":{"dtype":"F32","shape":[1024],"data_offsets":[0,4096]}}"#;
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    file.extend_from_slice(&[0u8; 16]);
    std::fs::write(m.path().join("model.safetensors"), file).unwrap();
    expect_failure(m.path(), &[], &["model.safetensors", "past the end"]);
}

#[test]
fn unsupported_dtype_names_the_tensor() {
    let m = tiny(TinyModel {
        int_tensor: Some("model.layers.1.mlp.up_proj.weight".into()),
        ..Default::default()
    });
    expect_failure(
        m.path(),
        &[],
        &[
            "model.layers.1.mlp.up_proj.weight",
            "I32",
            "F32, F16 and BF16",
        ],
    );
}

#[test]
fn unknown_architecture_is_refused_with_a_way_out() {
    let m = tiny(TinyModel {
        model_type: "bert",
        ..Default::default()
    });
    expect_failure(
        m.path(),
        &[],
        &[
            "BertModel",
            "bert",
            "OPTION_ALLOW_UNKNOWN_ARCHITECTURE=true",
        ],
    );
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("out");
    let o = quantize(
        m.path(),
        "ml.g6.xlarge",
        &out,
        &[
            "--quantize",
            "int8",
            "--allow-unknown-architecture",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout_json(&o)["tensors_quantized"], 14);
}

#[test]
fn nan_and_inf_name_tensor_row_and_column() {
    let name = "model.layers.1.self_attn.q_proj.weight";
    let m = tiny(TinyModel {
        poison: vec![(name.into(), 3 * HIDDEN + 5, f32::NAN)],
        ..Default::default()
    });
    expect_failure(m.path(), &[], &[name, "NaN", "row 3", "column 5"]);
    let m = tiny(TinyModel {
        dtype: Dtype::F32,
        poison: vec![(name.into(), 7 * HIDDEN + 63, f32::NEG_INFINITY)],
        ..Default::default()
    });
    expect_failure(
        m.path(),
        &["--quantize", "int8"],
        &[name, "inf", "row 7", "column 63"],
    );
}

#[test]
fn all_zero_row_is_quantized_exactly_and_reported() {
    let name = "model.layers.0.mlp.down_proj.weight";
    let m = tiny(TinyModel {
        zero_row: Some((name.into(), 10)),
        ..Default::default()
    });
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("out");
    let o = quantize(
        m.path(),
        "ml.g5.xlarge",
        &out,
        &["--quantize", "int8", "--scheme", "W8A8", "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let warnings = stdout_json(&o)["warnings"].to_string();
    assert!(
        warnings.contains(name) && warnings.contains("1 scale group"),
        "{warnings}"
    );
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let codes = st.tensor(name).unwrap();
    assert_eq!(codes.dtype(), Dtype::I8);
    assert!(codes.data()[10 * FFN..11 * FFN].iter().all(|&c| c == 0));
    let scales = st
        .tensor("model.layers.0.mlp.down_proj.weight_scale")
        .unwrap();
    let s10 = half::bf16::from_le_bytes([scales.data()[20], scales.data()[21]]).to_f32();
    assert_eq!(s10, 1.0);
}

#[test]
fn existing_output_is_refused_then_replaced_with_overwrite() {
    let m = tiny(TinyModel::default());
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "precious").unwrap();
    let args = [
        "--model",
        m.path().to_str().unwrap(),
        "--instance-type",
        "ml.g6.xlarge",
        "--quantize",
        "fp8",
        "--output",
        out.to_str().unwrap(),
    ];
    let o = run(&args);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("already exists") && stderr(&o).contains("--overwrite"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "precious"
    );
    let mut with_overwrite = args.to_vec();
    with_overwrite.push("--overwrite");
    let o = run(&with_overwrite);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.join("keep.txt").exists());
    assert!(out.join("manifest.json").exists());
    assert_eq!(listing(parent.path()), vec!["out"]);
}

#[test]
fn unwritable_output() {
    let m = tiny(TinyModel::default());
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = file.join("out");
    let o = quantize(m.path(), "ml.g6.xlarge", &out, &["--quantize", "fp8"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("a-file"), "{}", stderr(&o));
    assert_eq!(listing(parent.path()), vec!["a-file"]);
}

#[test]
fn options_that_cannot_work_are_refused_before_any_work() {
    let m = tiny(TinyModel::default());
    expect_failure(
        m.path(),
        &["--scheme", "FP8"],
        &["tokenizer.json", "calibrate input scales", "FP8_DYNAMIC"],
    );
    expect_failure(
        m.path(),
        &[
            "--scheme",
            "FP8_DYNAMIC",
            "--calib-data",
            "/nonexistent/calib.txt",
        ],
        &["/nonexistent/calib.txt"],
    );
    expect_failure(
        m.path(),
        &["--quantize", "int8", "--group-size", "128"],
        &["64 input columns", "group size 128"],
    );
    expect_failure(
        m.path(),
        &["--ignore", "re:.*q_proj"],
        &["vLLM fuses", "k_proj"],
    );
    expect_failure(
        m.path(),
        &["--instance-type", "ml.inf2.xlarge"],
        &["Neuron"],
    );
    expect_failure(
        m.path(),
        &["--instance-type", "ml.g6.13xlarge"],
        &["ml.g6.13xlarge", "ml.g6.12xlarge"],
    );
}

#[test]
fn request_documents_that_break_the_api_rules() {
    let m = tiny(TinyModel::default());
    let parent = tempfile::tempdir().unwrap();
    let base = serde_json::json!({
        "OptimizationJobName": "tiny-fp8",
        "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
        "ModelSource": {"S3": {"S3Uri": format!("file://{}", m.path().display())}},
        "DeploymentInstanceType": "ml.g6.12xlarge",
        "OptimizationConfigs": [{"ModelQuantizationConfig": {"OverrideEnvironment": {"OPTION_QUANTIZE": "fp8"}}}],
        "OutputConfig": {"S3OutputLocation": parent.path().join("out").to_str().unwrap()},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600}
    });
    let request = parent.path().join("job.json");
    let check = |mutate: &dyn Fn(&mut serde_json::Value), needles: &[&str]| {
        let mut r = base.clone();
        mutate(&mut r);
        std::fs::write(&request, serde_json::to_vec(&r).unwrap()).unwrap();
        let o = run(&["--request", request.to_str().unwrap()]);
        assert!(!o.status.success());
        for n in needles {
            assert!(stderr(&o).contains(n), "`{n}` not in: {}", stderr(&o));
        }
        assert_eq!(listing(parent.path()), vec!["job.json"]);
    };
    check(
        &|r| r["OptimizationJobName"] = "bad_name!".into(),
        &["ValidationException", "bad_name!"],
    );
    check(
        &|r| r["DeploymentInstanceType"] = "ml.x9.huge".into(),
        &["ValidationException", "ml.x9.huge"],
    );
    check(
        &|r| {
            r.as_object_mut().unwrap().remove("RoleArn");
        },
        &["ValidationException", "roleArn"],
    );
    check(
        &|r| r["OptimizationConfigs"][0]["ModelCompilationConfig"] = serde_json::json!({}),
        &["ValidationException", "ModelQuantizationConfig"],
    );
    // And the valid request runs.
    std::fs::write(&request, serde_json::to_vec(&base).unwrap()).unwrap();
    let o = run(&["--request", request.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout_json(&o)["job_name"], "tiny-fp8");
    assert!(parent.path().join("out/manifest.json").is_file());
}

#[test]
fn an_output_that_contains_the_source_is_refused_even_with_overwrite() {
    let parent = tempfile::tempdir().unwrap();
    let model = parent.path().join("models/tiny");
    TinyModel::default().write(&model);
    let out = parent.path().join("models");
    let o = quantize(
        &model,
        "ml.g6.xlarge",
        &out,
        &["--quantize", "fp8", "--overwrite"],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("overlap") && stderr(&o).contains("destroy the source"),
        "{}",
        stderr(&o)
    );
    assert!(
        model.join("model.safetensors").is_file(),
        "the source model was touched"
    );
    let inside = model.join("quantized");
    let o = quantize(&model, "ml.g6.xlarge", &inside, &["--quantize", "fp8"]);
    assert!(
        !o.status.success() && stderr(&o).contains("overlap"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        listing(&model),
        vec!["config.json", "model.safetensors", "tokenizer.json"]
    );
}
