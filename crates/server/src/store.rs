//! Where jobs are kept: a small trait, so that the service does not care which
//! database holds them, and the job record it stores.

use temper_api::{
    CreateOptimizationJobRequest, ListOptimizationJobsSortBy, OptimizationJobStatus, SortOrder,
};
use temper_core::spec::JobSpec;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a job named {0} exists already")]
    Duplicate(String),
    #[error("the job store failed: {0}")]
    Backend(String),
    #[error("stored job {name} cannot be read back: {why}")]
    Corrupt { name: String, why: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One optimization job as the store keeps it.
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
    pub request: CreateOptimizationJobRequest,
    /// The job spec built from the request and checked at creation (options parsed, local
    /// paths held to the roots): what the worker runs, written to its `spec.json`.
    pub spec: JobSpec,
    /// The worker process, while one runs.
    pub worker_pid: Option<u32>,
    /// StopOptimizationJob was called.
    pub stop_requested: bool,
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
        JobRecord {
            id: 0,
            name: request.optimization_job_name.clone(),
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
        }
    }

    /// `OptimizationTypes` of the job's summary, e.g. `["Quantization"]`.
    pub fn optimization_types(&self) -> Vec<String> {
        let mut types: Vec<String> = Vec::new();
        for config in &self.request.optimization_configs {
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

/// A ListOptimizationJobs query after its NextToken has been decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
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
    /// Fails with [`StoreError::Duplicate`] if the name is taken.
    fn insert(&self, record: &JobRecord) -> Result<JobRecord>;
    fn get(&self, name: &str) -> Result<Option<JobRecord>>;
    /// Reads, changes and writes one job atomically; `None` if there is no such job.
    /// The change sees the current record, so concurrent updates do not lose each other.
    fn update(
        &self,
        name: &str,
        change: &mut dyn FnMut(&mut JobRecord),
    ) -> Result<Option<JobRecord>>;
    /// Deletes a finished job in one step (a job that is not finished stays).
    fn delete_finished(&self, name: &str) -> Result<Deleted>;
    /// A page of jobs matching the query, in its order.
    fn list(&self, query: &ListQuery) -> Result<Vec<JobSummary>>;
    /// Jobs that are not finished (STARTING, INPROGRESS, STOPPING), oldest first. A
    /// stored job that cannot be read back is marked FAILED saying so, and left out,
    /// so one bad row never stops the others being supervised.
    fn unfinished(&self) -> Result<Vec<JobRecord>>;
    /// How many jobs are stored, and how many of them are unfinished.
    fn counts(&self) -> Result<(usize, usize)>;
    /// The highest id given so far (0 when empty): the snapshot of a first page.
    fn max_id(&self) -> Result<i64>;
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
