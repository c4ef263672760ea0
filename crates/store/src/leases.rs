//! Worker agents on PostgreSQL: how a `temper-worker --join` agent claims queued jobs,
//! holds them under a lease, reports what they do, and settles them.
//!
//! The rules, all enforced by the database:
//! - **Claim**: a queued job (STARTING, not stopped, no agent) whose instance type the agent
//!   runs is taken by one `UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`: two
//!   agents never take one job, and neither waits on the other. Each claim counts an
//!   `attempt`, the job's fencing token.
//! - **Lease**: the agent renews its jobs' leases every poll (`lease_expires`, on the
//!   database's clock, so hosts' clocks do not matter). A renewal that no longer finds the
//!   job held by this agent and attempt tells the agent it lost it: it kills the worker
//!   and reports nothing more.
//! - **Lost host**: a lease not renewed for its length (the agent was killed, its host went
//!   down or lost the network) is swept by any agent or queue keeper: the job ends FAILED
//!   naming the agent and its host, or goes back to the queue once when it was created with
//!   the tag `temper:retry-on-host-loss` = `true` (never a second time). A stopped job whose
//!   agent is lost ends STOPPED.
//! - **Fenced writes**: reports and the final status are written only `WHERE agent = me AND
//!   attempt = mine AND status` is unfinished, so a late result never overwrites a finished
//!   job or a retry's. The agent kills its own workers when it has not renewed for a lease
//!   (it cannot know whether it still holds them), before the sweep can give them away.

use crate::postgres::{backend, read_row, PostgresStore, RUNNER_LOCK};
use crate::store::{JobRecord, JobRequest, Result, StoreError};
use postgres::Client;

/// The tag that asks for one retry when the job's host is lost.
pub const RETRY_TAG: &str = "temper:retry-on-host-loss";

/// A worker agent, as it registers.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentInfo {
    /// Unique among the live agents of a database.
    pub name: String,
    pub host: String,
    pub slots: u32,
    /// The instance types it runs; empty: any (a CPU host, as the embedded runner).
    pub instance_types: Vec<String>,
    /// How long its leases last without a renewal (what makes it live).
    pub lease_secs: f64,
}

impl AgentInfo {
    /// How messages describe what it runs.
    pub fn capacity(&self) -> String {
        if self.instance_types.is_empty() {
            format!("{} slot(s), any instance type", self.slots)
        } else {
            format!(
                "{} slot(s), {}",
                self.slots,
                compact_types(&self.instance_types)
            )
        }
    }
}

/// A list of instance types, cut short for a message.
fn compact_types(types: &[String]) -> String {
    const SHOWN: usize = 6;
    if types.len() <= SHOWN {
        types.join(", ")
    } else {
        format!(
            "{} and {} more",
            types[..SHOWN].join(", "),
            types.len() - SHOWN
        )
    }
}

/// A job an agent holds: the record as claimed and its fencing token.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub job: JobRecord,
    pub attempt: i32,
}

/// What a renewal read of a held job.
#[derive(Debug, Clone, PartialEq)]
pub struct Renewed {
    pub id: i64,
    pub attempt: i32,
    pub stop_requested: bool,
}

/// What a running job reports: its progress and recommendation steps (JSON, as the worker
/// writes them), and the next piece of its log at byte `log_at`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub progress: Option<String>,
    pub steps: Option<String>,
    pub log_at: u64,
    pub log: Vec<u8>,
}

/// How a held job ended, as the agent writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    pub status: temper_api::OptimizationJobStatus,
    pub failure_reason: Option<String>,
    pub recommended_image: Option<String>,
    pub outcome: Option<serde_json::Value>,
}

/// What one sweep of the queue did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Swept {
    /// Jobs whose host was lost: failed (or stopped) ...
    pub lost: Vec<String>,
    /// ... or queued again.
    pub retried: Vec<String>,
    /// Queued jobs stopped, or failed past MaxPendingTimeInSeconds.
    pub settled: Vec<String>,
}

/// The database's clock in epoch seconds, inside SQL.
const DB_NOW: &str = "extract(epoch from clock_timestamp())::double precision";

impl JobRecord {
    /// Whether the job asked to be run again once if its host is lost.
    pub fn retries_on_host_loss(&self) -> bool {
        let tags = match &self.request {
            JobRequest::Optimization(r) => r.tags.as_ref(),
            JobRequest::Recommendation(r) => r.tags.as_ref(),
        };
        tags.into_iter()
            .flatten()
            .any(|t| t.key == RETRY_TAG && t.value.eq_ignore_ascii_case("true"))
    }

    /// The instance type an agent must run to take the job; `None`: any agent (an
    /// inference-recommendations job measures the host it runs on).
    pub fn instance_type(&self) -> Option<&str> {
        match &self.request {
            JobRequest::Optimization(r) => Some(&r.deployment_instance_type),
            JobRequest::Recommendation(_) => None,
        }
    }
}

fn now() -> f64 {
    temper_api::EpochSeconds::now().0
}

impl PostgresStore {
    /// Takes the shared side of the runner lock on a connection of its own, held as long as
    /// the returned connection lives: agents and queue keepers run beside each other, never
    /// beside a server that runs the jobs itself.
    pub fn share_runner(&self) -> Result<crate::postgres::Connection> {
        let mut connection = crate::postgres::connect(&self.url)?;
        let client = connection.client();
        let locked: bool = crate::postgres::blocking(|| {
            client.query_one("SELECT pg_try_advisory_lock_shared($1)", &[&RUNNER_LOCK])
        })
        .map_err(backend)?
        .get(0);
        if !locked {
            return Err(StoreError::Backend(format!(
                "a temper-server runs the jobs of {} as its own processes (it holds the \
                 runner lock); restart it with --api-only so that worker agents run them",
                crate::postgres::redact(&self.url)
            )));
        }
        Ok(connection)
    }

    /// Registers an agent (or refreshes the row of one that left cleanly or died). A name
    /// that a live agent holds (it renewed within `lease_secs`) is refused.
    pub fn join(&self, agent: &AgentInfo) -> Result<()> {
        let types = serde_json::to_string(&agent.instance_types)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        self.with(|c| {
            let mut tx = c.transaction().map_err(backend)?;
            let live: Option<String> = tx
                .query_opt(
                    &format!(
                        "SELECT host FROM agents WHERE name = $1 \
                         AND heartbeat > {DB_NOW} - lease_secs FOR UPDATE"
                    ),
                    &[&agent.name],
                )
                .map_err(backend)?
                .map(|r| r.get(0));
            if let Some(host) = live {
                return Err(StoreError::Backend(format!(
                    "a live worker agent named {} (on host {host}) has joined this database \
                     already; give this one another --name",
                    agent.name
                )));
            }
            tx.execute(
                &format!(
                    "INSERT INTO agents (name, host, slots, instance_types, lease_secs, started, \
                     heartbeat) VALUES ($1, $2, $3, $4, $5, {DB_NOW}, {DB_NOW}) \
                     ON CONFLICT (name) DO UPDATE SET host = $2, slots = $3, instance_types = $4, \
                     lease_secs = $5, started = {DB_NOW}, heartbeat = {DB_NOW}"
                ),
                &[
                    &agent.name,
                    &agent.host,
                    &(agent.slots as i32),
                    &types,
                    &agent.lease_secs,
                ],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)
        })
    }

    /// Removes an agent that stops cleanly (its jobs have been settled).
    pub fn leave(&self, name: &str) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM agents WHERE name = $1", &[&name])
                .map(|_| ())
                .map_err(backend)
        })
    }

    /// The agents that renewed within their lease, by name.
    pub fn live_agents(&self) -> Result<Vec<AgentInfo>> {
        self.with(live_agents_in)
    }

    /// Claims up to `n` queued jobs `agent` can run, oldest first, under a lease of
    /// `lease_secs`; they are INPROGRESS from now, started at the agent's clock.
    pub fn claim(&self, agent: &AgentInfo, n: usize) -> Result<Vec<Held>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let any = agent.instance_types.is_empty();
        let started = now();
        self.with(|c| {
            let sql = format!(
                "UPDATE jobs SET status = 'INPROGRESS', agent = $1, attempt = attempt + 1, \
                 lease_expires = {DB_NOW} + $2, start_time = $3, last_modified_time = $3, \
                 failure_reason = NULL, progress = NULL, steps = NULL \
                 WHERE id IN (SELECT id FROM jobs WHERE status = 'STARTING' \
                   AND NOT stop_requested AND agent IS NULL \
                   AND (deployment_instance_type = '' OR $4 OR deployment_instance_type = ANY($5)) \
                   ORDER BY id LIMIT $6 FOR UPDATE SKIP LOCKED) \
                 RETURNING {}, attempt",
                crate::columns::COLUMNS
            );
            let rows = c
                .query(
                    &sql,
                    &[
                        &agent.name,
                        &agent.lease_secs,
                        &started,
                        &any,
                        &agent.instance_types,
                        &(n as i64),
                    ],
                )
                .map_err(backend)?;
            let attempt_column = crate::columns::COLUMNS.split(',').count();
            let mut held = Vec::new();
            for row in &rows {
                let attempt: i32 = row.get(attempt_column);
                match read_row(row) {
                    Ok(job) => held.push(Held { job, attempt }),
                    Err(StoreError::Corrupt { name, why }) => {
                        let id: i64 = row.get(0);
                        let reason = crate::columns::unreadable_reason(&why);
                        eprintln!("temper-worker: stored job {name} cannot be read back: {why}; marking it FAILED");
                        c.execute(
                            "UPDATE jobs SET status = 'FAILED', failure_reason = $2, \
                             end_time = $3, last_modified_time = $3 WHERE id = $1",
                            &[&id, &reason, &now()],
                        )
                        .map_err(backend)?;
                    }
                    Err(e) => return Err(e),
                }
            }
            // Sorted: several claimed in one statement come back in no set order.
            held.sort_by_key(|h| h.job.id);
            Ok(held)
        })
    }

    /// Renews the leases of the jobs `agent` holds (id, attempt) and its own heartbeat; the
    /// jobs it still holds come back, with whether each was asked to stop.
    pub fn renew(&self, agent: &str, held: &[(i64, i32)], lease_secs: f64) -> Result<Vec<Renewed>> {
        let ids: Vec<i64> = held.iter().map(|h| h.0).collect();
        let attempts: Vec<i32> = held.iter().map(|h| h.1).collect();
        self.with(|c| {
            let mut tx = c.transaction().map_err(backend)?;
            let touched = tx
                .execute(
                    &format!("UPDATE agents SET heartbeat = {DB_NOW} WHERE name = $1"),
                    &[&agent],
                )
                .map_err(backend)?;
            if touched == 0 {
                return Err(StoreError::Backend(format!(
                    "the worker agent {agent} is no longer registered (its row was removed)"
                )));
            }
            let rows = if ids.is_empty() {
                Vec::new()
            } else {
                tx.query(
                    &format!(
                        "UPDATE jobs SET lease_expires = {DB_NOW} + $2 \
                         WHERE agent = $1 AND status IN ('INPROGRESS', 'STOPPING') \
                         AND (id, attempt) IN (SELECT * FROM unnest($3::BIGINT[], $4::INTEGER[])) \
                         RETURNING id, attempt, stop_requested"
                    ),
                    &[&agent, &lease_secs, &ids, &attempts],
                )
                .map_err(backend)?
            };
            tx.commit().map_err(backend)?;
            Ok(rows
                .iter()
                .map(|r| Renewed {
                    id: r.get(0),
                    attempt: r.get(1),
                    stop_requested: r.get(2),
                })
                .collect())
        })
    }

    /// Records what a held job reports; `false` if the agent no longer holds it.
    pub fn report(&self, agent: &str, id: i64, attempt: i32, report: &Report) -> Result<bool> {
        self.with(|c| {
            let mut tx = c.transaction().map_err(backend)?;
            let held = tx
                .execute(
                    "UPDATE jobs SET progress = coalesce($4, progress), steps = coalesce($5, steps) \
                     WHERE id = $1 AND agent = $2 AND attempt = $3 \
                     AND status IN ('INPROGRESS', 'STOPPING')",
                    &[&id, &agent, &attempt, &report.progress, &report.steps],
                )
                .map_err(backend)?
                == 1;
            if held && !report.log.is_empty() {
                tx.execute(
                    "INSERT INTO job_logs (job_id, attempt, at, chunk) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                    &[&id, &attempt, &(report.log_at as i64), &report.log],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)?;
            Ok(held)
        })
    }

    /// Writes how a held job ended; `false` (and nothing written) if the agent no longer
    /// holds it: a late result never overwrites a finished job or another attempt.
    pub fn finish_held(&self, agent: &str, id: i64, attempt: i32, end: &Ending) -> Result<bool> {
        let outcome = end.outcome.as_ref().map(|o| o.to_string());
        let status = crate::store::status_name(end.status);
        self.with(|c| {
            Ok(c.execute(
                "UPDATE jobs SET status = $4, end_time = $5, last_modified_time = $5, \
                 failure_reason = $6, recommended_image = $7, outcome = $8, worker_pid = NULL, \
                 lease_expires = NULL \
                 WHERE id = $1 AND agent = $2 AND attempt = $3 \
                 AND status IN ('INPROGRESS', 'STOPPING')",
                &[
                    &id,
                    &agent,
                    &attempt,
                    &status,
                    &now(),
                    &end.failure_reason,
                    &end.recommended_image,
                    &outcome,
                ],
            )
            .map_err(backend)?
                == 1)
        })
    }

    /// Settles what no agent will: jobs whose lease ran out (their host was lost), queued
    /// jobs that were stopped, and queued jobs past MaxPendingTimeInSeconds. Any number of
    /// agents and queue keepers may sweep at once: each job is settled under its row lock,
    /// once.
    pub fn sweep(&self) -> Result<Swept> {
        let mut swept = Swept::default();
        self.with(|c| {
            sweep_lost(c, &mut swept)?;
            sweep_queue(c, &mut swept)
        })?;
        Ok(swept)
    }

    /// Every agent that joined and has not left, by name: live or not, what it runs now.
    pub fn agents(&self) -> Result<Vec<AgentStatus>> {
        self.with(|c| {
            let rows = c
                .query(
                    &format!(
                        "SELECT a.name, a.host, a.slots, a.instance_types, a.lease_secs, \
                         {DB_NOW} - a.heartbeat, \
                         coalesce(array_agg(j.name ORDER BY j.id) FILTER (WHERE j.id IS NOT NULL), \
                         '{{}}') \
                         FROM agents a LEFT JOIN jobs j ON j.agent = a.name \
                         AND j.status IN ('INPROGRESS', 'STOPPING') \
                         GROUP BY a.name ORDER BY a.name"
                    ),
                    &[],
                )
                .map_err(backend)?;
            Ok(rows
                .iter()
                .map(|r| {
                    let info = AgentInfo {
                        name: r.get(0),
                        host: r.get(1),
                        slots: r.get::<_, i32>(2).max(0) as u32,
                        instance_types: serde_json::from_str(&r.get::<_, String>(3))
                            .unwrap_or_default(),
                        lease_secs: r.get(4),
                    };
                    let seen: f64 = r.get(5);
                    AgentStatus {
                        live: seen < info.lease_secs,
                        info,
                        seen_secs_ago: seen,
                        running: r.get(6),
                    }
                })
                .collect())
        })
    }

    /// Whether a server runs this database's jobs as its own processes (it holds the
    /// runner lock exclusively): then it settles its queue, and agents are refused.
    pub fn runner_present(&self) -> Result<bool> {
        self.with(runner_present)
    }

    /// Why a queued job is still waiting, for Describe: no live agent runs its instance
    /// type, or every agent that does is busy. `None` for a job any agent may take.
    pub fn waiting_reason(&self, job: &JobRecord) -> Result<Option<String>> {
        if job.status != temper_api::OptimizationJobStatus::Starting || job.stop_requested {
            return Ok(None);
        }
        let agents = self.with(|c| {
            // A server that runs the jobs itself holds the runner lock alone: no agents.
            if runner_present(c)? {
                return Ok(None);
            }
            live_agents_in(c).map(Some)
        })?;
        Ok(agents.and_then(|agents| waiting_reason(job, &agents)))
    }

    /// The log a job's agents reported (every attempt, in order), from byte `offset`, at
    /// most `limit` bytes, and the log's size; `None` if no agent reported any.
    pub fn reported_log(&self, id: i64, offset: u64, limit: u64) -> Result<Option<(Vec<u8>, u64)>> {
        self.with(|c| {
            // The lengths first: only the chunks the window overlaps are read (a follower
            // asks for the tail of a log of up to 16 MiB an attempt, every half second).
            let rows = c
                .query(
                    "SELECT attempt, at, length(chunk) FROM job_logs WHERE job_id = $1 \
                     ORDER BY attempt, at",
                    &[&id],
                )
                .map_err(backend)?;
            if rows.is_empty() {
                return Ok(None);
            }
            let mut pieces = Vec::new();
            let mut last = None;
            for row in &rows {
                let attempt: i32 = row.get(0);
                // Each attempt after the first is headed, even where the first left no log.
                if attempt > 1 && last != Some(attempt) {
                    let header = format!("\n--- attempt {attempt} (the job was run again) ---\n");
                    pieces.push(LogPiece::Header(header.into_bytes()));
                }
                last = Some(attempt);
                let len: i32 = row.get(2);
                pieces.push(LogPiece::Chunk {
                    attempt,
                    at: row.get(1),
                    len: len.max(0) as u64,
                });
            }
            let size: u64 = pieces.iter().map(LogPiece::len).sum();
            let start = offset.min(size);
            let end = start.saturating_add(limit).min(size);
            let mut out = Vec::new();
            let mut pos = 0;
            for piece in &pieces {
                let (from, to) = (start.max(pos), end.min(pos + piece.len()));
                if from < to {
                    let (skip, take) = (from - pos, to - from);
                    match piece {
                        LogPiece::Header(h) => {
                            out.extend_from_slice(&h[skip as usize..(skip + take) as usize])
                        }
                        LogPiece::Chunk { attempt, at, .. } => {
                            let row = c
                                .query_one(
                                    "SELECT substring(chunk FROM $4 FOR $5) FROM job_logs \
                                     WHERE job_id = $1 AND attempt = $2 AND at = $3",
                                    &[&id, attempt, at, &(skip as i32 + 1), &(take as i32)],
                                )
                                .map_err(backend)?;
                            out.extend_from_slice(row.get::<_, &[u8]>(0));
                        }
                    }
                }
                pos += piece.len();
            }
            Ok(Some((out, size)))
        })
    }

    /// The progress and recommendation steps a running job's agent last reported, and the
    /// agent (with its host) that holds or last held it.
    pub fn reported_state(&self, id: i64) -> Result<ReportedState> {
        self.with(|c| {
            let row = c
                .query_opt(
                    "SELECT j.progress, j.steps, j.agent, a.host FROM jobs j \
                     LEFT JOIN agents a ON a.name = j.agent WHERE j.id = $1",
                    &[&id],
                )
                .map_err(backend)?;
            Ok(row
                .map(|r| ReportedState {
                    progress: r.get(0),
                    steps: r.get(1),
                    agent: r.get(2),
                    host: r.get(3),
                })
                .unwrap_or_default())
        })
    }
}

/// A part of a job's log as servers serve it: a stored chunk, or the line that heads an
/// attempt after the first.
enum LogPiece {
    Header(Vec<u8>),
    Chunk { attempt: i32, at: i64, len: u64 },
}

impl LogPiece {
    fn len(&self) -> u64 {
        match self {
            LogPiece::Header(h) => h.len() as u64,
            LogPiece::Chunk { len, .. } => *len,
        }
    }
}

/// A worker agent as `temper-server agents` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentStatus {
    pub info: AgentInfo,
    /// Seconds since it last renewed (on the database's clock).
    pub seen_secs_ago: f64,
    /// It renewed within its lease.
    pub live: bool,
    /// The jobs it holds (INPROGRESS or STOPPING), oldest first.
    pub running: Vec<String>,
}

/// What [`PostgresStore::reported_state`] reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportedState {
    pub progress: Option<String>,
    pub steps: Option<String>,
    pub agent: Option<String>,
    pub host: Option<String>,
}

/// Why a queued job waits, given the live agents (see [`PostgresStore::waiting_reason`]).
pub fn waiting_reason(job: &JobRecord, agents: &[AgentInfo]) -> Option<String> {
    let bound = match job.pending_limit() {
        Some(max) => format!("it fails once it has waited its MaxPendingTimeInSeconds ({max} s)"),
        None => "it waits until one joins".to_string(),
    };
    if agents.is_empty() {
        return Some(format!(
            "Waiting: no worker agent has joined this job database (start one with \
             `temper-worker --join <database URL> --slots N`); {bound}"
        ));
    }
    let wanted = job.instance_type()?;
    let able = agents
        .iter()
        .any(|a| a.instance_types.is_empty() || a.instance_types.iter().any(|t| t == wanted));
    if able {
        return None;
    }
    let joined: Vec<String> = agents
        .iter()
        .map(|a| format!("{} on {} ({})", a.name, a.host, a.capacity()))
        .collect();
    Some(format!(
        "Waiting: no worker agent runs {wanted}; the agents that joined are {}. Start an agent \
         on a host with that hardware (or with --instance-types {wanted}); {bound}",
        joined.join("; ")
    ))
}

fn sweep_lost(c: &mut Client, swept: &mut Swept) -> Result<()> {
    let mut tx = c.transaction().map_err(backend)?;
    let rows = tx
        .query(
            &format!(
                "SELECT {}, j.attempt, j.agent, a.host, a.lease_secs, \
                 to_char(to_timestamp(j.lease_expires - coalesce(a.lease_secs, 0)) \
                 AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
                 FROM jobs j LEFT JOIN agents a ON a.name = j.agent \
                 WHERE j.status IN ('INPROGRESS', 'STOPPING') AND j.lease_expires < {DB_NOW} \
                 ORDER BY j.id FOR UPDATE OF j SKIP LOCKED",
                prefixed_columns("j")
            ),
            &[],
        )
        .map_err(backend)?;
    let base = crate::columns::COLUMNS.split(',').count();
    for row in &rows {
        let id: i64 = row.get(0);
        let name: String = row.get(1);
        let attempt: i32 = row.get(base);
        let agent: Option<String> = row.get(base + 1);
        let host: Option<String> = row.get(base + 2);
        let lease_secs: Option<f64> = row.get(base + 3);
        let renewed: Option<String> = row.get(base + 4);
        let lease_secs = lease_secs.unwrap_or(0.0);
        let job = read_row(row).ok();
        let agent = agent.unwrap_or_else(|| "(unknown)".into());
        let host = host.unwrap_or_else(|| "an unknown host".into());
        let renewed = renewed.unwrap_or_else(|| "?".into());
        let stopped = job.as_ref().is_some_and(|j| j.stop_requested);
        let retry = job.as_ref().is_some_and(|j| j.retries_on_host_loss()) && attempt < 2;
        let lost = format!(
            "the worker agent {agent} on host {host} last renewed its lease on this job at \
             {renewed} and not within the {lease_secs:.0} s lease since (the agent was killed, \
             or its host went down or lost the network)"
        );
        let now = now();
        if retry && !stopped {
            let reason = format!("Queued again (attempt {} of 2): {lost}", attempt + 1);
            tx.execute(
                "UPDATE jobs SET status = 'STARTING', agent = NULL, lease_expires = NULL, \
                 worker_pid = NULL, start_time = NULL, failure_reason = $2, last_modified_time = $3 \
                 WHERE id = $1",
                &[&id, &reason, &now],
            )
            .map_err(backend)?;
            swept.retried.push(name);
        } else {
            let (status, reason) = if stopped {
                ("STOPPED", None)
            } else {
                let again = if job.as_ref().is_some_and(|j| j.retries_on_host_loss()) {
                    "It had been run twice (the tag temper:retry-on-host-loss allows one retry)"
                } else {
                    "Create it again to rerun it (or create it with the tag \
                     temper:retry-on-host-loss = true to be queued again once on such a loss)"
                };
                (
                    "FAILED",
                    Some(format!(
                        "The job's host was lost: {lost}. Its worker was ended with its agent; \
                         no complete artifact was written by this attempt. {again}"
                    )),
                )
            };
            tx.execute(
                "UPDATE jobs SET status = $2, failure_reason = $3, end_time = $4, \
                 last_modified_time = $4, lease_expires = NULL, worker_pid = NULL WHERE id = $1",
                &[&id, &status, &reason, &now],
            )
            .map_err(backend)?;
            swept.lost.push(name);
        }
    }
    tx.commit().map_err(backend)
}

fn sweep_queue(c: &mut Client, swept: &mut Swept) -> Result<()> {
    // Read without locks (a lock on every queued row would make agents' claims skip them
    // meanwhile); each change is conditional on the job still being unclaimed.
    let rows = c
        .query(
            &format!(
                "SELECT {} FROM jobs WHERE agent IS NULL AND worker_pid IS NULL \
                 AND (status = 'STARTING' OR (status = 'STOPPING' AND start_time IS NULL)) \
                 ORDER BY id",
                crate::columns::COLUMNS
            ),
            &[],
        )
        .map_err(backend)?;
    let mut agents = None;
    let now = now();
    for row in &rows {
        let Ok(job) = read_row(row) else { continue };
        if job.stop_requested {
            let settled = c
                .execute(
                    "UPDATE jobs SET status = 'STOPPED', end_time = $2, last_modified_time = $2 \
                     WHERE id = $1 AND agent IS NULL AND status IN ('STARTING', 'STOPPING')",
                    &[&job.id, &now],
                )
                .map_err(backend)?;
            if settled == 1 {
                swept.settled.push(job.name.clone());
            }
            continue;
        }
        let waited = now - job.creation_time;
        let Some(max) = job.pending_limit().filter(|max| waited > *max as f64) else {
            continue;
        };
        if agents.is_none() {
            agents = Some(live_agents_in(c)?);
        }
        let why = waiting_reason(&job, agents.as_deref().unwrap_or_default())
            .map(|w| format!(" ({})", w.trim_start_matches("Waiting: ")))
            .unwrap_or_else(|| " (every agent that runs it was busy)".into());
        let reason = format!(
            "The job waited {waited:.0} s for a worker agent, longer than its \
             StoppingCondition.MaxPendingTimeInSeconds ({max} s){why}. Create it again \
             when an agent can take it, or with a larger MaxPendingTimeInSeconds"
        );
        let settled = c
            .execute(
                "UPDATE jobs SET status = 'FAILED', failure_reason = $2, end_time = $3, \
                 last_modified_time = $3 WHERE id = $1 AND agent IS NULL AND status = 'STARTING'",
                &[&job.id, &reason, &now],
            )
            .map_err(backend)?;
        if settled == 1 {
            swept.settled.push(job.name.clone());
        }
    }
    Ok(())
}

fn runner_present(c: &mut Client) -> Result<bool> {
    Ok(c.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
         AND classid = $1 AND objid = $2 AND objsubid = 1 AND mode = 'ExclusiveLock')",
        &[
            &((RUNNER_LOCK >> 32) as u32),
            &((RUNNER_LOCK & 0xffff_ffff) as u32),
        ],
    )
    .map_err(backend)?
    .get(0))
}

fn live_agents_in(c: &mut impl postgres::GenericClient) -> Result<Vec<AgentInfo>> {
    let rows = c
        .query(
            &format!(
                "SELECT name, host, slots, instance_types, lease_secs FROM agents \
                 WHERE heartbeat > {DB_NOW} - lease_secs ORDER BY name"
            ),
            &[],
        )
        .map_err(backend)?;
    Ok(rows
        .iter()
        .map(|r| AgentInfo {
            name: r.get(0),
            host: r.get(1),
            slots: r.get::<_, i32>(2).max(0) as u32,
            instance_types: serde_json::from_str(&r.get::<_, String>(3)).unwrap_or_default(),
            lease_secs: r.get(4),
        })
        .collect())
}

/// [`crate::columns::COLUMNS`] with each column qualified by `table`.
fn prefixed_columns(table: &str) -> String {
    crate::columns::COLUMNS
        .split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}
