//! Starting one job's worker process, the same way for the server's supervisor and for
//! worker agents: a fresh job directory holding the work to run, the log opened for
//! appending, and the worker in a process group of its own.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use temper_jobdir::files as worker_files;
use temper_jobdir::recommendation::Work;

/// How workers are started: the program and what it is told of S3 and local paths.
#[derive(Debug, Clone, Default)]
pub struct WorkerCommand {
    pub exe: PathBuf,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    /// Directories local paths may be under; the worker checks them again as it starts (a
    /// job may have waited in the queue while a symlink under a root was changed).
    pub local_roots: Vec<PathBuf>,
    /// Ends the worker (SIGKILL) when the thread that started it ends: an agent's workers
    /// must not outlive it, or a job given to another host would run twice. The server's
    /// own workers outlive it instead, and the next server adopts them.
    pub die_with_parent: bool,
    /// `--device` for every worker (`auto`, `cpu`, `cuda:N`); `None`: the worker's default
    /// (`auto`: the first GPU when there is one).
    pub device: Option<String>,
}

impl WorkerCommand {
    /// Writes `work` into `dir` (removing anything an earlier run left that could be read
    /// as this one's outcome) and starts the worker on it.
    pub fn start(&self, dir: &Path, work: &Work) -> std::io::Result<Child> {
        std::fs::create_dir_all(dir)?;
        for stale in [
            worker_files::result_path(dir),
            worker_files::progress_path(dir),
            worker_files::pid_path(dir),
            temper_jobdir::recommendation::steps_path(dir),
        ] {
            match std::fs::remove_file(&stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        // The worker runs the spec exactly as Create built and checked it.
        temper_jobdir::recommendation::write_work(dir, work)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(worker_files::log_path(dir))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--job-dir").arg(dir);
        if let Some(endpoint) = &self.s3_endpoint {
            cmd.arg("--s3-endpoint").arg(endpoint);
        }
        if let Some(region) = &self.s3_region {
            cmd.arg("--s3-region").arg(region);
        }
        for root in &self.local_roots {
            cmd.arg("--local-root").arg(root);
        }
        if let Some(device) = &self.device {
            cmd.arg("--device").arg(device);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C of the runner does not reach it, and
            // killing the group also ends anything the worker started.
            .process_group(0);
        if self.die_with_parent {
            let parent = std::process::id();
            // SAFETY: the closure runs in the forked child before exec and only calls
            // prctl(2) and getppid(2), which are async-signal-safe; it reads a copied integer.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The parent may have died before the request took effect.
                    if libc::getppid() as u32 != parent {
                        return Err(std::io::Error::other("the worker agent ended"));
                    }
                    Ok(())
                });
            }
        }
        cmd.spawn()
    }
}
