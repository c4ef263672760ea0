//! The supervisor against a real SQLite store and real processes, for what the
//! contract tests cannot reach in reasonable time: MaxPendingTimeInSeconds (at least
//! 1800 s in the service model) and the settling of jobs a previous server left.

use std::time::{Duration, Instant};
use temper_api::{EpochSeconds, OptimizationJobStatus};
use temper_server::config::{Config, S3Settings};
use temper_server::store::{JobRecord, JobStore};
use temper_server::worker_files::{self, WorkerResult};

fn config(dir: &std::path::Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        credentials: None,
        region: "us-east-1".into(),
        local_roots: vec![],
        max_jobs: 100,
        max_unfinished_jobs: 100,
        concurrent_jobs: 1,
        max_body_bytes: 1 << 20,
        stop_grace: Duration::from_secs(1),
        poll_interval: Duration::from_millis(20),
        // Never reached in these tests: a launch would fail and say so.
        worker_exe: dir.join("no-worker-here"),
        s3: S3Settings::default(),
    }
}

fn record(name: &str, created_secs_ago: f64, pending: Option<i32>) -> JobRecord {
    let body = serde_json::json!({
        "OptimizationJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/r",
        "ModelSource": {"S3": {"S3Uri": "s3://models/m/"}},
        "DeploymentInstanceType": "ml.g6.12xlarge",
        "OptimizationConfigs": [{"ModelQuantizationConfig": {}}],
        "OutputConfig": {"S3OutputLocation": "s3://out/x/"},
        "StoppingCondition": {"MaxPendingTimeInSeconds": pending, "MaxRuntimeInSeconds": 3600},
    });
    let request = temper_api::parse_create_request(body.to_string().as_bytes()).unwrap();
    let created = EpochSeconds::now().0 - created_secs_ago;
    JobRecord {
        id: 0,
        name: name.into(),
        arn: format!("arn:aws:sagemaker:us-east-1:123456789012:optimization-job/{name}"),
        status: OptimizationJobStatus::Starting,
        creation_time: created,
        last_modified_time: created,
        start_time: None,
        end_time: None,
        failure_reason: None,
        recommended_image: None,
        request,
        worker_pid: None,
        stop_requested: false,
    }
}

fn wait_terminal(store: &dyn JobStore, name: &str) -> JobRecord {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let job = store.get(name).unwrap().unwrap();
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
    let done = service.store.get("finished-meanwhile").unwrap().unwrap();
    assert_eq!(done.status, OptimizationJobStatus::Completed);
    assert_eq!(done.recommended_image.as_deref(), Some("image:1"));
    let died = service.store.get("died-meanwhile").unwrap().unwrap();
    assert_eq!(died.status, OptimizationJobStatus::Failed);
    assert!(died
        .failure_reason
        .unwrap()
        .contains("server was restarted"));
}
