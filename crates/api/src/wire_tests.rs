//! The wire types against the service model: a fully populated value of each type
//! serializes into JSON that validates against its shape and sets every member the
//! shape defines, all the way down. A misspelt or missing field fails here.

use crate::model::{model, Shape};
use crate::types::*;
use crate::{output_shape, parse_request, validate, ApiError, ValidateOptions};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Asserts that `value` validates as `shape` and that every structure in it (union
/// entries aside) sets exactly the members its shape defines.
fn assert_complete<T: Serialize>(shape: &str, value: &T) {
    let json = serde_json::to_value(value).unwrap();
    validate(shape, &json, &ValidateOptions::default()).unwrap_or_else(|e| panic!("{shape}: {e}"));
    covers(shape, &json, shape);
}

fn covers(shape_name: &str, value: &Value, path: &str) {
    match model().unwrap().shape(shape_name).unwrap() {
        Shape::Structure { members, union, .. } => {
            let object = value.as_object().unwrap();
            if !union {
                let want: BTreeSet<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
                let have: BTreeSet<&str> = object.keys().map(String::as_str).collect();
                assert_eq!(
                    have, want,
                    "{path} ({shape_name}) does not set every member"
                );
            }
            for (name, target) in members {
                if let Some(v) = object.get(name) {
                    covers(target, v, &format!("{path}.{name}"));
                }
            }
        }
        Shape::List { member, .. } => {
            for (i, item) in value.as_array().unwrap().iter().enumerate() {
                covers(member, item, &format!("{path}[{i}]"));
            }
        }
        _ => {}
    }
}

fn container(option: &str) -> ModelContainerConfig {
    ModelContainerConfig {
        image: Some("763104351884.dkr.ecr.us-west-2.amazonaws.com/djl:lmi".into()),
        override_environment: Some([(option.to_string(), "1".to_string())].into()),
    }
}

/// Every union member once, so that each technique's shape is covered.
fn all_configs() -> Vec<OptimizationConfig> {
    vec![
        OptimizationConfig::ModelQuantizationConfig(container("OPTION_QUANTIZE")),
        OptimizationConfig::ModelCompilationConfig(container("OPTION_MAX_INPUT_LEN")),
        OptimizationConfig::ModelShardingConfig(container("OPTION_TENSOR_PARALLEL_DEGREE")),
        OptimizationConfig::ModelSpeculativeDecodingConfig(ModelSpeculativeDecodingConfig {
            technique: ModelSpeculativeDecodingTechnique::Eagle,
            training_data_source: Some(ModelSpeculativeDecodingTrainingDataSource {
                s3_uri: "s3://data/sharegpt/".into(),
                s3_data_type: ModelSpeculativeDecodingS3DataType::ManifestFile,
            }),
        }),
    ]
}

fn full_source() -> OptimizationJobModelSource {
    OptimizationJobModelSource {
        s3: Some(OptimizationJobModelSourceS3 {
            s3_uri: Some("s3://models/m/".into()),
            model_access_config: Some(OptimizationModelAccessConfig { accept_eula: true }),
        }),
        sage_maker_model: Some(OptimizationSageMakerModel {
            model_name: Some("registry-model".into()),
        }),
    }
}

fn full_output() -> OptimizationJobOutputConfig {
    OptimizationJobOutputConfig {
        kms_key_id: Some("alias/key".into()),
        s3_output_location: "s3://out/x/".into(),
        sage_maker_model: Some(OptimizationSageMakerModel {
            model_name: Some("out-model".into()),
        }),
    }
}

fn full_stopping() -> StoppingCondition {
    StoppingCondition {
        max_runtime_in_seconds: Some(3600),
        max_wait_time_in_seconds: Some(7200),
        max_pending_time_in_seconds: Some(1800),
    }
}

fn vpc() -> OptimizationVpcConfig {
    OptimizationVpcConfig {
        security_group_ids: vec!["sg-1".into()],
        subnets: vec!["subnet-1".into()],
    }
}

const ARN: &str = "arn:aws:sagemaker:us-west-2:123456789012:optimization-job/full";
const PLAN: &str = "arn:aws:sagemaker:us-west-2:123456789012:training-plan/a-plan-of-some-length";

#[test]
fn create_request_and_response_cover_their_shapes() {
    let req = CreateOptimizationJobRequest {
        optimization_job_name: "full".into(),
        role_arn: "arn:aws:iam::123456789012:role/R".into(),
        model_source: full_source(),
        deployment_instance_type: "ml.g6e.xlarge".into(),
        max_instance_count: Some(1),
        optimization_environment: Some([("OPTION_A".to_string(), "b".to_string())].into()),
        optimization_configs: all_configs(),
        output_config: full_output(),
        stopping_condition: full_stopping(),
        tags: Some(vec![Tag {
            key: "k".into(),
            value: "v".into(),
        }]),
        vpc_config: Some(vpc()),
        training_plan_arns: Some(vec![PLAN.into()]),
    };
    assert_complete("CreateOptimizationJobRequest", &req);
    let resp = CreateOptimizationJobResponse {
        optimization_job_arn: ARN.into(),
    };
    assert_complete("CreateOptimizationJobResponse", &resp);
}

#[test]
fn describe_response_covers_its_shape() {
    let resp = DescribeOptimizationJobResponse {
        optimization_job_arn: ARN.into(),
        optimization_job_status: OptimizationJobStatus::InProgress,
        optimization_start_time: Some(EpochSeconds(1.7e9)),
        optimization_end_time: Some(EpochSeconds(1.7e9 + 60.0)),
        creation_time: EpochSeconds(1.7e9 - 5.0),
        last_modified_time: EpochSeconds::now(),
        failure_reason: Some("none".into()),
        optimization_job_name: "full".into(),
        model_source: full_source(),
        optimization_environment: Some(Default::default()),
        deployment_instance_type: "ml.g5.xlarge".into(),
        max_instance_count: Some(2),
        optimization_configs: all_configs(),
        output_config: full_output(),
        optimization_output: Some(OptimizationOutput {
            recommended_inference_image: Some("djl:lmi".into()),
        }),
        role_arn: "arn:aws:iam::123456789012:role/R".into(),
        stopping_condition: full_stopping(),
        vpc_config: Some(vpc()),
        training_plan_arns: Some(vec![PLAN.into()]),
    };
    assert_eq!(
        output_shape("DescribeOptimizationJob").unwrap(),
        "DescribeOptimizationJobResponse"
    );
    assert_complete("DescribeOptimizationJobResponse", &resp);
    let json = serde_json::to_value(&resp).unwrap();
    assert_eq!(json["OptimizationJobStatus"], "INPROGRESS");
    assert_eq!(json["CreationTime"], json!(1.7e9 - 5.0));
    let back: DescribeOptimizationJobResponse = serde_json::from_value(json).unwrap();
    assert_eq!(back, resp);
}

#[test]
fn list_request_and_response_cover_their_shapes() {
    let req = ListOptimizationJobsRequest {
        next_token: Some("t".into()),
        max_results: Some(10),
        creation_time_after: Some(EpochSeconds(1.0)),
        creation_time_before: Some(EpochSeconds(2.0)),
        last_modified_time_after: Some(EpochSeconds(1.0)),
        last_modified_time_before: Some(EpochSeconds(2.0)),
        optimization_contains: Some("Quantization".into()),
        name_contains: Some("llama".into()),
        status_equals: Some(OptimizationJobStatus::Completed),
        sort_by: Some(ListOptimizationJobsSortBy::CreationTime),
        sort_order: Some(SortOrder::Descending),
    };
    assert_complete("ListOptimizationJobsRequest", &req);
    let quant = &all_configs()[0];
    let summary = OptimizationJobSummary {
        optimization_job_name: "full".into(),
        optimization_job_arn: ARN.into(),
        creation_time: EpochSeconds(1.0),
        optimization_job_status: OptimizationJobStatus::Stopped,
        optimization_start_time: Some(EpochSeconds(2.0)),
        optimization_end_time: Some(EpochSeconds(3.0)),
        last_modified_time: Some(EpochSeconds(3.0)),
        deployment_instance_type: "ml.g6.xlarge".into(),
        max_instance_count: Some(1),
        optimization_types: vec![quant.optimization_type().into()],
    };
    assert_eq!(summary.optimization_types, vec!["Quantization".to_string()]);
    let resp = ListOptimizationJobsResponse {
        optimization_job_summaries: vec![summary],
        next_token: Some("next".into()),
    };
    assert_complete("ListOptimizationJobsResponse", &resp);
}

#[test]
fn name_only_requests() {
    let req = DescribeOptimizationJobRequest {
        optimization_job_name: "full".into(),
    };
    for shape in [
        "DescribeOptimizationJobRequest",
        "StopOptimizationJobRequest",
        "DeleteOptimizationJobRequest",
    ] {
        assert_complete(shape, &req);
    }
}

#[test]
fn parse_request_by_operation() {
    let list: ListOptimizationJobsRequest = parse_request("ListOptimizationJobs", b"{}").unwrap();
    assert_eq!(list, ListOptimizationJobsRequest::default());
    let body = br#"{"MaxResults": 5, "SortBy": "Name", "StatusEquals": "FAILED", "CreationTimeAfter": 1700000000.5}"#;
    let list: ListOptimizationJobsRequest = parse_request("ListOptimizationJobs", body).unwrap();
    assert_eq!(list.status_equals, Some(OptimizationJobStatus::Failed));
    assert_eq!(
        list.creation_time_after,
        Some(EpochSeconds(1_700_000_000.5))
    );
    let err = parse_request::<ListOptimizationJobsRequest>(
        "ListOptimizationJobs",
        br#"{"MaxResults": 500, "SortOrder": "Up", "CreationTimeAfter": "yesterday"}"#,
    )
    .unwrap_err();
    let msg = err.message();
    assert!(msg.starts_with("3 validation errors detected"), "{msg}");
    assert!(msg.contains("Value '500' at 'maxResults'"), "{msg}");
    assert!(msg.contains("Value 'Up' at 'sortOrder' failed to satisfy constraint: Member must satisfy enum value set: [Ascending, Descending]"), "{msg}");
    assert!(
        msg.contains("Value 'yesterday' at 'creationTimeAfter'"),
        "{msg}"
    );
    let stop: StopOptimizationJobRequest =
        parse_request("StopOptimizationJob", br#"{"OptimizationJobName": "j-1"}"#).unwrap();
    assert_eq!(stop.optimization_job_name, "j-1");
    let err =
        parse_request::<DeleteOptimizationJobRequest>("DeleteOptimizationJob", b"{}").unwrap_err();
    assert!(err
        .message()
        .contains("Value null at 'optimizationJobName'"));
    let err = parse_request::<Value>("CreateTrainingJob", b"{}").unwrap_err();
    assert_eq!(
        err,
        ApiError::UnknownOperation("Unknown operation CreateTrainingJob".into())
    );
}

#[test]
fn status_spellings() {
    let all = [
        (OptimizationJobStatus::InProgress, "INPROGRESS"),
        (OptimizationJobStatus::Completed, "COMPLETED"),
        (OptimizationJobStatus::Failed, "FAILED"),
        (OptimizationJobStatus::Starting, "STARTING"),
        (OptimizationJobStatus::Stopping, "STOPPING"),
        (OptimizationJobStatus::Stopped, "STOPPED"),
    ];
    for (status, wire) in all {
        assert_eq!(serde_json::to_value(status).unwrap(), json!(wire));
    }
    assert!(OptimizationJobStatus::Stopped.is_terminal());
    assert!(!OptimizationJobStatus::Stopping.is_terminal());
}
