//! `temper-worker`: runs one job of the job API in its own process. The server starts
//! it with the job's directory; it is not meant to be run by hand, but can be, on a
//! directory holding a `spec.json` (a planned job spec).
//!
//! `temper-worker --join postgres://... --slots N` is a worker agent instead: it claims
//! queued jobs from the shared job database and runs each as `temper-worker --job-dir`
//! (see temper-agent).

use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use temper_jobdir::files::WorkerResult;
use temper_pipeline::progress::Cancel;
use temper_worker::run::{self as worker, WorkerArgs};

#[derive(Parser)]
#[command(
    version,
    about = "Runs one temper job (started by temper-server), or, with --join, a worker agent \
             that runs the queued jobs of a shared PostgreSQL job database"
)]
struct Args {
    /// The job's directory: spec.json in; worker.log, progress.json, result.json out.
    #[arg(long, required_unless_present = "join", conflicts_with = "join")]
    job_dir: Option<PathBuf>,
    /// Run as a worker agent of this job database (postgres://user:password@host:port/db,
    /// as the servers' --store).
    #[arg(long, value_name = "URL", env = "TEMPER_STORE")]
    join: Option<String>,
    #[command(flatten)]
    agent: AgentArgs,
    /// S3-compatible endpoint URL (default: AWS).
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long)]
    s3_region: Option<String>,
    /// A directory local paths may be under (repeatable), as the server allows.
    #[arg(long = "local-root")]
    local_roots: Vec<PathBuf>,
    /// Where jobs run: auto (the first CUDA GPU when this build has CUDA and the host one,
    /// else the CPU), cpu, cpu:avx2, cuda or cuda:N. An agent passes it to its workers.
    #[arg(long, default_value = "auto")]
    device: temper_cuda::DeviceRequest,
}

/// A worker agent's settings (with --join).
#[derive(clap::Args)]
struct AgentArgs {
    /// Jobs the agent runs at once.
    #[arg(long, default_value_t = 1, requires = "join")]
    slots: u32,
    /// The instance types whose jobs it takes (comma-separated or repeated; ml.g5.* for a
    /// family). Default: those its GPUs make up (nvidia-smi); on a host without GPUs, any.
    #[arg(long = "instance-types", value_name = "TYPES", requires = "join")]
    instance_types: Vec<String>,
    /// Its name among the database's agents (default: HOST-PID).
    #[arg(long, requires = "join")]
    name: Option<String>,
    /// Where its jobs' directories are made.
    #[arg(long, default_value = "./temper-agent", requires = "join")]
    data_dir: PathBuf,
    /// Seconds a job's lease lasts without renewal: how soon a lost host's jobs are
    /// failed (or queued again).
    #[arg(long, default_value_t = 15.0, requires = "join")]
    lease_secs: f64,
    /// Milliseconds between polls of the database (Stop takes effect within one).
    #[arg(long, default_value_t = 1000, requires = "join")]
    poll_ms: u64,
    /// Seconds between SIGTERM and SIGKILL when a job is stopped or runs out of time.
    #[arg(long, default_value_t = 30, requires = "join")]
    stop_grace_secs: u64,
}

fn main() {
    let args = Args::parse();
    if let Some(database) = &args.join {
        std::process::exit(match run_agent(database, &args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("temper-worker: {e:#}");
                2
            }
        });
    }
    let job_dir = args
        .job_dir
        .expect("clap requires --job-dir without --join");
    let cancel = Arc::new(Cancel::new());
    let flag = cancel.clone();
    // SIGTERM (stop, MaxRuntimeInSeconds) and SIGINT: finish the current tensor, remove
    // the staged output, report `stopped`. The server sends SIGKILL after its grace
    // period if that takes too long.
    if let Err(e) = ctrlc::set_handler(move || flag.cancel()) {
        eprintln!("warning: cannot handle SIGTERM ({e}); a stop will kill the worker");
    }
    let result = worker::run(
        &WorkerArgs {
            job_dir,
            s3_endpoint: args.s3_endpoint,
            s3_region: args.s3_region,
            local_roots: args.local_roots,
            device: args.device,
        },
        cancel,
    );
    std::process::exit(match result {
        WorkerResult::Completed { .. } => 0,
        WorkerResult::Failed { .. } => 1,
        WorkerResult::Stopped => 143,
    });
}

/// Joins the job database as a worker agent and runs its jobs until SIGTERM/SIGINT
/// (drain), or a second one (end the workers now).
fn run_agent(database: &str, args: &Args) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use temper_agent::agent::{Agent, AgentConfig};
    use temper_agent::capacity;
    let a = &args.agent;
    if a.slots == 0 {
        anyhow::bail!("--slots must be at least 1");
    }
    if !(a.lease_secs.is_finite() && a.lease_secs * 1000.0 >= 3.0 * a.poll_ms as f64) {
        anyhow::bail!(
            "--lease-secs {} must be at least three polls (--poll-ms {}): the agent renews \
             every poll and ends its workers one poll before a lease it cannot renew runs out",
            a.lease_secs,
            a.poll_ms
        );
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let instance_types = if !a.instance_types.is_empty() {
        capacity::from_args(&a.instance_types)?
    } else {
        match capacity::detect_gpus() {
            Some((gpu, count)) => capacity::from_gpus(&gpu, count).with_context(|| {
                format!(
                    "nvidia-smi lists {count} x {gpu}, which the catalog does not know; give \
                     the instance types this host stands for with --instance-types"
                )
            })?,
            None => {
                eprintln!(
                    "temper-worker: no GPU found (nvidia-smi): this agent takes jobs for any \
                     instance type and runs them on its CPUs; give --instance-types to limit it"
                );
                Vec::new()
            }
        }
    };
    let exe = std::env::current_exe().context("finding this program to start workers with")?;
    let config = AgentConfig {
        database: database.to_string(),
        info: temper_store::leases::AgentInfo {
            name: a
                .name
                .clone()
                .unwrap_or_else(|| format!("{host}-{}", std::process::id())),
            host,
            slots: a.slots,
            instance_types,
            lease_secs: a.lease_secs,
        },
        data_dir: a.data_dir.clone(),
        poll: std::time::Duration::from_millis(a.poll_ms),
        grace: std::time::Duration::from_secs(a.stop_grace_secs),
        command: temper_agent::launch::WorkerCommand {
            exe,
            s3_endpoint: args.s3_endpoint.clone(),
            s3_region: args.s3_region.clone(),
            local_roots: args.local_roots.clone(),
            die_with_parent: true,
            device: Some(args.device.to_string()),
        },
    };
    let signals = Arc::new(AtomicUsize::new(0));
    let seen = signals.clone();
    ctrlc::set_handler(move || {
        seen.fetch_add(1, Ordering::SeqCst);
    })
    .context("handling SIGTERM and SIGINT")?;
    Agent::join(config)?.run(&signals);
    Ok(())
}
