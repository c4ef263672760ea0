//! CreateOptimizationJob's checks of a job's options, through the service: values that
//! cannot work are this request's ValidationException, never a job that fails later.

use std::path::Path;
use std::time::Duration;
use temper_api::{ApiError, Operation};
use temper_server::config::{Config, S3Settings};
use temper_server::service::Service;

fn service(data: &Path, local_root: &Path) -> std::sync::Arc<Service> {
    temper_server::open(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.to_path_buf(),
        credentials: None,
        region: "us-east-1".into(),
        local_roots: vec![local_root.canonicalize().unwrap()],
        worker_device: None,
        max_jobs: 100,
        max_unfinished_jobs: 100,
        concurrent_jobs: 1,
        max_body_bytes: 1 << 20,
        header_read_timeout: std::time::Duration::from_secs(10),
        stop_grace: Duration::from_secs(1),
        poll_interval: Duration::from_millis(20),
        // Jobs created here fail at launch (no such binary); only Create is tested.
        worker_exe: data.join("no-worker-here"),
        s3: S3Settings::default(),
        models: Default::default(),
        prices: Default::default(),
        store: None,
        api_only: false,
    })
    .unwrap()
}

/// A local model directory whose config.json has SmolLM2-135M's shape (9 heads, 3 kv
/// heads): degrees 1 and 3 divide it, 2 and 4 do not.
fn smollm2_shaped(dir: &Path) -> std::path::PathBuf {
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
        "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    });
    std::fs::write(model.join("config.json"), config.to_string()).unwrap();
    model
}

fn create(
    service: &Service,
    name: &str,
    source: &str,
    configs: serde_json::Value,
) -> Result<(), ApiError> {
    let body = serde_json::json!({
        "OptimizationJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/r",
        "ModelSource": {"S3": {"S3Uri": source}},
        "DeploymentInstanceType": "ml.g6.12xlarge",
        "OptimizationConfigs": configs,
        "OutputConfig": {"S3OutputLocation": "s3://out/x/"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    });
    service
        .call(
            Operation::CreateOptimizationJob,
            body.to_string().as_bytes(),
            "us-east-1",
        )
        .map(|_| ())
}

fn shard(degree: &str) -> serde_json::Value {
    serde_json::json!([
        {"ModelQuantizationConfig": {"OverrideEnvironment": {"OPTION_QUANTIZE": "fp8"}}},
        {"ModelShardingConfig": {"OverrideEnvironment": {"OPTION_TENSOR_PARALLEL_DEGREE": degree}}},
    ])
}

fn refused(result: Result<(), ApiError>, needle: &str) {
    let err = result.expect_err("Create must refuse this job");
    assert_eq!(err.type_name(), "ValidationException", "{}", err.message());
    assert!(err.message().contains(needle), "{}", err.message());
}

#[test]
fn bad_option_values_are_refused_at_create_for_any_source() {
    let dir = tempfile::tempdir().unwrap();
    let model = smollm2_shaped(dir.path());
    let service = service(&dir.path().join("data"), dir.path());
    let local = format!("file://{}", model.display());
    for source in ["s3://models/m/", local.as_str()] {
        for degree in ["0", "-2", "abc", "65"] {
            refused(
                create(&service, "bad-degree", source, shard(degree)),
                &format!("OPTION_TENSOR_PARALLEL_DEGREE={degree}"),
            );
        }
        refused(
            create(
                &service,
                "bad-quantize",
                source,
                serde_json::json!([{"ModelQuantizationConfig": {"OverrideEnvironment": {"OPTION_QUANTIZE": "int3"}}}]),
            ),
            "OPTION_QUANTIZE=int3",
        );
    }
    // An S3 model is read by its worker only: a degree valid in itself is accepted here.
    create(&service, "s3-degree-2", "s3://models/m/", shard("2")).unwrap();
}

#[test]
fn a_local_model_is_held_to_its_own_degrees_at_create() {
    let dir = tempfile::tempdir().unwrap();
    let model = smollm2_shaped(dir.path());
    let service = service(&dir.path().join("data"), dir.path());
    let local = format!("file://{}", model.display());
    // 9 heads do not split 2 ways; the message says which degrees would.
    let err = create(&service, "local-degree-2", &local, shard("2")).unwrap_err();
    refused(Err(err.clone()), "OPTION_TENSOR_PARALLEL_DEGREE=2");
    assert!(err.message().contains("[1, 3]"), "{}", err.message());
    // More ranks than the instance's 4 GPUs.
    refused(
        create(&service, "local-degree-8", &local, shard("8")),
        "OPTION_TENSOR_PARALLEL_DEGREE=8",
    );
    // A job-wide degree is held to the model as well, without a sharding pass.
    refused(
        create(
            &service,
            "local-env-degree-2",
            &local,
            serde_json::json!([{"ModelQuantizationConfig": {"OverrideEnvironment": {
                "OPTION_QUANTIZE": "fp8", "OPTION_TENSOR_PARALLEL_DEGREE": "2"}}}]),
        ),
        "OPTION_TENSOR_PARALLEL_DEGREE=2",
    );
    create(&service, "local-degree-3", &local, shard("3")).unwrap();
    // A model the server cannot read is left to its worker to report.
    let missing = format!("file://{}", dir.path().join("no-model").display());
    create(&service, "local-missing", &missing, shard("2")).unwrap();
}
