//! `temper-worker`: runs one job of the job API in its own process. The server starts
//! it with the job's directory; it is not meant to be run by hand, but can be, on a
//! directory holding a `spec.json` (a planned job spec).

use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use temper_jobdir::files::WorkerResult;
use temper_pipeline::progress::Cancel;
use temper_worker::run::{self as worker, WorkerArgs};

#[derive(Parser)]
#[command(version, about = "Runs one temper job (started by temper-server)")]
struct Args {
    /// The job's directory: spec.json in; worker.log, progress.json, result.json out.
    #[arg(long)]
    job_dir: PathBuf,
    /// S3-compatible endpoint URL (default: AWS).
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long)]
    s3_region: Option<String>,
    /// A directory local paths may be under (repeatable), as the server allows.
    #[arg(long = "local-root")]
    local_roots: Vec<PathBuf>,
}

fn main() {
    let args = Args::parse();
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
            job_dir: args.job_dir,
            s3_endpoint: args.s3_endpoint,
            s3_region: args.s3_region,
            local_roots: args.local_roots,
        },
        cancel,
    );
    std::process::exit(match result {
        WorkerResult::Completed { .. } => 0,
        WorkerResult::Failed { .. } => 1,
        WorkerResult::Stopped => 143,
    });
}
