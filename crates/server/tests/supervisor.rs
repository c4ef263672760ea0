//! The supervisor against a real SQLite store and real processes, for what the
//! contract tests cannot reach in reasonable time: MaxPendingTimeInSeconds (at least
//! 1800 s in the service model) and the settling of jobs a previous server left.

use std::time::{Duration, Instant};
use temper_api::{EpochSeconds, OptimizationJobStatus};
use temper_jobdir::files::{self as worker_files, WorkerResult};
use temper_jobdir::recommendation::Work;
use temper_server::config::{Config, S3Settings};
use temper_server::store::{JobKind, JobRecord, JobRequest, JobStore};

fn config(dir: &std::path::Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        credentials: None,
        region: "us-east-1".into(),
        local_roots: vec![],
        worker_device: None,
        max_jobs: 100,
        max_unfinished_jobs: 100,
        concurrent_jobs: 1,
        max_body_bytes: 1 << 20,
        header_read_timeout: std::time::Duration::from_secs(10),
        stop_grace: Duration::from_secs(1),
        poll_interval: Duration::from_millis(20),
        // Never reached in these tests: a launch would fail and say so.
        worker_exe: dir.join("no-worker-here"),
        s3: S3Settings::default(),
        models: Default::default(),
        prices: Default::default(),
        store: None,
        api_only: false,
    }
}

/// A stand-in worker: a shell script, so that signals, grace periods and exits can be
/// driven exactly. `on_term` is the script's reaction to SIGTERM.
fn fake_worker(dir: &std::path::Path, name: &str, on_term: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("#!/bin/sh\ntrap '{on_term}' TERM\nwhile true; do sleep 0.05; done\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn wait_status(store: &dyn JobStore, name: &str, status: OptimizationJobStatus) -> JobRecord {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let job = store.get(JobKind::Optimization, name).unwrap().unwrap();
        if job.status == status || Instant::now() > deadline {
            return job;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn record(name: &str, created_secs_ago: f64, pending: Option<i32>) -> JobRecord {
    record_with_runtime(name, created_secs_ago, pending, 3600)
}

fn record_with_runtime(
    name: &str,
    created_secs_ago: f64,
    pending: Option<i32>,
    max_runtime: i32,
) -> JobRecord {
    let body = serde_json::json!({
        "OptimizationJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/r",
        "ModelSource": {"S3": {"S3Uri": "s3://models/m/"}},
        "DeploymentInstanceType": "ml.g6.12xlarge",
        "OptimizationConfigs": [{"ModelQuantizationConfig": {}}],
        "OutputConfig": {"S3OutputLocation": "s3://out/x/"},
        "StoppingCondition": {"MaxPendingTimeInSeconds": pending, "MaxRuntimeInSeconds": max_runtime},
    });
    let request = temper_api::parse_create_request(body.to_string().as_bytes()).unwrap();
    let spec = temper_api::to_job_spec(&request, &Default::default()).unwrap();
    let created = EpochSeconds::now().0 - created_secs_ago;
    let arn = format!("arn:aws:sagemaker:us-east-1:123456789012:optimization-job/{name}");
    JobRecord::queued(request, spec, arn, created)
}

fn wait_terminal(store: &dyn JobStore, name: &str) -> JobRecord {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let job = store.get(JobKind::Optimization, name).unwrap().unwrap();
        if job.status.is_terminal() || Instant::now() > deadline {
            return job;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_job_queued_past_max_pending_time_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let service = temper_server::open(config(dir.path())).unwrap();
    let store = service.store.clone();
    store
        .insert(&record("long-queued", 1900.0, Some(1800)))
        .unwrap();
    service.wake.wake();
    let job = wait_terminal(store.as_ref(), "long-queued");
    assert_eq!(job.status, OptimizationJobStatus::Failed);
    let reason = job.failure_reason.unwrap();
    assert!(
        reason.contains("MaxPendingTimeInSeconds (1800 s)"),
        "{reason}"
    );
    assert!(job.start_time.is_none());
}

#[test]
fn a_worker_that_cannot_start_fails_its_job_naming_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let service = temper_server::open(config(dir.path())).unwrap();
    service
        .store
        .insert(&record("no-worker", 0.0, None))
        .unwrap();
    service.wake.wake();
    let job = wait_terminal(service.store.as_ref(), "no-worker");
    assert_eq!(job.status, OptimizationJobStatus::Failed);
    let reason = job.failure_reason.unwrap();
    assert!(
        reason.contains("no-worker-here") && reason.contains("--worker"),
        "{reason}"
    );
}

#[test]
fn jobs_left_running_by_a_previous_server_are_settled_from_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    {
        let store = temper_server::sqlite::SqliteStore::open(&cfg.database_path()).unwrap();
        // A pid that is alive but is not a worker of these jobs (this test process).
        let pid = std::process::id();
        for name in ["finished-meanwhile", "died-meanwhile"] {
            let mut job = record(name, 10.0, None);
            job.status = OptimizationJobStatus::InProgress;
            job.start_time = Some(job.creation_time);
            job.worker_pid = Some(pid);
            let stored = store.insert(&job).unwrap();
            std::fs::create_dir_all(cfg.job_dir(stored.id)).unwrap();
            if name == "finished-meanwhile" {
                let result = WorkerResult::Completed {
                    recommended_image: Some("image:1".into()),
                    output: "s3://out/x".into(),
                    summary: serde_json::json!({}),
                };
                worker_files::write_atomic(
                    &worker_files::result_path(&cfg.job_dir(stored.id)),
                    &serde_json::to_vec(&result).unwrap(),
                )
                .unwrap();
            }
        }
    }
    let service = temper_server::open(cfg).unwrap();
    let done = service
        .store
        .get(JobKind::Optimization, "finished-meanwhile")
        .unwrap()
        .unwrap();
    assert_eq!(done.status, OptimizationJobStatus::Completed);
    assert_eq!(done.recommended_image.as_deref(), Some("image:1"));
    let died = service
        .store
        .get(JobKind::Optimization, "died-meanwhile")
        .unwrap()
        .unwrap();
    assert_eq!(died.status, OptimizationJobStatus::Failed);
    assert!(died
        .failure_reason
        .unwrap()
        .contains("earlier run of the server"));
}

#[test]
fn stop_sends_sigterm_and_a_queued_job_stopped_never_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.worker_exe = fake_worker(dir.path(), "polite-worker", "exit 143");
    // A long grace: ending well inside it shows the worker's own SIGTERM handler did it.
    cfg.stop_grace = Duration::from_secs(5);
    let service = temper_server::open(cfg).unwrap();
    let store = service.store.clone();
    store.insert(&record("running", 0.0, None)).unwrap();
    store.insert(&record("queued", 0.0, None)).unwrap();
    service.wake.wake();
    let running = wait_status(store.as_ref(), "running", OptimizationJobStatus::InProgress);
    assert!(running.worker_pid.is_some() && running.start_time.is_some());
    // One slot: the second job waits.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        store
            .get(JobKind::Optimization, "queued")
            .unwrap()
            .unwrap()
            .status,
        OptimizationJobStatus::Starting
    );
    for name in ["queued", "running"] {
        store
            .update(JobKind::Optimization, name, &mut |j| {
                j.stop_requested = true;
                j.status = OptimizationJobStatus::Stopping;
            })
            .unwrap();
    }
    let started = Instant::now();
    service.wake.wake();
    let queued = wait_terminal(store.as_ref(), "queued");
    assert_eq!(queued.status, OptimizationJobStatus::Stopped);
    assert!(
        queued.start_time.is_none(),
        "a stopped queued job never starts"
    );
    let running = wait_terminal(store.as_ref(), "running");
    assert_eq!(running.status, OptimizationJobStatus::Stopped);
    // Ended by its SIGTERM handler, well inside the 5 s grace period.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(running.failure_reason.is_none());
}

#[test]
fn a_worker_ignoring_sigterm_past_max_runtime_is_killed_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.worker_exe = fake_worker(dir.path(), "stubborn-worker", "");
    let service = temper_server::open(cfg).unwrap();
    let store = service.store.clone();
    store
        .insert(&record_with_runtime("stubborn", 0.0, None, 1))
        .unwrap();
    service.wake.wake();
    let started = Instant::now();
    let job = wait_terminal(store.as_ref(), "stubborn");
    assert_eq!(job.status, OptimizationJobStatus::Failed);
    let reason = job.failure_reason.unwrap();
    assert!(reason.contains("MaxRuntimeInSeconds (1 s)"), "{reason}");
    assert!(
        reason.contains("grace period") && reason.contains("killed"),
        "{reason}"
    );
    // 1 s of runtime, then 1 s of grace, then SIGKILL.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = temper_server::open(config(dir.path())).unwrap();
    let err = temper_server::open(config(dir.path())).err().unwrap();
    assert!(err.to_string().contains("another temper-server"), "{err}");
}

#[test]
fn a_worker_started_but_never_recorded_is_adopted_not_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    let id = {
        let store = temper_server::sqlite::SqliteStore::open(&cfg.database_path()).unwrap();
        store.insert(&record("unrecorded", 1.0, None)).unwrap().id
    };
    // What a server leaves when it dies between starting a worker and recording it: a
    // live worker naming the job dir, and its worker.pid.
    let job_dir = dir
        .path()
        .canonicalize()
        .unwrap()
        .join("jobs")
        .join(id.to_string());
    std::fs::create_dir_all(&job_dir).unwrap();
    let script = fake_worker(dir.path(), "orphan-worker", "exit 143");
    let mut orphan = std::process::Command::new(&script)
        .arg("--job-dir")
        .arg(&job_dir)
        .spawn()
        .unwrap();
    worker_files::write_atomic(
        &worker_files::pid_path(&job_dir),
        orphan.id().to_string().as_bytes(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !worker_files::is_worker_of(orphan.id(), &job_dir) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The configured worker binary does not exist: starting the job again would fail it.
    let service = temper_server::open(cfg).unwrap();
    service.wake.wake();
    let job = wait_status(
        service.store.as_ref(),
        "unrecorded",
        OptimizationJobStatus::InProgress,
    );
    assert_eq!(job.status, OptimizationJobStatus::InProgress);
    assert_eq!(job.worker_pid, Some(orphan.id()));
    orphan.kill().unwrap();
    orphan.wait().unwrap();
    let job = wait_terminal(service.store.as_ref(), "unrecorded");
    assert_eq!(job.status, OptimizationJobStatus::Failed);
    assert!(job
        .failure_reason
        .unwrap()
        .contains("earlier run of the server"));
}

#[test]
fn the_worker_is_given_the_spec_stored_at_create() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.worker_exe = fake_worker(dir.path(), "spec-worker", "exit 143");
    let job_dirs = dir.path().canonicalize().unwrap().join("jobs");
    let service = temper_server::open(cfg).unwrap();
    let store = service.store.clone();
    // A spec that the request alone would not give: what the worker reads is the spec
    // stored with the job, never a new reading of the request.
    let mut job = record("stored-spec", 0.0, None);
    let (Work::Optimize(spec), JobRequest::Optimization(request)) = (&mut job.spec, &job.request)
    else {
        unreachable!("an optimization job")
    };
    spec.environment
        .insert("OPTION_EVAL".into(), "false".into());
    assert_ne!(
        *spec,
        temper_api::to_job_spec(request, &Default::default()).unwrap()
    );
    let stored = store.insert(&job).unwrap();
    assert_eq!(
        store
            .get(JobKind::Optimization, "stored-spec")
            .unwrap()
            .unwrap()
            .spec,
        job.spec
    );
    service.wake.wake();
    wait_status(
        store.as_ref(),
        "stored-spec",
        OptimizationJobStatus::InProgress,
    );
    let written = worker_files::read_spec(&job_dirs.join(stored.id.to_string())).unwrap();
    assert_eq!(Work::Optimize(written), job.spec);
    store
        .update(JobKind::Optimization, "stored-spec", &mut |j| {
            j.stop_requested = true;
            j.status = OptimizationJobStatus::Stopping;
        })
        .unwrap();
    service.wake.wake();
    assert_eq!(
        wait_terminal(store.as_ref(), "stored-spec").status,
        OptimizationJobStatus::Stopped
    );
}
