//! Bounded load test of the job API: a fixed number of signed requests from many
//! concurrent clients against a real `temper-server` process on loopback, with a store
//! of many jobs. Prints p50/p99/max of Describe and List and fails (exit 1) if any
//! request failed. A third of the requests name no operation: they pass through HTTP
//! and the signature check and are refused at once, the floor the other two stand on.
//!
//!     cargo build --release -p temper-server -p temper-benches
//!     target/release/api_load [--jobs 1000] [--clients 50] [--requests-per-client 300]
//!         [--store postgres://user@host:port/database [--servers N]]
//!
//! The jobs are written into the server's store before it starts (as finished jobs that
//! ran earlier), so the load measures the API, not optimization jobs: SQLite in the data
//! directory, or with `--store` an empty PostgreSQL database (the server is started with
//! the same `--store`). `--servers N` starts N API-only servers on that database (as
//! beside worker agents) and spreads the clients over them.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use temper_api::{EpochSeconds, OptimizationJobStatus};
use temper_server::client::{Client, Credentials};
use temper_server::postgres::PostgresStore;
use temper_server::sqlite::SqliteStore;
use temper_server::store::{JobRecord, JobStore};

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Args {
    jobs: usize,
    clients: usize,
    per_client: usize,
    server: PathBuf,
    store: Option<String>,
    servers: usize,
}

fn args() -> Args {
    let mut a = Args {
        jobs: 1000,
        clients: 50,
        per_client: 300,
        server: std::env::current_exe()
            .expect("own path")
            .with_file_name("temper-server"),
        store: None,
        servers: 1,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        let n = || value.parse::<usize>().expect("a number");
        match pair[0].as_str() {
            "--jobs" => a.jobs = n(),
            "--clients" => a.clients = n(),
            "--requests-per-client" => a.per_client = n(),
            "--server" => a.server = PathBuf::from(&value),
            "--store" => a.store = Some(value),
            "--servers" => a.servers = n(),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn seed(store: &dyn JobStore, jobs: usize) {
    let body = |name: &str| {
        serde_json::json!({
            "OptimizationJobName": name,
            "RoleArn": "arn:aws:iam::123456789012:role/load",
            "ModelSource": {"S3": {"S3Uri": "s3://models/llama/"}},
            "DeploymentInstanceType": "ml.g6.12xlarge",
            "OptimizationConfigs": [{"ModelQuantizationConfig": {"OverrideEnvironment": {"OPTION_QUANTIZE": "fp8"}}}],
            "OutputConfig": {"S3OutputLocation": format!("s3://out/{name}/")},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        })
        .to_string()
    };
    let now = EpochSeconds::now().0;
    for i in 0..jobs {
        let name = format!("load-job-{i:05}");
        let request = temper_api::parse_create_request(body(&name).as_bytes()).unwrap();
        let spec = temper_api::to_job_spec(&request, &Default::default()).unwrap();
        let t = now - (jobs - i) as f64;
        let status = if i % 10 == 0 {
            OptimizationJobStatus::Failed
        } else {
            OptimizationJobStatus::Completed
        };
        let arn = format!("arn:aws:sagemaker:us-east-1:123456789012:optimization-job/{name}");
        store
            .insert(&JobRecord {
                status,
                last_modified_time: t + 0.5,
                start_time: Some(t),
                end_time: Some(t + 0.5),
                failure_reason: (status == OptimizationJobStatus::Failed)
                    .then(|| "The worker process was killed by SIGKILL".to_string()),
                recommended_image: Some("763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.33.0-lmi15.0.0-cu128".into()),
                ..JobRecord::queued(request, spec, arn, t)
            })
            .unwrap();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<10} n={:<6} p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        times.len(),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().unwrap())
    );
}

fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let data0 = dir.path().join("data");
    std::fs::create_dir_all(data0.join("jobs")).unwrap();
    match &a.store {
        None => seed(
            &SqliteStore::open(&data0.join("jobs.sqlite3")).unwrap(),
            a.jobs,
        ),
        Some(url) => seed(&PostgresStore::open(url).unwrap(), a.jobs),
    }
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        "[default]\naws_access_key_id = AKIDLOAD\naws_secret_access_key = load-secret\n",
    )
    .unwrap();
    assert!(
        a.servers == 1 || a.store.is_some(),
        "--servers N needs --store: servers share a PostgreSQL database"
    );
    let mut ports = Vec::new();
    let mut guards = Vec::new();
    for n in 0..a.servers {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.path().join(format!("data{n}"));
        let server = Command::new(&a.server)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(if n == 0 { &data0 } else { &data })
            .arg("--credentials")
            .arg(&creds)
            .args(a.store.iter().flat_map(|url| ["--store", url.as_str()]))
            // Several servers on one database answer the API beside worker agents.
            .args((a.servers > 1).then_some("--api-only"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", a.server.display()));
        // Ends the server however this process ends (a panic included).
        guards.push(KillOnDrop(server));
        ports.push(port);
    }
    let endpoints: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let failures = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        for &port in &ports {
            while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                assert!(Instant::now() < deadline, "a server did not start");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..a.clients {
            let endpoint = endpoints[c % endpoints.len()].clone();
            let (jobs, per_client) = (a.jobs, a.per_client);
            tasks.push(tokio::spawn(async move {
                let creds = Credentials {
                    access_key: "AKIDLOAD".into(),
                    secret_key: "load-secret".into(),
                };
                // One client each, with its own connections, like 50 boto3 clients.
                let client = Client::new(&endpoint, Some(creds), "us-east-1").unwrap();
                // One untimed request first: connecting (all 50 clients at once) is not
                // what Describe costs, and would otherwise be exactly its slowest 1%.
                let _ = client.call("NoSuchOperation", &serde_json::json!({})).await;
                let (mut describe, mut list, mut floor, mut failed) =
                    (Vec::new(), Vec::new(), Vec::new(), 0usize);
                for r in 0..per_client {
                    let t = Instant::now();
                    let ok = if r % 3 == 2 {
                        // The floor: HTTP, body and signature check, then an immediate
                        // UnknownOperationException, with no store access.
                        let out = client.call("NoSuchOperation", &serde_json::json!({})).await;
                        let ok = matches!(&out, Err(temper_server::client::ClientError::Api(e)) if e.type_name() == "UnknownOperationException");
                        floor.push(t.elapsed());
                        ok
                    } else if r % 3 == 0 {
                        let name = format!("load-job-{:05}", (c * 7919 + r * 104_729) % jobs);
                        let out = client
                            .call(
                                "DescribeOptimizationJob",
                                &serde_json::json!({ "OptimizationJobName": name }),
                            )
                            .await;
                        let ok = matches!(&out, Ok(v) if v["OptimizationJobName"] == name.as_str());
                        describe.push(t.elapsed());
                        ok
                    } else {
                        let filter = if r % 2 == 1 {
                            serde_json::json!({ "MaxResults": 50, "SortBy": "CreationTime", "SortOrder": "Descending" })
                        } else {
                            serde_json::json!({ "MaxResults": 50, "StatusEquals": "COMPLETED", "NameContains": "job-00" })
                        };
                        let out = client.call("ListOptimizationJobs", &filter).await;
                        let ok = matches!(&out, Ok(v) if v["OptimizationJobSummaries"].as_array().is_some_and(|s| !s.is_empty()));
                        list.push(t.elapsed());
                        ok
                    };
                    if !ok {
                        failed += 1;
                    }
                }
                (describe, list, floor, failed)
            }));
        }
        let (mut describe, mut list, mut floor, mut failed) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for t in tasks {
            let (d, l, fl, f) = t.await.unwrap();
            describe.extend(d);
            list.extend(l);
            floor.extend(fl);
            failed += f;
        }
        let wall = started.elapsed();
        let total = describe.len() + list.len() + floor.len();
        println!(
            "{} clients x {} requests = {total} requests against {} stored jobs on {} server(s) in {:.2} s ({:.0} req/s), {failed} failed",
            a.clients,
            a.per_client,
            a.jobs,
            a.servers,
            wall.as_secs_f64(),
            total as f64 / wall.as_secs_f64()
        );
        report("Describe", describe);
        report("List(50)", list);
        report("floor", floor);
        failed
    });
    if failures > 0 {
        drop(guards);
        std::process::exit(1);
    }
}
