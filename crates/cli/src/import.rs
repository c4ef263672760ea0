//! `optimize import-gguf`: a GGUF file into a Hugging Face model directory.

use crate::args::{ImportArgs, ImportDtype};
use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

pub fn run(args: &ImportArgs, show_bar: bool) -> Result<Value> {
    let options = temper_gguf::ImportOptions {
        dtype: match args.dtype {
            ImportDtype::Bf16 => temper_gguf::OutputDtype::Bf16,
            ImportDtype::F32 => temper_gguf::OutputDtype::F32,
        },
        overwrite: args.overwrite,
        ..Default::default()
    };
    let target = if show_bar {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(None, target);
    bar.set_style(
        ProgressStyle::with_template("importing [{bar:30}] {pos}/{len} tensors {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut progress = |done: usize, total: usize, bytes: u64| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(format!(
            "{:.1} MiB written",
            bytes as f64 / (1u64 << 20) as f64
        ));
    };
    let report = temper_gguf::import_gguf(&args.gguf, &args.output, &options, &mut progress);
    bar.finish_and_clear();
    let report = report?;
    let value = serde_json::to_value(&report)?;
    if !args.json {
        println!("wrote {}", args.output.display());
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    Ok(value)
}
