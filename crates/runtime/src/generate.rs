//! Text generation: prefill the prompt, then decode one token at a time through the KV cache,
//! streaming text as it becomes final and timing both phases.

use crate::error::{Result, RuntimeError};
use crate::model::{Logits, Model};
use serde::Serialize;
use std::time::Instant;
use temper_text::sampling::{Sampler, SamplingParams};
use temper_text::stream::{StopStrings, TextStream};
use tokenizers::Tokenizer;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends before any of these strings; they are not part of the text.
    pub stop_strings: Vec<String>,
    /// Token ids that end generation (not part of the text).
    pub eos_token_ids: Vec<u32>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// A stop string appeared.
    Stop,
    /// `max_new_tokens` (or the context window) was reached.
    Length,
}

/// The generated text and every timing.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateReport {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Prompt forward pass plus choosing the first token.
    pub prefill_seconds: f64,
    pub prefill_tokens_per_second: f64,
    /// Forward passes after the first token, one token each.
    pub decode_steps: usize,
    pub decode_seconds: f64,
    pub decode_tokens_per_second: f64,
}

/// A model generation can drive: the whole model, or its tensor-parallel ranks together.
pub trait CausalLm {
    type Cache;
    fn params(&self) -> &crate::ModelParams;
    fn new_cache(&self, capacity: usize) -> Result<Self::Cache>;
    fn forward(
        &self,
        tokens: &[u32],
        cache: &mut Self::Cache,
        want: Logits,
    ) -> Result<candle_core::Tensor>;
}

impl CausalLm for Model {
    type Cache = crate::KvCache;
    fn params(&self) -> &crate::ModelParams {
        Model::params(self)
    }
    fn new_cache(&self, capacity: usize) -> Result<Self::Cache> {
        Model::new_cache(self, capacity)
    }
    fn forward(
        &self,
        tokens: &[u32],
        cache: &mut Self::Cache,
        want: Logits,
    ) -> Result<candle_core::Tensor> {
        Model::forward(self, tokens, cache, want)
    }
}

impl CausalLm for crate::tp::ShardedModel {
    type Cache = crate::tp::ShardedCache;
    fn params(&self) -> &crate::ModelParams {
        crate::tp::ShardedModel::params(self)
    }
    fn new_cache(&self, capacity: usize) -> Result<Self::Cache> {
        crate::tp::ShardedModel::new_cache(self, capacity)
    }
    fn forward(
        &self,
        tokens: &[u32],
        cache: &mut Self::Cache,
        want: Logits,
    ) -> Result<candle_core::Tensor> {
        crate::tp::ShardedModel::forward(self, tokens, cache, want)
    }
}

/// Generates from `prompt` (token ids), calling `on_text` with each piece of final text.
pub fn generate<M: CausalLm>(
    model: &M,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<GenerateReport> {
    let limit = model.params().max_positions;
    if prompt.is_empty() {
        return Err(RuntimeError::Input(
            "the prompt is empty (no tokens after tokenization)".into(),
        ));
    }
    if prompt.len() >= limit {
        return Err(RuntimeError::ContextOverflow {
            needed: prompt.len() + 1,
            limit,
            advice: format!(
                "the prompt alone is {} tokens and the model's context window ({}) is {limit}; \
                 shorten the prompt",
                prompt.len(),
                model.params().max_positions_field
            ),
        });
    }
    let max_new = opts.max_new_tokens.min(limit - prompt.len());
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    // A few prompt tokens as context, so the first word keeps its leading space.
    let mut stream =
        TextStream::new(tokenizer).with_context(&prompt[prompt.len().saturating_sub(4)..]);
    let mut stops = StopStrings::new(opts.stop_strings.clone());
    // A stop string that is a whole special token (`<|im_end|>`) never shows up in the text,
    // which leaves special tokens out; stop on its id instead.
    let stop_ids: Vec<u32> = opts
        .stop_strings
        .iter()
        .filter_map(|s| tokenizer.token_to_id(s))
        .collect();
    let mut cache = model.new_cache(prompt.len() + max_new.max(1))?;
    let mut text = String::new();
    let mut emit = |piece: &str, text: &mut String| {
        if !piece.is_empty() {
            on_text(piece);
            text.push_str(piece);
        }
    };

    let started = Instant::now();
    let logits = model.forward(prompt, &mut cache, Logits::Last)?;
    let mut next = sampler.sample(&logits.flatten_all()?.to_vec1::<f32>()?);
    let prefill_seconds = started.elapsed().as_secs_f64();

    let decode_started = Instant::now();
    let mut generated = 0;
    let mut decode_steps = 0;
    let finish = loop {
        if max_new == 0 {
            break FinishReason::Length;
        }
        if opts.eos_token_ids.contains(&next) {
            break FinishReason::Eos;
        }
        if stop_ids.contains(&next) {
            break FinishReason::Stop;
        }
        generated += 1;
        let delta = stream.push(next)?;
        let out = stops.push(&delta);
        emit(&out.text, &mut text);
        if out.stopped {
            break FinishReason::Stop;
        }
        if generated == max_new {
            break FinishReason::Length;
        }
        let logits = model.forward(&[next], &mut cache, Logits::Last)?;
        decode_steps += 1;
        next = sampler.sample(&logits.flatten_all()?.to_vec1::<f32>()?);
    };
    let decode_seconds = decode_started.elapsed().as_secs_f64();
    // Unless a stop string ended the text, print what the stream still holds.
    if !stops.stopped() {
        let tail = stream.finish()?;
        let out = stops.push(&tail);
        emit(&out.text, &mut text);
        if !out.stopped {
            emit(&stops.finish(), &mut text);
        }
    }
    Ok(GenerateReport {
        text,
        finish_reason: if stops.stopped() {
            FinishReason::Stop
        } else {
            finish
        },
        prompt_tokens: prompt.len(),
        generated_tokens: generated,
        prefill_seconds,
        prefill_tokens_per_second: prompt.len() as f64 / prefill_seconds,
        decode_steps,
        decode_seconds,
        decode_tokens_per_second: if decode_steps > 0 {
            decode_steps as f64 / decode_seconds
        } else {
            0.0
        },
    })
}
