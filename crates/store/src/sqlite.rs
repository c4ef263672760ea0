//! The default [`JobStore`]: one SQLite file in the data directory, no setup.
//!
//! One connection behind a mutex: every operation is a handful of indexed reads or
//! one write, and under load a Describe costs no more than a signed request that
//! skips the store (BENCHMARKS.md), so there is nothing for a pool to win yet. WAL
//! journaling keeps a crash from losing a committed job.

use crate::columns::{self, JobRow, Param, SummaryRow, COLUMNS};
use crate::store::{
    parse_status, Deleted, JobKind, JobRecord, JobStore, JobSummary, ListQuery, Result, StoreError,
};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::Path;
use std::sync::Mutex;

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
    Ok(JobRow {
        id: row.get(0)?,
        name: row.get(1)?,
        arn: row.get(2)?,
        status: row.get(3)?,
        creation_time: row.get(4)?,
        last_modified_time: row.get(5)?,
        start_time: row.get(6)?,
        end_time: row.get(7)?,
        failure_reason: row.get(8)?,
        recommended_image: row.get(9)?,
        request: row.get(10)?,
        worker_pid: row.get(11)?,
        stop_requested: row.get::<_, i64>(12)? != 0,
        spec: row.get(13)?,
        kind: row.get(14)?,
        outcome: row.get(15)?,
    }
    .into_record())
}

fn read_summary(row: &Row) -> rusqlite::Result<std::result::Result<JobSummary, StoreError>> {
    Ok(SummaryRow {
        id: row.get(0)?,
        name: row.get(1)?,
        arn: row.get(2)?,
        status: row.get(3)?,
        creation_time: row.get(4)?,
        last_modified_time: row.get(5)?,
        start_time: row.get(6)?,
        end_time: row.get(7)?,
        deployment_instance_type: row.get(8)?,
        max_instance_count: row.get(9)?,
        optimization_types: row.get(10)?,
    }
    .into_summary())
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
        let w = columns::written(record)?;
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
                w.status,
                record.creation_time,
                record.last_modified_time,
                record.start_time,
                record.end_time,
                record.failure_reason,
                record.recommended_image,
                w.request,
                w.optimization_types,
                record.worker_pid,
                record.stop_requested as i64,
                w.deployment_instance_type,
                w.max_instance_count,
                w.spec,
                w.kind,
                w.model_name,
                w.outcome,
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
            crate::store::status_name(record.status),
            record.last_modified_time,
            record.start_time,
            record.end_time,
            record.failure_reason,
            record.recommended_image,
            record.worker_pid,
            record.stop_requested as i64,
            columns::outcome(&record),
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
        let (sql, params) = columns::list_sql(
            q,
            |n| format!("?{n}"),
            |column, p| format!("instr(lower({column}), lower({p})) > 0"),
        );
        use rusqlite::types::Value as V;
        let params = params.into_iter().map(|p| match p {
            Param::Text(s) => V::Text(s),
            Param::Real(r) => V::Real(r),
            Param::Integer(i) => V::Integer(i),
        });
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params), read_summary)
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
            let reason = columns::unreadable_reason(why);
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
    use crate::store::JobRequest;
    use temper_jobdir::recommendation::Work;

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
