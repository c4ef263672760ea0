//! temper-api: SageMaker's optimization-job API as wire types, request validation
//! and the conversion of a CreateOptimizationJob request into a [`JobSpec`].
//!
//! This is the only crate that knows SageMaker's JSON; everything below it speaks
//! [`temper_core::spec`]. The protocol is botocore's `json` 1.1: `POST /` with
//! `X-Amz-Target: SageMaker.<Operation>`, errors as HTTP 400 with
//! `{"__type": "<ErrorName>", "message": "..."}` ([`ApiError::to_body`]).
//!
//! A request is read in three steps, each with its own kind of answer:
//! 1. the body must be JSON (else `ValidationException` naming the syntax error);
//! 2. it is walked against its shape in the embedded service model
//!    ([`validate()`]), which reports every violation in AWS's wording;
//! 3. it is deserialized into the typed request ([`types`]).
//!
//! For CreateOptimizationJob, [`rules`] then checks SageMaker's technique
//! combinations, and [`to_job_spec`] builds the job.
//!
//! The shapes come from `sagemaker-2017-07-24-optimization.json` (botocore's model,
//! vendored beside this crate's manifest and embedded at build time), so each
//! constraint is stated once, where AWS states it.

mod convert;
mod error;
mod model;
mod pattern;
pub mod recommendation;
pub mod recommendation_rules;
pub mod rules;
pub mod types;
mod validate;
#[cfg(test)]
mod wire_tests;

pub use convert::{to_job_spec, ConvertOptions};
pub use error::ApiError;
pub use temper_core::spec::JobSpec;
pub use types::*;
pub use validate::{validate, ValidateOptions};

use serde::de::DeserializeOwned;
use serde_json::Value;

/// The service's prefix in `X-Amz-Target` (`SageMaker.CreateOptimizationJob`).
pub const TARGET_PREFIX: &str = "SageMaker";

/// The operations this service implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    CreateOptimizationJob,
    DescribeOptimizationJob,
    ListOptimizationJobs,
    StopOptimizationJob,
    DeleteOptimizationJob,
    CreateInferenceRecommendationsJob,
    DescribeInferenceRecommendationsJob,
    ListInferenceRecommendationsJobs,
    StopInferenceRecommendationsJob,
    ListInferenceRecommendationsJobSteps,
}

impl Operation {
    pub const ALL: [Operation; 10] = [
        Operation::CreateOptimizationJob,
        Operation::DescribeOptimizationJob,
        Operation::ListOptimizationJobs,
        Operation::StopOptimizationJob,
        Operation::DeleteOptimizationJob,
        Operation::CreateInferenceRecommendationsJob,
        Operation::DescribeInferenceRecommendationsJob,
        Operation::ListInferenceRecommendationsJobs,
        Operation::StopInferenceRecommendationsJob,
        Operation::ListInferenceRecommendationsJobSteps,
    ];

    /// The operation's wire name, as in the service model.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::CreateOptimizationJob => "CreateOptimizationJob",
            Operation::DescribeOptimizationJob => "DescribeOptimizationJob",
            Operation::ListOptimizationJobs => "ListOptimizationJobs",
            Operation::StopOptimizationJob => "StopOptimizationJob",
            Operation::DeleteOptimizationJob => "DeleteOptimizationJob",
            Operation::CreateInferenceRecommendationsJob => "CreateInferenceRecommendationsJob",
            Operation::DescribeInferenceRecommendationsJob => "DescribeInferenceRecommendationsJob",
            Operation::ListInferenceRecommendationsJobs => "ListInferenceRecommendationsJobs",
            Operation::StopInferenceRecommendationsJob => "StopInferenceRecommendationsJob",
            Operation::ListInferenceRecommendationsJobSteps => {
                "ListInferenceRecommendationsJobSteps"
            }
        }
    }

    /// Reads an `X-Amz-Target` header value (`SageMaker.<Operation>`).
    pub fn from_target(target: &str) -> Result<Operation, ApiError> {
        let unknown = || ApiError::UnknownOperation(format!("Unknown operation {target}"));
        let name = target
            .strip_prefix(TARGET_PREFIX)
            .and_then(|rest| rest.strip_prefix('.'))
            .ok_or_else(unknown)?;
        Operation::ALL
            .into_iter()
            .find(|op| op.name() == name)
            .ok_or_else(unknown)
    }
}

/// Reads a request body as JSON; syntax errors become a `ValidationException` that
/// says where the JSON breaks.
fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::ValidationException(
            "The request body is empty; expected a JSON object".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::ValidationException(format!("The request body is not valid JSON: {e}"))
    })
}

/// Validates `value` against `shape`, then deserializes it into `T`.
fn typed<T: DeserializeOwned>(
    shape: &str,
    value: Value,
    opts: &ValidateOptions,
) -> Result<T, ApiError> {
    validate(shape, &value, opts)?;
    let mut value = value;
    drop_nulls(&mut value);
    // After validation the value has every member `T` needs with the right JSON
    // types; a failure here means `T` and the model disagree.
    serde_json::from_value(value).map_err(|e| {
        ApiError::InternalFailure(format!("the request passed validation as {shape} but: {e}"))
    })
}

/// Removes members whose value is JSON null, at every depth. The validator treats
/// them as unset (as AWS does); serde must too, or a union entry such as
/// `{"ModelQuantizationConfig": {}, "ModelShardingConfig": null}` would read as two.
fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Parses and validates the input of any operation in the service model, by its
/// name (e.g. `DescribeOptimizationJob` into [`DescribeOptimizationJobRequest`]).
/// URI members are held to the model's `S3Uri` pattern. CreateOptimizationJob has
/// its own [`parse_create_request`], which adds SageMaker's combination rules.
pub fn parse_request<T: DeserializeOwned>(operation: &str, body: &[u8]) -> Result<T, ApiError> {
    let input = model::model()?
        .operation(operation)
        .and_then(|op| op.input.clone())
        .ok_or_else(|| ApiError::UnknownOperation(format!("Unknown operation {operation}")))?;
    typed(&input, parse_json(body)?, &ValidateOptions::default())
}

/// Parses a CreateOptimizationJob request as the HTTP API receives it: JSON, the
/// service model, then SageMaker's combination [`rules`].
pub fn parse_create_request(body: &[u8]) -> Result<CreateOptimizationJobRequest, ApiError> {
    parse_create_request_with(body, &ConvertOptions::default())
}

/// [`parse_create_request`] with options: the CLI allows local paths in URI members.
pub fn parse_create_request_with(
    body: &[u8],
    opts: &ConvertOptions,
) -> Result<CreateOptimizationJobRequest, ApiError> {
    let req: CreateOptimizationJobRequest = typed(
        "CreateOptimizationJobRequest",
        parse_json(body)?,
        &opts.validate_options(),
    )?;
    rules::check(&req)?;
    Ok(req)
}

/// Parses a CreateInferenceRecommendationsJob request: JSON, the service model (URI members
/// such as `SamplePayloadUrl` may be local paths with `opts`), then
/// [`recommendation_rules`].
pub fn parse_recommendation_request_with(
    body: &[u8],
    opts: &ValidateOptions,
) -> Result<recommendation::CreateInferenceRecommendationsJobRequest, ApiError> {
    let req: recommendation::CreateInferenceRecommendationsJobRequest = typed(
        "CreateInferenceRecommendationsJobRequest",
        parse_json(body)?,
        opts,
    )?;
    recommendation_rules::check(&req)?;
    Ok(req)
}

/// [`parse_recommendation_request_with`] holding URIs to the model's `s3://` pattern.
pub fn parse_recommendation_request(
    body: &[u8],
) -> Result<recommendation::CreateInferenceRecommendationsJobRequest, ApiError> {
    parse_recommendation_request_with(body, &ValidateOptions::default())
}

/// The model's output shape of an operation (`None` for operations without output
/// members, like StopOptimizationJob): with [`validate()`], tests of a server can hold
/// its responses to the model.
pub fn output_shape(operation: &str) -> Option<String> {
    model::model().ok()?.operation(operation)?.output.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_operations() {
        assert_eq!(
            Operation::from_target("SageMaker.ListOptimizationJobs").unwrap(),
            Operation::ListOptimizationJobs
        );
        for bad in [
            "SageMaker.CreateTrainingJob",
            "Other.ListOptimizationJobs",
            "SageMaker",
        ] {
            let err = Operation::from_target(bad).unwrap_err();
            assert_eq!(err.type_name(), "UnknownOperationException");
            assert!(err.message().contains(bad));
        }
        for op in Operation::ALL {
            assert!(model::model().unwrap().operation(op.name()).is_some());
        }
        assert_eq!(
            output_shape("DescribeOptimizationJob").as_deref(),
            Some("DescribeOptimizationJobResponse")
        );
    }
}
