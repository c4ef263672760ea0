//! What a `temper-worker` process does for one job: read the job spec the server planned
//! and stored, fetch an S3 model and S3 training data (speculative decoding) to the job
//! directory, run the same job `optimize` runs,
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
use temper_core::spec::{JobSpec, Location, TrainingData};
use temper_jobdir::files::{self as worker_files, Progress, WorkerResult};
use temper_jobdir::recommendation::{read_work, Work};
use temper_pipeline::progress::{Cancel, Event};

/// The worker's settings, from its command line.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    pub job_dir: PathBuf,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    /// The server's local roots, checked again before the job touches a local path.
    pub local_roots: Vec<PathBuf>,
    /// Where the job's arithmetic runs (`--device`).
    pub device: temper_cuda::DeviceRequest,
}

/// Why a job did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
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
    #[error("{0}")]
    Device(#[from] temper_cuda::CudaError),
}

/// Opens the job's device; `auto` that finds no GPU says so in the log and runs on the CPU.
pub(crate) fn open_device(
    request: temper_cuda::DeviceRequest,
) -> Result<temper_cuda::Device, JobError> {
    let (device, note) = temper_cuda::Device::resolve(request)?;
    if let Some(note) = note {
        eprintln!("temper-worker: {note}");
    }
    eprintln!("temper-worker: device {device}");
    Ok(device)
}

/// Progress, written to `progress.json` at most a few times a second.
pub(crate) struct Reporter {
    dir: PathBuf,
    started: Instant,
    phase_started: Instant,
    last_write: Option<Instant>,
    current: Progress,
}

impl Reporter {
    pub(crate) fn phase(&mut self, phase: &str, unit: &str, total: u64) {
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

    pub(crate) fn step(&mut self, done: u64, total: u64) {
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
    pub(crate) fn on_event(&mut self, event: Event) {
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
    // The fetched model and training data and a local copy of an S3 output only take
    // disk space now, whatever the outcome (the artifact, if any, is in its output
    // location).
    for scratch in scratch_dirs(&args.job_dir) {
        let _ = std::fs::remove_dir_all(scratch);
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
    // The server built and checked this work at Create (options parsed, local paths held
    // to its roots); the roots are checked again here, as they may have changed since.
    let work = read_work(&args.job_dir).map_err(|source| JobError::Io {
        what: "reading the job spec in",
        path: args.job_dir.clone(),
        source,
    })?;
    match work {
        Work::Optimize(spec) => optimize(args, spec, cancel, reporter),
        Work::Recommend(spec) => crate::recommend::run(args, &spec, cancel, reporter),
    }
}

/// The transfer runtime of a job: one thread, for S3 transfers and load tests.
pub(crate) fn transfer_runtime(job_dir: &Path) -> Result<tokio::runtime::Runtime, JobError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| JobError::Io {
            what: "starting the transfer runtime in",
            path: job_dir.to_path_buf(),
            source,
        })
}

/// Fetches an S3 prefix into `dest` (emptied first), reporting progress as `phase`.
#[allow(clippy::too_many_arguments)] // what a transfer needs, each a different thing
pub(crate) fn fetch_prefix(
    s3: &S3Options,
    bucket: &str,
    key: &str,
    dest: &Path,
    phase: &str,
    runtime: &tokio::runtime::Runtime,
    cancel: &Arc<Cancel>,
    reporter: &Arc<Mutex<Reporter>>,
) -> Result<PathBuf, JobError> {
    let dest = fresh_dir(dest)?;
    reporter.lock().unwrap().phase(phase, "bytes", 0);
    let store = objects::bucket_store(bucket, s3)?;
    let mut step = |done, total| reporter.lock().unwrap().step(done, total);
    let n = cancellable(
        runtime,
        cancel,
        objects::download_prefix(store.as_ref(), bucket, key, &dest, &mut step),
    )??;
    eprintln!("fetched {n} objects from s3://{bucket}/{key}");
    Ok(dest)
}

pub(crate) fn s3_options(args: &WorkerArgs) -> S3Options {
    S3Options {
        endpoint: args.s3_endpoint.clone(),
        region: args.s3_region.clone(),
        kms_key_id: None,
    }
}

fn optimize(
    args: &WorkerArgs,
    mut spec: JobSpec,
    cancel: &Arc<Cancel>,
    reporter: &Arc<Mutex<Reporter>>,
) -> Result<WorkerResult, JobError> {
    temper_jobdir::access::check(&spec, &args.local_roots)
        .map_err(|e| JobError::Request(e.message().to_string()))?;
    eprintln!(
        "job {}: {} -> {} for {}",
        spec.name, spec.source, spec.output, spec.instance_type
    );
    let s3 = s3_options(args);
    let runtime = transfer_runtime(&args.job_dir)?;

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
        let input = args.job_dir.join("input");
        let input = fetch_prefix(
            &s3, &bucket, &key, &input, "download", &runtime, cancel, reporter,
        )?;
        spec.source = Location::Local(input);
    }
    let stores = |bucket: &str| objects::bucket_store(bucket, &s3);
    fetch_training_data(
        &mut spec,
        &args.job_dir,
        &stores,
        &runtime,
        cancel,
        reporter,
    )?;
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
        let device = open_device(args.device)?;
        temper_pipeline::run_job(&spec, &device, &mut sink, cancel)?
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

/// Where the `n`-th (0-based) S3 training data source of a job is downloaded:
/// `<job dir>/training-data`, then `training-data-2`, ...
fn training_data_dir(job_dir: &Path, n: usize) -> PathBuf {
    match n {
        0 => job_dir.join(TRAINING_DATA_DIR),
        _ => job_dir.join(format!("{TRAINING_DATA_DIR}-{}", n + 1)),
    }
}

const TRAINING_DATA_DIR: &str = "training-data";

/// The directories a job's downloads and staged output use in its job directory (a
/// recommendations job's prepared models too).
fn scratch_dirs(job_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![
        job_dir.join("input"),
        job_dir.join("output"),
        job_dir.join(crate::recommend::VARIANTS_DIR),
        job_dir.join(crate::recommend::PAYLOADS_DIR),
    ];
    if let Ok(entries) = std::fs::read_dir(job_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == TRAINING_DATA_DIR || name.starts_with(&format!("{TRAINING_DATA_DIR}-")) {
                dirs.push(entry.path());
            }
        }
    }
    dirs
}

/// Downloads every S3 training data source of the job (speculative decoding's
/// `TrainingDataSource`) into the job directory and points the spec at the local copy,
/// as `S3Prefix` of a directory: the pipeline reads local files only.
fn fetch_training_data(
    spec: &mut JobSpec,
    job_dir: &Path,
    stores: &objects::BucketStores<'_>,
    runtime: &tokio::runtime::Runtime,
    cancel: &Arc<Cancel>,
    reporter: &Arc<Mutex<Reporter>>,
) -> Result<(), JobError> {
    let mut n = 0;
    for (i, optimization) in spec.optimizations.iter_mut().enumerate() {
        let Some(data) = optimization.training_data.as_mut() else {
            continue;
        };
        let Location::S3 { bucket, key } = data.location.clone() else {
            continue;
        };
        let member = format!(
            "OptimizationConfigs.{}.ModelSpeculativeDecodingConfig.TrainingDataSource",
            i + 1
        );
        let Some(kind) = temper_text::SourceKind::parse(&data.data_type) else {
            return Err(JobError::Request(format!(
                "{member}.S3DataType is `{}`; expected S3Prefix or ManifestFile",
                data.data_type
            )));
        };
        let dest = fresh_dir(&training_data_dir(job_dir, n))?;
        n += 1;
        reporter
            .lock()
            .unwrap()
            .phase("download training data", "bytes", 0);
        let mut step = |done, total| reporter.lock().unwrap().step(done, total);
        let count = match kind {
            temper_text::SourceKind::Prefix => {
                let store = stores(&bucket)?;
                cancellable(
                    runtime,
                    cancel,
                    objects::download_training_prefix(
                        store.as_ref(),
                        &bucket,
                        &key,
                        &dest,
                        &mut step,
                    ),
                )??
            }
            temper_text::SourceKind::Manifest => cancellable(
                runtime,
                cancel,
                objects::download_manifest(stores, &bucket, &key, &dest, &mut step),
            )??,
        };
        eprintln!(
            "fetched {count} training data files ({}) from s3://{bucket}/{key} into {}",
            data.data_type,
            dest.display()
        );
        *data = TrainingData {
            location: Location::Local(dest),
            data_type: "S3Prefix".to_string(),
        };
    }
    Ok(())
}

/// Runs a transfer until it ends or the job is cancelled (SIGTERM).
pub(crate) fn cancellable<T>(
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

pub(crate) fn fresh_dir(dir: &Path) -> Result<PathBuf, JobError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
    use temper_core::spec::{Optimization, Stopping, Technique};

    fn reporter(dir: &Path) -> Arc<Mutex<Reporter>> {
        Arc::new(Mutex::new(Reporter {
            dir: dir.to_path_buf(),
            started: Instant::now(),
            phase_started: Instant::now(),
            last_write: None,
            current: Progress::default(),
        }))
    }

    fn spec_with(data: Vec<Option<TrainingData>>) -> JobSpec {
        JobSpec {
            name: "j".into(),
            source: Location::Local("/m".into()),
            output: Location::Local("/o".into()),
            instance_type: "ml.g6.xlarge".into(),
            optimizations: data
                .into_iter()
                .map(|d| {
                    let mut o =
                        Optimization::new(Technique::SpeculativeDecoding, Default::default());
                    o.training_data = d;
                    o
                })
                .collect(),
            environment: Default::default(),
            stopping: Stopping::default(),
            kms_key_id: None,
            role_arn: None,
            tags: vec![],
            overwrite: false,
        }
    }

    fn s3(uri: &str, data_type: &str) -> Option<TrainingData> {
        Some(TrainingData {
            location: Location::parse(uri).unwrap(),
            data_type: data_type.into(),
        })
    }

    #[test]
    fn s3_training_data_is_fetched_and_the_spec_points_at_the_local_copy() {
        let store = Arc::new(InMemory::new());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for (key, body) in [
                ("data/train.jsonl", "{}"),
                ("data/train/part-1.json", "[]"),
                ("data/other.jsonl", "x"),
                (
                    "lists/m.json",
                    r#"[{"prefix": "s3://b/data/"}, "other.jsonl"]"#,
                ),
            ] {
                store
                    .put(&key.into(), PutPayload::from(body.as_bytes().to_vec()))
                    .await
                    .unwrap();
            }
        });
        let shared: Arc<dyn ObjectStore> = store;
        let stores = |_: &str| Ok(shared.clone());
        let job = tempfile::tempdir().unwrap();
        let local = job.path().join("local.json");
        let mut spec = spec_with(vec![
            s3("s3://b/data/train", "S3Prefix"),
            None,
            Some(TrainingData {
                location: Location::Local(local.clone()),
                data_type: "ManifestFile".into(),
            }),
            s3("s3://b/lists/m.json", "ManifestFile"),
        ]);
        let cancel = Arc::new(Cancel::new());
        let progress = reporter(job.path());
        fetch_training_data(&mut spec, job.path(), &stores, &runtime, &cancel, &progress).unwrap();

        let first = job.path().join("training-data");
        let second = job.path().join("training-data-2");
        let local_prefix = |dir: &Path| {
            Some(TrainingData {
                location: Location::Local(dir.to_path_buf()),
                data_type: "S3Prefix".into(),
            })
        };
        assert_eq!(spec.optimizations[0].training_data, local_prefix(&first));
        assert_eq!(spec.optimizations[1].training_data, None);
        // A local source is the pipeline's to read, as it is.
        assert_eq!(
            spec.optimizations[2].training_data,
            Some(TrainingData {
                location: Location::Local(local),
                data_type: "ManifestFile".into(),
            })
        );
        assert_eq!(spec.optimizations[3].training_data, local_prefix(&second));
        assert_eq!(std::fs::read(first.join("train.jsonl")).unwrap(), b"{}");
        assert_eq!(
            std::fs::read(first.join("train/part-1.json")).unwrap(),
            b"[]"
        );
        assert!(!first.join("other.jsonl").exists());
        assert_eq!(std::fs::read(second.join("other.jsonl")).unwrap(), b"x");
        // What the pipeline will read: local files only.
        let files = temper_text::training_files(&first, temper_text::SourceKind::Prefix).unwrap();
        assert_eq!(
            files,
            vec![first.join("train/part-1.json"), first.join("train.jsonl")]
        );

        // The downloads are scratch space, removed with the rest when the job ends.
        let scratch = scratch_dirs(job.path());
        assert!(
            scratch.contains(&first) && scratch.contains(&second),
            "{scratch:?}"
        );

        // An unknown data type is refused, naming the member.
        let mut bad = spec_with(vec![s3("s3://b/data/train", "Folder")]);
        let err = fetch_training_data(&mut bad, job.path(), &stores, &runtime, &cancel, &progress)
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("OptimizationConfigs.1.ModelSpeculativeDecodingConfig.TrainingDataSource.S3DataType")
                && msg.contains("Folder"),
            "{msg}"
        );
        // A missing manifest key fails the job before the pipeline runs.
        runtime.block_on(async {
            shared
                .put(
                    &"lists/bad.json".into(),
                    PutPayload::from(br#"[{"prefix": "s3://b/data/"}, "nope.jsonl"]"#.to_vec()),
                )
                .await
                .unwrap();
        });
        let mut bad = spec_with(vec![s3("s3://b/lists/bad.json", "ManifestFile")]);
        let msg = fetch_training_data(&mut bad, job.path(), &stores, &runtime, &cancel, &progress)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("s3://b/lists/bad.json")
                && msg.contains("entry [1]")
                && msg.contains("nope.jsonl"),
            "{msg}"
        );
    }
}
