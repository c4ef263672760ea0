//! `optimize eval`: perplexity of a model and, against a reference, mean KL divergence and
//! top-1 agreement, on the same windows of a text file.

use crate::args::EvalArgs;
use anyhow::Result;
use serde_json::{json, Value};
use temper_runtime::eval::{compare, perplexity, Side};
use temper_runtime::{LayerSource, LoadOptions};

pub fn run(args: &EvalArgs, show_progress: bool) -> Result<Value> {
    // Opening the checkpoints first gives a missing or broken model directory its own error.
    let opts = LoadOptions {
        weight_only: args.weight_only,
        ..Default::default()
    };
    let format = describe(&args.model, &opts)?;
    let reference_opts = LoadOptions::default();
    let reference_format = match &args.reference {
        Some(dir) => Some(describe(dir, &reference_opts)?),
        None => None,
    };
    let tokenizer = temper_text::tokenizer::load_tokenizer(&args.model.join("tokenizer.json"))?;
    let docs = temper_text::data::load_documents(&args.data)?;
    let template = temper_text::chat::ChatTemplate::from_model_dir(&args.model)?;
    let windows = temper_text::data::token_windows(
        &tokenizer,
        &docs.documents,
        template.as_ref(),
        &temper_text::data::WindowOptions {
            window_len: args.window,
            max_windows: args.max_windows,
        },
    )?;
    let model = Side {
        dir: &args.model,
        opts: &opts,
    };
    let progress = |done: usize, total: usize| {
        if show_progress {
            eprint!("\revaluating: step {done}/{total}");
            if done == total {
                eprintln!();
            }
        }
        true
    };
    let data = json!({
        "path": args.data.display().to_string(),
        "records": docs.len(),
        "skipped_records": docs.skipped_count(),
        "windows": windows.len(),
        "window_len": args.window,
    });
    match &args.reference {
        Some(reference_dir) => {
            let reference = Side {
                dir: reference_dir,
                opts: &reference_opts,
            };
            let c = compare(reference, model, &windows, progress)?;
            if !args.json {
                println!(
                    "perplexity: reference {:.4}, model {:.4} ({:+.2}%)\nmean KL(reference || model): {:.5} nats\ntop-1 agreement: {:.2}%\n{} windows x {} tokens in {:.1} s",
                    c.reference.perplexity,
                    c.candidate.perplexity,
                    c.perplexity_change * 100.0,
                    c.mean_kl,
                    c.top1_agreement * 100.0,
                    c.windows,
                    c.window_len,
                    c.seconds
                );
            }
            Ok(json!({
                "status": "completed",
                "model": args.model.display().to_string(),
                "model_format": format,
                "reference": reference_dir.display().to_string(),
                "reference_format": reference_format,
                "data": data,
                "comparison": c,
            }))
        }
        None => {
            let p = perplexity(model, &windows, progress)?;
            if !args.json {
                println!(
                    "perplexity: {:.4} over {} predicted tokens",
                    p.perplexity, p.tokens
                );
            }
            Ok(json!({
                "status": "completed",
                "model": args.model.display().to_string(),
                "model_format": format,
                "data": data,
                "perplexity": p,
            }))
        }
    }
}

/// The weight format of a model directory; pre-sharded artifacts are checked against their
/// manifest here (a missing or foreign rank file is reported before any work).
fn describe(dir: &std::path::Path, opts: &LoadOptions) -> Result<String> {
    if temper_runtime::tp::is_sharded(dir) {
        let files = temper_runtime::tp::check_rank_files(dir)?;
        return Ok(format!(
            "tensor-parallel, {} ranks (vLLM sharded_state)",
            files.degree
        ));
    }
    Ok(LayerSource::open(dir, opts)?.format()?)
}
