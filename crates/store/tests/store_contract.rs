//! One suite every `JobStore` passes: SQLite (a file in a temporary directory) and
//! PostgreSQL (a database created for the run on the server `TEMPER_TEST_POSTGRES` names;
//! `scripts/test.sh` starts one with `scripts/postgres.sh`). Without that variable the
//! PostgreSQL test fails, saying how to run it: a contract that silently skips proves
//! nothing.

mod common;

use common::{fresh_database, optimization};
use std::collections::BTreeMap;
use std::sync::Arc;
use temper_api::recommendation::CreateInferenceRecommendationsJobRequest;
use temper_api::{ListOptimizationJobsSortBy, OptimizationJobStatus, SortOrder};
use temper_core::spec::Location;
use temper_jobdir::recommendation::{RecommendationSpec, Work};
use temper_store::store::{
    Deleted, JobKind, JobRecord, JobRequest, JobStore, ListQuery, SortKey, SortPosition, StoreError,
};

fn recommendation(name: &str, model: &str, created: f64) -> JobRecord {
    let request: CreateInferenceRecommendationsJobRequest =
        serde_json::from_value(serde_json::json!({
            "JobName": name, "JobType": "Default",
            "RoleArn": "arn:aws:iam::123456789012:role/r",
            "InputConfig": {"ModelName": model}
        }))
        .unwrap();
    let spec = RecommendationSpec {
        name: name.into(),
        job_type: request.job_type,
        model_name: model.into(),
        model: Location::Local("/models/m".into()),
        candidates: vec!["ml.g6.xlarge".into()],
        configurations: vec![],
        skipped_configurations: 0,
        max_parallel_tests: 1,
        traffic: None,
        stopping: None,
        sample_payload: None,
        content_type: "application/json".into(),
        prices: BTreeMap::new(),
    };
    JobRecord::new(
        JobRequest::Recommendation(Box::new(request)),
        Work::Recommend(spec),
        format!("arn:rec/{name}"),
        created,
    )
}

fn query(kind: JobKind) -> ListQuery {
    ListQuery {
        kind,
        model_name_equals: None,
        creation_time_after: None,
        creation_time_before: None,
        last_modified_time_after: None,
        last_modified_time_before: None,
        optimization_contains: None,
        name_contains: None,
        status_equals: None,
        sort_by: ListOptimizationJobsSortBy::CreationTime,
        sort_order: SortOrder::Ascending,
        after: None,
        snapshot: None,
        limit: 100,
    }
}

fn names(store: &dyn JobStore, q: &ListQuery) -> Vec<String> {
    store.list(q).unwrap().into_iter().map(|s| s.name).collect()
}

/// What every store must do.
fn contract(store: Arc<dyn JobStore>) {
    assert_eq!(store.max_id().unwrap(), 0);
    assert_eq!(store.counts().unwrap(), (0, 0));

    // Inserts give increasing ids and read back whole.
    let a = store.insert(&optimization("alpha", 100.0, "fp8")).unwrap();
    let b = store.insert(&optimization("Beta", 200.0, "int8")).unwrap();
    let c = store.insert(&optimization("gamma", 300.0, "awq")).unwrap();
    assert!(a.id < b.id && b.id < c.id);
    assert_eq!(
        store.get(JobKind::Optimization, "Beta").unwrap().unwrap(),
        b
    );
    assert!(store.get(JobKind::Optimization, "beta").unwrap().is_none());
    assert!(store
        .get(JobKind::Recommendation, "Beta")
        .unwrap()
        .is_none());

    // A name is unique within its kind only.
    let again = store
        .insert(&optimization("alpha", 400.0, "fp8"))
        .unwrap_err();
    assert!(
        matches!(again, StoreError::Duplicate(ref n) if n == "alpha"),
        "{again}"
    );
    let r = store
        .insert(&recommendation("alpha", "alpha", 500.0))
        .unwrap();
    assert_eq!(
        store
            .get(JobKind::Recommendation, "alpha")
            .unwrap()
            .unwrap(),
        r
    );
    store
        .insert(&recommendation("rec-2", "Beta", 600.0))
        .unwrap();
    assert_eq!(store.counts().unwrap(), (3, 5));

    // Updates see the current record and persist every field they change.
    let outcome = serde_json::json!({"steps": [], "explanation": "why"});
    let updated = store
        .update(JobKind::Recommendation, "alpha", &mut |j| {
            j.status = OptimizationJobStatus::Completed;
            j.end_time = Some(550.0);
            j.last_modified_time = 550.0;
            j.outcome = Some(outcome.clone());
        })
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .get(JobKind::Recommendation, "alpha")
            .unwrap()
            .unwrap(),
        updated
    );
    store
        .update(JobKind::Optimization, "alpha", &mut |j| {
            j.status = OptimizationJobStatus::InProgress;
            j.worker_pid = Some(4_000_000_000);
            j.start_time = Some(150.0);
            j.last_modified_time = 150.0;
        })
        .unwrap();
    let running = store.get(JobKind::Optimization, "alpha").unwrap().unwrap();
    assert_eq!(running.worker_pid, Some(4_000_000_000));
    assert!(store
        .update(JobKind::Optimization, "nobody", &mut |_| {})
        .unwrap()
        .is_none());

    // Concurrent updates of one job lose none of each other's changes.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                for k in 0..10 {
                    store
                        .update(JobKind::Optimization, "gamma", &mut |j| {
                            j.last_modified_time += 1.0;
                            let _ = (i, k);
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let gamma = store.get(JobKind::Optimization, "gamma").unwrap().unwrap();
    assert_eq!(gamma.last_modified_time, 300.0 + 80.0);

    // Unfinished: oldest first, both kinds.
    let unfinished: Vec<(String, JobKind)> = store
        .unfinished()
        .unwrap()
        .into_iter()
        .map(|j| (j.name.clone(), j.kind()))
        .collect();
    assert_eq!(
        unfinished,
        [
            ("alpha".to_string(), JobKind::Optimization),
            ("Beta".to_string(), JobKind::Optimization),
            ("gamma".to_string(), JobKind::Optimization),
            ("rec-2".to_string(), JobKind::Recommendation),
        ]
    );

    // Listing: per kind, filters, both orders, bytewise names, keyset pages.
    let opt = query(JobKind::Optimization);
    assert_eq!(names(store.as_ref(), &opt), ["alpha", "Beta", "gamma"]);
    let by_name = ListQuery {
        sort_by: ListOptimizationJobsSortBy::Name,
        ..opt.clone()
    };
    assert_eq!(names(store.as_ref(), &by_name), ["Beta", "alpha", "gamma"]);
    let desc = ListQuery {
        sort_order: SortOrder::Descending,
        ..opt.clone()
    };
    assert_eq!(names(store.as_ref(), &desc), ["gamma", "Beta", "alpha"]);
    let filtered = ListQuery {
        name_contains: Some("ET".into()),
        ..opt.clone()
    };
    assert_eq!(names(store.as_ref(), &filtered), ["Beta"]);
    let status = ListQuery {
        status_equals: Some(OptimizationJobStatus::InProgress),
        ..opt.clone()
    };
    assert_eq!(names(store.as_ref(), &status), ["alpha"]);
    let types = ListQuery {
        optimization_contains: Some("quant".into()),
        creation_time_after: Some(150.0),
        creation_time_before: Some(250.0),
        ..opt.clone()
    };
    assert_eq!(names(store.as_ref(), &types), ["Beta"]);
    let page = store
        .list(&ListQuery {
            limit: 1,
            ..opt.clone()
        })
        .unwrap();
    assert_eq!(page[0].name, "alpha");
    assert_eq!(page[0].optimization_types, ["Quantization"]);
    assert_eq!(page[0].deployment_instance_type, "ml.g6.12xlarge");
    let rest = ListQuery {
        after: Some(SortPosition {
            key: SortKey::Time(page[0].creation_time),
            id: page[0].id,
        }),
        snapshot: Some(b.id),
        ..opt.clone()
    };
    assert_eq!(names(store.as_ref(), &rest), ["Beta"]);
    let after_name = ListQuery {
        after: Some(SortPosition {
            key: SortKey::Text("alpha".into()),
            id: a.id,
        }),
        ..by_name.clone()
    };
    assert_eq!(names(store.as_ref(), &after_name), ["gamma"]);
    let recs = ListQuery {
        model_name_equals: Some("Beta".into()),
        ..query(JobKind::Recommendation)
    };
    assert_eq!(names(store.as_ref(), &recs), ["rec-2"]);

    // Deletes: finished jobs only, of their kind; ids never come back.
    assert_eq!(
        store
            .delete_finished(JobKind::Optimization, "alpha")
            .unwrap(),
        Deleted::Unfinished(OptimizationJobStatus::InProgress)
    );
    assert_eq!(
        store
            .delete_finished(JobKind::Optimization, "nobody")
            .unwrap(),
        Deleted::NotFound
    );
    store
        .update(JobKind::Optimization, "gamma", &mut |j| {
            j.status = OptimizationJobStatus::Failed;
        })
        .unwrap();
    let top = store.max_id().unwrap();
    assert_eq!(
        store
            .delete_finished(JobKind::Optimization, "gamma")
            .unwrap(),
        Deleted::Job { id: c.id }
    );
    assert!(store.get(JobKind::Optimization, "gamma").unwrap().is_none());
    assert_eq!(store.max_id().unwrap(), top);
    let next = store.insert(&optimization("gamma", 700.0, "fp8")).unwrap();
    assert!(next.id > top);
    assert_eq!(store.counts().unwrap(), (3, 4));
}

#[test]
fn sqlite_passes_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = temper_store::sqlite::SqliteStore::open(&dir.path().join("jobs.sqlite3")).unwrap();
    contract(Arc::new(store));
}

#[test]
fn postgres_passes_the_store_contract() {
    let url = fresh_database();
    let store = temper_store::postgres::PostgresStore::open(&url).unwrap();
    contract(Arc::new(store));
    // Opening it again applies no migration twice.
    let store = temper_store::postgres::PostgresStore::open(&url).unwrap();
    assert!(store.get(JobKind::Optimization, "alpha").unwrap().is_some());
    // A connection the database drops (a restart, an administrator) is opened again: the
    // call that finds it dead may fail, saying so; the next one works.
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let ended = c
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap();
    assert_eq!(ended, 1, "the store's one connection");
    if let Err(e) = store.get(JobKind::Optimization, "alpha") {
        assert!(matches!(e, StoreError::Backend(_)), "{e}");
    }
    assert!(store.get(JobKind::Optimization, "alpha").unwrap().is_some());
    drop(store);
    // A newer schema is refused.
    c.batch_execute("INSERT INTO temper_schema (version) VALUES (99)")
        .unwrap();
    let err = temper_store::postgres::PostgresStore::open(&url)
        .err()
        .expect("a newer schema is refused")
        .to_string();
    assert!(err.contains("schema version 99"), "{err}");
    // A wrong URL names the database and says what to check, without the password.
    let err =
        temper_store::postgres::PostgresStore::open("postgres://temper:hunter2@127.0.0.1:1/none")
            .err()
            .expect("nothing listens on port 1")
            .to_string();
    assert!(
        err.contains("127.0.0.1:1") && err.contains("check the URL") && !err.contains("hunter2"),
        "{err}"
    );
}

#[test]
fn postgres_limits_hold_across_servers() {
    // Eight servers' connections create at once against a limit of five jobs: exactly five
    // are stored, and the rest are refused with the check's reason.
    let url = fresh_database();
    drop(temper_store::postgres::PostgresStore::open(&url).unwrap());
    let outcomes: Vec<Result<(), StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let url = url.clone();
                s.spawn(move || {
                    let store = temper_store::postgres::PostgresStore::open(&url).unwrap();
                    store
                        .insert_checked(
                            &optimization(&format!("limited-{i}"), i as f64, "fp8"),
                            &mut |stored, _| {
                                if stored >= 5 {
                                    Err(format!("{stored} jobs stored"))
                                } else {
                                    Ok(())
                                }
                            },
                        )
                        .map(|_| ())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stored = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(stored, 5, "{outcomes:?}");
    for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert!(
            matches!(refused, StoreError::Refused(why) if why == "5 jobs stored"),
            "{refused}"
        );
    }
    let store = temper_store::postgres::PostgresStore::open(&url).unwrap();
    assert_eq!(store.counts().unwrap(), (5, 5));
}
