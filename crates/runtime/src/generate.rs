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
    /// The generated token ids (the ending end-of-sequence or stop token excluded).
    pub token_ids: Vec<u32>,
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
    /// One step of several sequences: `lens[i]` consecutive tokens of `tokens` continue
    /// `caches[i]`; the logits of each segment's last token, `[n, vocab]`.
    fn forward_segments(
        &self,
        tokens: &[u32],
        lens: &[usize],
        caches: &mut [&mut Self::Cache],
    ) -> Result<candle_core::Tensor>;
    /// Positions a cache holds.
    fn cache_len(cache: &Self::Cache) -> usize;
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
    fn forward_segments(
        &self,
        tokens: &[u32],
        lens: &[usize],
        caches: &mut [&mut Self::Cache],
    ) -> Result<candle_core::Tensor> {
        Model::forward_segments(self, tokens, lens, caches)
    }
    fn cache_len(cache: &Self::Cache) -> usize {
        cache.len()
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
    fn forward_segments(
        &self,
        tokens: &[u32],
        lens: &[usize],
        caches: &mut [&mut Self::Cache],
    ) -> Result<candle_core::Tensor> {
        crate::tp::ShardedModel::forward_segments(self, tokens, lens, caches)
    }
    fn cache_len(cache: &Self::Cache) -> usize {
        cache.len()
    }
}

/// Checks a prompt against the model's context window and returns how many tokens may be
/// generated after it.
pub fn new_token_budget(
    params: &crate::ModelParams,
    prompt: &[u32],
    opts: &GenerateOptions,
) -> Result<usize> {
    let limit = params.max_positions;
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
                params.max_positions_field
            ),
        });
    }
    Ok(opts.max_new_tokens.min(limit - prompt.len()))
}

/// Generated tokens on their way to text: end-of-sequence and stop checks, streaming of final
/// text, and the token budget. Shared by plain, speculative and batched (served) decoding so
/// that all end at exactly the same token.
pub struct Output<'a, 'f> {
    stream: TextStream<'a>,
    stops: StopStrings,
    stop_ids: Vec<u32>,
    eos_ids: Vec<u32>,
    max_new: usize,
    pub(crate) generated: usize,
    /// The token ids accepted so far.
    pub(crate) tokens: Vec<u32>,
    text: String,
    on_text: Box<dyn FnMut(&str) + 'f>,
}

impl<'a, 'f> Output<'a, 'f> {
    /// `max_new` from [`new_token_budget`]; `on_text` receives each piece of final text.
    pub fn new(
        tokenizer: &'a Tokenizer,
        prompt: &[u32],
        opts: &GenerateOptions,
        max_new: usize,
        on_text: impl FnMut(&str) + 'f,
    ) -> Self {
        // A stop string that is a whole special token (`<|im_end|>`) never shows up in the text,
        // which leaves special tokens out; stop on its id instead.
        let stop_ids = opts
            .stop_strings
            .iter()
            .filter_map(|s| tokenizer.token_to_id(s))
            .collect();
        Output {
            // A few prompt tokens as context, so the first word keeps its leading space.
            stream: TextStream::new(tokenizer)
                .with_context(&prompt[prompt.len().saturating_sub(4)..]),
            stops: StopStrings::new(opts.stop_strings.clone()),
            stop_ids,
            eos_ids: opts.eos_token_ids.clone(),
            max_new,
            generated: 0,
            tokens: Vec::new(),
            text: String::new(),
            on_text: Box::new(on_text),
        }
    }

    fn emit(&mut self, piece: &str) {
        if !piece.is_empty() {
            (self.on_text)(piece);
            self.text.push_str(piece);
        }
    }

    /// Takes the next token; `Some` when generation ends here (the ending token is not part
    /// of the output unless the budget ended it).
    pub fn push(&mut self, token: u32) -> Result<Option<FinishReason>> {
        if self.max_new == 0 {
            return Ok(Some(FinishReason::Length));
        }
        if self.eos_ids.contains(&token) {
            return Ok(Some(FinishReason::Eos));
        }
        if self.stop_ids.contains(&token) {
            return Ok(Some(FinishReason::Stop));
        }
        self.generated += 1;
        self.tokens.push(token);
        let delta = self.stream.push(token)?;
        let out = self.stops.push(&delta);
        self.emit(&out.text);
        if out.stopped {
            return Ok(Some(FinishReason::Stop));
        }
        if self.generated == self.max_new {
            return Ok(Some(FinishReason::Length));
        }
        Ok(None)
    }

    /// The report of a finished generation: `decode_steps` target passes after the prefill
    /// produced `decoded` tokens in `decode_seconds`.
    pub(crate) fn report(
        self,
        finish: FinishReason,
        prompt_tokens: usize,
        prefill_seconds: f64,
        decode_steps: usize,
        decoded: usize,
        decode_seconds: f64,
    ) -> Result<GenerateReport> {
        let generated = self.generated;
        let token_ids = self.tokens.clone();
        let (text, finish_reason) = self.finish(finish)?;
        Ok(GenerateReport {
            text,
            token_ids,
            finish_reason,
            prompt_tokens,
            generated_tokens: generated,
            prefill_seconds,
            prefill_tokens_per_second: prompt_tokens as f64 / prefill_seconds,
            decode_steps,
            decode_seconds,
            decode_tokens_per_second: if decoded > 0 {
                decoded as f64 / decode_seconds
            } else {
                0.0
            },
        })
    }

    /// Tokens accepted so far.
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// Flushes the text still held back and returns it all with the reason generation ended.
    pub fn finish(mut self, reason: FinishReason) -> Result<(String, FinishReason)> {
        // Unless a stop string ended the text, print what the stream still holds.
        if !self.stops.stopped() {
            let tail = self.stream.finish()?;
            let out = self.stops.push(&tail);
            self.emit(&out.text);
            if !out.stopped {
                let rest = self.stops.finish();
                self.emit(&rest);
            }
        }
        let reason = if self.stops.stopped() {
            FinishReason::Stop
        } else {
            reason
        };
        Ok((self.text, reason))
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
    let max_new = new_token_budget(model.params(), prompt, opts)?;
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    let mut output = Output::new(tokenizer, prompt, opts, max_new, on_text);
    let mut cache = model.new_cache(prompt.len() + max_new.max(1))?;

    let started = Instant::now();
    let logits = model.forward(prompt, &mut cache, Logits::Last)?;
    let mut next = sampler.sample(&logits.flatten_all()?.to_vec1::<f32>()?);
    let prefill_seconds = started.elapsed().as_secs_f64();

    let decode_started = Instant::now();
    let mut decode_steps = 0;
    let finish = loop {
        if let Some(reason) = output.push(next)? {
            break reason;
        }
        let logits = model.forward(&[next], &mut cache, Logits::Last)?;
        decode_steps += 1;
        next = sampler.sample(&logits.flatten_all()?.to_vec1::<f32>()?);
    };
    let decode_seconds = decode_started.elapsed().as_secs_f64();
    output.report(
        finish,
        prompt.len(),
        prefill_seconds,
        decode_steps,
        decode_steps,
        decode_seconds,
    )
}
