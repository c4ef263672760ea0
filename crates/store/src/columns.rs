//! A job as every SQL store keeps it: plain text and number columns, the conversions
//! between them and [`JobRecord`] / [`JobSummary`], and the SQL of a List query. The SQLite
//! and PostgreSQL stores differ only in how they send these, so both read and write
//! exactly the same thing.

use crate::store::{
    parse_status, status_name, JobKind, JobRecord, JobRequest, JobSummary, ListQuery, SortKey,
    StoreError,
};
use temper_api::{ListOptimizationJobsSortBy, SortOrder};
use temper_jobdir::recommendation::Work;

/// The columns [`JobRow`] reads, in its order.
pub const COLUMNS: &str = "id, name, arn, status, creation_time, last_modified_time, start_time, \
     end_time, failure_reason, recommended_image, request, worker_pid, stop_requested, spec, \
     kind, outcome";

/// The columns [`SummaryRow`] reads, in its order: a listing never parses stored requests.
pub const SUMMARY_COLUMNS: &str = "id, name, arn, status, creation_time, last_modified_time, \
     start_time, end_time, deployment_instance_type, max_instance_count, optimization_types";

/// One stored job's columns ([`COLUMNS`]).
pub struct JobRow {
    pub id: i64,
    pub name: String,
    pub arn: String,
    pub status: String,
    pub creation_time: f64,
    pub last_modified_time: f64,
    pub start_time: Option<f64>,
    pub end_time: Option<f64>,
    pub failure_reason: Option<String>,
    pub recommended_image: Option<String>,
    pub request: String,
    pub worker_pid: Option<i64>,
    pub stop_requested: bool,
    pub spec: String,
    pub kind: String,
    pub outcome: Option<String>,
}

impl JobRow {
    /// The record, or why the row cannot be read back.
    pub fn into_record(self) -> Result<JobRecord, StoreError> {
        let corrupt = |why: String| StoreError::Corrupt {
            name: self.name.clone(),
            why,
        };
        let status = parse_status(&self.status)
            .ok_or_else(|| corrupt(format!("unknown status {}", self.status)))?;
        let kind = JobKind::parse(&self.kind)
            .ok_or_else(|| corrupt(format!("unknown job kind {}", self.kind)))?;
        let request = JobRequest::from_json(kind, &self.request)
            .map_err(|e| corrupt(format!("request JSON: {e}")))?;
        let spec = match kind {
            JobKind::Optimization => serde_json::from_str(&self.spec).map(Work::Optimize),
            JobKind::Recommendation => serde_json::from_str(&self.spec).map(Work::Recommend),
        }
        .map_err(|e| corrupt(format!("job spec JSON: {e}")))?;
        let outcome = self
            .outcome
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("outcome JSON: {e}")))?;
        let worker_pid = self
            .worker_pid
            .map(u32::try_from)
            .transpose()
            .map_err(|_| corrupt(format!("worker pid {:?}", self.worker_pid)))?;
        Ok(JobRecord {
            id: self.id,
            name: self.name,
            arn: self.arn,
            status,
            creation_time: self.creation_time,
            last_modified_time: self.last_modified_time,
            start_time: self.start_time,
            end_time: self.end_time,
            failure_reason: self.failure_reason,
            recommended_image: self.recommended_image,
            request,
            spec,
            worker_pid,
            stop_requested: self.stop_requested,
            outcome,
        })
    }
}

/// One job's summary columns ([`SUMMARY_COLUMNS`]).
pub struct SummaryRow {
    pub id: i64,
    pub name: String,
    pub arn: String,
    pub status: String,
    pub creation_time: f64,
    pub last_modified_time: f64,
    pub start_time: Option<f64>,
    pub end_time: Option<f64>,
    pub deployment_instance_type: String,
    pub max_instance_count: Option<i32>,
    pub optimization_types: String,
}

impl SummaryRow {
    pub fn into_summary(self) -> Result<JobSummary, StoreError> {
        let status = parse_status(&self.status).ok_or_else(|| StoreError::Corrupt {
            name: self.name.clone(),
            why: format!("unknown status {}", self.status),
        })?;
        Ok(JobSummary {
            id: self.id,
            name: self.name,
            arn: self.arn,
            status,
            creation_time: self.creation_time,
            last_modified_time: self.last_modified_time,
            start_time: self.start_time,
            end_time: self.end_time,
            deployment_instance_type: self.deployment_instance_type,
            max_instance_count: self.max_instance_count,
            optimization_types: self
                .optimization_types
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }
}

/// What an insert writes besides the record's plain fields.
pub struct Written {
    pub status: &'static str,
    pub request: String,
    pub spec: String,
    pub outcome: Option<String>,
    pub kind: &'static str,
    /// Delimited on both sides, so a filter can match whole names or parts of them.
    pub optimization_types: String,
    pub deployment_instance_type: String,
    pub max_instance_count: Option<i32>,
    pub model_name: Option<String>,
}

fn serialize_error(what: &str) -> impl Fn(serde_json::Error) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("serializing the {what}: {e}"))
}

/// The stored form of `record`'s request, work, outcome and summary columns.
pub fn written(record: &JobRecord) -> Result<Written, StoreError> {
    let spec = match &record.spec {
        Work::Optimize(spec) => serde_json::to_string(spec),
        Work::Recommend(spec) => serde_json::to_string(spec),
    }
    .map_err(serialize_error("job spec"))?;
    let (deployment_instance_type, max_instance_count, model_name) = match &record.request {
        JobRequest::Optimization(r) => (
            r.deployment_instance_type.clone(),
            r.max_instance_count,
            None,
        ),
        JobRequest::Recommendation(r) => (String::new(), None, r.input_config.model_name.clone()),
    };
    Ok(Written {
        status: status_name(record.status),
        request: record
            .request
            .to_json()
            .map_err(serialize_error("request"))?,
        spec,
        outcome: outcome(record),
        kind: record.kind().column(),
        optimization_types: format!(",{},", record.optimization_types().join(",")),
        deployment_instance_type,
        max_instance_count,
        model_name,
    })
}

/// The stored form of a record's outcome.
pub fn outcome(record: &JobRecord) -> Option<String> {
    record.outcome.as_ref().map(|o| o.to_string())
}

/// The FailureReason of an unfinished job whose stored record cannot be read back (the
/// store marks it FAILED, so that one bad row never stops the others being supervised).
pub fn unreadable_reason(why: &str) -> String {
    format!(
        "The server cannot read this job's stored record ({why}), so it cannot run or watch \
         it; delete the job and create it again"
    )
}

/// A value a List query binds.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(String),
    Real(f64),
    Integer(i64),
}

/// The SQL of a List query (`SELECT SUMMARY_COLUMNS ... ORDER BY ... LIMIT`) and what it
/// binds, its placeholders written by `placeholder(n)` (1-based: `?n` or `$n`), and a
/// case-insensitive substring test written by `contains(column, placeholder)`.
pub fn list_sql(
    q: &ListQuery,
    placeholder: fn(usize) -> String,
    contains: fn(&str, &str) -> String,
) -> (String, Vec<Param>) {
    let mut clauses: Vec<String> = Vec::new();
    let mut params: Vec<Param> = Vec::new();
    let bind = |params: &mut Vec<Param>, value: Param| {
        params.push(value);
        placeholder(params.len())
    };
    let p = bind(&mut params, Param::Text(q.kind.column().into()));
    clauses.push(format!("kind = {p}"));
    if let Some(m) = &q.model_name_equals {
        let p = bind(&mut params, Param::Text(m.clone()));
        clauses.push(format!("model_name = {p}"));
    }
    let times = [
        ("creation_time >", q.creation_time_after),
        ("creation_time <", q.creation_time_before),
        ("last_modified_time >", q.last_modified_time_after),
        ("last_modified_time <", q.last_modified_time_before),
    ];
    for (test, value) in times {
        if let Some(t) = value {
            let p = bind(&mut params, Param::Real(t));
            clauses.push(format!("{test} {p}"));
        }
    }
    if let Some(s) = &q.name_contains {
        let p = bind(&mut params, Param::Text(s.clone()));
        clauses.push(contains("name", &p));
    }
    if let Some(s) = &q.optimization_contains {
        let p = bind(&mut params, Param::Text(s.clone()));
        clauses.push(contains("optimization_types", &p));
    }
    if let Some(s) = q.status_equals {
        let p = bind(&mut params, Param::Text(status_name(s).into()));
        clauses.push(format!("status = {p}"));
    }
    if let Some(max) = q.snapshot {
        let p = bind(&mut params, Param::Integer(max));
        clauses.push(format!("id <= {p}"));
    }
    let column = match q.sort_by {
        ListOptimizationJobsSortBy::Name => "name",
        ListOptimizationJobsSortBy::CreationTime => "creation_time",
        ListOptimizationJobsSortBy::Status => "status",
    };
    let (cmp, dir) = match q.sort_order {
        SortOrder::Ascending => (">", "ASC"),
        SortOrder::Descending => ("<", "DESC"),
    };
    if let Some(after) = &q.after {
        let key = match &after.key {
            SortKey::Text(s) => Param::Text(s.clone()),
            SortKey::Time(t) => Param::Real(*t),
        };
        let k = bind(&mut params, key);
        let i = bind(&mut params, Param::Integer(after.id));
        clauses.push(format!("({column}, id) {cmp} ({k}, {i})"));
    }
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM jobs WHERE {} ORDER BY {column} {dir}, id {dir} LIMIT {}",
        clauses.join(" AND "),
        q.limit
    );
    (sql, params)
}
