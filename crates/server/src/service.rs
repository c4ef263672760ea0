//! The five operations, from a validated request to a response or an [`ApiError`].
//! Synchronous: the HTTP layer runs them on tokio's blocking pool.

use crate::config::Config;
use crate::list;
use crate::store::{Deleted, JobKind, JobRecord, JobStore, JobSummary};
use crate::supervisor::Wake;
use std::sync::Arc;
use temper_api::{
    ApiError, ConvertOptions, CreateOptimizationJobResponse, DescribeOptimizationJobRequest,
    DescribeOptimizationJobResponse, EpochSeconds, ListOptimizationJobsRequest,
    ListOptimizationJobsResponse, Operation, OptimizationJobStatus, OptimizationJobSummary,
    OptimizationOutput,
};
use temper_catalog::Instance;
use temper_core::config::ModelConfig;
use temper_core::spec::{JobSpec, Location};
use temper_jobdir::access;
use temper_options::{JobOptions, ModelShape, Target};

pub struct Service {
    pub store: Arc<dyn JobStore>,
    pub config: Arc<Config>,
    pub wake: Wake,
    /// Held for the service's life: the data directory's lock (see [`crate::open`]).
    pub(crate) _data_lock: std::fs::File,
    /// Held for the service's life on a PostgreSQL store: the connection that holds the
    /// database's runner lock ([`crate::postgres::lock_runner`]).
    pub(crate) _runner_lock: Option<std::sync::Mutex<crate::postgres::Connection>>,
    /// Creates hold it from counting jobs to inserting one, so concurrent creates cannot
    /// pass a limit together (a shared database holds creates of every server to one at a
    /// time as well: `JobStore::insert_checked`).
    pub(crate) creating: std::sync::Mutex<()>,
}

/// A response body: serialized straight to bytes (no intermediate JSON tree).
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::InternalFailure(e.to_string()))
}

fn not_found(kind: JobKind, name: &str) -> ApiError {
    ApiError::ResourceNotFound(format!("Could not find {} '{name}'", kind.noun()))
}

/// What depends on the model itself (the tensor-parallel degree against its heads, kv
/// heads, MLP and vocabulary, and against the instance's GPUs: [`Target::resolve`], the
/// check the worker's plan makes again), refused at Create when the model is a local
/// directory whose `config.json` the server can read. An S3 model is read by its worker
/// only (the server has no S3 client), so such a job fails there, with the same message.
fn check_local_model(spec: &JobSpec, options: &JobOptions) -> Result<(), ApiError> {
    let Location::Local(dir) = &spec.source else {
        return Ok(());
    };
    // A model that cannot be read here is the worker's to report, with the whole
    // checkpoint (a missing config.json, a file instead of a directory, ...).
    let (Ok(config), Ok(instance)) = (
        ModelConfig::load(&dir.join("config.json")),
        Instance::lookup(&spec.instance_type),
    ) else {
        return Ok(());
    };
    let compiled = options
        .passes
        .iter()
        .any(|p| matches!(p, temper_options::PassOptions::Compile(_)));
    Target::resolve_for(
        instance,
        ModelShape::of(&config),
        options.requested_degree,
        compiled,
    )
    .map(|_| ())
    .map_err(|e| ApiError::ValidationException(e.to_string()))
}

/// A compilation's options against the instance's engine (TensorRT-LLM or Neuron): the
/// other engine's options are a ValidationException at Create, whatever the model.
fn check_compile_options(spec: &JobSpec, options: &JobOptions) -> Result<(), ApiError> {
    let Ok(instance) = Instance::lookup(&spec.instance_type) else {
        return Ok(());
    };
    for p in &options.passes {
        if let temper_options::PassOptions::Compile(c) = p {
            c.check_for(instance, None)
                .map_err(|e| ApiError::ValidationException(e.to_string()))?;
        }
    }
    Ok(())
}

impl Service {
    /// Runs one operation on a request body; `region` is the region the caller signed
    /// for (the server's default when unsigned), which ARNs carry.
    pub fn call(&self, op: Operation, body: &[u8], region: &str) -> Result<Vec<u8>, ApiError> {
        match op {
            Operation::CreateOptimizationJob => self.create(body, region),
            Operation::DescribeOptimizationJob => {
                let req: DescribeOptimizationJobRequest =
                    temper_api::parse_request(op.name(), body)?;
                self.describe(&req.optimization_job_name)
            }
            Operation::ListOptimizationJobs => self.list(body),
            Operation::StopOptimizationJob => {
                let req: DescribeOptimizationJobRequest =
                    temper_api::parse_request(op.name(), body)?;
                self.stop_job(JobKind::Optimization, &req.optimization_job_name)
            }
            Operation::DeleteOptimizationJob => {
                let req: DescribeOptimizationJobRequest =
                    temper_api::parse_request(op.name(), body)?;
                self.delete(&req.optimization_job_name)
            }
            Operation::CreateInferenceRecommendationsJob => {
                self.create_recommendation(body, region)
            }
            Operation::DescribeInferenceRecommendationsJob => self.describe_recommendation(body),
            Operation::ListInferenceRecommendationsJobs => self.list_recommendations(body),
            Operation::StopInferenceRecommendationsJob => self.stop_recommendation(body),
            Operation::ListInferenceRecommendationsJobSteps => self.list_steps(body),
        }
    }

    /// Stores a new job within the server's limits and wakes the supervisor. Finished
    /// recommendations jobs are not held to `--max-jobs`: SageMaker has no operation that
    /// deletes them, so a full store could never be emptied through the API.
    pub(crate) fn insert_job(&self, record: &JobRecord) -> Result<(), ApiError> {
        let _one_at_a_time = self.creating.lock().unwrap_or_else(|p| p.into_inner());
        let (max_jobs, max_unfinished) = (self.config.max_jobs, self.config.max_unfinished_jobs);
        let kind = record.kind();
        self.store
            .insert_checked(record, &mut |stored, unfinished| {
                if kind == JobKind::Optimization && stored >= max_jobs {
                    return Err(format!(
                        "This server keeps at most {max_jobs} optimization jobs and has {stored}; \
                     delete finished jobs (DeleteOptimizationJob) or raise --max-jobs"
                    ));
                }
                if unfinished >= max_unfinished {
                    return Err(format!(
                        "{unfinished} jobs are queued or running, the most this server accepts \
                     (--max-unfinished-jobs {max_unfinished}); wait for some to finish or stop \
                     them"
                    ));
                }
                Ok(())
            })?;
        self.wake.wake();
        Ok(())
    }

    fn create(&self, body: &[u8], region: &str) -> Result<Vec<u8>, ApiError> {
        let options = ConvertOptions {
            allow_local_paths: !self.config.local_roots.is_empty(),
        };
        let request = temper_api::parse_create_request_with(body, &options)?;
        // The spec is what the worker will run: building it now refuses at once what
        // the worker could not do (a model registry source, https:// locations).
        let spec = temper_api::to_job_spec(&request, &options)?;
        access::check(&spec, &self.config.local_roots)?;
        // Every pass's OPTION_* values, typed, now: a bad one is this request's
        // ValidationException, never a job that fails later in its worker.
        let job_options =
            JobOptions::parse(&spec).map_err(|e| ApiError::ValidationException(e.to_string()))?;
        check_compile_options(&spec, &job_options)?;
        check_local_model(&spec, &job_options)?;
        // The RoleArn's pattern (checked) is arn:aws...:iam::<12 digits>:role/...
        let account = request.role_arn.split(':').nth(4).unwrap_or("000000000000");
        let arn = format!(
            "arn:aws:sagemaker:{region}:{account}:optimization-job/{}",
            request.optimization_job_name
        );
        // Stored with the job: the worker runs this spec, not a new reading of the request.
        let record = JobRecord::queued(request, spec, arn.clone(), EpochSeconds::now().0);
        self.insert_job(&record)?;
        to_json(&CreateOptimizationJobResponse {
            optimization_job_arn: arn,
        })
    }

    /// Describe's FailureReason: the job's, else why a queued job still waits where worker
    /// agents run the jobs (none joined, or none runs its instance type). A store that
    /// cannot say is not worth failing Describe over.
    pub(crate) fn failure_reason(&self, job: &crate::store::JobRecord) -> Option<String> {
        job.failure_reason
            .clone()
            .or_else(|| self.store.waiting_reason(job).ok().flatten())
    }

    fn describe(&self, name: &str) -> Result<Vec<u8>, ApiError> {
        let job = self
            .store
            .get(JobKind::Optimization, name)?
            .ok_or_else(|| not_found(JobKind::Optimization, name))?;
        let crate::store::JobRequest::Optimization(r) = &job.request else {
            return Err(not_found(JobKind::Optimization, name));
        };
        to_json(&DescribeOptimizationJobResponse {
            optimization_job_arn: job.arn.clone(),
            optimization_job_status: job.status,
            optimization_start_time: job.start_time.map(EpochSeconds),
            optimization_end_time: job.end_time.map(EpochSeconds),
            creation_time: EpochSeconds(job.creation_time),
            last_modified_time: EpochSeconds(job.last_modified_time),
            failure_reason: self.failure_reason(&job),
            optimization_job_name: job.name.clone(),
            model_source: r.model_source.clone(),
            optimization_environment: r.optimization_environment.clone(),
            deployment_instance_type: r.deployment_instance_type.clone(),
            max_instance_count: r.max_instance_count,
            optimization_configs: r.optimization_configs.clone(),
            output_config: r.output_config.clone(),
            optimization_output: job
                .recommended_image
                .clone()
                .map(|image| OptimizationOutput {
                    recommended_inference_image: Some(image),
                }),
            role_arn: r.role_arn.clone(),
            stopping_condition: r.stopping_condition.clone(),
            vpc_config: r.vpc_config.clone(),
            training_plan_arns: r.training_plan_arns.clone(),
        })
    }

    fn list(&self, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        // An empty body is how some clients send a request without members.
        let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            body
        };
        let req: ListOptimizationJobsRequest =
            temper_api::parse_request(Operation::ListOptimizationJobs.name(), body)?;
        let query = list::query(&req, self.store.max_id()?)?;
        let rows = self.store.list(&query)?;
        let (rows, next_token) = list::page(&list::Listing::of_optimizations(&req), &query, rows);
        to_json(&ListOptimizationJobsResponse {
            optimization_job_summaries: rows.into_iter().map(summary).collect(),
            next_token,
        })
    }

    pub(crate) fn stop_job(&self, kind: JobKind, name: &str) -> Result<Vec<u8>, ApiError> {
        let now = EpochSeconds::now().0;
        let job = self
            .store
            .update(kind, name, &mut |job| {
                // Stopping a finished job changes nothing, as in SageMaker.
                if !job.status.is_terminal() && !job.stop_requested {
                    job.stop_requested = true;
                    job.status = OptimizationJobStatus::Stopping;
                    job.last_modified_time = now;
                }
            })?
            .ok_or_else(|| not_found(kind, name))?;
        if job.stop_requested {
            self.wake.wake();
        }
        Ok(b"{}".to_vec())
    }

    fn delete(&self, name: &str) -> Result<Vec<u8>, ApiError> {
        // One statement decides and deletes, so a job that starts meanwhile (deleted
        // and created again under the same name) is never the one removed.
        let id = match self.store.delete_finished(JobKind::Optimization, name)? {
            Deleted::Job { id } => id,
            Deleted::NotFound => return Err(not_found(JobKind::Optimization, name)),
            Deleted::Unfinished(status) => {
                return Err(ApiError::ValidationException(format!(
                    "Optimization job {name} is {}; stop it with StopOptimizationJob and \
                     delete it once it is STOPPED",
                    crate::store::status_name(status)
                )))
            }
        };
        // The job's files (request, log, progress); its output lives where it was sent.
        let dir = self.config.job_dir(id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("temper-server: could not remove {}: {e}", dir.display());
            }
        }
        Ok(b"{}".to_vec())
    }
}

fn summary(job: JobSummary) -> OptimizationJobSummary {
    OptimizationJobSummary {
        optimization_job_name: job.name,
        optimization_job_arn: job.arn,
        creation_time: EpochSeconds(job.creation_time),
        optimization_job_status: job.status,
        optimization_start_time: job.start_time.map(EpochSeconds),
        optimization_end_time: job.end_time.map(EpochSeconds),
        last_modified_time: Some(EpochSeconds(job.last_modified_time)),
        deployment_instance_type: job.deployment_instance_type,
        max_instance_count: job.max_instance_count,
        optimization_types: job.optimization_types,
    }
}
