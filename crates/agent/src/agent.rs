//! The worker agent (`temper-worker --join postgres://... --slots N`): claims queued jobs
//! from a shared database and runs each as the server's supervisor does, as a worker
//! process with its own job directory, under a lease (the rules are in
//! [`temper_store::leases`]).
//!
//! Every poll (`--poll-ms`, 1 s by default), and as soon as one of its workers ends or a
//! server announces a created or changed job (`LISTEN temper_jobs`), the agent:
//! 1. renews the leases of the jobs it runs, and learns which were stopped (Stop from any
//!    server takes effect within one poll);
//! 2. reports each job's new log bytes, progress and steps to the database (what
//!    `temper-server logs` and the progress view read from any server), sends SIGTERM to
//!    a stopped job or one past its runtime limit (SIGKILL after the grace period), and
//!    settles the jobs whose worker ended;
//! 3. sweeps the queue (lost hosts, stopped queued jobs, MaxPendingTimeInSeconds);
//! 4. claims as many queued jobs as it has free slots.
//!
//! An agent that cannot renew for its lease ends its workers (it cannot know whether it
//! still holds their jobs), before any other agent may sweep them: a job never runs twice
//! at once. Its workers also die with it (`PR_SET_PDEATHSIG`).

use crate::ending::{ending, Cause, Exit, WorkerEnd};
use crate::launch::WorkerCommand;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use temper_api::{EpochSeconds, OptimizationJobStatus};
use temper_jobdir::files as worker_files;
use temper_store::leases::{AgentInfo, Ending, Held, Report};
use temper_store::postgres::{Connection, PostgresStore};
use temper_store::store::{status_name, StoreError};

/// The most log bytes sent for one job in one poll, and in all for one attempt (beyond it
/// the log stays on the agent's host, and the database's copy says where).
const LOG_CHUNK: u64 = 1 << 20;
const LOG_LIMIT: u64 = 16 << 20;

/// How an agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The job database (`postgres://...`).
    pub database: String,
    pub info: AgentInfo,
    /// Where job directories are made (`jobs/<id>-<attempt>`).
    pub data_dir: PathBuf,
    pub poll: Duration,
    /// Between SIGTERM and SIGKILL when a job is stopped or runs out of time.
    pub grace: Duration,
    pub command: WorkerCommand,
}

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// A job this agent runs.
struct Running {
    held: Held,
    child: Child,
    dir: PathBuf,
    cause: Option<Cause>,
    term_sent: Option<Instant>,
    killed: bool,
    /// Log bytes already in the database.
    log_sent: u64,
    progress_sent: Option<String>,
    steps_sent: Option<String>,
    /// How it ended, once its worker has: kept until the database has it.
    ended: Option<Ending>,
}

impl Running {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Ends the worker and everything it started, and reaps it.
    fn kill(&mut self) {
        let _ = killpg(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

pub struct Agent {
    config: AgentConfig,
    store: PostgresStore,
    /// The shared runner lock: held while the agent may claim jobs.
    lock: Option<Connection>,
    running: Vec<Running>,
    last_renewed: Instant,
    /// The database could not be reached since this instant (reported once).
    outage: Option<Instant>,
}

fn now() -> f64 {
    EpochSeconds::now().0
}

impl Agent {
    /// Connects (bringing the schema up to date), takes the shared runner lock and joins.
    pub fn join(config: AgentConfig) -> Result<Agent, AgentError> {
        let jobs = config.data_dir.join("jobs");
        std::fs::create_dir_all(&jobs).map_err(|source| AgentError::Io {
            what: format!("creating the agent's data directory {}", jobs.display()),
            source,
        })?;
        let store = PostgresStore::open(&config.database)?;
        let mut lock = store.share_runner()?;
        lock.listen()?;
        store.join(&config.info)?;
        Ok(Agent {
            config,
            store,
            lock: Some(lock),
            running: Vec::new(),
            last_renewed: Instant::now(),
            outage: None,
        })
    }

    fn say(&self, what: &str) {
        eprintln!("temper-worker agent {}: {what}", self.config.info.name);
    }

    /// Runs until `signals` counts one (then drains: claims nothing more and waits for its
    /// jobs) or two (ends its workers at once; their leases run out).
    pub fn run(mut self, signals: &AtomicUsize) {
        let info = &self.config.info;
        self.say(&format!(
            "joined {} from host {} ({}, lease {:.0} s, poll {} ms)",
            temper_store::postgres::redact(&self.config.database),
            info.host,
            info.capacity(),
            info.lease_secs,
            self.config.poll.as_millis()
        ));
        let mut draining = false;
        loop {
            let seen = signals.load(Ordering::SeqCst);
            if seen >= 2 {
                let n = self.running.len();
                for running in &mut self.running {
                    running.kill();
                }
                self.say(&format!(
                    "stopped at once: ended {n} worker(s); their jobs are settled by the lease \
                     rule when their leases run out"
                ));
                return;
            }
            if seen == 1 && !draining {
                draining = true;
                self.say(&format!(
                    "draining: claiming no more jobs, waiting for {} running; send the signal \
                     again to end them now",
                    self.running.len()
                ));
            }
            self.tick(!draining);
            if draining && self.running.is_empty() {
                if let Err(e) = self.store.leave(&self.config.info.name) {
                    self.say(&format!("leaving the database: {e}"));
                }
                self.say("left the database; no job is running");
                return;
            }
            self.pause(signals, seen);
        }
    }

    /// Waits for the next poll, or less: until a worker ends (its slot can take the next
    /// job now, not a poll later), a job is created or changed (NOTIFY from any server), or
    /// a signal arrives.
    fn pause(&mut self, signals: &AtomicUsize, seen: usize) {
        let until = Instant::now() + self.config.poll;
        loop {
            let now = Instant::now();
            if now >= until || signals.load(Ordering::SeqCst) != seen {
                return;
            }
            // try_wait keeps the status it reaps, for `watch` to read again.
            let ended = self
                .running
                .iter_mut()
                .any(|r| r.ended.is_none() && matches!(r.child.try_wait(), Ok(Some(_))));
            if ended {
                return;
            }
            let step = (until - now).min(Duration::from_millis(20));
            match self.lock.as_mut() {
                // A job was created or changed (a Stop): look now.
                Some(lock) => {
                    if lock.notified(step) {
                        return;
                    }
                }
                None => std::thread::sleep(step),
            }
        }
    }

    /// One poll (see the module's comment).
    pub fn tick(&mut self, claim: bool) {
        if !self.renew() {
            return;
        }
        self.watch();
        match self.store.sweep() {
            Ok(swept) => {
                for name in &swept.lost {
                    self.say(&format!("job {name}: its host was lost (lease ran out)"));
                }
                for name in &swept.retried {
                    self.say(&format!(
                        "job {name}: its host was lost; queued again (it asked for one retry)"
                    ));
                }
            }
            Err(e) => self.say(&format!("sweeping the queue: {e}")),
        }
        if claim && self.hold_lock() {
            self.claim();
        }
    }

    /// Renews the leases; `false` while the database cannot be reached. Past a lease
    /// without a renewal the workers are ended: their jobs may be given to another host.
    fn renew(&mut self) -> bool {
        let held: Vec<(i64, i32)> = self
            .running
            .iter()
            .map(|r| (r.held.job.id, r.held.attempt))
            .collect();
        let lease = Duration::from_secs_f64(self.config.info.lease_secs);
        match self
            .store
            .renew(&self.config.info.name, &held, self.config.info.lease_secs)
        {
            Ok(renewed) => {
                if let Some(since) = self.outage.take() {
                    self.say(&format!(
                        "the job database answers again (after {:.1} s)",
                        since.elapsed().as_secs_f64()
                    ));
                }
                self.last_renewed = Instant::now();
                let mut kept = Vec::new();
                for mut running in std::mem::take(&mut self.running) {
                    let id = running.held.job.id;
                    match renewed.iter().find(|r| r.id == id) {
                        Some(r) => {
                            running.held.job.stop_requested |= r.stop_requested;
                            kept.push(running);
                        }
                        None => {
                            running.kill();
                            self.say(&format!(
                                "job {}: no longer held by this agent (its lease ran out and \
                                 it was settled elsewhere); its worker was ended and its \
                                 result, if any, is not recorded",
                                running.held.job.name
                            ));
                        }
                    }
                }
                self.running = kept;
                true
            }
            Err(e) => {
                if self.outage.is_none() {
                    self.outage = Some(Instant::now());
                    self.say(&format!(
                        "cannot reach the job database ({e}); retrying every poll"
                    ));
                }
                // Ended one poll before the lease runs out, so that no other agent can
                // claim a job this one still runs.
                let unsafe_after = lease.saturating_sub(self.config.poll);
                if !self.running.is_empty() && self.last_renewed.elapsed() >= unsafe_after {
                    let names: Vec<String> = self
                        .running
                        .iter()
                        .map(|r| r.held.job.name.clone())
                        .collect();
                    for running in &mut self.running {
                        running.kill();
                    }
                    self.running.clear();
                    self.say(&format!(
                        "could not renew the leases for {:.1} s: ended the workers of {} so \
                         that no job runs twice; the lease rule settles them",
                        self.last_renewed.elapsed().as_secs_f64(),
                        names.join(", ")
                    ));
                }
                false
            }
        }
    }

    /// Keeps the shared runner lock (its connection is lost when the database restarts).
    fn hold_lock(&mut self) -> bool {
        if self.lock.as_mut().is_some_and(|c| c.is_alive()) {
            return true;
        }
        self.lock = None;
        match self.store.share_runner().and_then(|mut lock| {
            lock.listen()?;
            Ok(lock)
        }) {
            Ok(lock) => {
                self.lock = Some(lock);
                true
            }
            Err(e) => {
                self.say(&format!("not claiming jobs: {e}"));
                false
            }
        }
    }

    fn watch(&mut self) {
        let grace = self.config.grace;
        let name = self.config.info.name.clone();
        let host = self.config.info.host.clone();
        let mut kept = Vec::new();
        for mut running in std::mem::take(&mut self.running) {
            if running.ended.is_none() {
                match running.child.try_wait() {
                    Ok(Some(status)) => {
                        // Anything it started is left in its process group when it dies
                        // alone (OOM killer, kill -9): end them.
                        let _ = killpg(running.pid(), Signal::SIGKILL);
                        let job = &running.held.job;
                        let end = WorkerEnd {
                            pid: running.child.id(),
                            exit: Exit::Status(status),
                            cause: running.cause,
                            killed: running.killed,
                            grace,
                            result: worker_files::read_result(&running.dir),
                            steps: serde_json::json!(temper_jobdir::recommendation::read_steps(
                                &running.dir
                            )),
                            logs_hint: format!(
                                "its log is shown by `temper-server logs {}` (ran by worker \
                                 agent {name} on host {host}, in {})",
                                job.name,
                                running.dir.display()
                            ),
                        };
                        running.ended = Some(ending(job, end, now()));
                    }
                    Ok(None) => self.hold_to_limits(&mut running, grace),
                    Err(e) => self.say(&format!("watching job {}: {e}", running.held.job.name)),
                }
            }
            let held = self.send_report(&mut running);
            if !held {
                if running.ended.is_none() {
                    running.kill();
                }
                self.say(&format!(
                    "job {}: no longer held by this agent; its worker was ended",
                    running.held.job.name
                ));
                continue;
            }
            if let Some(end) = &running.ended {
                let job = &running.held.job;
                match self
                    .store
                    .finish_held(&name, job.id, running.held.attempt, end)
                {
                    Ok(true) => self.say(&format!(
                        "job {} is {}{}",
                        job.name,
                        status_name(end.status),
                        end.failure_reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    )),
                    Ok(false) => self.say(&format!(
                        "job {} ended here as {}, but it was settled elsewhere meanwhile (its \
                         lease ran out); the late result is not recorded",
                        job.name,
                        status_name(end.status)
                    )),
                    Err(e) => {
                        self.say(&format!(
                            "recording the end of job {}: {e}; retrying",
                            job.name
                        ));
                        kept.push(running);
                    }
                }
                continue;
            }
            kept.push(running);
        }
        self.running = kept;
    }

    /// SIGTERM to a job that was stopped or ran past its limit; SIGKILL after the grace.
    fn hold_to_limits(&self, running: &mut Running, grace: Duration) {
        let job = &running.held.job;
        if running.cause.is_none() {
            let over_time = match (job.runtime_limit(), job.start_time) {
                (Some((max, _)), Some(start)) => now() - start > max as f64,
                _ => false,
            };
            running.cause = if over_time {
                Some(Cause::Runtime)
            } else if job.stop_requested {
                Some(Cause::Stop)
            } else {
                None
            };
            if running.cause.is_some() {
                let _ = killpg(running.pid(), Signal::SIGTERM);
                running.term_sent = Some(Instant::now());
            }
        } else if let Some(sent) = running.term_sent {
            if !running.killed && sent.elapsed() > grace {
                let _ = killpg(running.pid(), Signal::SIGKILL);
                running.killed = true;
            }
        }
    }

    /// Sends the job's new log bytes, progress and steps; `false` if it is no longer held.
    fn send_report(&self, running: &mut Running) -> bool {
        let mut report = Report {
            log_at: running.log_sent,
            ..Report::default()
        };
        let read = |path: PathBuf| std::fs::read_to_string(path).ok();
        let progress = read(worker_files::progress_path(&running.dir));
        if progress != running.progress_sent {
            report.progress = progress.clone();
        }
        let steps = read(temper_jobdir::recommendation::steps_path(&running.dir));
        if steps != running.steps_sent {
            report.steps = steps.clone();
        }
        report.log = self.next_log(running);
        if report.progress.is_none() && report.steps.is_none() && report.log.is_empty() {
            return true;
        }
        let job = &running.held.job;
        match self.store.report(
            &self.config.info.name,
            job.id,
            running.held.attempt,
            &report,
        ) {
            Ok(held) => {
                if held {
                    running.log_sent += report.log.len() as u64;
                    running.progress_sent = progress;
                    running.steps_sent = steps;
                }
                held
            }
            // Reported again at the next poll; the lease decides whether it is still held.
            Err(_) => true,
        }
    }

    /// The log bytes not yet sent (a chunk at most), or where the rest is once past the cap.
    fn next_log(&self, running: &Running) -> Vec<u8> {
        use std::io::{Read, Seek, SeekFrom};
        let path = worker_files::log_path(&running.dir);
        if running.log_sent >= LOG_LIMIT {
            return Vec::new();
        }
        let Ok(mut file) = std::fs::File::open(&path) else {
            return Vec::new();
        };
        let mut chunk = Vec::new();
        let read = file.seek(SeekFrom::Start(running.log_sent)).and_then(|_| {
            file.take(LOG_CHUNK.min(LOG_LIMIT - running.log_sent))
                .read_to_end(&mut chunk)
        });
        if read.is_err() {
            return Vec::new();
        }
        if running.log_sent + chunk.len() as u64 >= LOG_LIMIT {
            chunk.extend_from_slice(
                format!(
                    "\n[the log goes on past {} MiB; the rest is in {} on host {}]\n",
                    LOG_LIMIT >> 20,
                    path.display(),
                    self.config.info.host
                )
                .as_bytes(),
            );
        }
        chunk
    }

    fn claim(&mut self) {
        let free = (self.config.info.slots as usize).saturating_sub(self.running.len());
        let claimed = match self.store.claim(&self.config.info, free) {
            Ok(claimed) => claimed,
            Err(e) => {
                self.say(&format!("claiming jobs: {e}"));
                return;
            }
        };
        for held in claimed {
            let job = &held.job;
            let dir = self
                .config
                .data_dir
                .join("jobs")
                .join(format!("{}-{}", job.id, held.attempt));
            match self.config.command.start(&dir, &job.spec) {
                Ok(child) => {
                    self.say(&format!(
                        "job {} (attempt {}) runs as pid {} in {}",
                        job.name,
                        held.attempt,
                        child.id(),
                        dir.display()
                    ));
                    self.running.push(Running {
                        held,
                        child,
                        dir,
                        cause: None,
                        term_sent: None,
                        killed: false,
                        log_sent: 0,
                        progress_sent: None,
                        steps_sent: None,
                        ended: None,
                    });
                }
                Err(e) => {
                    let reason = format!(
                        "The worker agent {} on host {} could not start the worker {} in {}: \
                         {e}; check the agent's --data-dir free space and its installation",
                        self.config.info.name,
                        self.config.info.host,
                        self.config.command.exe.display(),
                        dir.display()
                    );
                    let end = Ending {
                        status: OptimizationJobStatus::Failed,
                        failure_reason: Some(reason),
                        recommended_image: None,
                        outcome: None,
                    };
                    if let Err(e) =
                        self.store
                            .finish_held(&self.config.info.name, job.id, held.attempt, &end)
                    {
                        self.say(&format!("recording the failure of job {}: {e}", job.name));
                    }
                }
            }
        }
    }
}
