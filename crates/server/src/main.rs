//! `temper-server`: serves SageMaker's optimization-job API (boto3 and the AWS CLI
//! work against it with `endpoint_url`), `temper-server logs NAME` follows a job, and
//! `temper-server agents` lists the worker agents of a shared database.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    let result = match args.command {
        Some(cli::Command::Logs(logs)) => cli::logs(&logs),
        Some(cli::Command::Agents(agents)) => cli::agents(&agents),
        None => cli::serve(&args.serve),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
