//! The command line of `temper-server`.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use temper_server::client::{Client, Credentials};
use temper_server::config::{read_credentials, Config, S3Settings};

#[derive(Parser)]
#[command(
    version,
    about = "SageMaker-compatible optimization-job service: boto3 and the AWS CLI work against it with endpoint_url",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand)]
pub enum Command {
    /// Show a job's progress and its worker's log (`--follow` until it ends).
    Logs(LogsArgs),
    /// List the worker agents of the server's shared database, with what each runs.
    Agents(AgentsArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on. Loopback by default; another address needs --credentials.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where jobs, their logs and the job database are kept.
    #[arg(long, default_value = "./temper-data")]
    data_dir: PathBuf,
    /// AWS-style credentials file (`[profile]` with aws_access_key_id and
    /// aws_secret_access_key): requests must be signed (SigV4) with one of its keys.
    #[arg(long, conflicts_with = "no_auth")]
    credentials: Option<PathBuf>,
    /// Accept unsigned requests. Only with a loopback --listen address.
    #[arg(long)]
    no_auth: bool,
    /// Region in ARNs of unsigned requests (signed ones use the signing region).
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// A directory whose files jobs may read and write through file:// URIs or plain
    /// paths (repeatable). Without one, jobs take s3:// URIs only.
    #[arg(long = "local-root")]
    local_roots: Vec<PathBuf>,
    /// Where workers run jobs: auto (the first CUDA GPU when the worker is built with CUDA
    /// and one is present, else the CPU), cpu, cpu:avx2, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE", value_parser = parse_device)]
    worker_device: Option<String>,
    /// ResourceLimitExceeded past this many stored jobs.
    #[arg(long, default_value_t = 10_000)]
    max_jobs: usize,
    /// ResourceLimitExceeded past this many queued or running jobs.
    #[arg(long, default_value_t = 100)]
    max_unfinished_jobs: usize,
    /// Jobs run at once (each uses every core); the rest wait in STARTING.
    #[arg(long, default_value_t = 1)]
    concurrent_jobs: usize,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Seconds a client may take to send a request's line and headers before the connection
    /// is closed (guards against clients that hold connections open by sending slowly).
    #[arg(long, default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds between SIGTERM and SIGKILL when a job is stopped or runs out of time.
    #[arg(long, default_value_t = 30)]
    stop_grace_secs: u64,
    /// The worker binary (default: temper-worker beside this binary).
    #[arg(long)]
    worker: Option<PathBuf>,
    /// S3-compatible endpoint for job data (credentials: AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY of the server's environment).
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// Region of the S3 endpoint.
    #[arg(long)]
    s3_region: Option<String>,
    /// A model inference-recommendations jobs may name in InputConfig.ModelName besides
    /// completed optimization jobs: NAME=URI (s3://bucket/prefix/, or a local directory under
    /// a --local-root). Repeatable.
    #[arg(long = "model", value_name = "NAME=URI")]
    models: Vec<String>,
    /// Instance prices for recommendations' CostPerHour and CostPerInference: a JSON object
    /// of instance type to USD per hour, taking precedence over the bundled (second-hand,
    /// January 2025) list.
    #[arg(long, value_name = "FILE")]
    price_list: Option<PathBuf>,
    /// Keep jobs in this PostgreSQL database (postgres://user:password@host:port/database)
    /// instead of SQLite in --data-dir; the schema is created or migrated at start.
    #[arg(long, value_name = "URL", env = "TEMPER_STORE")]
    store: Option<String>,
    /// With --store: answer the API only and run no jobs, beside the one server that runs
    /// the database's jobs (any number of these; each answers any request).
    #[arg(long)]
    api_only: bool,
}

#[derive(Args)]
pub struct LogsArgs {
    /// The job's name (an optimization job's, else an inference-recommendations job's).
    name: String,
    /// Which kind of job, when an optimization job and a recommendations job share the
    /// name: `optimization` or `recommendation`.
    #[arg(long)]
    kind: Option<String>,
    /// Keep printing until the job ends.
    #[arg(long, short)]
    follow: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Args)]
pub struct AgentsArgs {
    #[command(flatten)]
    server: ServerArgs,
}

/// Which server a client command asks, and how it signs.
#[derive(Args)]
pub struct ServerArgs {
    /// The server's URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    endpoint: String,
    /// Credentials file to sign with (default: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    /// else ~/.aws/credentials).
    #[arg(long)]
    credentials: Option<PathBuf>,
    #[arg(long, default_value = "default")]
    profile: String,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Send unsigned requests (to a --no-auth server).
    #[arg(long)]
    no_auth: bool,
}

impl ServerArgs {
    fn client(&self) -> Result<Client> {
        let credentials = if self.no_auth {
            None
        } else {
            Some(Credentials::resolve(
                self.credentials.as_deref(),
                &self.profile,
            )?)
        };
        Ok(Client::new(&self.endpoint, credentials, &self.region)?)
    }
}

/// Prints the worker agents, one line each.
pub fn agents(args: &AgentsArgs) -> Result<()> {
    let client = args.server.client()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (body, _) = runtime.block_on(client.get("/temper/agents", ""))?;
    let listed: serde_json::Value = serde_json::from_slice(&body)?;
    let agents = listed["Agents"].as_array().cloned().unwrap_or_default();
    if agents.is_empty() {
        println!(
            "no worker agent has joined (start one with `temper-worker --join <database URL>`)"
        );
    }
    for a in agents {
        let types: Vec<&str> = a["InstanceTypes"]
            .as_array()
            .map(|t| t.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let running: Vec<&str> = a["Running"]
            .as_array()
            .map(|t| t.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        println!(
            "{} on {}: {}, {} of {} slot(s) busy{}, {}, renewed {:.1} s ago",
            a["Name"].as_str().unwrap_or("?"),
            a["Host"].as_str().unwrap_or("?"),
            if a["Live"].as_bool() == Some(true) {
                "live"
            } else {
                "LOST (lease ran out)"
            },
            running.len(),
            a["Slots"].as_u64().unwrap_or(0),
            if running.is_empty() {
                String::new()
            } else {
                format!(" ({})", running.join(", "))
            },
            if types.is_empty() {
                "any instance type".to_string()
            } else if types.len() > 4 {
                format!("{} and {} more", types[..4].join(", "), types.len() - 4)
            } else {
                types.join(", ")
            },
            a["SecondsSinceRenewal"].as_f64().unwrap_or(f64::NAN),
        );
    }
    Ok(())
}

fn config(args: &ServeArgs) -> Result<Config> {
    let credentials = match (&args.credentials, args.no_auth) {
        (Some(path), _) => Some(read_credentials(path)?),
        (None, true) => None,
        (None, false) => anyhow::bail!(
            "give --credentials FILE (an AWS-style credentials file whose keys may call the \
             server), or --no-auth to accept unsigned requests on a loopback address"
        ),
    };
    let local_roots = args
        .local_roots
        .iter()
        .map(|r| {
            r.canonicalize()
                .with_context(|| format!("--local-root {}", r.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let worker_exe = match &args.worker {
        Some(w) => w.clone(),
        None => std::env::current_exe()
            .context("locating this binary to find temper-worker beside it")?
            .with_file_name("temper-worker"),
    };
    if !worker_exe.is_file() {
        anyhow::bail!(
            "the worker binary {} does not exist; build it (cargo build --release -p \
             temper-server) or pass --worker PATH",
            worker_exe.display()
        );
    }
    let models: std::collections::BTreeMap<_, _> = args
        .models
        .iter()
        .map(|m| temper_server::config::parse_model(m))
        .collect::<Result<_, _>>()?;
    // A registered directory is read by workers under the same roots as any job's path:
    // one outside them is this flag's mistake, said now rather than at every Create.
    for (name, location) in &models {
        temper_jobdir::access::within_roots(&format!("--model {name}"), location, &local_roots)
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    }
    let prices = match &args.price_list {
        Some(path) => temper_server::config::read_prices(path)?,
        None => Default::default(),
    };
    Ok(Config {
        store: args.store.clone(),
        api_only: args.api_only,
        models,
        prices,
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        credentials,
        region: args.region.clone(),
        local_roots,
        worker_device: args.worker_device.clone(),
        max_jobs: args.max_jobs,
        max_unfinished_jobs: args.max_unfinished_jobs,
        concurrent_jobs: args.concurrent_jobs,
        max_body_bytes: args.max_body_bytes,
        header_read_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
        stop_grace: Duration::from_secs(args.stop_grace_secs),
        poll_interval: Duration::from_millis(200),
        worker_exe,
        s3: S3Settings {
            endpoint: args.s3_endpoint.clone(),
            region: args.s3_region.clone(),
        },
    })
}

pub fn serve(args: &ServeArgs) -> Result<()> {
    let config = config(args)?;
    let auth = if config.credentials.is_some() {
        "SigV4 required"
    } else {
        "no auth (loopback only)"
    };
    let data_dir = config.data_dir.clone();
    let listen = config.listen;
    let api_only = config.api_only;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        // Bind first: a server that cannot listen must not start running jobs.
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let service = temper_server::open(config)?;
        eprintln!(
            "temper-server listening on http://{} ({auth}); data in {}",
            listener.local_addr()?,
            data_dir.display()
        );
        temper_server::serve(listener, service, shutdown_signal()).await?;
        if api_only {
            eprintln!("temper-server stopped; it ran no jobs, the database's jobs go on");
        } else {
            eprintln!(
                "temper-server stopped; running workers go on and are adopted at the next start"
            );
        }
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub fn logs(args: &LogsArgs) -> Result<()> {
    let client = args.server.client()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut offset = 0u64;
        let path = format!("/temper/jobs/{}/", args.name);
        let kind = args
            .kind
            .as_deref()
            .map(|k| format!("&kind={k}"))
            .unwrap_or_default();
        loop {
            let (chunk, headers) = client
                .get(&format!("{path}log"), &format!("offset={offset}{kind}"))
                .await?;
            use std::io::Write;
            std::io::stdout().write_all(&chunk)?;
            offset += chunk.len() as u64;
            let size: u64 = headers
                .get("x-temper-log-size")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(offset);
            if offset < size {
                continue;
            }
            let (body, _) = client
                .get(&format!("{path}progress"), kind.trim_start_matches('&'))
                .await?;
            let progress: serde_json::Value = serde_json::from_slice(&body)?;
            let status = progress["OptimizationJobStatus"].as_str().unwrap_or("?");
            let finished = matches!(status, "COMPLETED" | "FAILED" | "STOPPED");
            if !args.follow || finished {
                eprintln!("{}", describe_progress(&progress));
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// One line: status, phase, counts, ETA, failure reason.
fn describe_progress(p: &serde_json::Value) -> String {
    let mut line = format!(
        "{}: {}",
        p["OptimizationJobName"].as_str().unwrap_or("?"),
        p["OptimizationJobStatus"].as_str().unwrap_or("?")
    );
    let pr = &p["Progress"];
    if let Some(phase) = pr["phase"].as_str() {
        line.push_str(&format!(", phase {phase}"));
        let (done, total) = (
            pr["done"].as_u64().unwrap_or(0),
            pr["total"].as_u64().unwrap_or(0),
        );
        if total > 0 {
            line.push_str(&format!(
                " {done}/{total} {} ({:.0}%)",
                pr["unit"].as_str().unwrap_or(""),
                100.0 * done as f64 / total as f64
            ));
        }
        if let Some(eta) = pr["phase_eta_secs"].as_f64() {
            line.push_str(&format!(", about {eta:.0} s left in this phase"));
        }
        if let Some(t) = pr["elapsed_secs"].as_f64() {
            line.push_str(&format!(", {t:.0} s since the worker started"));
        }
    }
    if let Some(agent) = p["Agent"].as_str() {
        let host = p["Host"].as_str().unwrap_or("a host that has left");
        line.push_str(&format!(", run by worker agent {agent} on {host}"));
    }
    if let Some(reason) = p["FailureReason"].as_str() {
        line.push_str(&format!("\n  reason: {reason}"));
    }
    line
}

/// A `--worker-device` value, checked here so a typo is refused at start, not per job.
fn parse_device(v: &str) -> Result<String, String> {
    v.parse::<temper_cuda::DeviceRequest>()
        .map(|d| d.to_string())
        .map_err(|e| e.to_string())
}
