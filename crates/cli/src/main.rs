//! `optimize`: quantize a Hugging Face model for a SageMaker deployment instance type,
//! import a GGUF file into a Hugging Face directory, and generate text or evaluate quality with
//! the CPU runtime.

mod args;
mod bar;
mod eval;
mod generate;
mod hub;
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
    let cancellable = cli.command.is_none();
    // Ctrl-C sets a flag the quantize pipeline checks between tensors; the staged output
    // is then removed and nothing partial is left. A second Ctrl-C (or any Ctrl-C during
    // an import, which has no cancellation point) exits at once; the hidden staging
    // directory it leaves is removed by the next run writing the same output.
    let _ = ctrlc::set_handler(move || {
        if !cancellable || handler_cancel.is_cancelled() {
            std::process::exit(130);
        }
        eprintln!(
            "\ncancelling: finishing the current tensor, then removing the staged output ..."
        );
        handler_cancel.cancel();
    });
    let json = match &cli.command {
        Some(args::Command::ImportGguf(a)) => a.json,
        Some(args::Command::Generate(a)) => a.json,
        Some(args::Command::Eval(a)) => a.json,
        None => cli.job.json,
    };
    let show_bar = !json && std::io::stderr().is_terminal();
    let result = match &cli.command {
        Some(args::Command::ImportGguf(a)) => import::run(a, show_bar),
        Some(args::Command::Generate(a)) => generate::run(a),
        Some(args::Command::Eval(a)) => eval::run(a, show_bar),
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
