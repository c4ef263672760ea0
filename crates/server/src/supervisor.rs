//! Runs jobs: one worker process per job, started in order of creation as slots free
//! up, watched until it ends, and held to the job's StoppingCondition.
//!
//! One thread owns every worker. It wakes when a job is created or stopped and at a
//! fixed interval, and each time compares the store with the processes:
//! - a queued job (STARTING) starts when a slot is free, fails once it has waited
//!   longer than MaxPendingTimeInSeconds, and ends STOPPED if it was stopped;
//! - a running job gets SIGTERM when it is stopped or passes MaxRuntimeInSeconds,
//!   and SIGKILL after the grace period;
//! - a worker that has exited is read out (its `result.json`, else its exit status)
//!   into COMPLETED, FAILED or STOPPED with a FailureReason.
//!
//! Workers run in their own process group, so they outlive a server restart: the next
//! server adopts those still running (checking the pid really is that job's worker)
//! and settles those that ended meanwhile from their result files. Nothing stays
//! INPROGRESS without a process behind it.

use crate::config::Config;
use crate::store::{status_name, JobRecord, JobStore};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::process::Child;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;
use temper_agent::ending::{ending, Cause, Exit, WorkerEnd};
use temper_agent::launch::WorkerCommand;
use temper_api::{EpochSeconds, OptimizationJobStatus};
use temper_jobdir::files as worker_files;

/// Wakes the supervisor early (a job was created or stopped).
#[derive(Clone)]
pub struct Wake(mpsc::Sender<()>);

impl Wake {
    /// Wakes nothing: a server that runs no jobs (`--api-only`). The runner of the shared
    /// database finds new and stopped jobs when it next looks (every poll interval).
    pub fn none() -> Wake {
        Wake(mpsc::channel().0)
    }

    pub fn wake(&self) {
        // The supervisor only stops with the process; a failed send means it is gone.
        let _ = self.0.send(());
    }
}

struct Worker {
    pid: u32,
    /// `None` for a worker adopted from a previous server (not our child).
    child: Option<Child>,
    cause: Option<Cause>,
    term_sent: Option<Instant>,
    killed: bool,
}

impl Worker {
    /// A worker this server did not start (left by a previous run), watched by pid.
    fn found(pid: u32) -> Worker {
        Worker {
            pid,
            child: None,
            cause: None,
            term_sent: None,
            killed: false,
        }
    }
}

pub struct Supervisor {
    store: Arc<dyn JobStore>,
    config: Arc<Config>,
    workers: HashMap<i64, Worker>,
    wakes: mpsc::Receiver<()>,
}

/// Starts the supervisor thread: adopts or settles the jobs a previous server left,
/// then runs until the process ends. Fails if the jobs left cannot be read: settling
/// them blind would fail jobs whose workers still run.
pub fn start(
    store: Arc<dyn JobStore>,
    config: Arc<Config>,
) -> Result<Wake, crate::store::StoreError> {
    let (tx, rx) = mpsc::channel();
    let mut supervisor = Supervisor {
        store,
        config,
        workers: HashMap::new(),
        wakes: rx,
    };
    supervisor.reconcile()?;
    std::thread::Builder::new()
        .name("temper-supervisor".into())
        .spawn(move || {
            // A supervisor that dies silently would leave every job unwatched: a panic
            // takes the server down instead, and the next start reconciles.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| supervisor.run()));
            if outcome.is_err() {
                eprintln!("temper-server: the job supervisor panicked; exiting so that a restart reconciles the jobs");
                std::process::abort();
            }
        })
        .map_err(|e| crate::store::StoreError::Backend(format!("starting the supervisor: {e}")))?;
    Ok(Wake(tx))
}

fn now() -> f64 {
    EpochSeconds::now().0
}

impl Supervisor {
    fn run(mut self) {
        loop {
            self.tick();
            match self.wakes.recv_timeout(self.config.poll_interval) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Several wakes may have queued up: one pass serves them all.
                    while self.wakes.try_recv().is_ok() {}
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // The service is gone; keep watching the workers until exit.
                }
            }
        }
    }

    /// At start-up: every job left running by a previous server is either adopted (its
    /// worker still runs) or settled from what its worker left behind.
    fn reconcile(&mut self) -> Result<(), crate::store::StoreError> {
        for job in self.store.unfinished()? {
            if job.worker_pid.is_some() {
                self.adopt_or_settle(&job);
            }
        }
        Ok(())
    }

    /// A job recorded as running with no worker of ours: adopt its worker if it still
    /// runs, else settle the job from what the worker left.
    fn adopt_or_settle(&mut self, job: &JobRecord) {
        let pid = job.worker_pid.unwrap_or(0);
        let worker = Worker::found(pid);
        if pid != 0 && worker_files::is_worker_of(pid, &self.config.job_dir(job.id)) {
            eprintln!(
                "temper-server: adopted the running worker (pid {pid}) of job {}",
                job.name
            );
            self.workers.insert(job.id, worker);
        } else {
            self.settle(job, &worker, Exit::Unknown);
        }
    }

    fn tick(&mut self) {
        let jobs = match self.store.unfinished() {
            Ok(jobs) => jobs,
            Err(e) => {
                eprintln!("temper-server: reading unfinished jobs: {e}");
                return;
            }
        };
        let now = now();
        for job in &jobs {
            if self.workers.contains_key(&job.id) {
                self.watch(job, now);
            } else {
                self.queue(job, now);
            }
        }
        // Workers whose job vanished from the store cannot exist (unfinished jobs are
        // not deletable), but a worker must never be left unwatched: end any such one.
        let known: std::collections::HashSet<i64> = jobs.iter().map(|j| j.id).collect();
        self.workers.retain(|id, w| {
            if known.contains(id) {
                return true;
            }
            let _ = killpg(Pid::from_raw(w.pid as i32), Signal::SIGKILL);
            if let Some(child) = w.child.as_mut() {
                // Reap it if it is gone already; never block the supervisor on it.
                let _ = child.try_wait();
            }
            false
        });
    }

    /// A job without a worker: start it, or fail/stop it while it waits.
    fn queue(&mut self, job: &JobRecord, now: f64) {
        if job.worker_pid.is_none() && self.adopt_unrecorded(job, now) {
            return;
        }
        if job.stop_requested {
            self.finish(job, OptimizationJobStatus::Stopped, None, None);
            return;
        }
        if job.status != OptimizationJobStatus::Starting || job.worker_pid.is_some() {
            // Recorded as launched, yet no worker of this server watches it.
            self.adopt_or_settle(job);
            return;
        }
        if let Some(max) = job.pending_limit() {
            let waited = now - job.creation_time;
            if waited > max as f64 {
                let reason = format!(
                    "The job waited {waited:.0} s for a free worker slot, longer than its \
                     StoppingCondition.MaxPendingTimeInSeconds ({max} s); this server runs {} \
                     job(s) at once. Create it again when fewer jobs are queued, or with a \
                     larger MaxPendingTimeInSeconds",
                    self.config.concurrent_jobs
                );
                self.finish(job, OptimizationJobStatus::Failed, Some(reason), None);
                return;
            }
        }
        if self.workers.len() >= self.config.concurrent_jobs {
            return;
        }
        match self.launch(job) {
            Ok(worker) => {
                let pid = worker.pid;
                self.workers.insert(job.id, worker);
                let id = job.id;
                let started = now;
                let _ = self.store.update(job.kind(), &job.name, &mut |j| {
                    if j.id != id {
                        return;
                    }
                    j.worker_pid = Some(pid);
                    j.start_time = Some(started);
                    j.last_modified_time = started;
                    if j.status == OptimizationJobStatus::Starting {
                        j.status = OptimizationJobStatus::InProgress;
                    }
                });
            }
            Err(e) => {
                let reason = format!(
                    "The server could not start the worker {}: {e}; check the server's \
                     --worker setting and the data directory's free space",
                    self.config.worker_exe.display()
                );
                self.finish(job, OptimizationJobStatus::Failed, Some(reason), None);
            }
        }
    }

    fn launch(&self, job: &JobRecord) -> std::io::Result<Worker> {
        let command = WorkerCommand {
            exe: self.config.worker_exe.clone(),
            s3_endpoint: self.config.s3.endpoint.clone(),
            s3_region: self.config.s3.region.clone(),
            local_roots: self.config.local_roots.clone(),
            // Workers outlive a server restart; the next server adopts them.
            die_with_parent: false,
            device: self.config.worker_device.clone(),
        };
        let child = command.start(&self.config.job_dir(job.id), &job.spec)?;
        Ok(Worker {
            pid: child.id(),
            child: Some(child),
            cause: None,
            term_sent: None,
            killed: false,
        })
    }

    /// A worker that a previous server started but died before recording (it names
    /// itself in `worker.pid`): adopted, so the job is not started a second time.
    fn adopt_unrecorded(&mut self, job: &JobRecord, now: f64) -> bool {
        let dir = self.config.job_dir(job.id);
        let Some(pid) = worker_files::read_pid(&dir) else {
            return false;
        };
        if !worker_files::is_worker_of(pid, &dir) {
            return false;
        }
        eprintln!(
            "temper-server: adopted the unrecorded worker (pid {pid}) of job {}",
            job.name
        );
        self.workers.insert(job.id, Worker::found(pid));
        let id = job.id;
        let _ = self.store.update(job.kind(), &job.name, &mut |j| {
            if j.id != id {
                return;
            }
            j.worker_pid = Some(pid);
            j.start_time = j.start_time.or(Some(now));
            j.last_modified_time = now;
            if j.status == OptimizationJobStatus::Starting {
                j.status = OptimizationJobStatus::InProgress;
            }
        });
        true
    }

    /// A job with a worker: has it ended, should it be told to end, or be killed?
    fn watch(&mut self, job: &JobRecord, now: f64) {
        let grace = self.config.stop_grace;
        let dir = self.config.job_dir(job.id);
        let worker = self
            .workers
            .get_mut(&job.id)
            .expect("watched jobs have workers");
        let exit = match worker.child.as_mut() {
            Some(child) => child.try_wait().ok().flatten().map(Exit::Status),
            // Not our child: check it is still the job's worker, not a process that got
            // its pid after it ended, before anything is sent to it.
            None => (!worker_files::is_worker_of(worker.pid, &dir)).then_some(Exit::Unknown),
        };
        if let Some(exit) = exit {
            let worker = self.workers.remove(&job.id).expect("present");
            if matches!(exit, Exit::Status(_)) {
                // Our child, just reaped: anything it started (a recommendations job's model
                // servers) is left in its process group when it dies alone (OOM killer,
                // kill -9). End them. The group id cannot have been reused while they lived.
                let _ = killpg(Pid::from_raw(worker.pid as i32), Signal::SIGKILL);
            }
            self.settle(job, &worker, exit);
            return;
        }
        let over_time = match (job.runtime_limit(), job.start_time) {
            (Some((max, _)), Some(start)) => now - start > max as f64,
            _ => false,
        };
        if worker.cause.is_none() {
            worker.cause = if over_time {
                Some(Cause::Runtime)
            } else if job.stop_requested {
                Some(Cause::Stop)
            } else {
                None
            };
            if worker.cause.is_some() {
                let _ = killpg(Pid::from_raw(worker.pid as i32), Signal::SIGTERM);
                worker.term_sent = Some(Instant::now());
            }
        } else if let Some(sent) = worker.term_sent {
            if !worker.killed && sent.elapsed() > grace {
                let _ = killpg(Pid::from_raw(worker.pid as i32), Signal::SIGKILL);
                worker.killed = true;
            }
        }
    }

    /// Records how a worker's job ended.
    fn settle(&mut self, job: &JobRecord, worker: &Worker, exit: Exit) {
        let dir = self.config.job_dir(job.id);
        let end = WorkerEnd {
            pid: worker.pid,
            exit,
            cause: worker.cause,
            killed: worker.killed,
            grace: self.config.stop_grace,
            result: worker_files::read_result(&dir),
            steps: serde_json::json!(temper_jobdir::recommendation::read_steps(&dir)),
            logs_hint: format!("its log is shown by `temper-server logs {}`", job.name),
        };
        let end = ending(job, end, now());
        self.finish_with(
            job,
            end.status,
            end.failure_reason,
            end.recommended_image,
            end.outcome,
        );
    }

    fn finish(
        &self,
        job: &JobRecord,
        status: OptimizationJobStatus,
        reason: Option<String>,
        image: Option<String>,
    ) {
        self.finish_with(job, status, reason, image, None)
    }

    fn finish_with(
        &self,
        job: &JobRecord,
        status: OptimizationJobStatus,
        reason: Option<String>,
        image: Option<String>,
        outcome: Option<serde_json::Value>,
    ) {
        let id = job.id;
        let now = now();
        let updated = self.store.update(job.kind(), &job.name, &mut |j| {
            if j.id != id {
                return;
            }
            j.status = status;
            j.end_time = Some(now);
            j.last_modified_time = now;
            j.failure_reason = reason.clone();
            j.recommended_image = image.clone();
            j.worker_pid = None;
            j.outcome = outcome.clone();
        });
        match updated {
            Ok(_) => eprintln!(
                "temper-server: job {} is {}{}",
                job.name,
                status_name(status),
                reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            Err(e) => eprintln!("temper-server: recording the end of job {}: {e}", job.name),
        }
    }
}
