//! Trains an EAGLE-3 head for a model on chat data, writes it, and measures speculative against
//! plain greedy decoding on conversations training never saw.
//!
//! cargo run --release -p temper-eagle --example eagle_smollm2 -- MODEL DATA OUT [STEPS] [SAMPLES]

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Instant;
use temper_eagle::train::{train, Run, TrainOptions};
use temper_runtime::generate::{generate, GenerateOptions};
use temper_runtime::speculative::{generate_speculative, DraftHead, EagleDrafter, TreeShape};
use temper_runtime::{LoadOptions, Model};
use temper_text::chat::{ChatTemplate, Message};
use temper_text::data::{chat_samples, load_documents, ChatSampleOptions, Document};
use temper_text::sampling::SamplingParams;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model_dir = PathBuf::from(&args[1]);
    let data = PathBuf::from(&args[2]);
    let out = PathBuf::from(&args[3]);
    let steps: usize = args.get(4).map_or(Ok(200), |s| s.parse())?;
    let max_samples: usize = args.get(5).map_or(Ok(400), |s| s.parse())?;
    let max_len: usize = std::env::var("MAX_LEN")
        .ok()
        .map_or(Ok(512), |s| s.parse())?;
    let model = Model::load(&model_dir, &LoadOptions::default())?;
    let tokenizer = temper_text::tokenizer::load_tokenizer(&model_dir.join("tokenizer.json"))?;
    let template = ChatTemplate::from_model_dir(&model_dir)?.context("no chat template")?;
    let t = Instant::now();
    let samples = chat_samples(
        std::slice::from_ref(&data),
        Some(&template),
        &tokenizer,
        &ChatSampleOptions {
            max_len,
            max_samples: Some(max_samples),
        },
    )?;
    eprintln!(
        "{} samples, {} tokens ({} targets) in {:.1} s",
        samples.samples.len(),
        samples.tokens(),
        samples.masked_tokens(),
        t.elapsed().as_secs_f64()
    );
    let env = |k: &str| std::env::var(k).ok();
    // REGEN=1: the target answers each conversation's first turn itself (on-policy data).
    let samples = if env("REGEN").is_some_and(|v| v == "1") {
        let t = Instant::now();
        let (regenerated, record) = temper_eagle::regenerate::regenerate(
            &model,
            &tokenizer,
            &samples.samples,
            &[2],
            max_len,
            env("REGEN_TOKENS").map_or(192, |v| v.parse().unwrap()),
            0.0,
            0,
            &mut |_, _| {},
        )?;
        eprintln!(
            "regenerated {} answers ({} tokens) in {:.0} s",
            regenerated.len(),
            record.generated_tokens,
            t.elapsed().as_secs_f64()
        );
        temper_text::data::ChatSamples {
            samples: regenerated,
            ..samples
        }
    } else {
        samples
    };
    let defaults = TrainOptions::default();
    let opts = TrainOptions {
        steps,
        batch: env("BATCH").map_or(defaults.batch, |v| v.parse().unwrap()),
        learning_rate: env("LR").map_or(defaults.learning_rate, |v| v.parse().unwrap()),
        ttt_steps: env("TTT").map_or(defaults.ttt_steps, |v| v.parse().unwrap()),
        draft_vocab_size: env("VD").map_or(defaults.draft_vocab_size, |v| v.parse().unwrap()),
        eval_every: env("EVAL_EVERY").map_or(defaults.eval_every, |v| v.parse().unwrap()),
        warmup: (steps / 20).max(1),
        ..defaults
    };
    let work = out.join("work");
    let (head, vocab, report) = train(
        &model,
        &samples.samples,
        &opts,
        &Run {
            work_dir: &work,
            deadline: None,
            stop: &|| false,
        },
        &mut |p| {
            eprintln!(
                "step {}/{} loss {:.4} {:.0} tok/s eta {:.0}s{}",
                p.step,
                p.steps,
                p.loss,
                p.tokens_per_second,
                p.eta_seconds,
                p.evaluation
                    .as_ref()
                    .map(|e| format!(
                        " | held-out tau {:.3} per-depth {:?}",
                        e.acceptance_length, e.per_depth
                    ))
                    .unwrap_or_default()
            )
        },
    )?;
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    let cfg = temper_eagle::export::head_config(
        model.params(),
        &serde_json::from_str(&std::fs::read_to_string(model_dir.join("config.json"))?)?,
        &vocab,
    );
    let head_dir = out.join("speculative");
    temper_eagle::export::write_head(&head_dir, &cfg, &head, &vocab)?;

    // Prompts from conversations after the ones trained on.
    let docs = load_documents(&data)?;
    let prompts: Vec<Vec<u32>> = docs
        .documents
        .iter()
        .skip(max_samples * 2)
        .filter_map(|d| match d {
            Document::Chat(m) => m.iter().find(|m| m.role == "user").cloned(),
            _ => None,
        })
        .filter(|m| m.content.len() < 400)
        .take(env("PROMPTS").map_or(8, |v| v.parse().unwrap()))
        .map(|m| {
            let text = template
                .render(&[Message::new("user", m.content)], true)
                .unwrap();
            tokenizer
                .encode(text.as_str(), false)
                .unwrap()
                .get_ids()
                .to_vec()
        })
        .collect();
    let head = DraftHead::load(&head_dir, model.params())?;
    let gen = GenerateOptions {
        max_new_tokens: 96,
        sampling: SamplingParams::greedy(),
        stop_strings: vec![],
        eos_token_ids: vec![2],
    };
    for depth in [2usize, 3, 4] {
        let (mut plain_s, mut spec_s, mut tokens, mut rounds, mut same) = (0.0, 0.0, 0, 0, 0);
        for p in &prompts {
            let a = generate(&model, &tokenizer, p, &gen, &mut |_| {})?;
            let mut drafter = EagleDrafter::new(&model, &head, TreeShape::chain(depth), 1024)?;
            let b = generate_speculative(&model, &mut drafter, &tokenizer, p, &gen, &mut |_| {})?;
            plain_s += a.decode_seconds;
            spec_s += b.generation.decode_seconds;
            tokens += b.generation.generated_tokens;
            rounds += b.speculative.rounds;
            same += usize::from(a.token_ids == b.generation.token_ids);
        }
        eprintln!(
            "chain {depth}: tau {:.3}, speedup {:.3} (plain {:.2}s, speculative {:.2}s), identical {same}/{}",
            tokens as f64 / rounds.max(1) as f64,
            plain_s / spec_s,
            plain_s,
            spec_s,
            prompts.len()
        );
    }
    Ok(())
}
