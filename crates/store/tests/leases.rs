//! Worker agents' claims and leases on PostgreSQL (`temper_store::leases`), against a real
//! database (`TEMPER_TEST_POSTGRES`, started by scripts/test.sh): a job is claimed once,
//! runs under one agent at a time, and a late result never overwrites a settled job.

mod common;

use common::{fresh_database, optimization, optimization_with};
use std::sync::Arc;
use temper_api::OptimizationJobStatus;
use temper_store::leases::{AgentInfo, Ending, Report};
use temper_store::postgres::PostgresStore;
use temper_store::store::{JobKind, JobStore};

fn agent(name: &str, types: &[&str], lease_secs: f64) -> AgentInfo {
    AgentInfo {
        name: name.into(),
        host: format!("host-of-{name}"),
        slots: 4,
        instance_types: types.iter().map(|t| t.to_string()).collect(),
        lease_secs,
    }
}

fn completed() -> Ending {
    Ending {
        status: OptimizationJobStatus::Completed,
        failure_reason: None,
        recommended_image: Some("image".into()),
        outcome: None,
    }
}

/// Lets the leases given `secs` ago run out (on the database's clock).
fn expire_leases(url: &str) {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.batch_execute("UPDATE jobs SET lease_expires = lease_expires - 3600 WHERE lease_expires IS NOT NULL; UPDATE agents SET heartbeat = heartbeat - 3600")
        .unwrap();
}

#[test]
fn concurrent_claims_take_each_job_once() {
    let url = fresh_database();
    let store = Arc::new(PostgresStore::open(&url).unwrap());
    for i in 0..40 {
        store
            .insert(&optimization(&format!("job-{i:02}"), i as f64, "fp8"))
            .unwrap();
    }
    // Four agents claiming at once, each on its own connection, a few jobs at a time.
    let claimed: Vec<Vec<i64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|a| {
                let url = url.clone();
                s.spawn(move || {
                    let store = PostgresStore::open(&url).unwrap();
                    let me = agent(&format!("a{a}"), &[], 30.0);
                    store.join(&me).unwrap();
                    let mut mine = Vec::new();
                    loop {
                        let got = store.claim(&me, 3).unwrap();
                        if got.is_empty() {
                            break mine;
                        }
                        mine.extend(got.iter().map(|h| h.job.id));
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<i64> = claimed.iter().flatten().copied().collect();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, 40, "every job claimed: {claimed:?}");
    assert_eq!(all.len(), 40, "no job claimed twice: {claimed:?}");
    let job = store.get(JobKind::Optimization, "job-00").unwrap().unwrap();
    assert_eq!(job.status, OptimizationJobStatus::InProgress);
    assert!(job.start_time.is_some());
}

#[test]
fn agents_take_only_the_instance_types_they_run() {
    let url = fresh_database();
    let store = PostgresStore::open(&url).unwrap();
    let p5 = optimization_with(
        "wants-p5",
        1.0,
        "fp8",
        serde_json::json!({"DeploymentInstanceType": "ml.p5.48xlarge",
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxPendingTimeInSeconds": 1800}}),
    );
    let p5 = store.insert(&p5).unwrap();
    let g6 = store.insert(&optimization("wants-g6", 2.0, "fp8")).unwrap();
    // No agent yet: Describe says so.
    let why = store.waiting_reason(&p5).unwrap().unwrap();
    assert!(why.contains("no worker agent has joined"), "{why}");
    assert!(why.contains("MaxPendingTimeInSeconds (1800 s)"), "{why}");

    let l4 = agent("l4-host", &["ml.g6.12xlarge", "ml.g6.xlarge"], 30.0);
    store.join(&l4).unwrap();
    let got = store.claim(&l4, 4).unwrap();
    assert_eq!(
        got.iter().map(|h| h.job.id).collect::<Vec<_>>(),
        vec![g6.id]
    );
    assert_eq!(got[0].attempt, 1);
    let why = store.waiting_reason(&p5).unwrap().unwrap();
    assert!(
        why.contains("no worker agent runs ml.p5.48xlarge")
            && why.contains("l4-host on host-of-l4-host"),
        "{why}"
    );
    // A second agent of the same name is refused while the first lives.
    let err = store.join(&l4).unwrap_err().to_string();
    assert!(
        err.contains("named l4-host") && err.contains("--name"),
        "{err}"
    );

    // Past MaxPendingTimeInSeconds the sweep fails it, saying why it waited.
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.execute(
        "UPDATE jobs SET creation_time = creation_time - 1e10 WHERE id = $1",
        &[&p5.id],
    )
    .unwrap();
    let swept = store.sweep().unwrap();
    assert_eq!(swept.settled, vec!["wants-p5".to_string()]);
    let failed = store
        .get(JobKind::Optimization, "wants-p5")
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, OptimizationJobStatus::Failed);
    let reason = failed.failure_reason.unwrap();
    assert!(
        reason.contains("MaxPendingTimeInSeconds (1800 s)") && reason.contains("ml.p5.48xlarge"),
        "{reason}"
    );
}

#[test]
fn a_lost_lease_fails_the_job_and_fences_the_late_result() {
    let url = fresh_database();
    let store = PostgresStore::open(&url).unwrap();
    store.insert(&optimization("lost", 1.0, "fp8")).unwrap();
    let a = agent("a", &[], 5.0);
    store.join(&a).unwrap();
    let held = store.claim(&a, 1).unwrap().remove(0);
    let id = held.job.id;
    // Renewal and reports work while it holds the job.
    let renewed = store.renew("a", &[(id, 1)], 5.0).unwrap();
    assert_eq!(renewed.len(), 1);
    assert!(!renewed[0].stop_requested);
    let report = Report {
        progress: Some(r#"{"phase":"quantize","done":1,"total":2}"#.into()),
        log_at: 0,
        log: b"hello\n".to_vec(),
        ..Report::default()
    };
    assert!(store.report("a", id, 1, &report).unwrap());
    let seen = store.reported(id, 0, 100).unwrap().unwrap();
    assert_eq!(seen.log, b"hello\n");
    assert_eq!(seen.agent.as_deref(), Some("a"));
    assert_eq!(seen.host.as_deref(), Some("host-of-a"));
    assert_eq!(seen.progress.unwrap()["phase"], "quantize");

    // The agent goes silent past its lease: the sweep fails the job, naming it.
    expire_leases(&url);
    let swept = store.sweep().unwrap();
    assert_eq!(swept.lost, vec!["lost".to_string()]);
    let job = store.get(JobKind::Optimization, "lost").unwrap().unwrap();
    assert_eq!(job.status, OptimizationJobStatus::Failed);
    let reason = job.failure_reason.unwrap();
    assert!(
        reason.contains("worker agent a on host host-of-a") && reason.contains("5 s lease"),
        "{reason}"
    );
    // The agent comes back: it holds nothing, and its late result is not recorded.
    assert!(store.renew("a", &[(id, 1)], 5.0).unwrap().is_empty());
    assert!(!store.report("a", id, 1, &report).unwrap());
    assert!(!store.finish_held("a", id, 1, &completed()).unwrap());
    let job = store.get(JobKind::Optimization, "lost").unwrap().unwrap();
    assert_eq!(job.status, OptimizationJobStatus::Failed);
}

#[test]
fn a_job_that_asks_is_run_again_once_after_a_lost_host() {
    let url = fresh_database();
    let store = PostgresStore::open(&url).unwrap();
    let tags = serde_json::json!({"Tags": [{"Key": "temper:retry-on-host-loss", "Value": "true"}]});
    store
        .insert(&optimization_with("retried", 1.0, "fp8", tags))
        .unwrap();
    let a = agent("a", &[], 5.0);
    let b = agent("b", &[], 5.0);
    store.join(&a).unwrap();
    let first = store.claim(&a, 1).unwrap().remove(0);
    expire_leases(&url);
    let swept = store.sweep().unwrap();
    assert_eq!(swept.retried, vec!["retried".to_string()]);
    let queued = store
        .get(JobKind::Optimization, "retried")
        .unwrap()
        .unwrap();
    assert_eq!(queued.status, OptimizationJobStatus::Starting);
    assert!(queued.failure_reason.unwrap().contains("attempt 2 of 2"));

    // Another agent takes it as attempt 2; the first agent's late result is fenced off.
    store.join(&b).unwrap();
    let second = store.claim(&b, 1).unwrap().remove(0);
    assert_eq!(second.attempt, 2);
    assert_eq!(second.job.failure_reason, None);
    // Both attempts' logs, in chunks, read back through any window: the same bytes as the
    // whole log sliced, the second attempt headed.
    let id = second.job.id;
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    for (attempt, at, chunk) in [(1, 0i64, "one\n"), (1, 4, "two\n"), (2, 0, "three\n")] {
        c.execute(
            "INSERT INTO job_logs (job_id, attempt, at, chunk) VALUES ($1, $2, $3, $4)",
            &[&id, &attempt, &at, &chunk.as_bytes()],
        )
        .unwrap();
    }
    let whole = "one\ntwo\n\n--- attempt 2 (the job was run again) ---\nthree\n".as_bytes();
    for offset in 0..=whole.len() as u64 + 2 {
        for limit in [0u64, 1, 3, 7, 100] {
            let (got, size) = store.reported_log(id, offset, limit).unwrap().unwrap();
            let from = (offset as usize).min(whole.len());
            let to = (from + limit as usize).min(whole.len());
            assert_eq!(size, whole.len() as u64);
            assert_eq!(got, &whole[from..to], "offset {offset} limit {limit}");
        }
    }
    assert!(!store
        .finish_held("a", first.job.id, first.attempt, &completed())
        .unwrap());
    // Lost a second time: it fails, saying it ran twice.
    expire_leases(&url);
    let swept = store.sweep().unwrap();
    assert_eq!(swept.lost, vec!["retried".to_string()]);
    let job = store
        .get(JobKind::Optimization, "retried")
        .unwrap()
        .unwrap();
    assert_eq!(job.status, OptimizationJobStatus::Failed);
    assert!(job.failure_reason.unwrap().contains("run twice"));
}

#[test]
fn stops_reach_the_agent_and_stopped_queued_jobs_end_stopped() {
    let url = fresh_database();
    let store = PostgresStore::open(&url).unwrap();
    store.insert(&optimization("running", 1.0, "fp8")).unwrap();
    let a = agent("a", &[], 30.0);
    store.join(&a).unwrap();
    let held = store.claim(&a, 1).unwrap().remove(0);
    store.insert(&optimization("queued", 2.0, "fp8")).unwrap();
    for name in ["running", "queued"] {
        store
            .update(JobKind::Optimization, name, &mut |j| {
                j.stop_requested = true;
                j.status = OptimizationJobStatus::Stopping;
            })
            .unwrap();
    }
    let renewed = store.renew("a", &[(held.job.id, 1)], 30.0).unwrap();
    assert!(renewed[0].stop_requested, "the agent learns of the stop");
    // Nobody claims a stopped job; the sweep ends it STOPPED.
    assert!(store.claim(&a, 4).unwrap().is_empty());
    let swept = store.sweep().unwrap();
    assert_eq!(swept.settled, vec!["queued".to_string()]);
    let queued = store.get(JobKind::Optimization, "queued").unwrap().unwrap();
    assert_eq!(queued.status, OptimizationJobStatus::Stopped);
    let stopped = Ending {
        status: OptimizationJobStatus::Stopped,
        failure_reason: None,
        recommended_image: None,
        outcome: None,
    };
    assert!(store.finish_held("a", held.job.id, 1, &stopped).unwrap());
    let job = store
        .get(JobKind::Optimization, "running")
        .unwrap()
        .unwrap();
    assert_eq!(job.status, OptimizationJobStatus::Stopped);
    // A runner server and agents never share a database.
    let lock = store.share_runner().unwrap();
    let err = temper_store::postgres::lock_runner(&url)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--api-only"), "{err}");
    drop(lock);
    let runner = temper_store::postgres::lock_runner(&url).unwrap();
    let err = store.share_runner().err().unwrap().to_string();
    assert!(err.contains("restart it with --api-only"), "{err}");
    drop(runner);
}

#[test]
fn a_database_of_the_first_schema_is_brought_up_to_date_keeping_its_jobs() {
    let url = fresh_database();
    drop(PostgresStore::open(&url).unwrap());
    // Back to version 1, as a server of the previous release left it, with a job.
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute(
        "DROP TABLE job_logs; DROP TABLE agents; ALTER TABLE jobs DROP COLUMN agent, \
         DROP COLUMN attempt, DROP COLUMN lease_expires, DROP COLUMN progress, DROP COLUMN steps; \
         DELETE FROM temper_schema WHERE version = 2",
    )
    .unwrap();
    c.execute(
        "INSERT INTO jobs (kind, name, arn, status, creation_time, last_modified_time, request, \
         spec, optimization_types, deployment_instance_type) SELECT 'optimization', 'old', 'arn', \
         'STARTING', 1, 1, '{}', '{}', ',,', 'ml.g6.xlarge'",
        &[],
    )
    .unwrap();
    let store = PostgresStore::open(&url).unwrap();
    let versions: Vec<i32> = c
        .query("SELECT version FROM temper_schema ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2]);
    let attempt: i32 = c
        .query_one("SELECT attempt FROM jobs WHERE name = 'old'", &[])
        .unwrap()
        .get(0);
    assert_eq!(attempt, 0, "the job is kept, not yet claimed");
    store.join(&agent("a", &[], 30.0)).unwrap();
}
