//! CreateOptimizationJob request -> [`JobSpec`]: the one place where SageMaker's wire
//! form turns into the plain types every crate below this one speaks.

use crate::types::{
    CreateOptimizationJobRequest, OptimizationConfig, OptimizationJobModelSource, StoppingCondition,
};
use crate::validate::{is_local_uri, validate, ValidateOptions};
use crate::{rules, ApiError};
use temper_core::spec::{JobSpec, Location, Optimization, Stopping, TrainingData};

/// How a request is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Accept `file://` URIs and plain paths where the model wants an `S3Uri` (the
    /// model source, the output location, speculative-decoding training data): the
    /// `optimize --request` CLI reads local documents. The HTTP API leaves it off.
    pub allow_local_paths: bool,
}

impl ConvertOptions {
    pub(crate) fn validate_options(&self) -> ValidateOptions {
        ValidateOptions {
            allow_local_uris: self.allow_local_paths,
        }
    }
}

/// Converts a request into the job it asks for.
///
/// The request is checked first, whether it was parsed or built in code: against
/// the service model, then against SageMaker's combination rules. Then what temper
/// cannot do is refused with a message that says so: a `SageMakerModel` source or
/// output (there is no model registry here) and `https://` locations.
///
/// Members with no counterpart in a self-hosted job are accepted and dropped:
/// `ModelAccessConfig`, `MaxInstanceCount`, `MaxWaitTimeInSeconds` (Spot capacity),
/// `VpcConfig` and `TrainingPlanArns`.
pub fn to_job_spec(
    req: &CreateOptimizationJobRequest,
    opts: &ConvertOptions,
) -> Result<JobSpec, ApiError> {
    let wire = serde_json::to_value(req)
        .map_err(|e| ApiError::InternalFailure(format!("serializing the request: {e}")))?;
    validate(
        "CreateOptimizationJobRequest",
        &wire,
        &opts.validate_options(),
    )?;
    rules::check(req)?;

    if let Some(model) = &req.output_config.sage_maker_model {
        return Err(refuse_registry(
            "outputConfig.sageMakerModel",
            model.model_name.as_deref(),
        ));
    }
    let source = model_source(&req.model_source, opts)?;
    let output = location(
        "outputConfig.s3OutputLocation",
        &req.output_config.s3_output_location,
        opts,
    )?;
    let optimizations = req
        .optimization_configs
        .iter()
        .enumerate()
        .map(|(i, config)| optimization(i, config, opts))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(JobSpec {
        name: req.optimization_job_name.clone(),
        source,
        output,
        instance_type: req.deployment_instance_type.clone(),
        optimizations,
        environment: req.optimization_environment.clone().unwrap_or_default(),
        stopping: stopping(&req.stopping_condition),
        kms_key_id: req.output_config.kms_key_id.clone(),
        role_arn: Some(req.role_arn.clone()),
        tags: req
            .tags
            .iter()
            .flatten()
            .map(|t| (t.key.clone(), t.value.clone()))
            .collect(),
        overwrite: false,
    })
}

fn model_source(
    source: &OptimizationJobModelSource,
    opts: &ConvertOptions,
) -> Result<Location, ApiError> {
    if let Some(model) = &source.sage_maker_model {
        return Err(refuse_registry(
            "modelSource.sageMakerModel",
            model.model_name.as_deref(),
        ));
    }
    let uri = source.s3.as_ref().and_then(|s3| s3.s3_uri.as_deref());
    match uri {
        Some(uri) => location("modelSource.s3.s3Uri", uri, opts),
        None => Err(ApiError::ValidationException(
            "Value null at 'modelSource.s3.s3Uri' failed to satisfy constraint: \
             ModelSource must give the model's location in S3.S3Uri"
                .into(),
        )),
    }
}

fn refuse_registry(path: &str, name: Option<&str>) -> ApiError {
    let value = name.map_or("null".to_string(), |n| format!("'{n}'"));
    ApiError::ValidationException(format!(
        "Value {value} at '{path}' is not supported: temper has no SageMaker model \
         registry; give the model's location in ModelSource.S3.S3Uri and the output's \
         in OutputConfig.S3OutputLocation"
    ))
}

/// A location member: `s3://` always, `file://` and plain paths when the options
/// allow them (validation has refused them otherwise), `https://` never.
fn location(path: &str, uri: &str, opts: &ConvertOptions) -> Result<Location, ApiError> {
    if uri.starts_with("https://") {
        return Err(ApiError::ValidationException(format!(
            "Value '{uri}' at '{path}' is not supported: temper reads and writes s3:// \
             locations (and, from the command line, file:// URIs and plain paths), not \
             https:// URLs"
        )));
    }
    if is_local_uri(uri) && !opts.allow_local_paths {
        // Only reachable for a value that also matches the S3Uri pattern, which no
        // local path does; kept so that the rule holds however the model changes.
        return Err(ApiError::ValidationException(format!(
            "Value '{uri}' at '{path}' is a local path; the job API takes s3:// URIs"
        )));
    }
    Location::parse(uri).map_err(|e| {
        ApiError::ValidationException(format!(
            "Value '{uri}' at '{path}' is not a usable location: {e}"
        ))
    })
}

fn optimization(
    index: usize,
    config: &OptimizationConfig,
    opts: &ConvertOptions,
) -> Result<Optimization, ApiError> {
    let mut out = Optimization::new(config.technique(), Default::default());
    match config {
        OptimizationConfig::ModelQuantizationConfig(c)
        | OptimizationConfig::ModelCompilationConfig(c)
        | OptimizationConfig::ModelShardingConfig(c) => {
            out.image = c.image.clone();
            out.env = c.override_environment.clone().unwrap_or_default();
        }
        OptimizationConfig::ModelSpeculativeDecodingConfig(c) => {
            out.speculative_technique = Some(c.technique.as_str().to_string());
            if let Some(data) = &c.training_data_source {
                let path = format!(
                    "optimizationConfigs.{}.member.modelSpeculativeDecodingConfig.\
                     trainingDataSource.s3Uri",
                    index + 1
                );
                out.training_data = Some(TrainingData {
                    location: location(&path, &data.s3_uri, opts)?,
                    data_type: data.s3_data_type.as_str().to_string(),
                });
            }
        }
    }
    Ok(out)
}

fn stopping(condition: &StoppingCondition) -> Stopping {
    // Validation guarantees both are at least 1, so they convert without loss.
    let secs = |v: Option<i32>| v.and_then(|s| u64::try_from(s).ok());
    Stopping {
        max_runtime_secs: secs(condition.max_runtime_in_seconds),
        max_pending_secs: secs(condition.max_pending_time_in_seconds),
    }
}
