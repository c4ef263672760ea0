//! Choosing the next token from a model's logits: greedy, or temperature, top-k and
//! top-p (nucleus) sampling in the order Hugging Face transformers applies them.
//!
//! NaN rule: a NaN logit is treated as "no score" — it is never chosen while any
//! other logit is not NaN. If every logit is NaN the model output is broken and the
//! sampler returns token 0 (it cannot fail); callers that want to detect that should
//! check the logits. `-inf` is an ordinary (masked) score that sampling never draws;
//! `+inf` wins outright (the first `+inf` index).
//!
//! Exactness: tokens whose logit is more than 30 temperatures below the best (weight
//! under e^-30 of the best token's) get probability 0; together they weigh less than
//! the f32 rounding of the rest. Draws are reproducible for a given seed, logits and
//! version of this crate.
//!
//! Cost: no allocation per call once warm; a small top-k (<= 1024) is one scan with a
//! heap, otherwise one vectorized pass computes every weight. Nothing sorts the
//! vocabulary: top-p orders only the tokens that can be in the nucleus.

mod distribution;
mod exp;
mod select;
mod weights;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use crate::TextError;
pub use distribution::Distribution;
use exp::exp_nonpositive;
use select::{argmax, argmax_with_value, by_value_desc, nucleus, top_k_heap, Candidate};

/// How to pick tokens. `temperature == 0` is greedy (the other fields are ignored).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Logits are divided by this; 0 means greedy. Must be finite and >= 0.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (k >= 1).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p`,
    /// 0 < p <= 1.
    pub top_p: Option<f32>,
    /// The random generator's seed: the same seed and logits give the same tokens.
    pub seed: u64,
}

impl SamplingParams {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        }
    }

    /// Checks the ranges documented on the fields.
    pub fn validate(&self) -> Result<(), TextError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(TextError::Sampling {
                field: "temperature",
                value: self.temperature.to_string(),
                expected: "a finite number >= 0 (0 = greedy)",
            });
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(TextError::Sampling {
                    field: "top_p",
                    value: p.to_string(),
                    expected: "a number in (0, 1] (1 = no nucleus filtering)",
                });
            }
        }
        if self.top_k == Some(0) {
            return Err(TextError::Sampling {
                field: "top_k",
                value: "0".into(),
                expected: "an integer >= 1 (leave it unset for no top-k filtering)",
            });
        }
        Ok(())
    }
}

/// Up to this `top_k`, the k best are kept in a heap while scanning the logits (about
/// k·ln(n/k) insertions, each costing log k comparisons); above it, selection over all
/// weights is cheaper.
const HEAP_TOP_K: usize = 1024;

/// Logits more than this many temperatures below the best get weight 0: their weights
/// are below e^-30 of the best token's, and over a whole vocabulary add up to less than
/// the f32 rounding of the kept weights.
const NEGLIGIBLE: f32 = 30.0;

/// Picks tokens; keeps its working buffers between calls, so once it has seen the
/// vocabulary size it does not allocate.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Xoshiro256PlusPlus,
    /// Per-token weights when the whole vocabulary is in play.
    weights: Vec<f32>,
    block_sums: Vec<f64>,
    /// Tokens that need ordering (top-k, top-p), with their weights.
    candidates: Vec<Candidate>,
    heap: BinaryHeap<Reverse<Candidate>>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self, TextError> {
        params.validate()?;
        Ok(Sampler {
            rng: Xoshiro256PlusPlus::seed_from_u64(params.seed),
            params,
            weights: Vec::new(),
            block_sums: Vec::new(),
            candidates: Vec::new(),
            heap: BinaryHeap::new(),
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The next token id (an index into `logits`).
    ///
    /// Order of operations as in transformers: temperature, top-k, softmax, top-p, draw.
    ///
    /// # Panics
    /// If `logits` is empty or longer than `u32::MAX`: a model always scores its
    /// whole vocabulary, so that is a caller bug.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        assert!(!logits.is_empty(), "Sampler::sample: logits are empty");
        assert!(
            u32::try_from(logits.len()).is_ok(),
            "Sampler::sample: more than u32::MAX logits"
        );
        let temperature = self.params.temperature;
        let top_p = self.params.top_p.filter(|&p| p < 1.0).map(f64::from);
        // A top-k as large as the vocabulary filters nothing.
        let top_k = self.params.top_k.filter(|&k| k < logits.len());
        match top_k {
            _ if temperature == 0.0 => argmax(logits),
            Some(1) => argmax(logits),
            Some(k) if k <= HEAP_TOP_K => self.sample_top_k_heap(logits, k, top_p),
            top_k => self.sample_vocabulary(logits, top_k, top_p),
        }
    }

    /// Small top-k: the k best logits from one scan, then softmax over them.
    fn sample_top_k_heap(&mut self, logits: &[f32], k: usize, top_p: Option<f64>) -> u32 {
        let cands = &mut self.candidates;
        top_k_heap(logits, k, &mut self.heap);
        cands.clear();
        cands.extend(self.heap.drain().map(|Reverse(c)| c));
        cands.sort_unstable_by(by_value_desc);
        let Some(best) = cands.first() else {
            return 0; // all NaN
        };
        // All -inf, or a +inf: degenerate, the first best index as greedy.
        if !best.v.is_finite() {
            return best.id;
        }
        let (max, temperature) = (best.v, self.params.temperature);
        for c in cands.iter_mut() {
            c.v = exp_nonpositive((c.v - max) / temperature);
        }
        let (sorted, target) = (cands.len(), top_p.map(|p| p * candidate_sum(cands)));
        self.draw_candidates(sorted, target)
    }

    /// The whole vocabulary: weights for every token; candidates only for top-p or a
    /// large top-k.
    fn sample_vocabulary(
        &mut self,
        logits: &[f32],
        top_k: Option<usize>,
        top_p: Option<f64>,
    ) -> u32 {
        let (greedy, max) = argmax_with_value(logits);
        if !max.is_finite() {
            return greedy;
        }
        let temperature = self.params.temperature;
        let cutoff = max - NEGLIGIBLE * temperature;
        let total = weights::fill(
            logits,
            max,
            temperature,
            cutoff,
            &mut self.weights,
            &mut self.block_sums,
        );
        if top_k.is_none() && top_p.is_none() {
            let r = self.rng.random::<f64>() * total;
            return weights::draw(&self.weights, &self.block_sums, r) as u32;
        }
        let cands = &mut self.candidates;
        cands.clear();
        match top_k {
            Some(k) => {
                // Zero weights can never be drawn, so they need no ranking.
                cands.extend(candidates_above(&self.weights, 0.0));
                if k < cands.len() {
                    cands.select_nth_unstable_by(k - 1, by_value_desc);
                    cands.truncate(k);
                }
                cands.sort_unstable_by(by_value_desc);
                let (sorted, target) = (cands.len(), top_p.map(|p| p * candidate_sum(cands)));
                self.draw_candidates(sorted, target)
            }
            None => {
                // The smallest weight w* in the nucleus exceeds (1-p)·Z/(n+1): the tail
                // after it holds more than (1-p)·Z - w* in at most n tokens of weight
                // <= w*. Lighter tokens need no ordering (bound halved for rounding).
                let p = top_p.unwrap_or(1.0);
                let bound = 0.5 * (1.0 - p) * total / (logits.len() + 1) as f64;
                cands.extend(candidates_above(&self.weights, bound as f32));
                self.draw_candidates(0, Some(p * total))
            }
        }
    }

    /// Draws from `self.candidates` (weights in `v`; the first `sorted` in descending
    /// order), restricted to the nucleus reaching `nucleus_target` when given.
    fn draw_candidates(&mut self, sorted: usize, nucleus_target: Option<f64>) -> u32 {
        let cands = &mut self.candidates;
        let kept = match nucleus_target {
            Some(target) => nucleus(cands, sorted, target),
            None => cands.len(),
        };
        let kept = &cands[..kept];
        let mut r = self.rng.random::<f64>() * candidate_sum(kept);
        for c in kept {
            r -= f64::from(c.v);
            if r < 0.0 {
                return c.id;
            }
        }
        // Rounding left r at or just above zero: the last token with weight.
        kept.iter()
            .rev()
            .find(|c| c.v > 0.0)
            .or(kept.first())
            .map_or(0, |c| c.id)
    }
}

fn candidate_sum(cands: &[Candidate]) -> f64 {
    cands.iter().map(|c| f64::from(c.v)).sum()
}

/// Tokens whose weight exceeds `bound`, as candidates.
fn candidates_above(weights: &[f32], bound: f32) -> impl Iterator<Item = Candidate> + '_ {
    weights
        .iter()
        .enumerate()
        .filter(move |(_, &w)| w > bound)
        .map(|(id, &v)| Candidate { v, id: id as u32 })
}
