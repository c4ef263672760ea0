//! The default [`JobStore`]: one SQLite file in the data directory, no setup.
//!
//! One connection behind a mutex: every operation is a handful of indexed reads or
//! one write, and under load a Describe costs no more than a signed request that
//! skips the store (BENCHMARKS.md), so there is nothing for a pool to win yet. WAL
//! journaling keeps a crash from losing a committed job.

use crate::store::{
    parse_status, status_name, Deleted, JobKind, JobRecord, JobRequest, JobStore, JobSummary,
    ListQuery, Result, SortKey, StoreError,
};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::Path;
use std::sync::Mutex;
use temper_api::{ListOptimizationJobsSortBy, SortOrder};
use temper_jobdir::recommendation::Work;

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

/// The jobs table. A name is unique within its kind; `request` and `spec` are JSON of the
/// kind's request and work; `outcome` is what the worker reported at the end.
const JOBS_TABLE: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL DEFAULT 'optimization',
    name TEXT NOT NULL,
    arn TEXT NOT NULL,
    status TEXT NOT NULL,
    creation_time REAL NOT NULL,
    last_modified_time REAL NOT NULL,
    start_time REAL,
    end_time REAL,
    failure_reason TEXT,
    recommended_image TEXT,
    request TEXT NOT NULL,
    spec TEXT NOT NULL,
    optimization_types TEXT NOT NULL,
    deployment_instance_type TEXT NOT NULL,
    max_instance_count INTEGER,
    worker_pid INTEGER,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    model_name TEXT,
    outcome TEXT,
    UNIQUE (kind, name)
);
";

const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS jobs_creation ON jobs (creation_time, id);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, id);
";

/// The columns of a listing: a page of summaries never parses stored requests.
const SUMMARY_COLUMNS: &str = "id, name, arn, status, creation_time, last_modified_time, \
     start_time, end_time, deployment_instance_type, max_instance_count, optimization_types";

const COLUMNS: &str = "id, name, arn, status, creation_time, last_modified_time, start_time, \
     end_time, failure_reason, recommended_image, request, worker_pid, stop_requested, spec, \
     kind, outcome";

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(backend)?;
        conn.execute_batch(JOBS_TABLE).map_err(backend)?;
        add_spec_column(&conn)?;
        add_job_kinds(&conn)?;
        conn.execute_batch(INDEXES).map_err(backend)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent (statements
        // are atomic), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A database written before job specs were stored with their jobs: the column is added
/// and every job's spec rebuilt from its stored request (validated at its Create; local
/// paths allowed, since a stored request holds one only if its server allowed it). A
/// request that no longer converts keeps an empty spec and reads as corrupt (an
/// unfinished such job is failed saying so, see [`JobStore::unfinished`]).
fn add_spec_column(conn: &Connection) -> Result<()> {
    let has_spec = conn
        .prepare("SELECT 1 FROM pragma_table_info('jobs') WHERE name = 'spec'")
        .and_then(|mut stmt| stmt.exists([]))
        .map_err(backend)?;
    if has_spec {
        return Ok(());
    }
    let convert = temper_api::ConvertOptions {
        allow_local_paths: true,
    };
    let migrate = || -> rusqlite::Result<()> {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch("ALTER TABLE jobs ADD COLUMN spec TEXT NOT NULL DEFAULT ''")?;
        let jobs: Vec<(i64, String)> = tx
            .prepare("SELECT id, request FROM jobs")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (id, request) in jobs {
            let spec = serde_json::from_str(&request)
                .ok()
                .and_then(|r| temper_api::to_job_spec(&r, &convert).ok())
                .and_then(|spec| serde_json::to_string(&spec).ok());
            if let Some(spec) = spec {
                tx.execute("UPDATE jobs SET spec = ?2 WHERE id = ?1", params![id, spec])?;
            }
        }
        tx.commit()
    };
    migrate().map_err(|e| StoreError::Backend(format!("adding job specs to the store: {e}")))
}

/// A database from before recommendation jobs: names were unique across all jobs. The
/// table is rebuilt with a `kind` (every job so far an optimization job), unique names
/// within a kind, a model name and an outcome, keeping every id and the id counter (ids
/// name job directories and are never reused).
fn add_job_kinds(conn: &Connection) -> Result<()> {
    let has_kind = conn
        .prepare("SELECT 1 FROM pragma_table_info('jobs') WHERE name = 'kind'")
        .and_then(|mut stmt| stmt.exists([]))
        .map_err(backend)?;
    if has_kind {
        return Ok(());
    }
    let migrate = || -> rusqlite::Result<()> {
        let tx = conn.unchecked_transaction()?;
        let counter: i64 = tx.query_row(
            "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'jobs'), 0)",
            [],
            |r| r.get(0),
        )?;
        tx.execute_batch("ALTER TABLE jobs RENAME TO jobs_before_kinds")?;
        tx.execute_batch(JOBS_TABLE)?;
        let columns = "id, name, arn, status, creation_time, last_modified_time, start_time, \
            end_time, failure_reason, recommended_image, request, spec, optimization_types, \
            deployment_instance_type, max_instance_count, worker_pid, stop_requested";
        tx.execute_batch(&format!(
            "INSERT INTO jobs ({columns}) SELECT {columns} FROM jobs_before_kinds; \
             DROP TABLE jobs_before_kinds;"
        ))?;
        // The counter row moved with the renamed table, and the copy makes one only if
        // some job was left: set it outright, so an emptied store never reuses an id.
        tx.execute("DELETE FROM sqlite_sequence WHERE name = 'jobs'", [])?;
        tx.execute(
            "INSERT INTO sqlite_sequence (name, seq) \
             VALUES ('jobs', max(?1, (SELECT coalesce(max(id), 0) FROM jobs)))",
            [counter],
        )?;
        tx.commit()
    };
    migrate().map_err(|e| StoreError::Backend(format!("adding job kinds to the store: {e}")))
}

fn read_row(row: &Row) -> rusqlite::Result<std::result::Result<JobRecord, StoreError>> {
    let name: String = row.get(1)?;
    let status: String = row.get(3)?;
    let request: String = row.get(10)?;
    let kind: String = row.get(14)?;
    let corrupt = |why: String| StoreError::Corrupt {
        name: name.clone(),
        why,
    };
    let Some(status) = parse_status(&status) else {
        return Ok(Err(corrupt(format!("unknown status {status}"))));
    };
    let Some(kind) = JobKind::parse(&kind) else {
        return Ok(Err(corrupt(format!("unknown job kind {kind}"))));
    };
    let request = match JobRequest::from_json(kind, &request) {
        Ok(r) => r,
        Err(e) => return Ok(Err(corrupt(format!("request JSON: {e}")))),
    };
    let spec: String = row.get(13)?;
    let spec = match kind {
        JobKind::Optimization => serde_json::from_str(&spec).map(Work::Optimize),
        JobKind::Recommendation => serde_json::from_str(&spec).map(Work::Recommend),
    };
    let spec = match spec {
        Ok(s) => s,
        Err(e) => return Ok(Err(corrupt(format!("job spec JSON: {e}")))),
    };
    let outcome: Option<String> = row.get(15)?;
    let outcome = match outcome.map(|o| serde_json::from_str(&o)).transpose() {
        Ok(o) => o,
        Err(e) => return Ok(Err(corrupt(format!("outcome JSON: {e}")))),
    };
    Ok(Ok(JobRecord {
        id: row.get(0)?,
        name: name.clone(),
        arn: row.get(2)?,
        status,
        creation_time: row.get(4)?,
        last_modified_time: row.get(5)?,
        start_time: row.get(6)?,
        end_time: row.get(7)?,
        failure_reason: row.get(8)?,
        recommended_image: row.get(9)?,
        request,
        spec,
        worker_pid: row.get(11)?,
        stop_requested: row.get::<_, i64>(12)? != 0,
        outcome,
    }))
}

fn read_summary(row: &Row) -> rusqlite::Result<std::result::Result<JobSummary, StoreError>> {
    let name: String = row.get(1)?;
    let status: String = row.get(3)?;
    let Some(status) = parse_status(&status) else {
        return Ok(Err(StoreError::Corrupt {
            name,
            why: format!("unknown status {status}"),
        }));
    };
    let types: String = row.get(10)?;
    Ok(Ok(JobSummary {
        id: row.get(0)?,
        name,
        arn: row.get(2)?,
        status,
        creation_time: row.get(4)?,
        last_modified_time: row.get(5)?,
        start_time: row.get(6)?,
        end_time: row.get(7)?,
        deployment_instance_type: row.get(8)?,
        max_instance_count: row.get(9)?,
        optimization_types: types
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
    }))
}

fn types_column(record: &JobRecord) -> String {
    // Delimited on both sides so a filter can match whole names or parts of them.
    format!(",{},", record.optimization_types().join(","))
}

fn request_json(record: &JobRecord) -> Result<String> {
    record
        .request
        .to_json()
        .map_err(|e| StoreError::Backend(format!("serializing the request: {e}")))
}

fn spec_json(record: &JobRecord) -> Result<String> {
    match &record.spec {
        Work::Optimize(spec) => serde_json::to_string(spec),
        Work::Recommend(spec) => serde_json::to_string(spec),
    }
    .map_err(|e| StoreError::Backend(format!("serializing the job spec: {e}")))
}

fn outcome_json(record: &JobRecord) -> Option<String> {
    record.outcome.as_ref().map(|o| o.to_string())
}

/// The summary columns a kind has: an optimization job's instance type and instance count,
/// a recommendations job's model.
fn kind_columns(record: &JobRecord) -> (String, Option<i32>, Option<String>) {
    match &record.request {
        JobRequest::Optimization(r) => (
            r.deployment_instance_type.clone(),
            r.max_instance_count,
            None,
        ),
        JobRequest::Recommendation(r) => (String::new(), None, r.input_config.model_name.clone()),
    }
}

fn get_locked(conn: &Connection, kind: JobKind, name: &str) -> Result<Option<JobRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE kind = ?1 AND name = ?2");
    let row = conn
        .prepare_cached(&sql)
        .map_err(backend)?
        .query_row([kind.column(), name], read_row)
        .optional()
        .map_err(backend)?;
    row.transpose()
}

impl JobStore for SqliteStore {
    fn insert(&self, record: &JobRecord) -> Result<JobRecord> {
        let (instance_type, instance_count, model_name) = kind_columns(record);
        let conn = self.lock();
        let result = conn.execute(
            "INSERT INTO jobs (name, arn, status, creation_time, last_modified_time, start_time, \
             end_time, failure_reason, recommended_image, request, optimization_types, worker_pid, \
             stop_requested, deployment_instance_type, max_instance_count, spec, kind, \
             model_name, outcome) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
             ?18, ?19)",
            params![
                record.name,
                record.arn,
                status_name(record.status),
                record.creation_time,
                record.last_modified_time,
                record.start_time,
                record.end_time,
                record.failure_reason,
                record.recommended_image,
                request_json(record)?,
                types_column(record),
                record.worker_pid,
                record.stop_requested as i64,
                instance_type,
                instance_count,
                spec_json(record)?,
                record.kind().column(),
                model_name,
                outcome_json(record),
            ],
        );
        match result {
            Ok(_) => Ok(JobRecord {
                id: conn.last_insert_rowid(),
                ..record.clone()
            }),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Duplicate(record.name.clone()))
            }
            Err(e) => Err(backend(e)),
        }
    }

    fn get(&self, kind: JobKind, name: &str) -> Result<Option<JobRecord>> {
        get_locked(&self.lock(), kind, name)
    }

    fn update(
        &self,
        kind: JobKind,
        name: &str,
        change: &mut dyn FnMut(&mut JobRecord),
    ) -> Result<Option<JobRecord>> {
        // The lock is held from read to write: that is the atomicity the trait promises.
        let conn = self.lock();
        let Some(mut record) = get_locked(&conn, kind, name)? else {
            return Ok(None);
        };
        change(&mut record);
        conn.prepare_cached(
            "UPDATE jobs SET status = ?2, last_modified_time = ?3, start_time = ?4, end_time = ?5, \
             failure_reason = ?6, recommended_image = ?7, worker_pid = ?8, stop_requested = ?9, \
             outcome = ?10 WHERE id = ?1",
        )
        .map_err(backend)?
        .execute(params![
            record.id,
            status_name(record.status),
            record.last_modified_time,
            record.start_time,
            record.end_time,
            record.failure_reason,
            record.recommended_image,
            record.worker_pid,
            record.stop_requested as i64,
            outcome_json(&record),
        ])
        .map_err(backend)?;
        Ok(Some(record))
    }

    fn delete_finished(&self, kind: JobKind, name: &str) -> Result<Deleted> {
        let conn = self.lock();
        let id: Option<i64> = conn
            .prepare_cached(
                "DELETE FROM jobs WHERE kind = ?1 AND name = ?2 \
                 AND status IN ('COMPLETED', 'FAILED', 'STOPPED') RETURNING id",
            )
            .map_err(backend)?
            .query_row([kind.column(), name], |r| r.get(0))
            .optional()
            .map_err(backend)?;
        if let Some(id) = id {
            return Ok(Deleted::Job { id });
        }
        let status: Option<String> = conn
            .prepare_cached("SELECT status FROM jobs WHERE kind = ?1 AND name = ?2")
            .map_err(backend)?
            .query_row([kind.column(), name], |r| r.get(0))
            .optional()
            .map_err(backend)?;
        Ok(match status.as_deref().and_then(parse_status) {
            Some(status) => Deleted::Unfinished(status),
            None => Deleted::NotFound,
        })
    }

    fn list(&self, q: &ListQuery) -> Result<Vec<JobSummary>> {
        let mut clauses: Vec<String> = Vec::new();
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut arg = |clause: &str, value: rusqlite::types::Value| {
            args.push(value);
            clauses.push(clause.replace('?', &format!("?{}", args.len())));
        };
        use rusqlite::types::Value as V;
        arg("kind = ?", V::Text(q.kind.column().into()));
        if let Some(m) = &q.model_name_equals {
            arg("model_name = ?", V::Text(m.clone()));
        }
        if let Some(t) = q.creation_time_after {
            arg("creation_time > ?", V::Real(t));
        }
        if let Some(t) = q.creation_time_before {
            arg("creation_time < ?", V::Real(t));
        }
        if let Some(t) = q.last_modified_time_after {
            arg("last_modified_time > ?", V::Real(t));
        }
        if let Some(t) = q.last_modified_time_before {
            arg("last_modified_time < ?", V::Real(t));
        }
        if let Some(s) = &q.name_contains {
            arg("instr(lower(name), lower(?)) > 0", V::Text(s.clone()));
        }
        if let Some(s) = &q.optimization_contains {
            arg(
                "instr(lower(optimization_types), lower(?)) > 0",
                V::Text(s.clone()),
            );
        }
        if let Some(s) = q.status_equals {
            arg("status = ?", V::Text(status_name(s).into()));
        }
        if let Some(max) = q.snapshot {
            arg("id <= ?", V::Integer(max));
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
                SortKey::Text(s) => V::Text(s.clone()),
                SortKey::Time(t) => V::Real(*t),
            };
            args.push(key);
            args.push(V::Integer(after.id));
            let (k, i) = (args.len() - 1, args.len());
            clauses.push(format!("({column}, id) {cmp} (?{k}, ?{i})"));
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM jobs {filter} ORDER BY {column} {dir}, id {dir} LIMIT {}",
            q.limit
        );
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), read_summary)
            .map_err(backend)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(backend)??);
        }
        Ok(out)
    }

    fn unfinished(&self) -> Result<Vec<JobRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE status IN ('STARTING', 'INPROGRESS', 'STOPPING') ORDER BY id"
        );
        let conn = self.lock();
        let mut out = Vec::new();
        let mut corrupt = Vec::new();
        {
            let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, read_row(r)?)))
                .map_err(backend)?;
            for row in rows {
                let (id, row) = row.map_err(backend)?;
                match row {
                    Ok(job) => out.push(job),
                    Err(e @ StoreError::Corrupt { .. }) => corrupt.push((id, e)),
                    Err(e) => return Err(e),
                }
            }
        }
        for (id, e) in corrupt {
            let StoreError::Corrupt { why, .. } = &e else {
                continue;
            };
            eprintln!("temper-server: {e}; marking it FAILED");
            let now = temper_api::EpochSeconds::now().0;
            let reason = format!(
                "The server cannot read this job's stored record ({why}), so it cannot run or \
                 watch it; delete the job and create it again"
            );
            conn.prepare_cached(
                "UPDATE jobs SET status = 'FAILED', failure_reason = ?2, end_time = ?3, \
                 last_modified_time = ?3, worker_pid = NULL WHERE id = ?1",
            )
            .map_err(backend)?
            .execute(params![id, reason, now])
            .map_err(backend)?;
        }
        Ok(out)
    }

    fn counts(&self) -> Result<(usize, usize)> {
        self.lock()
            .prepare_cached(
                "SELECT count(*) FILTER (WHERE kind = 'optimization'), \
                 count(*) FILTER (WHERE status IN ('STARTING', 'INPROGRESS', 'STOPPING')) FROM jobs",
            )
            .map_err(backend)?
            .query_row([], |r| {
                Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as usize))
            })
            .map_err(backend)
    }

    fn max_id(&self) -> Result<i64> {
        // The AUTOINCREMENT counter, not max(id): it never goes back after a delete.
        self.lock()
            .prepare_cached(
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'jobs'), 0)",
            )
            .map_err(backend)?
            .query_row([], |r| r.get(0))
            .map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first schema: names unique across all jobs, no specs, no kinds.
    const FIRST_SCHEMA: &str = "
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        arn TEXT NOT NULL,
        status TEXT NOT NULL,
        creation_time REAL NOT NULL,
        last_modified_time REAL NOT NULL,
        start_time REAL,
        end_time REAL,
        failure_reason TEXT,
        recommended_image TEXT,
        request TEXT NOT NULL,
        optimization_types TEXT NOT NULL,
        deployment_instance_type TEXT NOT NULL,
        max_instance_count INTEGER,
        worker_pid INTEGER,
        stop_requested INTEGER NOT NULL DEFAULT 0
    );";

    /// Every job of an older database deleted: the id counter still carries over.
    #[test]
    fn an_emptied_older_database_keeps_its_id_counter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite3");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(FIRST_SCHEMA).unwrap();
            for name in ["a", "b", "c"] {
                conn.execute(
                    "INSERT INTO jobs (name, arn, status, creation_time, last_modified_time, \
                     request, optimization_types, deployment_instance_type) \
                     VALUES (?1, 'arn', 'COMPLETED', 1.0, 2.0, '{}', ',', 'ml.g6.xlarge')",
                    [name],
                )
                .unwrap();
            }
            conn.execute("DELETE FROM jobs", []).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.max_id().unwrap(), 3);
    }

    /// A database from before job specs and job kinds: opening it adds the spec (rebuilt
    /// from each job's request) and the kinds (every old job an optimization job), keeps
    /// the ids and the id counter, and lets a recommendations job take an existing name.
    #[test]
    fn specs_and_kinds_are_added_to_an_older_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite3");
        let body = serde_json::json!({
            "OptimizationJobName": "old-job",
            "RoleArn": "arn:aws:iam::123456789012:role/r",
            "ModelSource": {"S3": {"S3Uri": "s3://models/m/"}},
            "DeploymentInstanceType": "ml.g6.12xlarge",
            "OptimizationConfigs": [{"ModelQuantizationConfig": {"OverrideEnvironment": {"OPTION_QUANTIZE": "fp8"}}}],
            "OutputConfig": {"S3OutputLocation": "s3://out/x/"},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        });
        let request = temper_api::parse_create_request(body.to_string().as_bytes()).unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(FIRST_SCHEMA).unwrap();
            for name in ["old-job", "deleted-job"] {
                conn.execute(
                    "INSERT INTO jobs (name, arn, status, creation_time, last_modified_time, \
                     request, optimization_types, deployment_instance_type) \
                     VALUES (?1, 'arn', 'COMPLETED', 1.0, 2.0, ?2, ',Quantization,', 'ml.g6.12xlarge')",
                    [name, &serde_json::to_string(&request).unwrap()],
                )
                .unwrap();
            }
            conn.execute("DELETE FROM jobs WHERE name = 'deleted-job'", [])
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let job = store
            .get(JobKind::Optimization, "old-job")
            .unwrap()
            .unwrap();
        assert_eq!(
            job.spec,
            Work::Optimize(temper_api::to_job_spec(&request, &Default::default()).unwrap())
        );
        assert_eq!(
            job.request,
            JobRequest::Optimization(Box::new(request.clone()))
        );
        assert_eq!(job.id, 1);
        // The deleted job's id is never given again.
        assert_eq!(store.max_id().unwrap(), 2);
        assert!(store
            .get(JobKind::Recommendation, "old-job")
            .unwrap()
            .is_none());
        drop(store);
        // Opening it again changes nothing.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store
                .get(JobKind::Optimization, "old-job")
                .unwrap()
                .unwrap(),
            job
        );
        // A name is unique within its kind only.
        let again = store.insert(&JobRecord { ..job.clone() }).unwrap_err();
        assert!(matches!(again, StoreError::Duplicate(_)), "{again}");
        let rec: temper_api::recommendation::CreateInferenceRecommendationsJobRequest =
            serde_json::from_value(serde_json::json!({
                "JobName": "old-job", "JobType": "Default",
                "RoleArn": "arn:aws:iam::123456789012:role/r",
                "InputConfig": {"ModelName": "old-job"}
            }))
            .unwrap();
        let spec = temper_jobdir::recommendation::RecommendationSpec {
            name: "old-job".into(),
            job_type: rec.job_type,
            model_name: "old-job".into(),
            model: temper_core::spec::Location::Local("/m".into()),
            candidates: vec![],
            configurations: vec![],
            skipped_configurations: 0,
            max_parallel_tests: 1,
            traffic: None,
            stopping: None,
            sample_payload: None,
            content_type: "application/json".into(),
            prices: Default::default(),
        };
        let stored = store
            .insert(&JobRecord::new(
                JobRequest::Recommendation(Box::new(rec)),
                Work::Recommend(spec),
                "arn:rec".into(),
                3.0,
            ))
            .unwrap();
        assert_eq!(stored.id, 3);
        let outcome = serde_json::json!({"explanation": "why"});
        store
            .update(JobKind::Recommendation, "old-job", &mut |j| {
                j.outcome = Some(outcome.clone())
            })
            .unwrap();
        let read = store
            .get(JobKind::Recommendation, "old-job")
            .unwrap()
            .unwrap();
        assert_eq!(read.outcome, Some(outcome));
        assert_eq!(read.kind(), JobKind::Recommendation);
    }
}
