//! CreateOptimizationJob requests, end to end: bytes -> validation -> typed request ->
//! JobSpec. Every broken request asserts the error type and that the message names
//! the member path and the offending value.

use serde_json::{json, Value};
use std::path::PathBuf;
use temper_api::{
    parse_create_request, parse_create_request_with, to_job_spec, ApiError, ConvertOptions,
    CreateOptimizationJobRequest,
};
use temper_core::spec::{JobSpec, Location, Optimization, Stopping, Technique, TrainingData};

/// The boto3 example from the task: an FP8 quantization of SmolLM2 for a g6.12xlarge.
fn example() -> Value {
    json!({
        "OptimizationJobName": "llama-fp8",
        "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
        "ModelSource": {"S3": {"S3Uri": "s3://models/smollm2/"}},
        "DeploymentInstanceType": "ml.g6.12xlarge",
        "OptimizationConfigs": [
            {"ModelQuantizationConfig": {"OverrideEnvironment": {"OPTION_QUANTIZE": "fp8"}}}
        ],
        "OutputConfig": {"S3OutputLocation": "s3://out/llama-fp8/"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600}
    })
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn strict(v: &Value) -> Result<CreateOptimizationJobRequest, ApiError> {
    parse_create_request(&bytes(v))
}

fn local() -> ConvertOptions {
    ConvertOptions {
        allow_local_paths: true,
    }
}

/// Parses and converts, as the CLI does with `opts`.
fn convert(v: &Value, opts: &ConvertOptions) -> Result<JobSpec, ApiError> {
    let req = parse_create_request_with(&bytes(v), opts)?;
    to_job_spec(&req, opts)
}

/// Asserts a ValidationException whose message holds every one of `needles`.
fn assert_invalid(result: Result<impl std::fmt::Debug, ApiError>, needles: &[&str]) -> String {
    let err = result.expect_err("the request should be refused");
    assert_eq!(err.type_name(), "ValidationException", "{err}");
    for needle in needles {
        assert!(
            err.message().contains(needle),
            "`{needle}` missing from: {err}"
        );
    }
    err.message().to_string()
}

/// Sets the member at a `/`-separated JSON pointer (its parent must exist).
fn with(mut v: Value, pointer: &str, new: Value) -> Value {
    let (parent, member) = pointer.rsplit_once('/').unwrap();
    let parent = if parent.is_empty() {
        &mut v
    } else {
        v.pointer_mut(parent).unwrap()
    };
    match parent {
        Value::Array(items) => items[member.parse::<usize>().unwrap()] = new,
        other => {
            other
                .as_object_mut()
                .unwrap()
                .insert(member.to_string(), new);
        }
    }
    v
}

fn without(mut v: Value, parent: &str, member: &str) -> Value {
    let parent = if parent.is_empty() {
        &mut v
    } else {
        v.pointer_mut(parent).unwrap()
    };
    parent.as_object_mut().unwrap().remove(member).unwrap();
    v
}

fn configs(list: Value) -> Value {
    with(example(), "/OptimizationConfigs", list)
}

#[test]
fn the_example_converts_into_the_expected_job() {
    let spec = convert(&example(), &ConvertOptions::default()).unwrap();
    let expected = JobSpec {
        name: "llama-fp8".into(),
        source: Location::S3 {
            bucket: "models".into(),
            key: "smollm2/".into(),
        },
        output: Location::S3 {
            bucket: "out".into(),
            key: "llama-fp8/".into(),
        },
        instance_type: "ml.g6.12xlarge".into(),
        optimizations: vec![Optimization::new(
            Technique::Quantization,
            [("OPTION_QUANTIZE".to_string(), "fp8".to_string())].into(),
        )],
        environment: Default::default(),
        stopping: Stopping {
            max_runtime_secs: Some(3600),
            max_pending_secs: None,
        },
        kms_key_id: None,
        role_arn: Some("arn:aws:iam::123456789012:role/SageMakerRole".into()),
        tags: vec![],
        overwrite: false,
    };
    assert_eq!(spec, expected);
}

#[test]
fn every_member_maps_into_the_job() {
    let full = json!({
        "OptimizationJobName": "eagle-job-1",
        "RoleArn": "arn:aws:iam::123456789012:role/service-role/Opt",
        "ModelSource": {"S3": {"S3Uri": "s3://models/llama/", "ModelAccessConfig": {"AcceptEula": true}}},
        "DeploymentInstanceType": "ml.p5.48xlarge",
        "MaxInstanceCount": 1,
        "OptimizationEnvironment": {"OPTION_MAX_MODEL_LEN": "2048"},
        "OptimizationConfigs": [
            {"ModelSpeculativeDecodingConfig": {"Technique": "EAGLE",
                "TrainingDataSource": {"S3Uri": "s3://data/sharegpt/", "S3DataType": "S3Prefix"}}},
            {"ModelQuantizationConfig": {"Image": "763104351884.dkr.ecr.us-west-2.amazonaws.com/djl-inference:0.31.0-lmi13.0.0-cu124",
                "OverrideEnvironment": {"OPTION_QUANTIZE": "fp8", "OPTION_FP8_SCHEME": "FP8_DYNAMIC"}}}
        ],
        "OutputConfig": {"S3OutputLocation": "s3://out/eagle/", "KmsKeyId": "arn:aws:kms:us-west-2:123456789012:key/abc-1"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400, "MaxWaitTimeInSeconds": 90000, "MaxPendingTimeInSeconds": 7200},
        "Tags": [{"Key": "team", "Value": "ml ops"}, {"Key": "cost-center", "Value": ""}],
        "VpcConfig": {"SecurityGroupIds": ["sg-0123"], "Subnets": ["subnet-1", "subnet-2"]},
        "TrainingPlanArns": ["arn:aws:sagemaker:us-west-2:123456789012:training-plan/plan-for-eagle-1"]
    });
    let spec = convert(&full, &ConvertOptions::default()).unwrap();
    assert_eq!(spec.name, "eagle-job-1");
    assert_eq!(spec.instance_type, "ml.p5.48xlarge");
    assert_eq!(spec.environment["OPTION_MAX_MODEL_LEN"], "2048");
    assert_eq!(
        spec.kms_key_id.as_deref(),
        Some("arn:aws:kms:us-west-2:123456789012:key/abc-1")
    );
    assert_eq!(spec.stopping.max_runtime_secs, Some(86400));
    assert_eq!(spec.stopping.max_pending_secs, Some(7200));
    assert_eq!(
        spec.tags,
        vec![
            ("team".into(), "ml ops".into()),
            ("cost-center".into(), "".into())
        ]
    );
    let [eagle, quant] = spec.optimizations.as_slice() else {
        panic!("expected two optimizations: {:?}", spec.optimizations)
    };
    assert_eq!(eagle.technique, Technique::SpeculativeDecoding);
    assert_eq!(eagle.speculative_technique.as_deref(), Some("EAGLE"));
    assert_eq!(
        eagle.training_data,
        Some(TrainingData {
            location: Location::S3 {
                bucket: "data".into(),
                key: "sharegpt/".into()
            },
            data_type: "S3Prefix".into(),
        })
    );
    assert_eq!(quant.technique, Technique::Quantization);
    assert!(quant.image.as_deref().unwrap().contains("djl-inference"));
    assert_eq!(quant.env["OPTION_FP8_SCHEME"], "FP8_DYNAMIC");
    // The override wins over the job-wide environment.
    assert_eq!(spec.options_for(quant)["OPTION_QUANTIZE"], "fp8");
    assert_eq!(spec.options_for(quant)["OPTION_MAX_MODEL_LEN"], "2048");
}

#[test]
fn typed_request_round_trips_to_the_same_json() {
    let req = strict(&example()).unwrap();
    assert_eq!(serde_json::to_value(&req).unwrap(), example());
}

#[test]
fn name_pattern_and_length() {
    for bad in ["bad_name", "-x", "x-", "bad name!"] {
        let msg = assert_invalid(
            strict(&with(example(), "/OptimizationJobName", json!(bad))),
            &[&format!("Value '{bad}' at 'optimizationJobName'")],
        );
        assert!(msg.starts_with("1 validation error detected: "), "{msg}");
        assert!(msg.ends_with(
            "failed to satisfy constraint: Member must satisfy regular expression pattern: \
             [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
        ));
    }
    let long = "a".repeat(64);
    let msg = assert_invalid(
        strict(&with(example(), "/OptimizationJobName", json!(long))),
        &[&format!("Value '{long}' at 'optimizationJobName'")],
    );
    // Too long and, through the {0,62} repetition, off the pattern too: AWS lists both.
    assert!(msg.starts_with("2 validation errors detected: "), "{msg}");
    assert!(msg.contains("Member must have length less than or equal to 63"));
    assert!(strict(&with(
        example(),
        "/OptimizationJobName",
        json!("a".repeat(63))
    ))
    .is_ok());
    assert_invalid(
        strict(&with(example(), "/OptimizationJobName", json!(""))),
        &[
            "Value '' at 'optimizationJobName'",
            "Member must have length greater than or equal to 1",
        ],
    );
}

#[test]
fn unknown_instance_type() {
    let msg = assert_invalid(
        strict(&with(
            example(),
            "/DeploymentInstanceType",
            json!("ml.c5.xlarge"),
        )),
        &[
            "Value 'ml.c5.xlarge' at 'deploymentInstanceType'",
            "Member must satisfy enum value set: [ml.p4d.24xlarge, ml.p4de.24xlarge",
        ],
    );
    assert!(msg.contains("ml.g6e.48xlarge"));
    assert!(msg.contains("ml.trn1n.32xlarge, "));
    assert!(msg.ends_with("ml.g7.48xlarge]"), "{msg}");
}

#[test]
fn each_required_member_missing() {
    let top = [
        ("OptimizationJobName", "optimizationJobName"),
        ("RoleArn", "roleArn"),
        ("ModelSource", "modelSource"),
        ("DeploymentInstanceType", "deploymentInstanceType"),
        ("OptimizationConfigs", "optimizationConfigs"),
        ("OutputConfig", "outputConfig"),
        ("StoppingCondition", "stoppingCondition"),
    ];
    for (member, path) in top {
        let msg = assert_invalid(
            strict(&without(example(), "", member)),
            &[&format!(
                "Value null at '{path}' failed to satisfy constraint: Member must not be null"
            )],
        );
        assert!(msg.starts_with("1 validation error detected"), "{msg}");
    }
    assert_invalid(
        strict(&without(example(), "/OutputConfig", "S3OutputLocation")),
        &[
            "Value null at 'outputConfig.s3OutputLocation'",
            "Member must not be null",
        ],
    );
    // JSON null counts as missing, as it does for AWS.
    assert_invalid(
        strict(&with(example(), "/RoleArn", Value::Null)),
        &["Value null at 'roleArn'"],
    );
    let spec = configs(
        json!([{"ModelSpeculativeDecodingConfig": {"TrainingDataSource": {"S3Uri": "s3://d/x"}}}]),
    );
    let msg = assert_invalid(
        strict(&spec),
        &[
            "Value null at 'optimizationConfigs.1.member.modelSpeculativeDecodingConfig.technique'",
            "Value null at 'optimizationConfigs.1.member.modelSpeculativeDecodingConfig.trainingDataSource.s3DataType'",
        ],
    );
    assert!(msg.starts_with("2 validation errors detected"), "{msg}");
    let tags = with(example(), "/Tags", json!([{"Key": "k"}]));
    assert_invalid(strict(&tags), &["Value null at 'tags.1.member.value'"]);
}

#[test]
fn all_violations_are_reported_together() {
    let v = without(
        with(example(), "/OptimizationJobName", json!("bad_name")),
        "",
        "RoleArn",
    );
    let msg = assert_invalid(
        strict(&v),
        &["'optimizationJobName'", "Value null at 'roleArn'"],
    );
    assert!(
        msg.starts_with("2 validation errors detected: Value 'bad_name'"),
        "{msg}"
    );
    assert!(msg.contains("{0,62}; Value null at 'roleArn'"), "{msg}");
}

#[test]
fn optimization_config_is_a_union() {
    let two = configs(json!([{
        "ModelQuantizationConfig": {"OverrideEnvironment": {"OPTION_QUANTIZE": "fp8"}},
        "ModelShardingConfig": {"OverrideEnvironment": {"OPTION_TENSOR_PARALLEL_DEGREE": "2"}}
    }]));
    assert_invalid(
        strict(&two),
        &[
            "Value '{ModelQuantizationConfig={OverrideEnvironment={OPTION_QUANTIZE=fp8}}, ModelShardingConfig=",
            "at 'optimizationConfigs.1.member' failed to satisfy constraint: Member must set exactly one of \
             [ModelQuantizationConfig, ModelCompilationConfig, ModelShardingConfig, ModelSpeculativeDecodingConfig]; \
             found 2: [ModelQuantizationConfig, ModelShardingConfig]",
        ],
    );
    assert_invalid(
        strict(&configs(json!([{"ModelQuantizationConfig": {}}, {}]))),
        &["Value '{}' at 'optimizationConfigs.2.member'", "found none"],
    );
}

#[test]
fn null_members_count_as_unset() {
    let v =
        configs(json!([{"ModelQuantizationConfig": {"Image": null}, "ModelShardingConfig": null}]));
    let req = strict(&with(v, "/Tags", Value::Null)).unwrap();
    assert_eq!(
        req.optimization_configs[0].member_name(),
        "ModelQuantizationConfig"
    );
    assert_eq!(req.optimization_configs[0].container().unwrap().image, None);
    assert_eq!(req.tags, None);
}

#[test]
fn list_and_map_sizes() {
    let eleven: Vec<Value> = (0..11)
        .map(|_| json!({"ModelQuantizationConfig": {}}))
        .collect();
    assert_invalid(
        strict(&configs(Value::from(eleven))),
        &["at 'optimizationConfigs' failed to satisfy constraint: Member must have length less than or equal to 10"],
    );
    let env: serde_json::Map<String, Value> = (0..26)
        .map(|i| (format!("OPTION_X{i}"), json!("1")))
        .collect();
    assert_invalid(
        strict(&with(example(), "/OptimizationEnvironment", Value::Object(env))),
        &[
            "Value '{OPTION_X0=1, OPTION_X1=1,",
            "at 'optimizationEnvironment' failed to satisfy constraint: Member must have length less than or equal to 25",
        ],
    );
    let tags: Vec<Value> = (0..51)
        .map(|i| json!({"Key": format!("k{i}"), "Value": "v"}))
        .collect();
    assert_invalid(
        strict(&with(example(), "/Tags", Value::from(tags))),
        &["Value '[{Key=k0, Value=v},", "at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50"],
    );
}

#[test]
fn map_keys_and_values_are_checked() {
    let long = "v".repeat(257);
    let env = json!({"OPTION_QUANTIZE": long});
    let path = "/OptimizationConfigs/0/ModelQuantizationConfig/OverrideEnvironment";
    assert_invalid(
        strict(&with(example(), path, env)),
        &[
            &format!("Value '{{OPTION_QUANTIZE={long}}}'"),
            "at 'optimizationConfigs.1.member.modelQuantizationConfig.overrideEnvironment' \
             failed to satisfy constraint: Map value must satisfy constraint: \
             [Member must have length less than or equal to 256]",
        ],
    );
    assert!(strict(&with(
        example(),
        path,
        json!({"OPTION_QUANTIZE": "v".repeat(256)})
    ))
    .is_ok());
    assert_invalid(
        strict(&with(example(), "/OptimizationEnvironment", json!({"  ": "x"}))),
        &[
            "Value '{  =x}' at 'optimizationEnvironment'",
            "Map keys must satisfy constraint: [Member must have length less than or equal to 256, \
             Member must satisfy regular expression pattern: (?!\\s*$).+]",
        ],
    );
    assert_invalid(
        strict(&with(
            example(),
            "/OptimizationEnvironment",
            json!({"N": 3}),
        )),
        &[
            "Value '3' at 'optimizationEnvironment.N'",
            "Member must be a string, not a number",
        ],
    );
}

#[test]
fn role_arn_and_other_patterns() {
    for bad in [
        "arn:aws:iam::12345:role/R",
        "not-an-arn-at-all-xxxxxxx",
        "arn:aws:iam::123456789012:user/someone",
    ] {
        assert_invalid(
            strict(&with(example(), "/RoleArn", json!(bad))),
            &[
                &format!("Value '{bad}' at 'roleArn'"),
                "Member must satisfy regular expression pattern: arn:aws[a-z\\-]*:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+",
            ],
        );
    }
    assert_invalid(
        strict(&with(example(), "/RoleArn", json!("arn:aws:iam::1:role"))),
        &["Member must have length greater than or equal to 20"],
    );
    let tags = with(example(), "/Tags", json!([{"Key": "k", "Value": "bad!"}]));
    assert_invalid(strict(&tags), &["Value 'bad!' at 'tags.1.member.value'"]);
    let out = with(
        example(),
        "/OutputConfig/S3OutputLocation",
        json!("gs://bucket/x"),
    );
    assert_invalid(
        strict(&out),
        &[
            "Value 'gs://bucket/x' at 'outputConfig.s3OutputLocation'",
            "(https|s3)://([^/]+)/?(.*)",
        ],
    );
}

#[test]
fn integer_bounds() {
    assert_invalid(
        strict(&with(
            example(),
            "/StoppingCondition/MaxRuntimeInSeconds",
            json!(0),
        )),
        &[
            "Value '0' at 'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: \
           Member must have value greater than or equal to 1",
        ],
    );
    assert_invalid(
        strict(&with(
            example(),
            "/StoppingCondition",
            json!({"MaxPendingTimeInSeconds": 60}),
        )),
        &[
            "Value '60' at 'stoppingCondition.maxPendingTimeInSeconds'",
            "greater than or equal to 1800",
        ],
    );
    assert_invalid(
        strict(&with(example(), "/MaxInstanceCount", json!(0))),
        &["Value '0' at 'maxInstanceCount'"],
    );
}

#[test]
fn wrong_json_types() {
    assert_invalid(
        strict(&with(example(), "/StoppingCondition/MaxRuntimeInSeconds", json!("3600"))),
        &["Value '3600' at 'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: \
           Member must be a whole number that fits in 32 bits, not a string"],
    );
    assert_invalid(
        strict(&with(
            example(),
            "/StoppingCondition/MaxRuntimeInSeconds",
            json!(3600.5),
        )),
        &["Value '3600.5'", "whole number"],
    );
    assert_invalid(
        strict(&with(
            example(),
            "/OptimizationConfigs",
            json!({"ModelQuantizationConfig": {}}),
        )),
        &[
            "at 'optimizationConfigs'",
            "Member must be an array, not an object",
        ],
    );
    assert_invalid(
        strict(&with(example(), "/OptimizationJobName", json!(7))),
        &[
            "Value '7' at 'optimizationJobName'",
            "Member must be a string, not a number",
        ],
    );
    let eula = with(
        example(),
        "/ModelSource/S3/ModelAccessConfig",
        json!({"AcceptEula": "yes"}),
    );
    assert_invalid(
        strict(&eula),
        &[
            "Value 'yes' at 'modelSource.s3.modelAccessConfig.acceptEula'",
            "a boolean",
        ],
    );
    assert_invalid(
        parse_create_request(b"[1, 2]"),
        &["must be a JSON object; got an array"],
    );
}

#[test]
fn malformed_json() {
    assert_invalid(
        parse_create_request(br#"{"OptimizationJobName": "x",}"#),
        &["The request body is not valid JSON", "line 1 column"],
    );
    assert_invalid(parse_create_request(b""), &["The request body is empty"]);
    assert_invalid(parse_create_request(b"{\"a\": tru"), &["not valid JSON"]);
}

#[test]
fn unknown_members_are_refused() {
    let typo = with(
        example(),
        "/ModelSource",
        json!({"S3": {"S3URI": "s3://m/x"}}),
    );
    assert_invalid(
        strict(&typo),
        &[
            "Value 's3://m/x' at 'modelSource.s3.s3URI'",
            "Member 'S3URI' is not defined in OptimizationJobModelSourceS3; its members are [S3Uri, ModelAccessConfig]",
        ],
    );
    let mut extra = example();
    extra["Extra"] = json!(1);
    assert_invalid(
        strict(&extra),
        &[
            "at 'extra'",
            "Member 'Extra' is not defined in CreateOptimizationJobRequest",
        ],
    );
}

#[test]
fn local_paths_only_when_allowed() {
    let v = with(
        with(example(), "/ModelSource/S3/S3Uri", json!("/models/smollm2")),
        "/OutputConfig/S3OutputLocation",
        json!("file:///tmp/out/llama-fp8"),
    );
    let spec = convert(&v, &local()).unwrap();
    assert_eq!(
        spec.source,
        Location::Local(PathBuf::from("/models/smollm2"))
    );
    assert_eq!(
        spec.output,
        Location::Local(PathBuf::from("/tmp/out/llama-fp8"))
    );
    let msg = assert_invalid(
        convert(&v, &ConvertOptions::default()),
        &[
            "Value '/models/smollm2' at 'modelSource.s3.s3Uri'",
            "Value 'file:///tmp/out/llama-fp8' at 'outputConfig.s3OutputLocation'",
            "Member must satisfy regular expression pattern: (https|s3)://([^/]+)/?(.*)",
        ],
    );
    assert!(msg.starts_with("2 validation errors"), "{msg}");
    // The relaxation is for URI members only: a bad name stays bad.
    let bad_name = with(v.clone(), "/OptimizationJobName", json!("a_b"));
    assert_invalid(convert(&bad_name, &local()), &["'optimizationJobName'"]);
    // A relative path and s3:// still work with local paths allowed.
    let rel = with(example(), "/ModelSource/S3/S3Uri", json!("models/smollm2"));
    assert_eq!(
        convert(&rel, &local()).unwrap().source,
        Location::Local("models/smollm2".into())
    );
    assert!(convert(&example(), &local()).is_ok());
    // Other schemes are not local paths.
    let gs = with(example(), "/ModelSource/S3/S3Uri", json!("gs://b/m"));
    assert_invalid(
        convert(&gs, &local()),
        &[
            "Value 'gs://b/m' at 'modelSource.s3.s3Uri' failed to satisfy constraint: \
           Member must satisfy regular expression pattern",
        ],
    );
    let empty = with(example(), "/ModelSource/S3/S3Uri", json!(""));
    assert_invalid(
        convert(&empty, &local()),
        &["Value '' at 'modelSource.s3.s3Uri' is not a usable location"],
    );
}

#[test]
fn local_training_data_when_allowed() {
    let v = configs(
        json!([{"ModelSpeculativeDecodingConfig": {"Technique": "EAGLE",
        "TrainingDataSource": {"S3Uri": "data/sharegpt.jsonl", "S3DataType": "ManifestFile"}}}]),
    );
    let spec = convert(&v, &local()).unwrap();
    let data = spec.optimizations[0].training_data.clone().unwrap();
    assert_eq!(data.location, Location::Local("data/sharegpt.jsonl".into()));
    assert_eq!(data.data_type, "ManifestFile");
    assert_invalid(
        convert(&v, &ConvertOptions::default()),
        &["Value 'data/sharegpt.jsonl' at 'optimizationConfigs.1.member.modelSpeculativeDecodingConfig.trainingDataSource.s3Uri'"],
    );
}

#[test]
fn https_locations_are_refused() {
    let v = with(
        example(),
        "/ModelSource/S3/S3Uri",
        json!("https://models.example/smollm2/"),
    );
    // The service model allows https://; temper does not.
    assert!(strict(&v).is_ok());
    assert_invalid(
        convert(&v, &local()),
        &[
            "Value 'https://models.example/smollm2/' at 'modelSource.s3.s3Uri' is not supported",
            "not https://",
        ],
    );
}

#[test]
fn sagemaker_model_registry_is_refused() {
    let v = with(
        example(),
        "/ModelSource",
        json!({"SageMakerModel": {"ModelName": "my-model"}}),
    );
    let req = strict(&v).unwrap();
    assert_invalid(
        to_job_spec(&req, &ConvertOptions::default()),
        &[
            "Value 'my-model' at 'modelSource.sageMakerModel' is not supported",
            "no SageMaker model registry",
        ],
    );
    let out = with(
        example(),
        "/OutputConfig/SageMakerModel",
        json!({"ModelName": "out-model"}),
    );
    assert_invalid(
        convert(&out, &ConvertOptions::default()),
        &["Value 'out-model' at 'outputConfig.sageMakerModel' is not supported"],
    );
    let none = with(example(), "/ModelSource", json!({}));
    assert_invalid(
        convert(&none, &ConvertOptions::default()),
        &["Value null at 'modelSource.s3.s3Uri'"],
    );
}

#[test]
fn programmatic_requests_are_validated_too() {
    let mut req = strict(&example()).unwrap();
    req.optimization_job_name = "not valid".into();
    assert_invalid(
        to_job_spec(&req, &ConvertOptions::default()),
        &["Value 'not valid' at 'optimizationJobName'"],
    );
}
