//! `optimize generate`: stream text from a model on the CPU and report prefill and decode speed.

use crate::args::GenerateArgs;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::io::Write;
use temper_runtime::generate::{generate, GenerateOptions};
use temper_runtime::speculative::{generate_speculative, DraftHead, EagleDrafter, TreeShape};
use temper_runtime::tp::ShardedModel;
use temper_runtime::{LoadOptions, Model};

enum Loaded {
    Whole(Model),
    Sharded(ShardedModel),
}
use temper_text::chat::{ChatTemplate, Message};
use temper_text::sampling::SamplingParams;

pub fn run(args: &GenerateArgs) -> Result<Value> {
    // Loading first gives a missing or broken model directory its own error.
    let load_started = std::time::Instant::now();
    let opts = LoadOptions {
        weight_only: args.weight_only,
        ..Default::default()
    };
    // A pre-sharded artifact runs with one thread per tensor-parallel rank.
    let loaded = if temper_runtime::tp::is_sharded(&args.model) {
        Loaded::Sharded(ShardedModel::load(&args.model, &opts)?)
    } else {
        Loaded::Whole(Model::load(&args.model, &opts)?)
    };
    let load_seconds = load_started.elapsed().as_secs_f64();
    let tokenizer = temper_text::tokenizer::load_tokenizer(&args.model.join("tokenizer.json"))?;
    let prompt_text = if args.chat {
        let template = ChatTemplate::from_model_dir(&args.model)?.with_context(|| {
            format!(
                "--chat: {} has no chat_template in tokenizer_config.json; leave out --chat to use \
                 the prompt as plain text",
                args.model.display()
            )
        })?;
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(Message::new("system", system));
        }
        messages.push(Message::new("user", &args.prompt));
        template.render(&messages, true)?
    } else {
        args.prompt.clone()
    };
    // A rendered chat prompt already holds its special tokens as text.
    let encoding = tokenizer
        .encode(prompt_text.as_str(), !args.chat)
        .map_err(|e| anyhow::anyhow!("tokenizing the prompt: {e}"))?;
    let prompt = encoding.get_ids().to_vec();
    let defaults =
        temper_text::config::GenerationDefaults::from_model_dir(&args.model, &tokenizer)?;

    let opts = GenerateOptions {
        max_new_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
        stop_strings: args.stop.clone(),
        eos_token_ids: if args.ignore_eos {
            vec![]
        } else {
            defaults.eos_token_ids.clone()
        },
    };
    let mut stdout = std::io::stdout();
    let mut print = |piece: &str| {
        if !args.json {
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        }
    };
    if args.speculative {
        let Loaded::Whole(m) = &loaded else {
            anyhow::bail!(
                "--speculative runs unsharded models: {} is a tensor-parallel artifact (its head \
                 was measured on the checkpoint before sharding)",
                args.model.display()
            );
        };
        return speculative(
            args,
            m,
            &tokenizer,
            &prompt,
            &opts,
            load_seconds,
            &mut print,
        );
    }
    let (report, format, weight_bytes) = match &loaded {
        Loaded::Whole(m) => (
            generate(m, &tokenizer, &prompt, &opts, &mut print)?,
            m.format().to_string(),
            Some(m.weight_bytes_per_token()),
        ),
        Loaded::Sharded(m) => (
            generate(m, &tokenizer, &prompt, &opts, &mut print)?,
            format!("tensor-parallel, {} ranks", m.degree()),
            None,
        ),
    };
    if !args.json {
        println!();
        eprintln!(
            "[{}] prefill {} tokens in {:.3} s ({:.1} tokens/s); decode {} tokens in {:.3} s ({:.1} tokens/s); stopped: {:?}",
            format,
            report.prompt_tokens,
            report.prefill_seconds,
            report.prefill_tokens_per_second,
            report.decode_steps,
            report.decode_seconds,
            report.decode_tokens_per_second,
            report.finish_reason,
        );
    }
    Ok(json!({
        "status": "completed",
        "model": args.model.display().to_string(),
        "format": format,
        "weight_bytes_per_token": weight_bytes,
        "isa": temper_kernels::Isa::detect().name(),
        "threads": rayon::current_num_threads(),
        "load_seconds": load_seconds,
        "report": report,
    }))
}

/// `--speculative`: the model with the EAGLE-3 head in its `speculative/` directory.
fn speculative(
    args: &GenerateArgs,
    model: &Model,
    tokenizer: &tokenizers::Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    load_seconds: f64,
    print: &mut dyn FnMut(&str),
) -> Result<Value> {
    let dir = args.model.join("speculative");
    if !dir.join("config.json").is_file() {
        anyhow::bail!(
            "--speculative: {} has no draft head; write one with `optimize --speculative` (an \
             EAGLE-3 head in speculative/)",
            args.model.display()
        );
    }
    let head = DraftHead::load(&dir, model.params())?;
    // The chain length the job measured as fastest on its host, unless asked otherwise.
    let measured = std::fs::read_to_string(args.model.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|m| m["speculative_decoding"]["serving"]["num_speculative_tokens"].as_u64())
        .map(|d| d as usize);
    let depth = args.draft_depth.or(measured).unwrap_or(3);
    let k = args.draft_top_k;
    let shape = TreeShape {
        depth,
        top_k: k,
        nodes: args.draft_nodes.unwrap_or(if k == 1 {
            depth + 1
        } else {
            1 + k + (depth - 1) * k
        }),
    };
    let capacity = prompt.len() + opts.max_new_tokens + shape.nodes;
    let capacity = capacity.min(model.params().max_positions);
    let mut drafter = EagleDrafter::new(model, &head, shape, capacity)?;
    let report = generate_speculative(model, &mut drafter, tokenizer, prompt, opts, print)?;
    let g = &report.generation;
    if !args.json {
        println!();
        eprintln!(
            "[{}, EAGLE-3 head, {:?}] prefill {} tokens in {:.3} s; decode {} tokens in {:.3} s ({:.1} tokens/s); acceptance length {:.2} over {} rounds (draft {:.3} s, verify {:.3} s); stopped: {:?}",
            model.format(),
            shape,
            g.prompt_tokens,
            g.prefill_seconds,
            g.generated_tokens.saturating_sub(1),
            g.decode_seconds,
            g.decode_tokens_per_second,
            report.speculative.acceptance_length,
            report.speculative.rounds,
            report.speculative.draft_seconds,
            report.speculative.verify_seconds,
            g.finish_reason,
        );
    }
    Ok(json!({
        "status": "completed",
        "model": args.model.display().to_string(),
        "format": model.format(),
        "isa": temper_kernels::Isa::detect().name(),
        "threads": rayon::current_num_threads(),
        "load_seconds": load_seconds,
        "acceptance_length": report.speculative.acceptance_length,
        "report": report,
    }))
}
