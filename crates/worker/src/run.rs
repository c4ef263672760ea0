//! What a `temper-worker` process does for one job: read the job spec the server planned
//! and stored, fetch an S3 model to the job directory, run the same job `optimize` runs,
//! send an S3 output back, and report progress and the result through the files of
//! [`temper_jobdir::files`].
//!
//! SIGTERM (from StopOptimizationJob or MaxRuntimeInSeconds) sets the job's cancel
//! flag: the pipeline stops at its next tensor and removes its staged output, a
//! transfer stops at once, and the worker reports `stopped`.

use crate::objects::{self, S3Options};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use temper_core::spec::Location;
use temper_jobdir::files::{self as worker_files, Progress, WorkerResult};
use temper_pipeline::progress::{Cancel, Event};

/// The worker's settings, from its command line.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    pub job_dir: PathBuf,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    /// The server's local roots, checked again before the job touches a local path.
    pub local_roots: Vec<PathBuf>,
}

/// Why a job did not complete.
#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error("{0}")]
    Request(String),
    #[error(transparent)]
    Objects(#[from] objects::ObjectsError),
    #[error(transparent)]
    Pipeline(#[from] temper_pipeline::Error),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("stopped")]
    Stopped,
}

/// Progress, written to `progress.json` at most a few times a second.
struct Reporter {
    dir: PathBuf,
    started: Instant,
    phase_started: Instant,
    last_write: Option<Instant>,
    current: Progress,
}

impl Reporter {
    fn phase(&mut self, phase: &str, unit: &str, total: u64) {
        eprintln!("[{:>7.1}s] {phase}", self.started.elapsed().as_secs_f64());
        self.current = Progress {
            phase: phase.to_string(),
            done: 0,
            total,
            unit: unit.to_string(),
            ..Default::default()
        };
        self.phase_started = Instant::now();
        self.write(true);
    }

    fn step(&mut self, done: u64, total: u64) {
        self.current.done = done;
        self.current.total = total;
        self.write(done >= total);
    }

    fn write(&mut self, force: bool) {
        let due = self
            .last_write
            .is_none_or(|t| t.elapsed() > Duration::from_millis(250));
        if !force && !due {
            return;
        }
        let p = &mut self.current;
        p.elapsed_secs = self.started.elapsed().as_secs_f64();
        let in_phase = self.phase_started.elapsed().as_secs_f64();
        p.phase_eta_secs = (p.done > 0 && p.total > p.done)
            .then(|| in_phase * (p.total - p.done) as f64 / p.done as f64);
        if let Ok(json) = serde_json::to_vec(p) {
            // Progress is advisory: a failed write must not fail the job.
            let _ = worker_files::write_atomic(&worker_files::progress_path(&self.dir), &json);
        }
        self.last_write = Some(Instant::now());
    }

    /// The pipeline's events, as progress.
    fn on_event(&mut self, event: Event) {
        match event {
            Event::Phase(name) => self.phase(name, "", 0),
            Event::Started { bytes, .. } => {
                self.current.unit = "bytes".into();
                self.current.total = bytes;
                self.current.done = 0;
                self.phase_started = Instant::now();
            }
            Event::Tensor { bytes, .. } => {
                let done = self.current.done + bytes;
                self.step(done, self.current.total);
            }
            Event::Progress { unit, done, total } => {
                self.current.unit = unit.to_string();
                self.step(done as u64, total as u64);
            }
        }
    }
}

/// Runs the job in `args.job_dir` and writes its `result.json`; returns the result.
pub fn run(args: &WorkerArgs, cancel: Arc<Cancel>) -> WorkerResult {
    let pid = std::process::id().to_string();
    let pid_file = worker_files::pid_path(&args.job_dir);
    if let Err(e) = worker_files::write_atomic(&pid_file, pid.as_bytes()) {
        eprintln!("could not record the worker's pid: {e}");
    }
    let reporter = Arc::new(Mutex::new(Reporter {
        dir: args.job_dir.clone(),
        started: Instant::now(),
        phase_started: Instant::now(),
        last_write: None,
        current: Progress::default(),
    }));
    let outcome = run_job(args, &cancel, &reporter);
    // The fetched model and a local copy of an S3 output only take disk space now,
    // whatever the outcome (the artifact, if any, is in its output location).
    for scratch in ["input", "output"] {
        let _ = std::fs::remove_dir_all(args.job_dir.join(scratch));
    }
    let result = match outcome {
        Ok(done) => done,
        Err(JobError::Stopped) | Err(JobError::Pipeline(temper_pipeline::Error::Cancelled)) => {
            WorkerResult::Stopped
        }
        Err(e) => WorkerResult::Failed {
            failure_reason: failure_reason(&e),
        },
    };
    match &result {
        WorkerResult::Completed { output, .. } => eprintln!("completed: {output}"),
        WorkerResult::Failed { failure_reason } => eprintln!("failed: {failure_reason}"),
        WorkerResult::Stopped => eprintln!("stopped: no output was written"),
    }
    let json = serde_json::to_vec_pretty(&result).expect("results serialize");
    if let Err(e) = worker_files::write_atomic(&worker_files::result_path(&args.job_dir), &json) {
        eprintln!("could not write the job's result: {e}");
    }
    result
}

/// A sentence for FailureReason (the field holds at most 1024 characters).
fn failure_reason(e: &JobError) -> String {
    let text = e.to_string();
    if text.chars().count() <= 1024 {
        return text;
    }
    let cut: String = text.chars().take(1000).collect();
    format!("{cut} ... (the whole message is in the worker's log)")
}

fn run_job(
    args: &WorkerArgs,
    cancel: &Arc<Cancel>,
    reporter: &Arc<Mutex<Reporter>>,
) -> Result<WorkerResult, JobError> {
    let spec_path = worker_files::spec_path(&args.job_dir);
    // The server built and checked this spec at Create (options parsed, local paths held
    // to its roots); the roots are checked again here, as they may have changed since.
    let mut spec = worker_files::read_spec(&args.job_dir).map_err(|source| JobError::Io {
        what: "reading the job spec",
        path: spec_path.clone(),
        source,
    })?;
    temper_jobdir::access::check(&spec, &args.local_roots)
        .map_err(|e| JobError::Request(e.message().to_string()))?;
    eprintln!(
        "job {}: {} -> {} for {}",
        spec.name, spec.source, spec.output, spec.instance_type
    );
    let s3 = S3Options {
        endpoint: args.s3_endpoint.clone(),
        region: args.s3_region.clone(),
        kms_key_id: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| JobError::Io {
            what: "starting the transfer runtime in",
            path: args.job_dir.clone(),
            source,
        })?;

    // An output that cannot be written is found before any work, not after it.
    if let Location::S3 { bucket, key } = &spec.output {
        let store = objects::bucket_store(bucket, &s3)?;
        cancellable(
            &runtime,
            cancel,
            objects::ensure_empty(store.as_ref(), bucket, key),
        )??;
    }
    if let Location::S3 { bucket, key } = spec.source.clone() {
        let input = fresh_dir(&args.job_dir.join("input"))?;
        reporter.lock().unwrap().phase("download", "bytes", 0);
        let store = objects::bucket_store(&bucket, &s3)?;
        let mut step = |done, total| reporter.lock().unwrap().step(done, total);
        let n = cancellable(
            &runtime,
            cancel,
            objects::download_prefix(store.as_ref(), &bucket, &key, &input, &mut step),
        )??;
        eprintln!("fetched {n} objects from s3://{bucket}/{key}");
        spec.source = Location::Local(input);
    }
    let s3_output = match spec.output.clone() {
        Location::S3 { bucket, key } => {
            let local = args.job_dir.join("output").join("artifact");
            spec.output = Location::Local(local.clone());
            // A previous attempt's leftovers are not this job's output.
            spec.overwrite = true;
            Some((bucket, key, local))
        }
        Location::Local(_) => None,
    };

    let outcome = {
        let mut sink = |e: Event| reporter.lock().unwrap().on_event(e);
        temper_pipeline::run_job(&spec, temper_kernels::Isa::detect(), &mut sink, cancel)?
    };
    let summary = outcome.summary(&spec);
    let mut output = outcome.output.display().to_string();
    if let Some((bucket, key, local)) = s3_output {
        reporter.lock().unwrap().phase("upload", "bytes", 0);
        let opts = S3Options {
            kms_key_id: spec.kms_key_id.clone(),
            ..s3
        };
        let store = objects::bucket_store(&bucket, &opts)?;
        let mut step = |done, total| reporter.lock().unwrap().step(done, total);
        // Not cut off from outside like the download: the upload stops itself between
        // parts, so it can remove what it wrote.
        let stop = || cancel.is_cancelled();
        let n = runtime
            .block_on(objects::upload_dir(
                store.as_ref(),
                &bucket,
                &key,
                &local,
                &mut step,
                &stop,
            ))
            .map_err(|e| match e {
                objects::ObjectsError::Stopped => JobError::Stopped,
                other => other.into(),
            })?;
        output = format!("s3://{bucket}/{}", key.trim_end_matches('/'));
        eprintln!("uploaded {n} files to {output}");
    }
    reporter.lock().unwrap().phase("done", "", 0);
    Ok(WorkerResult::Completed {
        recommended_image: Some(outcome.manifest.recommended_image.clone()),
        output,
        summary,
    })
}

/// Runs a transfer until it ends or the job is cancelled (SIGTERM).
fn cancellable<T>(
    runtime: &tokio::runtime::Runtime,
    cancel: &Cancel,
    transfer: impl std::future::Future<Output = T>,
) -> Result<T, JobError> {
    runtime.block_on(async {
        let watch = async {
            while !cancel.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            out = transfer => Ok(out),
            _ = watch => Err(JobError::Stopped),
        }
    })
}

fn fresh_dir(dir: &Path) -> Result<PathBuf, JobError> {
    let io = |source| JobError::Io {
        what: "preparing",
        path: dir.to_path_buf(),
        source,
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io)?;
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    Ok(dir.to_path_buf())
}
