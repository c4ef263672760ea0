//! Wire types of the optimization-job operations, member for member as the service
//! model defines them (PascalCase JSON). Optional members are `Option` and are left
//! out of serialized JSON when unset, as botocore expects; timestamps are epoch
//! seconds as a JSON number, which is how the json protocol carries them.
//!
//! Constraints (lengths, patterns, enums) are not repeated here: requests are checked
//! against the model by [`crate::validate`] before they are deserialized. Instance
//! types stay `String` because the model's enum of them grows with every release.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `OptimizationJobEnvironmentVariables`: at most 25 `OPTION_*`-style variables.
pub type EnvironmentVariables = BTreeMap<String, String>;

/// A timestamp on the wire: seconds since the Unix epoch, fractional allowed.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EpochSeconds(pub f64);

impl EpochSeconds {
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }
}

impl From<SystemTime> for EpochSeconds {
    fn from(t: SystemTime) -> Self {
        // Times before 1970 do not occur for jobs; they clamp to the epoch.
        let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        EpochSeconds(since.as_secs_f64())
    }
}

/// `CreateOptimizationJobRequest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateOptimizationJobRequest {
    pub optimization_job_name: String,
    pub role_arn: String,
    pub model_source: OptimizationJobModelSource,
    pub deployment_instance_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instance_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimization_environment: Option<EnvironmentVariables>,
    pub optimization_configs: Vec<OptimizationConfig>,
    pub output_config: OptimizationJobOutputConfig,
    pub stopping_condition: StoppingCondition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_config: Option<OptimizationVpcConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_plan_arns: Option<Vec<String>>,
}

/// `CreateOptimizationJobResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateOptimizationJobResponse {
    pub optimization_job_arn: String,
}

/// `OptimizationJobModelSource`: where the model comes from (S3 here; SageMaker's
/// own model registry is modelled but refused by [`crate::to_job_spec`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OptimizationJobModelSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<OptimizationJobModelSourceS3>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sage_maker_model: Option<OptimizationSageMakerModel>,
}

/// `OptimizationJobModelSourceS3`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OptimizationJobModelSourceS3 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_access_config: Option<OptimizationModelAccessConfig>,
}

/// `OptimizationModelAccessConfig`: acceptance of the model's end-user licence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OptimizationModelAccessConfig {
    pub accept_eula: bool,
}

/// `OptimizationSageMakerModel`: a model in SageMaker's registry, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OptimizationSageMakerModel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
}

/// `OptimizationConfig`, a tagged union: exactly one technique per entry. Serde's
/// externally tagged enum is exactly that wire form (`{"ModelQuantizationConfig": {...}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimizationConfig {
    ModelQuantizationConfig(ModelQuantizationConfig),
    ModelCompilationConfig(ModelCompilationConfig),
    ModelShardingConfig(ModelShardingConfig),
    ModelSpeculativeDecodingConfig(ModelSpeculativeDecodingConfig),
}

impl OptimizationConfig {
    /// The union member's wire name, e.g. `ModelQuantizationConfig`.
    pub fn member_name(&self) -> &'static str {
        match self {
            OptimizationConfig::ModelQuantizationConfig(_) => "ModelQuantizationConfig",
            OptimizationConfig::ModelCompilationConfig(_) => "ModelCompilationConfig",
            OptimizationConfig::ModelShardingConfig(_) => "ModelShardingConfig",
            OptimizationConfig::ModelSpeculativeDecodingConfig(_) => {
                "ModelSpeculativeDecodingConfig"
            }
        }
    }

    /// The technique this entry asks for.
    pub fn technique(&self) -> temper_core::spec::Technique {
        use temper_core::spec::Technique;
        match self {
            OptimizationConfig::ModelQuantizationConfig(_) => Technique::Quantization,
            OptimizationConfig::ModelCompilationConfig(_) => Technique::Compilation,
            OptimizationConfig::ModelShardingConfig(_) => Technique::Sharding,
            OptimizationConfig::ModelSpeculativeDecodingConfig(_) => Technique::SpeculativeDecoding,
        }
    }

    /// The name listed in `OptimizationTypes` of a job summary: the union member's
    /// name without `Model` and `Config` (`Quantization`, `SpeculativeDecoding`).
    pub fn optimization_type(&self) -> &'static str {
        let name = self.member_name();
        let name = name.strip_prefix("Model").unwrap_or(name);
        name.strip_suffix("Config").unwrap_or(name)
    }

    /// The container settings of the three techniques that run in an LMI image.
    pub fn container(&self) -> Option<&ModelContainerConfig> {
        match self {
            OptimizationConfig::ModelQuantizationConfig(c)
            | OptimizationConfig::ModelCompilationConfig(c)
            | OptimizationConfig::ModelShardingConfig(c) => Some(c),
            OptimizationConfig::ModelSpeculativeDecodingConfig(_) => None,
        }
    }
}

/// The members `ModelQuantizationConfig`, `ModelCompilationConfig` and
/// `ModelShardingConfig` share (the model defines three identical shapes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ModelContainerConfig {
    /// An LMI image URI; recorded, the optimization itself runs in temper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_environment: Option<EnvironmentVariables>,
}

/// `ModelQuantizationConfig`.
pub type ModelQuantizationConfig = ModelContainerConfig;
/// `ModelCompilationConfig`.
pub type ModelCompilationConfig = ModelContainerConfig;
/// `ModelShardingConfig`.
pub type ModelShardingConfig = ModelContainerConfig;

/// `ModelSpeculativeDecodingConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ModelSpeculativeDecodingConfig {
    pub technique: ModelSpeculativeDecodingTechnique,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_data_source: Option<ModelSpeculativeDecodingTrainingDataSource>,
}

/// `ModelSpeculativeDecodingTechnique`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelSpeculativeDecodingTechnique {
    #[serde(rename = "EAGLE")]
    Eagle,
}

impl ModelSpeculativeDecodingTechnique {
    pub fn as_str(&self) -> &'static str {
        match self {
            ModelSpeculativeDecodingTechnique::Eagle => "EAGLE",
        }
    }
}

/// `ModelSpeculativeDecodingTrainingDataSource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ModelSpeculativeDecodingTrainingDataSource {
    pub s3_uri: String,
    pub s3_data_type: ModelSpeculativeDecodingS3DataType,
}

/// `ModelSpeculativeDecodingS3DataType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelSpeculativeDecodingS3DataType {
    S3Prefix,
    ManifestFile,
}

impl ModelSpeculativeDecodingS3DataType {
    pub fn as_str(&self) -> &'static str {
        match self {
            ModelSpeculativeDecodingS3DataType::S3Prefix => "S3Prefix",
            ModelSpeculativeDecodingS3DataType::ManifestFile => "ManifestFile",
        }
    }
}

/// `OptimizationJobOutputConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OptimizationJobOutputConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    pub s3_output_location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sage_maker_model: Option<OptimizationSageMakerModel>,
}

/// `StoppingCondition`. The model marks no member required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StoppingCondition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runtime_in_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_time_in_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_time_in_seconds: Option<i32>,
}

/// `Tag`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// `OptimizationVpcConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OptimizationVpcConfig {
    pub security_group_ids: Vec<String>,
    pub subnets: Vec<String>,
}

/// `OptimizationOutput`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OptimizationOutput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_inference_image: Option<String>,
}

/// `OptimizationJobStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OptimizationJobStatus {
    InProgress,
    Completed,
    Failed,
    Starting,
    Stopping,
    Stopped,
}

impl OptimizationJobStatus {
    /// Whether the job has finished (no further transitions).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            OptimizationJobStatus::Completed
                | OptimizationJobStatus::Failed
                | OptimizationJobStatus::Stopped
        )
    }
}

/// `DescribeOptimizationJobRequest`; Stop and Delete take the same single member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeOptimizationJobRequest {
    pub optimization_job_name: String,
}

/// `StopOptimizationJobRequest` (no response members).
pub type StopOptimizationJobRequest = DescribeOptimizationJobRequest;
/// `DeleteOptimizationJobRequest` (no response members).
pub type DeleteOptimizationJobRequest = DescribeOptimizationJobRequest;

/// `DescribeOptimizationJobResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeOptimizationJobResponse {
    pub optimization_job_arn: String,
    pub optimization_job_status: OptimizationJobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimization_start_time: Option<EpochSeconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimization_end_time: Option<EpochSeconds>,
    pub creation_time: EpochSeconds,
    pub last_modified_time: EpochSeconds,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    pub optimization_job_name: String,
    pub model_source: OptimizationJobModelSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimization_environment: Option<EnvironmentVariables>,
    pub deployment_instance_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instance_count: Option<i32>,
    pub optimization_configs: Vec<OptimizationConfig>,
    pub output_config: OptimizationJobOutputConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimization_output: Option<OptimizationOutput>,
    pub role_arn: String,
    pub stopping_condition: StoppingCondition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_config: Option<OptimizationVpcConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_plan_arns: Option<Vec<String>>,
}

/// `ListOptimizationJobsSortBy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListOptimizationJobsSortBy {
    Name,
    CreationTime,
    Status,
}

/// `SortOrder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    Ascending,
    Descending,
}

/// `ListOptimizationJobsRequest`: every member optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListOptimizationJobsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time_after: Option<EpochSeconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time_before: Option<EpochSeconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_time_after: Option<EpochSeconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_time_before: Option<EpochSeconds>,
    /// Filters on the optimization types a job applies (`OptimizationTypes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimization_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_equals: Option<OptimizationJobStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_by: Option<ListOptimizationJobsSortBy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_order: Option<SortOrder>,
}

/// `ListOptimizationJobsResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListOptimizationJobsResponse {
    pub optimization_job_summaries: Vec<OptimizationJobSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `OptimizationJobSummary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OptimizationJobSummary {
    pub optimization_job_name: String,
    pub optimization_job_arn: String,
    pub creation_time: EpochSeconds,
    pub optimization_job_status: OptimizationJobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimization_start_time: Option<EpochSeconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimization_end_time: Option<EpochSeconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_time: Option<EpochSeconds>,
    pub deployment_instance_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instance_count: Option<i32>,
    /// The techniques the job applies, e.g. `["Quantization"]` (free-form in the model).
    pub optimization_types: Vec<String>,
}
