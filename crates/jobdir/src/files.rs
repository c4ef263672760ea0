//! The files through which the server and a job's worker talk, all in the job's
//! directory: the job spec the worker runs (built and checked by the server at Create,
//! stored with the job), its log, its progress while it runs, and its result. Each file the worker writes whole is staged and renamed into place, so
//! a reader never sees half of one.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use temper_core::spec::JobSpec;

pub fn spec_path(dir: &Path) -> PathBuf {
    dir.join("spec.json")
}
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("worker.log")
}
pub fn progress_path(dir: &Path) -> PathBuf {
    dir.join("progress.json")
}
pub fn result_path(dir: &Path) -> PathBuf {
    dir.join("result.json")
}
/// Written by the worker as it starts: lets a server that died before recording the
/// pid find the worker it had started.
pub fn pid_path(dir: &Path) -> PathBuf {
    dir.join("worker.pid")
}

pub fn read_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_path(dir))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How a worker's job ended, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum WorkerResult {
    Completed {
        recommended_image: Option<String>,
        /// The output location the artifact was written to.
        output: String,
        /// The job summary, as `optimize --json` prints it.
        summary: serde_json::Value,
    },
    Failed {
        failure_reason: String,
    },
    /// The worker was asked to stop (SIGTERM) and did, leaving no output.
    Stopped,
}

/// What a running worker is doing, for `temper-server logs` and the progress endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// `download`, `plan`, `quantize`, `evaluate`, `upload`, ...
    pub phase: String,
    /// Steps done and in all within the phase, in `unit`s (bytes, tensors, layers).
    pub done: u64,
    pub total: u64,
    pub unit: String,
    /// Seconds since the worker started.
    pub elapsed_secs: f64,
    /// Estimated seconds left in this phase, when the rate so far allows a guess.
    pub phase_eta_secs: Option<f64>,
}

/// Writes `bytes` to `path` through a staged file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let staged = path.with_extension("partial");
    let mut f = std::fs::File::create(&staged)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&staged, path)
}

pub fn write_spec(dir: &Path, spec: &JobSpec) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(spec).map_err(std::io::Error::other)?;
    write_atomic(&spec_path(dir), &json)
}

pub fn read_spec(dir: &Path) -> std::io::Result<JobSpec> {
    let bytes = std::fs::read(spec_path(dir))?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

pub fn read_result(dir: &Path) -> Option<WorkerResult> {
    let bytes = std::fs::read(result_path(dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn read_progress(dir: &Path) -> Option<Progress> {
    let bytes = std::fs::read(progress_path(dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether process `pid` exists and has not exited (a zombie has exited).
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Whether `pid` is a live worker of the job in `dir` (and not another process that
/// was given the same pid after the worker ended): its command line names the dir.
pub fn is_worker_of(pid: u32, dir: &Path) -> bool {
    if !is_alive(pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let dir = dir.as_os_str().as_encoded_bytes();
    cmdline.split(|&b| b == 0).any(|arg| arg == dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip_and_liveness_is_read_from_proc() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_result(dir.path()), None);
        let result = WorkerResult::Failed {
            failure_reason: "no objects under s3://b/k/".into(),
        };
        write_atomic(
            &result_path(dir.path()),
            &serde_json::to_vec(&result).unwrap(),
        )
        .unwrap();
        assert_eq!(read_result(dir.path()), Some(result));
        assert!(!result_path(dir.path()).with_extension("partial").exists());

        assert!(is_alive(std::process::id()));
        // A shell that names the dir in its arguments (as `$0`) and stays alive: the
        // trailing `true` keeps it from exec'ing into sleep.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30; true"])
            .arg(dir.path())
            .spawn()
            .unwrap();
        // Until the child has exec'd, its command line is still this test's.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !is_worker_of(child.id(), dir.path()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(is_worker_of(child.id(), dir.path()));
        assert!(!is_worker_of(child.id(), Path::new("/elsewhere")));
        child.kill().unwrap();
        // Killed but not yet reaped: a zombie counts as ended.
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!is_alive(child.id()));
        child.wait().unwrap();
        assert!(!is_alive(child.id()));
    }
}
