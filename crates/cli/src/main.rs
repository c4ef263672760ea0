//! `optimize`: quantize a Hugging Face model for a SageMaker deployment instance type,
//! or import a GGUF file into a Hugging Face directory.

mod args;
mod bar;
mod import;
mod quantize;

use clap::Parser;
use std::io::IsTerminal;
use std::sync::Arc;
use temper_pipeline::progress::Cancel;

fn main() {
    let cli = args::Cli::parse();
    let cancel = Arc::new(Cancel::new());
    let handler_cancel = cancel.clone();
    // Ctrl-C sets a flag the pipeline checks between tensors; the staged output is then
    // removed and nothing partial is left. A second Ctrl-C exits at once (the staging
    // directory is hidden and named after the process, so it is easy to spot).
    let _ = ctrlc::set_handler(move || {
        if handler_cancel.is_cancelled() {
            std::process::exit(130);
        }
        eprintln!(
            "\ncancelling: finishing the current tensor, then removing the staged output ..."
        );
        handler_cancel.cancel();
    });
    let json = match &cli.command {
        Some(args::Command::ImportGguf(a)) => a.json,
        None => cli.job.json,
    };
    let show_bar = !json && std::io::stderr().is_terminal();
    let result = match &cli.command {
        Some(args::Command::ImportGguf(a)) => import::run(a, show_bar),
        None => quantize::run(&cli.job, show_bar, &cancel),
    };
    match result {
        Ok(summary) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&summary).expect("summary serialises")
                );
            }
        }
        Err(e) => {
            let message = format!("{e:#}");
            if json {
                println!(
                    "{}",
                    serde_json::json!({"status": "failed", "error": message})
                );
            } else {
                eprintln!("error: {message}");
            }
            let cancelled = cancel.is_cancelled();
            std::process::exit(if cancelled { 130 } else { 1 });
        }
    }
}
