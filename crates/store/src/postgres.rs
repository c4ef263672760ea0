//! The shared [`JobStore`]: one PostgreSQL database that several `temper-server`
//! processes use at once (`--store postgres://user:password@host:port/database`).
//!
//! Every operation is one statement or one transaction, so any server answers any
//! request: a name is taken by exactly one insert (the unique constraint decides), an
//! update reads the row `FOR UPDATE`, and ids come from one sequence. The schema is
//! versioned (`temper_schema`) and brought up to date when a server starts, one server at a
//! time (an advisory lock); a database newer than this binary is refused. A connection
//! that drops (the database restarted) is opened again on the next call.

use crate::columns::{self, JobRow, Param, SummaryRow, COLUMNS};
use crate::store::{
    parse_status, status_name, Deleted, JobKind, JobRecord, JobStore, JobSummary, ListQuery,
    Reported, Result, StoreError,
};
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row};
use std::sync::Mutex;

/// The schema, one entry a version: entry `n` takes a database from version `n` to `n + 1`.
/// Names sort bytewise (`COLLATE "C"`), as in SQLite, whatever the database's locale.
/// Version 2 adds worker agents ([`crate::leases`]): who holds a job (`agent`, `attempt`,
/// `lease_expires` on the database's clock), what it reports while running (`progress`,
/// `steps`, `job_logs`), and the agents that joined.
const MIGRATIONS: [&str; 2] = [
    "
CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT COLLATE \"C\" NOT NULL,
    arn TEXT NOT NULL,
    status TEXT COLLATE \"C\" NOT NULL,
    creation_time DOUBLE PRECISION NOT NULL,
    last_modified_time DOUBLE PRECISION NOT NULL,
    start_time DOUBLE PRECISION,
    end_time DOUBLE PRECISION,
    failure_reason TEXT,
    recommended_image TEXT,
    request TEXT NOT NULL,
    spec TEXT NOT NULL,
    optimization_types TEXT NOT NULL,
    deployment_instance_type TEXT NOT NULL,
    max_instance_count INTEGER,
    worker_pid BIGINT,
    stop_requested BOOLEAN NOT NULL DEFAULT FALSE,
    model_name TEXT,
    outcome TEXT,
    UNIQUE (kind, name)
);
CREATE INDEX jobs_creation ON jobs (creation_time, id);
CREATE INDEX jobs_status ON jobs (status, id);
",
    "
ALTER TABLE jobs ADD COLUMN agent TEXT;
ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN lease_expires DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN progress TEXT;
ALTER TABLE jobs ADD COLUMN steps TEXT;
CREATE TABLE agents (
    name TEXT COLLATE \"C\" PRIMARY KEY,
    host TEXT NOT NULL,
    slots INTEGER NOT NULL,
    instance_types TEXT NOT NULL,
    lease_secs DOUBLE PRECISION NOT NULL,
    started DOUBLE PRECISION NOT NULL,
    heartbeat DOUBLE PRECISION NOT NULL
);
CREATE TABLE job_logs (
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    at BIGINT NOT NULL,
    chunk BYTEA NOT NULL,
    PRIMARY KEY (job_id, attempt, at)
);
",
];

/// Where a created or changed job is announced (`pg_notify` in [`PostgresStore`]'s insert
/// and update): worker agents listen, so a new job is claimed and a Stop acted on at once,
/// with the poll as the bound when a notification is lost.
pub const NOTIFY_CHANNEL: &str = "temper_jobs";

/// The advisory lock the servers take to migrate one at a time ("temper" in ASCII).
const MIGRATION_LOCK: i64 = 0x74656d706572;
/// The advisory lock of the one server that runs a database's jobs ("runner").
/// Held by a create from counting the jobs to inserting one ("create").
const CREATE_LOCK: i64 = 0x637265617465;
/// Taken exclusively by a server that runs the jobs itself, and shared by worker agents
/// (and the servers that keep their queue): the two ways of running jobs never meet on one
/// database.
pub(crate) const RUNNER_LOCK: i64 = 0x72756e6e6572;

/// Takes the database's runner lock for as long as the returned connection lives: this
/// server runs the database's jobs as its own processes. Two such supervisors would both
/// start every queued job and each settle the other's workers as dead, and worker agents
/// (which claim jobs under leases) would race one: both are refused, saying so.
pub fn lock_runner(url: &str) -> Result<Connection> {
    let mut connection = connect(url)?;
    let client = connection.client();
    let locked: bool =
        blocking(|| client.query_one("SELECT pg_try_advisory_lock($1)", &[&RUNNER_LOCK]))
            .map_err(backend)?
            .get(0);
    if !locked {
        return Err(StoreError::Backend(format!(
            "the jobs of {} are run by another temper-server or by worker agents \
             (temper-worker --join); start this server with --api-only to answer the API \
             beside them, or give it another database",
            redact(url)
        )));
    }
    Ok(connection)
}

pub struct PostgresStore {
    pub(crate) url: String,
    client: Mutex<Connection>,
}

/// A client that closes outside any tokio runtime: closing drives the client's own
/// runtime, as every call does (see [`blocking`]).
pub struct Connection(Option<Client>);

impl Connection {
    pub(crate) fn client(&mut self) -> &mut Client {
        self.0
            .as_mut()
            .expect("a connection holds its client until dropped")
    }
}

impl Connection {
    /// Listens for [`NOTIFY_CHANNEL`] on this connection.
    pub fn listen(&mut self) -> Result<()> {
        let client = self.client();
        blocking(|| client.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))).map_err(backend)
    }

    /// Waits up to `timeout` for a notification of [`NOTIFY_CHANNEL`] and takes every one
    /// pending; whether any came.
    pub fn notified(&mut self, timeout: std::time::Duration) -> bool {
        let client = self.client();
        blocking(|| {
            use fallible_iterator::FallibleIterator;
            let mut notifications = client.notifications();
            let mut any = matches!(notifications.timeout_iter(timeout).next(), Ok(Some(_)));
            while let Ok(Some(_)) = notifications.iter().next() {
                any = true;
            }
            any
        })
    }

    /// Whether the database still answers on this connection (a lock taken on it holds).
    pub fn is_alive(&mut self) -> bool {
        let client = self.client();
        !client.is_closed()
            && blocking(|| client.is_valid(std::time::Duration::from_secs(5))).is_ok()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            blocking(|| drop(client));
        }
    }
}

pub(crate) fn backend(e: postgres::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Runs a call of the synchronous client. It drives a runtime of its own, which tokio
/// refuses to start on one of its threads (the HTTP handlers call the store inline): there,
/// the call leaves the runtime for its duration, as any blocking call would.
pub(crate) fn blocking<T>(call: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(call)
        }
        _ => call(),
    }
}

pub(crate) fn connect(url: &str) -> Result<Connection> {
    blocking(|| Client::connect(url, NoTls))
        .map(|c| Connection(Some(c)))
        .map_err(|e| {
            StoreError::Backend(format!(
                "connecting to the job database {}: {e}; check the URL \
             (postgres://user:password@host:port/database) and that PostgreSQL runs and \
             accepts this host",
                redact(url)
            ))
        })
}

/// Brings the database's schema up to [`MIGRATIONS`], or refuses a newer one.
fn migrate(client: &mut Client, url: &str) -> Result<()> {
    let mut tx = client.transaction().map_err(backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(backend)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS temper_schema (version INTEGER NOT NULL)")
        .map_err(backend)?;
    let version: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM temper_schema", &[])
        .map_err(backend)?
        .get(0);
    let known = MIGRATIONS.len() as i32;
    if version > known {
        return Err(StoreError::Backend(format!(
            "the job database {} has schema version {version}, newer than this temper-server \
             knows ({known}); run a temper-server at least as new as the one that wrote it",
            redact(url)
        )));
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql).map_err(|e| {
            StoreError::Backend(format!(
                "migrating the job database {} to schema version {}: {e}",
                redact(url),
                n + 1
            ))
        })?;
        tx.execute(
            "INSERT INTO temper_schema (version) VALUES ($1)",
            &[&(n as i32 + 1)],
        )
        .map_err(backend)?;
    }
    tx.commit().map_err(backend)
}

pub(crate) fn read_row(row: &Row) -> Result<JobRecord> {
    JobRow {
        id: row.get(0),
        name: row.get(1),
        arn: row.get(2),
        status: row.get(3),
        creation_time: row.get(4),
        last_modified_time: row.get(5),
        start_time: row.get(6),
        end_time: row.get(7),
        failure_reason: row.get(8),
        recommended_image: row.get(9),
        request: row.get(10),
        worker_pid: row.get(11),
        stop_requested: row.get(12),
        spec: row.get(13),
        kind: row.get(14),
        outcome: row.get(15),
    }
    .into_record()
}

fn read_summary(row: &Row) -> Result<JobSummary> {
    SummaryRow {
        id: row.get(0),
        name: row.get(1),
        arn: row.get(2),
        status: row.get(3),
        creation_time: row.get(4),
        last_modified_time: row.get(5),
        start_time: row.get(6),
        end_time: row.get(7),
        deployment_instance_type: row.get(8),
        max_instance_count: row.get(9),
        optimization_types: row.get(10),
    }
    .into_summary()
}

fn get_in(
    client: &mut impl postgres::GenericClient,
    kind: JobKind,
    name: &str,
    lock: bool,
) -> Result<Option<JobRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM jobs WHERE kind = $1 AND name = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    client
        .query_opt(&sql, &[&kind.column(), &name])
        .map_err(backend)?
        .map(|row| read_row(&row))
        .transpose()
}

fn insert_in(c: &mut impl postgres::GenericClient, record: &JobRecord) -> Result<JobRecord> {
    let w = columns::written(record)?;
    let pid = record.worker_pid.map(i64::from);
    let result = c.query_one(
        "INSERT INTO jobs (name, arn, status, creation_time, last_modified_time, \
             start_time, end_time, failure_reason, recommended_image, request, \
             optimization_types, worker_pid, stop_requested, deployment_instance_type, \
             max_instance_count, spec, kind, model_name, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18, $19) RETURNING id, pg_notify('temper_jobs', 'created') IS NULL",
        &[
            &record.name,
            &record.arn,
            &w.status,
            &record.creation_time,
            &record.last_modified_time,
            &record.start_time,
            &record.end_time,
            &record.failure_reason,
            &record.recommended_image,
            &w.request,
            &w.optimization_types,
            &pid,
            &record.stop_requested,
            &w.deployment_instance_type,
            &w.max_instance_count,
            &w.spec,
            &w.kind,
            &w.model_name,
            &w.outcome,
        ],
    );
    match result {
        Ok(row) => Ok(JobRecord {
            id: row.get(0),
            ..record.clone()
        }),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            Err(StoreError::Duplicate(record.name.clone()))
        }
        Err(e) => Err(backend(e)),
    }
}

fn counts_in(c: &mut impl postgres::GenericClient) -> Result<(usize, usize)> {
    let row = c
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE kind = 'optimization'), \
                 count(*) FILTER (WHERE status IN {UNFINISHED}) FROM jobs"
            ),
            &[],
        )
        .map_err(backend)?;
    Ok((row.get::<_, i64>(0) as usize, row.get::<_, i64>(1) as usize))
}

pub(crate) const UNFINISHED: &str = "('STARTING', 'INPROGRESS', 'STOPPING')";

impl PostgresStore {
    /// Connects to `url` and brings its schema up to date.
    pub fn open(url: &str) -> Result<Self> {
        let mut client = connect(url)?;
        blocking(|| migrate(client.client(), url))?;
        Ok(PostgresStore {
            url: url.to_string(),
            client: Mutex::new(client),
        })
    }

    /// Runs `op` on the connection, opening it again first if it was closed (the database
    /// restarted). An operation that fails mid-way is reported, not retried: it may have
    /// taken effect.
    pub(crate) fn with<T>(&self, op: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let mut connection = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if connection.client().is_closed() {
            *connection = connect(&self.url)?;
        }
        blocking(|| op(connection.client()))
    }
}

impl JobStore for PostgresStore {
    fn agents(&self) -> Result<Option<Vec<crate::leases::AgentStatus>>> {
        PostgresStore::agents(self).map(Some)
    }

    fn waiting_reason(&self, job: &JobRecord) -> Result<Option<String>> {
        PostgresStore::waiting_reason(self, job)
    }

    fn reported(&self, id: i64, offset: u64, limit: u64) -> Result<Option<Reported>> {
        let state = self.reported_state(id)?;
        if state.agent.is_none() {
            // Run by a server as its own process: its files are in that server's directory.
            return Ok(None);
        }
        let (log, log_size) = self.reported_log(id, offset, limit)?.unwrap_or_default();
        let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
        Ok(Some(Reported {
            log,
            log_size,
            progress: json(state.progress),
            steps: json(state.steps),
            agent: state.agent,
            host: state.host,
        }))
    }

    fn insert(&self, record: &JobRecord) -> Result<JobRecord> {
        self.with(|c| insert_in(c, record))
    }

    fn insert_checked(
        &self,
        record: &JobRecord,
        check: &mut dyn FnMut(usize, usize) -> std::result::Result<(), String>,
    ) -> Result<JobRecord> {
        self.with(|c| {
            let mut tx = c.transaction().map_err(backend)?;
            // Creates through every server of the database take turns from counting to
            // inserting, so that together they cannot pass a limit.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CREATE_LOCK])
                .map_err(backend)?;
            let (stored, unfinished) = counts_in(&mut tx)?;
            check(stored, unfinished).map_err(StoreError::Refused)?;
            let inserted = insert_in(&mut tx, record)?;
            tx.commit().map_err(backend)?;
            Ok(inserted)
        })
    }

    fn get(&self, kind: JobKind, name: &str) -> Result<Option<JobRecord>> {
        self.with(|c| get_in(c, kind, name, false))
    }

    fn update(
        &self,
        kind: JobKind,
        name: &str,
        change: &mut dyn FnMut(&mut JobRecord),
    ) -> Result<Option<JobRecord>> {
        self.with(|c| {
            let mut tx = c.transaction().map_err(backend)?;
            // The row stays locked until the commit: concurrent updates of one job, from
            // any server, apply one after the other.
            let Some(mut record) = get_in(&mut tx, kind, name, true)? else {
                return Ok(None);
            };
            change(&mut record);
            tx.execute(
                "UPDATE jobs SET status = $2, last_modified_time = $3, start_time = $4, \
                 end_time = $5, failure_reason = $6, recommended_image = $7, worker_pid = $8, \
                 stop_requested = $9, outcome = $10 WHERE id = $1",
                &[
                    &record.id,
                    &status_name(record.status),
                    &record.last_modified_time,
                    &record.start_time,
                    &record.end_time,
                    &record.failure_reason,
                    &record.recommended_image,
                    &record.worker_pid.map(i64::from),
                    &record.stop_requested,
                    &columns::outcome(&record),
                ],
            )
            .map_err(backend)?;
            // Agents wake on it: a Stop reaches the worker now, not a poll later.
            tx.execute("SELECT pg_notify('temper_jobs', 'changed')", &[])
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(Some(record))
        })
    }

    fn delete_finished(&self, kind: JobKind, name: &str) -> Result<Deleted> {
        self.with(|c| {
            let deleted = c
                .query_opt(
                    "DELETE FROM jobs WHERE kind = $1 AND name = $2 \
                     AND status IN ('COMPLETED', 'FAILED', 'STOPPED') RETURNING id",
                    &[&kind.column(), &name],
                )
                .map_err(backend)?;
            if let Some(row) = deleted {
                return Ok(Deleted::Job { id: row.get(0) });
            }
            let status: Option<String> = c
                .query_opt(
                    "SELECT status FROM jobs WHERE kind = $1 AND name = $2",
                    &[&kind.column(), &name],
                )
                .map_err(backend)?
                .map(|r| r.get(0));
            Ok(match status.as_deref().and_then(parse_status) {
                Some(status) => Deleted::Unfinished(status),
                None => Deleted::NotFound,
            })
        })
    }

    fn list(&self, q: &ListQuery) -> Result<Vec<JobSummary>> {
        let (sql, params) = columns::list_sql(
            q,
            |n| format!("${n}"),
            |column, p| format!("strpos(lower({column}), lower({p})) > 0"),
        );
        let params: Vec<Box<dyn ToSql + Sync>> = params
            .into_iter()
            .map(|p| -> Box<dyn ToSql + Sync> {
                match p {
                    Param::Text(s) => Box::new(s),
                    Param::Real(r) => Box::new(r),
                    Param::Integer(i) => Box::new(i),
                }
            })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|b| b.as_ref()).collect();
        self.with(|c| {
            c.query(&sql, &refs)
                .map_err(backend)?
                .iter()
                .map(read_summary)
                .collect()
        })
    }

    fn unfinished(&self) -> Result<Vec<JobRecord>> {
        self.with(|c| {
            let sql =
                format!("SELECT {COLUMNS} FROM jobs WHERE status IN {UNFINISHED} ORDER BY id");
            let mut out = Vec::new();
            for row in c.query(&sql, &[]).map_err(backend)? {
                let id: i64 = row.get(0);
                match read_row(&row) {
                    Ok(job) => out.push(job),
                    Err(StoreError::Corrupt { name, why }) => {
                        eprintln!(
                            "temper-server: stored job {name} cannot be read back: {why}; \
                             marking it FAILED"
                        );
                        let reason = columns::unreadable_reason(&why);
                        let now = temper_api::EpochSeconds::now().0;
                        c.execute(
                            "UPDATE jobs SET status = 'FAILED', failure_reason = $2, \
                             end_time = $3, last_modified_time = $3, worker_pid = NULL \
                             WHERE id = $1",
                            &[&id, &reason, &now],
                        )
                        .map_err(backend)?;
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })
    }

    fn counts(&self) -> Result<(usize, usize)> {
        self.with(counts_in)
    }

    fn max_id(&self) -> Result<i64> {
        // The sequence, not max(id): it never goes back after a delete.
        self.with(|c| {
            Ok(c.query_one(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM jobs_id_seq",
                &[],
            )
            .map_err(backend)?
            .get(0))
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_left_out_of_messages() {
        assert_eq!(
            super::redact("postgres://temper:s3cret@db:5432/jobs"),
            "postgres://temper:***@db:5432/jobs"
        );
        assert_eq!(super::redact("postgres://db/jobs"), "postgres://db/jobs");
    }
}
