//! How a job ends, from what its worker left: its `result.json`, how the process exited,
//! and why it was asked to end. One rule for the server's own supervisor and for worker
//! agents, so a job reads the same whichever ran it.

use nix::sys::signal::Signal;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;
use temper_api::OptimizationJobStatus;
use temper_jobdir::files::WorkerResult;
use temper_store::leases::Ending;
use temper_store::store::{JobKind, JobRecord};

/// Why a worker was asked to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Stop,
    Runtime,
}

/// How a worker ended, as far as its runner can tell.
#[derive(Debug, Clone, Copy)]
pub enum Exit {
    Status(ExitStatus),
    /// An adopted worker: its exit status went to its new parent.
    Unknown,
}

/// What the runner knows of a worker that ended.
pub struct WorkerEnd {
    pub pid: u32,
    pub exit: Exit,
    pub cause: Option<Cause>,
    /// SIGKILLed after the grace period.
    pub killed: bool,
    pub grace: Duration,
    pub result: Option<WorkerResult>,
    /// A recommendations job's finished steps (its `steps.json`), kept whatever the end.
    pub steps: serde_json::Value,
    /// How the job's log is read, for messages.
    pub logs_hint: String,
}

/// The job's status, FailureReason, image and outcome once its worker has ended.
pub fn ending(job: &JobRecord, end: WorkerEnd, now: f64) -> Ending {
    let over_time = match (job.runtime_limit(), job.start_time) {
        (Some((max, _)), Some(start)) => {
            end.cause == Some(Cause::Runtime)
                || (end.cause.is_none() && end.result.is_none() && now - start > max as f64)
        }
        _ => false,
    };
    let completed = matches!(end.result, Some(WorkerResult::Completed { .. }));
    // A recommendations job's report: the steps it finished, and on completion its
    // recommendations. Kept with the job whatever the outcome.
    let outcome = match (job.kind(), &end.result) {
        (JobKind::Optimization, _) => None,
        (JobKind::Recommendation, Some(WorkerResult::Completed { summary, .. })) => {
            Some(summary.clone())
        }
        (JobKind::Recommendation, _) => Some(serde_json::json!({ "steps": end.steps })),
    };
    let done = |status, failure_reason: Option<String>, recommended_image| Ending {
        status,
        failure_reason,
        recommended_image,
        outcome: outcome.clone(),
    };
    // A worker that finished its artifact before a stop or deadline took effect has
    // written it: the job is COMPLETED, whatever was asked of it meanwhile.
    if over_time && !completed {
        let (max, member) = job.runtime_limit().unwrap_or((0, ""));
        let how = if end.killed {
            format!(
                "it did not end within the {} s grace period after SIGTERM and was killed",
                end.grace.as_secs()
            )
        } else if end.cause == Some(Cause::Runtime) {
            "it was stopped with SIGTERM".to_string()
        } else {
            "its worker had ended without a result when the server looked".to_string()
        };
        let what = match job.kind() {
            JobKind::Optimization => {
                "No complete artifact was written (one is complete once its manifest.json is \
                 present)"
            }
            JobKind::Recommendation => {
                "The steps it finished are listed by ListInferenceRecommendationsJobSteps"
            }
        };
        let reason = format!(
            "The job ran longer than its {member} ({max} s); {how}. {what}. Create it again \
             with a larger {member}"
        );
        return done(OptimizationJobStatus::Failed, Some(reason), None);
    }
    if job.stop_requested && !completed {
        return done(OptimizationJobStatus::Stopped, None, None);
    }
    match end.result {
        Some(WorkerResult::Completed {
            recommended_image, ..
        }) => done(OptimizationJobStatus::Completed, None, recommended_image),
        Some(WorkerResult::Failed { failure_reason }) => {
            done(OptimizationJobStatus::Failed, Some(failure_reason), None)
        }
        Some(WorkerResult::Stopped) => {
            let reason = "The worker was stopped by a signal from outside temper (SIGTERM or \
                          Ctrl-C) before it finished; no output was written. Create the job \
                          again to rerun it"
                .to_string();
            done(OptimizationJobStatus::Failed, Some(reason), None)
        }
        None => done(
            OptimizationJobStatus::Failed,
            Some(died_reason(end.pid, &end.exit, &end.logs_hint)),
            None,
        ),
    }
}

/// A FailureReason for a worker that ended without reporting a result.
fn died_reason(pid: u32, exit: &Exit, logs: &str) -> String {
    match exit {
        Exit::Status(status) => match (status.signal(), status.code()) {
            (Some(sig), _) => {
                let sig_name = Signal::try_from(sig)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|_| format!("signal {sig}"));
                format!(
                    "The worker process (pid {pid}) was killed by {sig_name} before it \
                     finished (for example by the kernel's out-of-memory killer or an \
                     operator); no output was written, {logs}. Create the job again to rerun it"
                )
            }
            (None, Some(code)) => format!(
                "The worker process (pid {pid}) exited with code {code} without reporting a \
                 result; {logs}"
            ),
            _ => format!("The worker process (pid {pid}) ended without a result; {logs}"),
        },
        Exit::Unknown => format!(
            "The worker process (pid {pid}) ended without leaving a result. It was started \
             by an earlier run of the server (which was restarted), so its exit status is \
             unknown: it was killed or crashed. No complete artifact was written; {logs}. \
             Create the job again to rerun it"
        ),
    }
}
