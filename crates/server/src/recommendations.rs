//! The inference-recommendations operations: Create (the model resolved, every
//! configuration checked, the work built), Describe, List, Stop and
//! ListInferenceRecommendationsJobSteps. The job itself runs in a worker process like an
//! optimization job, under the same supervisor and store.

use crate::service::{to_json, Service};
use crate::store::{recommendation_status, JobKind, JobRecord, JobRequest};
use std::collections::BTreeMap;
use temper_api::recommendation::{
    CreateInferenceRecommendationsJobRequest, CreateInferenceRecommendationsJobResponse,
    DescribeInferenceRecommendationsJobRequest, DescribeInferenceRecommendationsJobResponse,
    InferenceRecommendationsJob, ListInferenceRecommendationsJobStepsRequest,
    ListInferenceRecommendationsJobStepsResponse, ListInferenceRecommendationsJobsRequest,
    ListInferenceRecommendationsJobsResponse, RecommendationJobType, TrafficPattern, TrafficType,
};
use temper_api::{ApiError, EpochSeconds, Operation, OptimizationJobStatus, ValidateOptions};
use temper_catalog::Instance;
use temper_core::config::ModelConfig;
use temper_core::spec::Location;
use temper_jobdir::recommendation::{
    self as rec, RecommendationReport, RecommendationSpec, TestConfiguration, Work,
};
use temper_options::{JobOptions, ModelShape, Target};

/// Steps per page when MaxResults is not given.
const DEFAULT_STEPS_PER_PAGE: usize = 50;
/// Load tests one job may run: each starts a model server and plays the whole pattern.
pub const MAX_TESTS: usize = 100;
/// Users a traffic pattern may reach: each is a connection and a request in flight.
pub const MAX_USERS: u64 = 1000;
/// What Describe lists (the service model's limit); every test stays in the steps.
const MAX_RECOMMENDATIONS: usize = 10;
/// Seconds a test plays when the job gives no traffic pattern.
const DEFAULT_TRAFFIC_SECONDS: u64 = 120;

fn not_found(name: &str) -> ApiError {
    ApiError::ResourceNotFound(format!(
        "Could not find inference recommendations job '{name}'"
    ))
}

fn invalid(member: &str, value: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::ValidationException(format!("Value '{value}' at '{member}' {why}"))
}

fn instance(member: &str, name: &str) -> Result<&'static Instance, ApiError> {
    Instance::lookup(name).map_err(|e| invalid(member, name, format!("is refused: {e}")))
}

/// Every combination of the swept values, in the order they were given (the last
/// variable varies fastest).
fn sweep(instance_type: &str, ranges: &[(String, Vec<String>)]) -> Vec<TestConfiguration> {
    let mut out = vec![BTreeMap::new()];
    for (name, values) in ranges {
        out = out
            .into_iter()
            .flat_map(|env| {
                values.iter().map(move |v| {
                    let mut env = env.clone();
                    env.insert(name.clone(), v.clone());
                    env
                })
            })
            .collect();
    }
    out.into_iter()
        .map(|environment| TestConfiguration {
            instance_type: instance_type.to_string(),
            environment,
        })
        .collect()
}

/// Whether the model can take `config`: its options parse, and (when the model is a local
/// directory the server can read) its heads split over the degree and the input length fits
/// the context. An S3 model is checked by the worker, which fails the step saying why.
fn check_configuration(
    member: &str,
    config: &TestConfiguration,
    model: &Location,
) -> Result<(), ApiError> {
    let positive = |name: &str| -> Result<Option<usize>, ApiError> {
        match config.environment.get(name) {
            None => Ok(None),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(invalid(
                    member,
                    v,
                    format!("is not a positive whole number, which {name} must be"),
                )),
            },
        }
    };
    positive(rec::OPTION_MAX_ROLLING_BATCH_SIZE)?;
    let max_input = positive(rec::OPTION_MAX_INPUT_LEN)?;
    let Some(spec) = config.preparation("check", model.clone(), Location::Local("/".into())) else {
        return check_context(member, max_input, model);
    };
    let options = JobOptions::parse(&spec).map_err(|e| {
        ApiError::ValidationException(format!("The configuration at '{member}' is refused: {e}"))
    })?;
    if let Location::Local(dir) = model {
        if let Ok(model_config) = ModelConfig::load(&dir.join("config.json")) {
            let target = Instance::lookup(&config.instance_type)
                .map_err(|e| ApiError::ValidationException(e.to_string()))?;
            Target::resolve(
                target,
                ModelShape::of(&model_config),
                options.requested_degree,
            )
            .map_err(|e| {
                ApiError::ValidationException(format!(
                    "The configuration at '{member}' does not fit the model: {e}"
                ))
            })?;
        }
    }
    check_context(member, max_input, model)
}

fn check_context(member: &str, max_input: Option<usize>, model: &Location) -> Result<(), ApiError> {
    let (Some(n), Location::Local(dir)) = (max_input, model) else {
        return Ok(());
    };
    let Ok(config) = ModelConfig::load(&dir.join("config.json")) else {
        return Ok(());
    };
    // temper-serve checks the same against the runtime's reading of the window.
    let Some(context) = config
        .raw
        .get("max_position_embeddings")
        .and_then(|v| v.as_u64())
        .map(|c| c as usize)
    else {
        return Ok(());
    };
    if n >= context {
        return Err(invalid(
            member,
            &n.to_string(),
            format!(
                "leaves no room to generate: the model's context window is {context} tokens; \
                 give OPTION_MAX_INPUT_LEN below it"
            ),
        ));
    }
    Ok(())
}

/// The most users `traffic` asks for, and how long it plays, computed wide so that no
/// request can overflow them.
fn traffic_extent(traffic: Option<&TrafficPattern>) -> (u64, u64) {
    let n = |v: Option<i32>| v.unwrap_or(0).max(0) as u64;
    match traffic {
        Some(t) if t.traffic_type == Some(TrafficType::Stairs) => {
            let s = t.stairs.clone().unwrap_or_default();
            (
                n(s.users_per_step) * n(s.number_of_steps),
                n(s.duration_in_seconds) * n(s.number_of_steps),
            )
        }
        Some(t) if t.phases.as_ref().is_some_and(|p| !p.is_empty()) => {
            let phases = t.phases.iter().flatten();
            let users = phases
                .clone()
                .map(|p| {
                    n(p.initial_number_of_users) + n(p.spawn_rate) * n(p.duration_in_seconds) / 60
                })
                .max()
                .unwrap_or(0);
            (users, phases.map(|p| n(p.duration_in_seconds)).sum())
        }
        _ => (1 + DEFAULT_TRAFFIC_SECONDS / 60, DEFAULT_TRAFFIC_SECONDS),
    }
}

/// Limits that keep an Advanced job to what one host can run in its time: the number of
/// tests, tests at once, users, and the rounds of tests against `JobDurationInSeconds`.
fn check_load(
    req: &CreateInferenceRecommendationsJobRequest,
    tests: usize,
    parallel: usize,
) -> Result<(), ApiError> {
    let input = &req.input_config;
    if tests > MAX_TESTS {
        return Err(ApiError::ValidationException(format!(
            "The endpoint configurations and their sweeps make {tests} load tests; temper runs \
             at most {MAX_TESTS} per job. Set InputConfig.ResourceLimit.MaxNumberOfTests or \
             sweep fewer values"
        )));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if parallel > cores {
        return Err(invalid(
            "inputConfig.resourceLimit.maxParallelOfTests",
            &parallel.to_string(),
            format!(
                "is more tests at once than this host has cores ({cores}); each test runs a \
                 model server here, and more at once would measure their contention"
            ),
        ));
    }
    let (users, seconds) = traffic_extent(input.traffic_pattern.as_ref());
    if users > MAX_USERS {
        return Err(invalid(
            "inputConfig.trafficPattern",
            &users.to_string(),
            format!(
                "users is more than the {MAX_USERS} one host's load generator keeps in flight; \
                 lower the initial users, spawn rate or steps"
            ),
        ));
    }
    if let Some(limit) = input.job_duration_in_seconds {
        let rounds = tests.div_ceil(parallel.max(1)) as u64;
        if rounds * seconds > limit.max(0) as u64 {
            return Err(invalid(
                "inputConfig.jobDurationInSeconds",
                &limit.to_string(),
                format!(
                    "is shorter than the load tests alone: {tests} tests, {parallel} at a \
                     time, of {seconds} s of traffic each take {} s. Raise it, shorten the \
                     traffic, or raise MaxParallelOfTests",
                    rounds * seconds
                ),
            ));
        }
    }
    Ok(())
}

impl Service {
    /// The model a recommendations job names: the output of a completed optimization job,
    /// or a model registered with `--model NAME=URI`.
    fn resolve_model(&self, name: &str) -> Result<Location, ApiError> {
        if let Some(job) = self.store.get(JobKind::Optimization, name)? {
            if job.status != OptimizationJobStatus::Completed {
                let what = if job.status.is_terminal() {
                    "it wrote no model; optimize the model again or name another one"
                } else {
                    "create the recommendations job once it has completed"
                };
                return Err(invalid(
                    "inputConfig.modelName",
                    name,
                    format!(
                        "names an optimization job that is {}, not COMPLETED: {what}",
                        crate::store::status_name(job.status)
                    ),
                ));
            }
            if let Work::Optimize(spec) = &job.spec {
                return Ok(spec.output.clone());
            }
        }
        self.config.models.get(name).cloned().ok_or_else(|| {
            invalid(
                "inputConfig.modelName",
                name,
                "is neither an optimization job on this server nor a model registered with \
                 `temper-server --model NAME=URI`; optimize the model first (its job name is \
                 then the ModelName) or register its location",
            )
        })
    }

    fn price(&self, instance: &str) -> Option<f64> {
        self.config
            .prices
            .get(instance)
            .copied()
            .or_else(|| temper_catalog::prices::price_per_hour(instance))
    }

    /// Builds and checks what the worker will run.
    fn recommendation_spec(
        &self,
        req: &CreateInferenceRecommendationsJobRequest,
    ) -> Result<RecommendationSpec, ApiError> {
        let input = &req.input_config;
        // The rules have refused a request without one.
        let model_name = input.model_name.clone().unwrap_or_default();
        let model = self.resolve_model(&model_name)?;
        let container = input.container_config.clone().unwrap_or_default();
        let endpoint_configs = input.endpoint_configurations.clone().unwrap_or_default();
        let mut candidates = Vec::new();
        let mut configurations = Vec::new();
        match req.job_type {
            RecommendationJobType::Default => {
                if let Some(types) = &container.supported_instance_types {
                    if types.is_empty() {
                        return Err(invalid(
                            "inputConfig.containerConfig.supportedInstanceTypes",
                            "[]",
                            "lists no instance type; list the candidates, or leave it out to \
                             consider every GPU instance of the catalog",
                        ));
                    }
                    for (i, t) in types.iter().enumerate() {
                        let member = format!(
                            "inputConfig.containerConfig.supportedInstanceTypes.{}.member",
                            i + 1
                        );
                        candidates.push(instance(&member, t)?.name.to_string());
                    }
                } else if !endpoint_configs.is_empty() {
                    for (i, c) in endpoint_configs.iter().enumerate() {
                        let member = format!(
                            "inputConfig.endpointConfigurations.{}.member.instanceType",
                            i + 1
                        );
                        let t = c.instance_type.as_deref().unwrap_or_default();
                        candidates.push(instance(&member, t)?.name.to_string());
                    }
                } else {
                    // Every GPU instance of the catalog; the worker says which do not fit.
                    candidates = temper_catalog::INSTANCES
                        .iter()
                        .filter(|i| !i.accelerator.is_neuron() && i.roofline().is_some())
                        .map(|i| i.name.to_string())
                        .collect();
                }
            }
            RecommendationJobType::Advanced => {
                for (i, c) in endpoint_configs.iter().enumerate() {
                    let at = format!("inputConfig.endpointConfigurations.{}.member", i + 1);
                    let t = c.instance_type.as_deref().unwrap_or_default();
                    let t = instance(&format!("{at}.instanceType"), t)?.name;
                    let ranges: Vec<(String, Vec<String>)> = c
                        .environment_parameter_ranges
                        .as_ref()
                        .and_then(|r| r.categorical_parameter_ranges.clone())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|p| (p.name, p.value))
                        .collect();
                    for config in sweep(t, &ranges) {
                        check_configuration(
                            &format!("{at}.environmentParameterRanges"),
                            &config,
                            &model,
                        )?;
                        configurations.push(config);
                    }
                }
            }
        }
        let limit = input.resource_limit.clone().unwrap_or_default();
        let max_tests = limit
            .max_number_of_tests
            .map(|n| n.max(1) as usize)
            .unwrap_or(usize::MAX);
        let skipped = configurations.len().saturating_sub(max_tests);
        configurations.truncate(max_tests);
        let max_parallel = limit.max_parallel_of_tests.unwrap_or(1).max(1) as usize;
        if req.job_type == RecommendationJobType::Advanced {
            check_load(req, configurations.len(), max_parallel)?;
        }
        let payload = container.payload_config.clone().unwrap_or_default();
        let sample_payload = payload
            .sample_payload_url
            .as_deref()
            .map(|u| {
                let member = "inputConfig.containerConfig.payloadConfig.samplePayloadUrl";
                if u.ends_with('/') {
                    return Err(invalid(
                        member,
                        u,
                        "names a folder; name the .tar or .tar.gz archive of request files",
                    ));
                }
                Location::parse(u).map_err(|e| invalid(member, u, e))
            })
            .transpose()?;
        let content_type = payload
            .supported_content_types
            .and_then(|t| t.into_iter().next())
            .unwrap_or_else(|| "application/json".to_string());
        let prices = candidates
            .iter()
            .chain(configurations.iter().map(|c| &c.instance_type))
            .filter_map(|i| self.price(i).map(|p| (i.clone(), p)))
            .collect();
        Ok(RecommendationSpec {
            name: req.job_name.clone(),
            job_type: req.job_type,
            model_name,
            model,
            candidates,
            configurations,
            skipped_configurations: skipped,
            max_parallel_tests: max_parallel as u32,
            traffic: input.traffic_pattern.clone(),
            stopping: req.stopping_conditions.clone(),
            sample_payload,
            content_type,
            prices,
        })
    }

    pub(crate) fn create_recommendation(
        &self,
        body: &[u8],
        region: &str,
    ) -> Result<Vec<u8>, ApiError> {
        let options = ValidateOptions {
            allow_local_uris: !self.config.local_roots.is_empty(),
        };
        let request = temper_api::parse_recommendation_request_with(body, &options)?;
        let spec = self.recommendation_spec(&request)?;
        temper_jobdir::access::check_recommendation(&spec, &self.config.local_roots)?;
        let account = request.role_arn.split(':').nth(4).unwrap_or("000000000000");
        let arn = format!(
            "arn:aws:sagemaker:{region}:{account}:inference-recommendations-job/{}",
            request.job_name
        );
        let record = JobRecord::new(
            JobRequest::Recommendation(Box::new(request)),
            Work::Recommend(spec),
            arn.clone(),
            EpochSeconds::now().0,
        );
        self.insert_job(&record).map_err(|e| match e {
            ApiError::ResourceInUse(_) => ApiError::ResourceInUse(format!(
                "An inference recommendations job named {} already exists; choose another \
                 JobName",
                record.name
            )),
            other => other,
        })?;
        to_json(&CreateInferenceRecommendationsJobResponse { job_arn: arn })
    }

    fn recommendation(&self, name: &str) -> Result<JobRecord, ApiError> {
        self.store
            .get(JobKind::Recommendation, name)?
            .ok_or_else(|| not_found(name))
    }

    fn report(&self, job: &JobRecord) -> RecommendationReport {
        match &job.outcome {
            Some(outcome) => serde_json::from_value(outcome.clone()).unwrap_or_else(|e| {
                eprintln!(
                    "temper-server: the stored report of job {} cannot be read ({e}); \
                     showing no recommendations or steps",
                    job.name
                );
                RecommendationReport::default()
            }),
            // Still running: the steps the worker has finished so far, as its worker agent
            // reported them, else from the job's directory here.
            None => {
                let reported = self
                    .store
                    .reported(job.id, 0, 0)
                    .ok()
                    .flatten()
                    .and_then(|r| r.steps)
                    .and_then(|steps| serde_json::from_value(steps).ok());
                RecommendationReport {
                    steps: reported
                        .unwrap_or_else(|| rec::read_steps(&self.config.job_dir(job.id))),
                    ..Default::default()
                }
            }
        }
    }

    pub(crate) fn describe_recommendation(&self, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        let req: DescribeInferenceRecommendationsJobRequest =
            temper_api::parse_request(Operation::DescribeInferenceRecommendationsJob.name(), body)?;
        let job = self.recommendation(&req.job_name)?;
        let JobRequest::Recommendation(r) = &job.request else {
            return Err(not_found(&req.job_name));
        };
        let mut recommendations = self.report(&job).recommendations;
        // Best first: the service model lists at most ten; every one is in the steps.
        recommendations.truncate(MAX_RECOMMENDATIONS);
        to_json(&DescribeInferenceRecommendationsJobResponse {
            job_name: job.name.clone(),
            job_description: r.job_description.clone(),
            job_type: r.job_type,
            job_arn: job.arn.clone(),
            role_arn: r.role_arn.clone(),
            status: recommendation_status(job.status),
            creation_time: EpochSeconds(job.creation_time),
            completion_time: job.end_time.map(EpochSeconds),
            last_modified_time: EpochSeconds(job.last_modified_time),
            failure_reason: self.failure_reason(&job),
            input_config: r.input_config.clone(),
            stopping_conditions: r.stopping_conditions.clone(),
            inference_recommendations: (!recommendations.is_empty()).then_some(recommendations),
            endpoint_performances: None,
        })
    }

    pub(crate) fn list_recommendations(&self, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            body
        };
        let req: ListInferenceRecommendationsJobsRequest =
            temper_api::parse_request(Operation::ListInferenceRecommendationsJobs.name(), body)?;
        let query = crate::list::recommendation_query(&req, self.store.max_id()?)?;
        let rows = self.store.list(&query)?;
        let listing = crate::list::Listing::of_recommendations(&req);
        let (rows, next_token) = crate::list::page(&listing, &query, rows);
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            // Recommendations jobs are never deleted, so every listed row is still there.
            let Some(job) = self.store.get(JobKind::Recommendation, &row.name)? else {
                continue;
            };
            let JobRequest::Recommendation(r) = &job.request else {
                continue;
            };
            let input = &r.input_config;
            jobs.push(InferenceRecommendationsJob {
                job_name: job.name.clone(),
                job_description: r.job_description.clone().unwrap_or_default(),
                job_type: r.job_type,
                job_arn: job.arn.clone(),
                status: recommendation_status(job.status),
                creation_time: EpochSeconds(job.creation_time),
                completion_time: job.end_time.map(EpochSeconds),
                role_arn: r.role_arn.clone(),
                last_modified_time: EpochSeconds(job.last_modified_time),
                failure_reason: job.failure_reason.clone(),
                model_name: input.model_name.clone(),
                sample_payload_url: input
                    .container_config
                    .as_ref()
                    .and_then(|c| c.payload_config.as_ref())
                    .and_then(|p| p.sample_payload_url.clone()),
            });
        }
        to_json(&ListInferenceRecommendationsJobsResponse {
            inference_recommendations_jobs: jobs,
            next_token,
        })
    }

    pub(crate) fn stop_recommendation(&self, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        let req: DescribeInferenceRecommendationsJobRequest =
            temper_api::parse_request(Operation::StopInferenceRecommendationsJob.name(), body)?;
        self.stop_job(JobKind::Recommendation, &req.job_name)
    }

    pub(crate) fn list_steps(&self, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        let req: ListInferenceRecommendationsJobStepsRequest = temper_api::parse_request(
            Operation::ListInferenceRecommendationsJobSteps.name(),
            body,
        )?;
        let job = self.recommendation(&req.job_name)?;
        let steps: Vec<_> = self
            .report(&job)
            .steps
            .into_iter()
            .filter(|s| req.status.is_none_or(|want| s.status == want))
            .filter(|s| req.step_type.as_ref().is_none_or(|t| &s.step_type == t))
            .collect();
        // A token belongs to its job and filters: the step index it carries means nothing
        // to another listing.
        let listing = format!(
            "{}/{}/{}",
            req.job_name,
            req.status.map(|s| format!("{s:?}")).unwrap_or_default(),
            req.step_type.as_deref().unwrap_or("")
        );
        let start = match req.next_token.as_deref().filter(|t| !t.is_empty()) {
            None => 0,
            Some(token) => decode_step_token(token, &listing)?.min(steps.len()),
        };
        let size = req
            .max_results
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_STEPS_PER_PAGE);
        let end = start.saturating_add(size).min(steps.len());
        let next_token = (end < steps.len()).then(|| step_token(&listing, end));
        to_json(&ListInferenceRecommendationsJobStepsResponse {
            steps: Some(steps.get(start..end).unwrap_or_default().to_vec()),
            next_token,
        })
    }
}

/// A steps page token: the listing (job and filters) and the index of the next step
/// (steps are only appended).
fn step_token(listing: &str, next: usize) -> String {
    hex::encode(format!("{next}:{listing}"))
}

fn decode_step_token(token: &str, listing: &str) -> Result<usize, ApiError> {
    let invalid = || {
        ApiError::ValidationException(format!(
            "The NextToken '{}' is not one this server issued for this job and these filters; \
             pass the NextToken of the previous ListInferenceRecommendationsJobSteps response \
             unchanged, with the same JobName, Status and StepType",
            token.chars().take(64).collect::<String>()
        ))
    };
    let text = hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(invalid)?;
    match text.split_once(':') {
        Some((n, rest)) if rest == listing => n.parse().map_err(|_| invalid()),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_are_every_combination_in_order() {
        let configs = sweep(
            "ml.g6.xlarge",
            &[
                ("OPTION_QUANTIZE".into(), vec!["none".into(), "int8".into()]),
                (
                    "OPTION_MAX_ROLLING_BATCH_SIZE".into(),
                    vec!["4".into(), "16".into()],
                ),
            ],
        );
        let got: Vec<(String, String)> = configs
            .iter()
            .map(|c| {
                (
                    c.environment["OPTION_QUANTIZE"].clone(),
                    c.environment["OPTION_MAX_ROLLING_BATCH_SIZE"].clone(),
                )
            })
            .collect();
        let want = [("none", "4"), ("none", "16"), ("int8", "4"), ("int8", "16")];
        assert_eq!(
            got,
            want.map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
        );
        assert_eq!(sweep("ml.g6.xlarge", &[]).len(), 1);
    }

    #[test]
    fn step_tokens_belong_to_their_listing() {
        let t = step_token("rec-1//", 7);
        assert_eq!(decode_step_token(&t, "rec-1//").unwrap(), 7);
        assert!(decode_step_token(&t, "rec-2//").is_err());
        assert!(decode_step_token(&t, "rec-1/Completed/").is_err());
        assert!(decode_step_token("zz", "rec-1//").is_err());
    }

    #[test]
    fn traffic_extents_are_computed_wide() {
        let phases = TrafficPattern {
            traffic_type: Some(TrafficType::Phases),
            phases: Some(vec![temper_api::recommendation::Phase {
                initial_number_of_users: Some(3),
                spawn_rate: Some(i32::MAX),
                duration_in_seconds: Some(i32::MAX),
            }]),
            stairs: None,
        };
        let (users, seconds) = traffic_extent(Some(&phases));
        assert!(users > MAX_USERS && seconds == i32::MAX as u64);
        assert_eq!(traffic_extent(None), (3, 120));
    }

    #[test]
    fn configurations_the_model_cannot_take_are_refused() {
        let model = Location::S3 {
            bucket: "b".into(),
            key: "m/".into(),
        };
        let config = |k: &str, v: &str| TestConfiguration {
            instance_type: "ml.g6.12xlarge".into(),
            environment: BTreeMap::from([(k.to_string(), v.to_string())]),
        };
        check_configuration("m", &config("OPTION_QUANTIZE", "int8"), &model).unwrap();
        let e = check_configuration("m", &config("OPTION_QUANTIZE", "int3"), &model).unwrap_err();
        assert!(e.message().contains("int3"), "{e}");
        let e = check_configuration("m", &config("OPTION_MAX_ROLLING_BATCH_SIZE", "0"), &model)
            .unwrap_err();
        assert!(e.message().contains("positive whole number"), "{e}");
    }
}
