//! SageMaker's combination rules, through the public entry points.

use serde_json::{json, Value};
use temper_api::{parse_create_request, to_job_spec, ApiError, ConvertOptions};

fn request(instance: &str, configs: Value) -> Value {
    json!({
        "OptimizationJobName": "rules",
        "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
        "ModelSource": {"S3": {"S3Uri": "s3://models/smollm2/"}},
        "DeploymentInstanceType": instance,
        "OptimizationConfigs": configs,
        "OutputConfig": {"S3OutputLocation": "s3://out/rules/"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600}
    })
}

fn parse(v: &Value) -> Result<temper_api::CreateOptimizationJobRequest, ApiError> {
    parse_create_request(&serde_json::to_vec(v).unwrap())
}

fn refused(v: &Value, needles: &[&str]) -> String {
    let err = parse(v).expect_err("the rules should refuse this request");
    assert_eq!(err.type_name(), "ValidationException");
    for n in needles {
        assert!(err.message().contains(n), "`{n}` missing from: {err}");
    }
    err.message().to_string()
}

fn quant() -> Value {
    json!({"ModelQuantizationConfig": {"OverrideEnvironment": {"OPTION_QUANTIZE": "fp8"}}})
}
fn shard() -> Value {
    json!({"ModelShardingConfig": {"OverrideEnvironment": {"OPTION_TENSOR_PARALLEL_DEGREE": "4"}}})
}
fn compile() -> Value {
    json!({"ModelCompilationConfig": {"OverrideEnvironment": {"OPTION_MAX_INPUT_LEN": "1024"}}})
}
fn eagle() -> Value {
    json!({"ModelSpeculativeDecodingConfig": {"Technique": "EAGLE"}})
}

#[test]
fn allowed_combinations_pass() {
    for configs in [
        json!([quant()]),
        json!([shard()]),
        json!([compile()]),
        json!([eagle()]),
        json!([quant(), compile()]),
        json!([eagle(), quant()]),
    ] {
        let v = request("ml.g6.12xlarge", configs.clone());
        let req = parse(&v).unwrap_or_else(|e| panic!("{configs}: {e}"));
        assert!(to_job_spec(&req, &ConvertOptions::default()).is_ok());
    }
    assert!(parse(&request("ml.inf2.xlarge", json!([compile()]))).is_ok());
    assert!(parse(&request("ml.trn1n.32xlarge", json!([compile()]))).is_ok());
}

/// temper lifts SageMaker's rule for quantization and speculative decoding (quantize, train
/// the head, then shard, in one job) and keeps it for compilation.
#[test]
fn sharding_combines_with_quantization_and_speculative_decoding_only() {
    let req = parse(&request("ml.g6.12xlarge", json!([quant(), shard()]))).unwrap();
    assert!(to_job_spec(&req, &ConvertOptions::default()).is_ok());
    let req = parse(&request(
        "ml.g6.12xlarge",
        json!([quant(), eagle(), shard()]),
    ))
    .unwrap();
    assert!(to_job_spec(&req, &ConvertOptions::default()).is_ok());
    refused(
        &request("ml.g6.12xlarge", json!([compile(), shard()])),
        &[
            "Value '[ModelCompilationConfig, ModelShardingConfig]' at 'optimizationConfigs'",
            "ModelShardingConfig combines only with ModelQuantizationConfig and ModelSpeculativeDecodingConfig",
        ],
    );
}

#[test]
fn compilation_and_speculative_decoding_do_not_combine() {
    refused(
        &request("ml.p5.48xlarge", json!([eagle(), compile()])),
        &[
            "Value '[ModelSpeculativeDecodingConfig, ModelCompilationConfig]' at 'optimizationConfigs'",
            "ModelCompilationConfig and ModelSpeculativeDecodingConfig do not combine",
        ],
    );
}

#[test]
fn neuron_instances_take_compilation_only() {
    for instance in ["ml.inf2.xlarge", "ml.trn1.2xlarge", "ml.trn1n.32xlarge"] {
        refused(
            &request(instance, json!([quant()])),
            &[
                "Value '[ModelQuantizationConfig]' at 'optimizationConfigs'",
                &format!("Neuron instances ({instance}) take ModelCompilationConfig only, not [ModelQuantizationConfig]"),
            ],
        );
    }
}

#[test]
fn each_technique_once() {
    refused(
        &request("ml.g6.12xlarge", json!([quant(), compile(), quant()])),
        &["ModelQuantizationConfig is given in entries 1 and 3"],
    );
}

#[test]
fn at_least_one_optimization() {
    refused(
        &request("ml.g6.12xlarge", json!([])),
        &[
            "Value '[]' at 'optimizationConfigs'",
            "at least one optimization",
        ],
    );
}

/// SageMaker accepts SmoothQuant only with compilation (TensorRT-LLM); temper writes the
/// W8A8 checkpoint vLLM runs, so it takes it alone too, set per entry or job-wide.
#[test]
fn smoothquant_without_compilation_is_accepted() {
    let sq = json!({"ModelQuantizationConfig": {"OverrideEnvironment": {"OPTION_QUANTIZE": "smoothquant"}}});
    assert!(parse(&request("ml.g5.12xlarge", json!([sq]))).is_ok());
    assert!(parse(&request("ml.g5.12xlarge", json!([sq, compile()]))).is_ok());
    let mut v = request("ml.g5.12xlarge", json!([{"ModelQuantizationConfig": {}}]));
    v["OptimizationEnvironment"] = json!({"OPTION_QUANTIZE": "SmoothQuant"});
    assert!(parse(&v).is_ok());
}

#[test]
fn tag_keys_are_unique() {
    let mut v = request("ml.g6.12xlarge", json!([quant()]));
    v["Tags"] = json!([{"Key": "team", "Value": "a"}, {"Key": "team", "Value": "b"}]);
    refused(&v, &["Value 'team' at 'tags'", "given 2 times"]);
}

#[test]
fn several_broken_rules_are_reported_together() {
    let msg = refused(
        &request("ml.inf2.xlarge", json!([shard(), eagle(), compile()])),
        &[
            "ModelShardingConfig combines",
            "do not combine",
            "Neuron instances",
        ],
    );
    assert!(msg.starts_with("3 validation errors detected: "), "{msg}");
}

#[test]
fn rules_hold_for_programmatic_requests() {
    let mut req = parse(&request("ml.g6.12xlarge", json!([quant()]))).unwrap();
    req.deployment_instance_type = "ml.inf2.xlarge".into();
    let err = to_job_spec(&req, &ConvertOptions::default()).unwrap_err();
    assert!(err.message().contains("Neuron instances"), "{err}");
}
