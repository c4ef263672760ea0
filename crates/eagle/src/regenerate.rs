//! On-policy training data (EAGLE.md section 1): the target answers each conversation's first
//! user turn itself, so the head learns the contexts it will meet when serving (the target's
//! own words), not text another model wrote.

use crate::error::Result;
use serde::Serialize;
use std::time::Instant;
use temper_runtime::generate::{generate, FinishReason, GenerateOptions};
use temper_runtime::Model;
use temper_text::data::ChatSample;
use temper_text::sampling::SamplingParams;
use tokenizers::Tokenizer;

/// What regeneration did.
#[derive(Debug, Clone, Serialize)]
pub struct Regeneration {
    pub conversations: usize,
    pub generated_tokens: usize,
    /// Answers cut by the length limit rather than ended by the model.
    pub cut_at_length: usize,
    pub temperature: f32,
    pub seconds: f64,
}

/// Replaces each sample by its prompt (everything before the first training target: system
/// and first user turn with the assistant header) followed by the target's own answer and
/// end-of-sequence token (at most `max_answer` tokens, and `max_len` in all), all answer
/// tokens as targets. Samples whose prompt leaves no room under `max_len` are dropped.
#[allow(clippy::too_many_arguments)]
pub fn regenerate(
    model: &Model,
    tokenizer: &Tokenizer,
    samples: &[ChatSample],
    eos: &[u32],
    max_len: usize,
    max_answer: usize,
    temperature: f32,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<ChatSample>, Regeneration)> {
    let started = Instant::now();
    let mut out = Vec::with_capacity(samples.len());
    let (mut generated, mut cut) = (0, 0);
    for (i, s) in samples.iter().enumerate() {
        progress(i, samples.len());
        let Some(first) = s.loss_mask.iter().position(|&m| m) else {
            continue;
        };
        let prompt = &s.tokens[..first];
        // Room for the answer and its end-of-sequence token.
        if prompt.len() + 2 > max_len {
            continue;
        }
        let opts = GenerateOptions {
            max_new_tokens: (max_len - prompt.len() - 1).min(max_answer),
            sampling: SamplingParams {
                temperature,
                top_k: None,
                top_p: None,
                seed: seed.wrapping_add(i as u64),
            },
            stop_strings: Vec::new(),
            eos_token_ids: eos.to_vec(),
        };
        let report = generate(model, tokenizer, prompt, &opts, &mut |_| {})?;
        if report.token_ids.is_empty() {
            continue;
        }
        generated += report.token_ids.len();
        let mut tokens = prompt.to_vec();
        tokens.extend(&report.token_ids);
        if report.finish_reason == FinishReason::Eos {
            if let Some(&e) = eos.first() {
                tokens.push(e);
            }
        } else {
            cut += 1;
        }
        let mut loss_mask = vec![false; prompt.len()];
        loss_mask.resize(tokens.len(), true);
        if let Some(last) = loss_mask.last_mut() {
            *last = false;
        }
        out.push(ChatSample {
            tokens,
            loss_mask,
            origin: format!("{} (regenerated)", s.origin),
        });
    }
    progress(samples.len(), samples.len());
    Ok((
        out,
        Regeneration {
            conversations: samples.len(),
            generated_tokens: generated,
            cut_at_length: cut,
            temperature,
            seconds: started.elapsed().as_secs_f64(),
        },
    ))
}
