//! Where jobs are kept: a small trait, so that the service does not care which
//! database holds them, and the job record it stores.
//!
//! One store for every kind of job ([`JobKind`]): optimization jobs and
//! inference-recommendations jobs share the queue, the supervisor, the worker process and
//! the restart rules; a name is unique within its kind, as in SageMaker.

use temper_api::recommendation::{
    CreateInferenceRecommendationsJobRequest, RecommendationJobStatus,
};
use temper_api::{
    CreateOptimizationJobRequest, ListOptimizationJobsSortBy, OptimizationJobStatus, SortOrder,
};
use temper_core::spec::JobSpec;
use temper_jobdir::recommendation::Work;

/// The kinds of job the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    Optimization,
    Recommendation,
}

impl JobKind {
    /// The name stored in the `kind` column.
    pub fn column(self) -> &'static str {
        match self {
            JobKind::Optimization => "optimization",
            JobKind::Recommendation => "recommendation",
        }
    }

    pub fn parse(column: &str) -> Option<JobKind> {
        [JobKind::Optimization, JobKind::Recommendation]
            .into_iter()
            .find(|k| k.column() == column)
    }

    /// How messages name a job of this kind.
    pub fn noun(self) -> &'static str {
        match self {
            JobKind::Optimization => "optimization job",
            JobKind::Recommendation => "inference recommendations job",
        }
    }
}

/// A job's Create request, as validated: what Describe echoes.
#[derive(Debug, Clone, PartialEq)]
pub enum JobRequest {
    Optimization(Box<CreateOptimizationJobRequest>),
    Recommendation(Box<CreateInferenceRecommendationsJobRequest>),
}

impl JobRequest {
    pub fn kind(&self) -> JobKind {
        match self {
            JobRequest::Optimization(_) => JobKind::Optimization,
            JobRequest::Recommendation(_) => JobKind::Recommendation,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            JobRequest::Optimization(r) => &r.optimization_job_name,
            JobRequest::Recommendation(r) => &r.job_name,
        }
    }

    /// The request as stored (its kind is stored beside it).
    pub fn to_json(&self) -> serde_json::Result<String> {
        match self {
            JobRequest::Optimization(r) => serde_json::to_string(r),
            JobRequest::Recommendation(r) => serde_json::to_string(r),
        }
    }

    pub fn from_json(kind: JobKind, json: &str) -> serde_json::Result<JobRequest> {
        Ok(match kind {
            JobKind::Optimization => {
                JobRequest::Optimization(Box::new(serde_json::from_str(json)?))
            }
            JobKind::Recommendation => {
                JobRequest::Recommendation(Box::new(serde_json::from_str(json)?))
            }
        })
    }
}

/// A status as the wire of a recommendations job spells it (the store keeps one set).
pub fn recommendation_status(status: OptimizationJobStatus) -> RecommendationJobStatus {
    match status {
        OptimizationJobStatus::Starting => RecommendationJobStatus::Pending,
        OptimizationJobStatus::InProgress => RecommendationJobStatus::InProgress,
        OptimizationJobStatus::Completed => RecommendationJobStatus::Completed,
        OptimizationJobStatus::Failed => RecommendationJobStatus::Failed,
        OptimizationJobStatus::Stopping => RecommendationJobStatus::Stopping,
        OptimizationJobStatus::Stopped => RecommendationJobStatus::Stopped,
    }
}

/// The stored status of a recommendations job's wire status (`None`: never stored).
pub fn stored_status(status: RecommendationJobStatus) -> Option<OptimizationJobStatus> {
    Some(match status {
        RecommendationJobStatus::Pending => OptimizationJobStatus::Starting,
        RecommendationJobStatus::InProgress => OptimizationJobStatus::InProgress,
        RecommendationJobStatus::Completed => OptimizationJobStatus::Completed,
        RecommendationJobStatus::Failed => OptimizationJobStatus::Failed,
        RecommendationJobStatus::Stopping => OptimizationJobStatus::Stopping,
        RecommendationJobStatus::Stopped => OptimizationJobStatus::Stopped,
        RecommendationJobStatus::Deleting | RecommendationJobStatus::Deleted => return None,
    })
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a job named {0} exists already")]
    Duplicate(String),
    #[error("the job store failed: {0}")]
    Backend(String),
    #[error("stored job {name} cannot be read back: {why}")]
    Corrupt { name: String, why: String },
    /// [`JobStore::insert_checked`]'s check refused the job (a limit), saying why.
    #[error("{0}")]
    Refused(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// How the API answers a store's failure.
impl From<StoreError> for temper_api::ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate(name) => temper_api::ApiError::ResourceInUse(format!(
                "An optimization job named {name} already exists; choose another \
                 OptimizationJobName or delete the existing job first"
            )),
            StoreError::Refused(why) => temper_api::ApiError::ResourceLimitExceeded(why),
            other => temper_api::ApiError::InternalFailure(other.to_string()),
        }
    }
}

/// One job as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Insertion order, unique for the store's life (never reused after a delete): the
    /// tie-break of every sort, the pagination snapshot, and the job's directory name.
    pub id: i64,
    pub name: String,
    pub arn: String,
    pub status: OptimizationJobStatus,
    pub creation_time: f64,
    pub last_modified_time: f64,
    pub start_time: Option<f64>,
    pub end_time: Option<f64>,
    pub failure_reason: Option<String>,
    pub recommended_image: Option<String>,
    /// The request as validated at creation: what Describe echoes.
    pub request: JobRequest,
    /// The work built from the request and checked at creation (options parsed, local
    /// paths held to the roots, a recommendation's model resolved): what the worker runs.
    pub spec: Work,
    /// The worker process, while one runs.
    pub worker_pid: Option<u32>,
    /// Stop was called.
    pub stop_requested: bool,
    /// What the worker reported when the job ended (a recommendations job's
    /// [`temper_jobdir::recommendation::RecommendationReport`]).
    pub outcome: Option<serde_json::Value>,
}

impl JobRecord {
    /// A job as CreateOptimizationJob stores it: STARTING (queued), created at
    /// `created` (epoch seconds), not yet run. The store gives it its id.
    pub fn queued(
        request: CreateOptimizationJobRequest,
        spec: JobSpec,
        arn: String,
        created: f64,
    ) -> Self {
        JobRecord::new(
            JobRequest::Optimization(Box::new(request)),
            Work::Optimize(spec),
            arn,
            created,
        )
    }

    /// A job of either kind as its Create stores it (see [`JobRecord::queued`]).
    pub fn new(request: JobRequest, spec: Work, arn: String, created: f64) -> Self {
        JobRecord {
            id: 0,
            name: request.name().to_string(),
            arn,
            status: OptimizationJobStatus::Starting,
            creation_time: created,
            last_modified_time: created,
            start_time: None,
            end_time: None,
            failure_reason: None,
            recommended_image: None,
            request,
            spec,
            worker_pid: None,
            stop_requested: false,
            outcome: None,
        }
    }

    pub fn kind(&self) -> JobKind {
        self.request.kind()
    }

    /// How long the job may run once started, and the request member that says so.
    pub fn runtime_limit(&self) -> Option<(u64, &'static str)> {
        match &self.request {
            JobRequest::Optimization(r) => r
                .stopping_condition
                .max_runtime_in_seconds
                .map(|s| (s.max(0) as u64, "StoppingCondition.MaxRuntimeInSeconds")),
            JobRequest::Recommendation(r) => r
                .input_config
                .job_duration_in_seconds
                .map(|s| (s.max(0) as u64, "InputConfig.JobDurationInSeconds")),
        }
    }

    /// How long the job may wait for a worker slot.
    pub fn pending_limit(&self) -> Option<u64> {
        match &self.request {
            JobRequest::Optimization(r) => r
                .stopping_condition
                .max_pending_time_in_seconds
                .map(|s| s.max(0) as u64),
            JobRequest::Recommendation(_) => None,
        }
    }

    /// `OptimizationTypes` of the job's summary, e.g. `["Quantization"]` (none for other
    /// kinds).
    pub fn optimization_types(&self) -> Vec<String> {
        let JobRequest::Optimization(request) = &self.request else {
            return Vec::new();
        };
        let mut types: Vec<String> = Vec::new();
        for config in &request.optimization_configs {
            let t = config.optimization_type();
            if !types.iter().any(|seen| seen == t) {
                types.push(t.to_string());
            }
        }
        types
    }
}

/// What a listing shows of a job: read from columns, without the stored request.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSummary {
    pub id: i64,
    pub name: String,
    pub arn: String,
    pub status: OptimizationJobStatus,
    pub creation_time: f64,
    pub last_modified_time: f64,
    pub start_time: Option<f64>,
    pub end_time: Option<f64>,
    pub deployment_instance_type: String,
    pub max_instance_count: Option<i32>,
    pub optimization_types: Vec<String>,
}

/// A List query (of either kind) after its NextToken has been decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub kind: JobKind,
    /// Recommendations jobs: exactly this `ModelName`.
    pub model_name_equals: Option<String>,
    pub creation_time_after: Option<f64>,
    pub creation_time_before: Option<f64>,
    pub last_modified_time_after: Option<f64>,
    pub last_modified_time_before: Option<f64>,
    /// Case-insensitive substring of one of the job's optimization types.
    pub optimization_contains: Option<String>,
    /// Case-insensitive substring of the job name.
    pub name_contains: Option<String>,
    pub status_equals: Option<OptimizationJobStatus>,
    pub sort_by: ListOptimizationJobsSortBy,
    pub sort_order: SortOrder,
    /// Keyset position: only jobs strictly after this (sort key, id) in the order.
    pub after: Option<SortPosition>,
    /// Only jobs with `id <= snapshot`: jobs created after the first page never join a
    /// listing already under way, so pages neither repeat nor skip a job.
    pub snapshot: Option<i64>,
    pub limit: usize,
}

/// Where a page ended: the last job's sort key and id.
#[derive(Debug, Clone, PartialEq)]
pub struct SortPosition {
    pub key: SortKey,
    pub id: i64,
}

/// The value a job is sorted by.
#[derive(Debug, Clone, PartialEq)]
pub enum SortKey {
    Text(String),
    Time(f64),
}

/// The operations the service needs of a store. Every method is one atomic step.
pub trait JobStore: Send + Sync {
    /// Adds a job; `record.id` is ignored and the stored record (with its id) returned.
    /// Fails with [`StoreError::Duplicate`] if its kind has a job of that name.
    fn insert(&self, record: &JobRecord) -> Result<JobRecord>;
    /// Adds a job if `check` passes on the store's counts ([`JobStore::counts`]) taken in
    /// the same step: an `Err(why)` is [`StoreError::Refused`]. The default counts, then
    /// inserts, for a store written by one process, which must hold creates to one at a
    /// time itself; a shared store makes it one step for every process.
    fn insert_checked(
        &self,
        record: &JobRecord,
        check: &mut dyn FnMut(usize, usize) -> std::result::Result<(), String>,
    ) -> Result<JobRecord> {
        let (stored, unfinished) = self.counts()?;
        check(stored, unfinished).map_err(StoreError::Refused)?;
        self.insert(record)
    }
    fn get(&self, kind: JobKind, name: &str) -> Result<Option<JobRecord>>;
    /// Reads, changes and writes one job atomically; `None` if there is no such job.
    /// The change sees the current record, so concurrent updates do not lose each other.
    fn update(
        &self,
        kind: JobKind,
        name: &str,
        change: &mut dyn FnMut(&mut JobRecord),
    ) -> Result<Option<JobRecord>>;
    /// Deletes a finished job in one step (a job that is not finished stays).
    fn delete_finished(&self, kind: JobKind, name: &str) -> Result<Deleted>;
    /// A page of jobs matching the query, in its order.
    fn list(&self, query: &ListQuery) -> Result<Vec<JobSummary>>;
    /// Jobs that are not finished (STARTING, INPROGRESS, STOPPING), oldest first. A
    /// stored job that cannot be read back is marked FAILED saying so, and left out,
    /// so one bad row never stops the others being supervised.
    fn unfinished(&self) -> Result<Vec<JobRecord>>;
    /// How many optimization jobs are stored (the ones DeleteOptimizationJob can remove,
    /// held to `--max-jobs`), and how many jobs of any kind are unfinished.
    fn counts(&self) -> Result<(usize, usize)>;
    /// The highest id given so far (0 when empty): the snapshot of a first page.
    fn max_id(&self) -> Result<i64>;
    /// Why a queued job still waits, where worker agents run the jobs (none joined, or
    /// none runs its instance type): Describe shows it. `None` where the server runs them.
    fn waiting_reason(&self, _job: &JobRecord) -> Result<Option<String>> {
        Ok(None)
    }
    /// What worker agents reported of a job: its log from byte `offset` (at most `limit`
    /// bytes) and the log's size, its progress and steps, and who ran it. `None` where the
    /// job's files are in the server's own data directory.
    fn reported(&self, _id: i64, _offset: u64, _limit: u64) -> Result<Option<Reported>> {
        Ok(None)
    }
    /// The worker agents that joined; `None` for a store no agent can join (SQLite).
    fn agents(&self) -> Result<Option<Vec<crate::leases::AgentStatus>>> {
        Ok(None)
    }
}

/// What worker agents reported of a job (see [`JobStore::reported`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reported {
    pub log: Vec<u8>,
    pub log_size: u64,
    /// The worker's progress, as its `progress.json`.
    pub progress: Option<serde_json::Value>,
    /// A recommendations job's finished steps, as its `steps.json`.
    pub steps: Option<serde_json::Value>,
    /// The agent that holds (or last held) the job, and its host.
    pub agent: Option<String>,
    pub host: Option<String>,
}

/// What [`JobStore::delete_finished`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// Removed; its id names its directory.
    Job {
        id: i64,
    },
    /// Not removed: the job is in this (unfinished) status.
    Unfinished(OptimizationJobStatus),
    NotFound,
}

/// The wire name of a status, as stored and sorted.
pub fn status_name(status: OptimizationJobStatus) -> &'static str {
    match status {
        OptimizationJobStatus::InProgress => "INPROGRESS",
        OptimizationJobStatus::Completed => "COMPLETED",
        OptimizationJobStatus::Failed => "FAILED",
        OptimizationJobStatus::Starting => "STARTING",
        OptimizationJobStatus::Stopping => "STOPPING",
        OptimizationJobStatus::Stopped => "STOPPED",
    }
}

/// Reads a stored status name back.
pub fn parse_status(name: &str) -> Option<OptimizationJobStatus> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}
