//! Wire types of the inference-recommendation operations (CreateInferenceRecommendationsJob,
//! Describe, List, ListInferenceRecommendationsJobSteps, Stop), member for member as the
//! service model defines them, with the same conventions as [`crate::types`]. Members temper
//! refuses (model packages, serverless endpoints, VPCs, existing endpoints) are still
//! modelled, so that [`crate::recommendation_rules`] can name them in its refusals.

use crate::types::{EpochSeconds, SortOrder, Tag};
use serde::{Deserialize, Serialize};

/// `RecommendationJobType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecommendationJobType {
    /// Instance recommendations from a model of each candidate instance, fitted to what was
    /// measured on this host.
    Default,
    /// A real load test of every endpoint configuration on this host.
    Advanced,
}

/// `RecommendationJobStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecommendationJobStatus {
    Pending,
    InProgress,
    Completed,
    Failed,
    Stopping,
    Stopped,
    Deleting,
    Deleted,
}

/// `CreateInferenceRecommendationsJobRequest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateInferenceRecommendationsJobRequest {
    pub job_name: String,
    pub job_type: RecommendationJobType,
    pub role_arn: String,
    pub input_config: RecommendationJobInputConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_conditions: Option<RecommendationJobStoppingConditions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_config: Option<RecommendationJobOutputConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
}

/// `CreateInferenceRecommendationsJobResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateInferenceRecommendationsJobResponse {
    pub job_arn: String,
}

/// `RecommendationJobInputConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecommendationJobInputConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_package_version_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_duration_in_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_pattern: Option<TrafficPattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_limit: Option<RecommendationJobResourceLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_configurations: Option<Vec<EndpointInputConfiguration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_kms_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_config: Option<RecommendationJobContainerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<EndpointInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_config: Option<serde_json::Value>,
}

/// `TrafficPattern`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TrafficPattern {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_type: Option<TrafficType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<Vec<Phase>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stairs: Option<Stairs>,
}

/// `TrafficType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TrafficType {
    Phases,
    Stairs,
}

/// `Phase`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Phase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_number_of_users: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn_rate: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_in_seconds: Option<i32>,
}

/// `Stairs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Stairs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_in_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_steps: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_per_step: Option<i32>,
}

/// `RecommendationJobResourceLimit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecommendationJobResourceLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_number_of_tests: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_of_tests: Option<i32>,
}

/// `EndpointInputConfiguration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInputConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serverless_config: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_specification_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_parameter_ranges: Option<EnvironmentParameterRanges>,
}

/// `EnvironmentParameterRanges`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnvironmentParameterRanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categorical_parameter_ranges: Option<Vec<CategoricalParameter>>,
}

/// `CategoricalParameter`: an environment variable and the values to sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CategoricalParameter {
    pub name: String,
    pub value: Vec<String>,
}

/// `RecommendationJobContainerConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecommendationJobContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_config: Option<RecommendationJobPayloadConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nearest_model_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_instance_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_endpoint_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_input_config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_response_mime_types: Option<Vec<String>>,
}

/// `RecommendationJobPayloadConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecommendationJobPayloadConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_payload_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_content_types: Option<Vec<String>>,
}

/// `EndpointInfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_name: Option<String>,
}

/// `RecommendationJobStoppingConditions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecommendationJobStoppingConditions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_invocations: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_latency_thresholds: Option<Vec<ModelLatencyThreshold>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat_invocations: Option<FlatInvocations>,
}

/// `ModelLatencyThreshold`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ModelLatencyThreshold {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_in_milliseconds: Option<i32>,
}

/// `FlatInvocations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlatInvocations {
    Continue,
    Stop,
}

/// `RecommendationJobOutputConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecommendationJobOutputConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiled_output_config: Option<RecommendationJobCompiledOutputConfig>,
}

/// `RecommendationJobCompiledOutputConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecommendationJobCompiledOutputConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_output_uri: Option<String>,
}

/// `DescribeInferenceRecommendationsJobRequest`; Stop takes the same single member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeInferenceRecommendationsJobRequest {
    pub job_name: String,
}

/// `DescribeInferenceRecommendationsJobResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeInferenceRecommendationsJobResponse {
    pub job_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_description: Option<String>,
    pub job_type: RecommendationJobType,
    pub job_arn: String,
    pub role_arn: String,
    pub status: RecommendationJobStatus,
    pub creation_time: EpochSeconds,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<EpochSeconds>,
    pub last_modified_time: EpochSeconds,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    pub input_config: RecommendationJobInputConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_conditions: Option<RecommendationJobStoppingConditions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_recommendations: Option<Vec<InferenceRecommendation>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_performances: Option<Vec<serde_json::Value>>,
}

/// `InferenceRecommendation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InferenceRecommendation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommendation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<RecommendationMetrics>,
    pub endpoint_configuration: EndpointOutputConfiguration,
    pub model_configuration: ModelConfiguration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_end_time: Option<EpochSeconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_start_time: Option<EpochSeconds>,
}

/// `RecommendationMetrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecommendationMetrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_hour: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_inference: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_invocations: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_latency: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_utilization: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_utilization: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_setup_time: Option<i32>,
}

/// `EndpointOutputConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointOutputConfiguration {
    pub endpoint_name: String,
    pub variant_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_instance_count: Option<i32>,
}

/// `ModelConfiguration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ModelConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_specification_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_parameters: Option<Vec<EnvironmentParameter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compilation_job_name: Option<String>,
}

/// `EnvironmentParameter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnvironmentParameter {
    pub key: String,
    pub value_type: String,
    pub value: String,
}

/// `ListInferenceRecommendationsJobsRequest`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListInferenceRecommendationsJobsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time_after: Option<EpochSeconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time_before: Option<EpochSeconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_time_after: Option<EpochSeconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_time_before: Option<EpochSeconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_equals: Option<RecommendationJobStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_by: Option<ListInferenceRecommendationsJobsSortBy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_order: Option<SortOrder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name_equals: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_package_version_arn_equals: Option<String>,
}

/// `ListInferenceRecommendationsJobsSortBy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListInferenceRecommendationsJobsSortBy {
    Name,
    CreationTime,
    Status,
}

/// `InferenceRecommendationsJob`: one job in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InferenceRecommendationsJob {
    pub job_name: String,
    pub job_description: String,
    pub job_type: RecommendationJobType,
    pub job_arn: String,
    pub status: RecommendationJobStatus,
    pub creation_time: EpochSeconds,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<EpochSeconds>,
    pub role_arn: String,
    pub last_modified_time: EpochSeconds,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_payload_url: Option<String>,
}

/// `ListInferenceRecommendationsJobsResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListInferenceRecommendationsJobsResponse {
    pub inference_recommendations_jobs: Vec<InferenceRecommendationsJob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `ListInferenceRecommendationsJobStepsRequest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListInferenceRecommendationsJobStepsRequest {
    pub job_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RecommendationJobStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `InferenceRecommendationsJobStep`: one benchmark (one endpoint configuration's load test).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InferenceRecommendationsJobStep {
    pub step_type: String,
    pub job_name: String,
    pub status: RecommendationJobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_benchmark: Option<RecommendationJobInferenceBenchmark>,
}

/// `RecommendationJobInferenceBenchmark`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecommendationJobInferenceBenchmark {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<RecommendationMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_metrics: Option<InferenceMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_configuration: Option<EndpointOutputConfiguration>,
    pub model_configuration: ModelConfiguration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_end_time: Option<EpochSeconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_start_time: Option<EpochSeconds>,
}

/// `InferenceMetrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InferenceMetrics {
    pub max_invocations: i32,
    pub model_latency: i32,
}

/// `ListInferenceRecommendationsJobStepsResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListInferenceRecommendationsJobStepsResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<InferenceRecommendationsJobStep>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{validate, ValidateOptions};

    fn check(shape: &str, v: &impl Serialize) {
        let value = serde_json::to_value(v).unwrap();
        validate(shape, &value, &ValidateOptions::default())
            .unwrap_or_else(|e| panic!("{shape}: {e}\n{value:#}"));
    }

    fn recommendation() -> InferenceRecommendation {
        InferenceRecommendation {
            recommendation_id: Some("rec-1/ml.g5.xlarge/int8".into()),
            metrics: Some(RecommendationMetrics {
                cost_per_hour: Some(1.006),
                cost_per_inference: Some(0.0001),
                max_invocations: Some(600),
                model_latency: Some(850),
                cpu_utilization: None,
                memory_utilization: Some(41.5),
                model_setup_time: Some(3),
            }),
            endpoint_configuration: EndpointOutputConfiguration {
                endpoint_name: "rec-1-1".into(),
                variant_name: "projected".into(),
                instance_type: Some("ml.g5.xlarge".into()),
                initial_instance_count: Some(1),
            },
            model_configuration: ModelConfiguration {
                inference_specification_name: None,
                environment_parameters: Some(vec![EnvironmentParameter {
                    key: "OPTION_QUANTIZE".into(),
                    value_type: "String".into(),
                    value: "int8".into(),
                }]),
                compilation_job_name: None,
            },
            invocation_end_time: Some(EpochSeconds(1.8e9)),
            invocation_start_time: Some(EpochSeconds(1.8e9 - 60.0)),
        }
    }

    #[test]
    fn responses_hold_to_the_service_model() {
        let describe = DescribeInferenceRecommendationsJobResponse {
            job_name: "rec-1".into(),
            job_description: None,
            job_type: RecommendationJobType::Default,
            job_arn: "arn:aws:sagemaker:us-east-1:123456789012:inference-recommendations-job/rec-1"
                .into(),
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
            status: RecommendationJobStatus::Completed,
            creation_time: EpochSeconds(1.8e9 - 100.0),
            completion_time: Some(EpochSeconds(1.8e9)),
            last_modified_time: EpochSeconds(1.8e9),
            failure_reason: None,
            input_config: RecommendationJobInputConfig {
                model_name: Some("llama-int8".into()),
                ..Default::default()
            },
            stopping_conditions: None,
            inference_recommendations: Some(vec![recommendation()]),
            endpoint_performances: None,
        };
        check("DescribeInferenceRecommendationsJobResponse", &describe);
        let steps = ListInferenceRecommendationsJobStepsResponse {
            steps: Some(vec![InferenceRecommendationsJobStep {
                step_type: "BENCHMARK".into(),
                job_name: "rec-1".into(),
                status: RecommendationJobStatus::Completed,
                inference_benchmark: Some(RecommendationJobInferenceBenchmark {
                    metrics: recommendation().metrics,
                    endpoint_metrics: Some(InferenceMetrics {
                        max_invocations: 600,
                        model_latency: 850,
                    }),
                    endpoint_configuration: Some(recommendation().endpoint_configuration),
                    model_configuration: recommendation().model_configuration,
                    failure_reason: None,
                    invocation_end_time: None,
                    invocation_start_time: None,
                }),
            }]),
            next_token: None,
        };
        check("ListInferenceRecommendationsJobStepsResponse", &steps);
        let list = ListInferenceRecommendationsJobsResponse {
            inference_recommendations_jobs: vec![InferenceRecommendationsJob {
                job_name: "rec-1".into(),
                job_description: String::new(),
                job_type: RecommendationJobType::Advanced,
                job_arn: describe.job_arn.clone(),
                status: RecommendationJobStatus::InProgress,
                creation_time: EpochSeconds(1.8e9),
                completion_time: None,
                role_arn: describe.role_arn.clone(),
                last_modified_time: EpochSeconds(1.8e9),
                failure_reason: None,
                model_name: Some("llama-int8".into()),
                sample_payload_url: Some("s3://payloads/llama.tar.gz".into()),
            }],
            next_token: None,
        };
        check("ListInferenceRecommendationsJobsResponse", &list);
        // Statuses are spelled as the model spells them.
        assert_eq!(
            serde_json::to_value(RecommendationJobStatus::InProgress).unwrap(),
            "IN_PROGRESS"
        );
    }
}
