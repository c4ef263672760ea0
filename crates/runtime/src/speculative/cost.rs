//! Sizing the draft tree from measured costs (EAGLE.md section 6): a round costs one target
//! pass over the tree's N nodes, T(N), plus the head's steps, and commits on average
//! `1 + sum_j prod_{d<j} alpha_d` tokens for a chain with per-depth acceptance `alpha`. On a
//! CPU T(N) grows with N much sooner than on a GPU, so the best shape is measured, not assumed.

use super::decode::TreeShape;
use super::head::DraftHead;
use crate::error::Result;
use crate::model::{Logits, Model, NewTokens};
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use std::time::Instant;

/// Measured costs on this machine.
#[derive(Debug, Clone, Serialize)]
pub struct CostProfile {
    /// Committed context the passes ran after.
    pub context: usize,
    /// `(N, median milliseconds)` of a target pass over N new tokens.
    pub target_ms: Vec<(usize, f64)>,
    /// Median milliseconds of one head step on one row.
    pub draft_step_ms: f64,
}

impl CostProfile {
    /// Times target passes of 1..=max_nodes tokens after `context` tokens, and head steps.
    pub fn measure(
        model: &Model,
        head: &DraftHead,
        context: usize,
        max_nodes: usize,
        repeats: usize,
    ) -> Result<Self> {
        let tokens: Vec<u32> = (0..context + max_nodes)
            .map(|i| (i * 7919 % model.params().vocab_size) as u32)
            .collect();
        let mut cache = model.new_cache(context + max_nodes)?;
        model.forward(&tokens[..context], &mut cache, Logits::Last)?;
        let mut target_ms = Vec::new();
        for n in 1..=max_nodes {
            let mut times = Vec::with_capacity(repeats);
            for _ in 0..repeats {
                cache.truncate(context);
                let t = Instant::now();
                model.forward(&tokens[context..context + n], &mut cache, Logits::All)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            target_ms.push((n, median(&mut times)));
        }
        let mut draft_cache = head.new_cache(context + 1)?;
        let h = Tensor::zeros(
            (context, model.params().hidden_size),
            DType::F32,
            &Device::Cpu,
        )?;
        head.step(
            model.head(),
            &h,
            &tokens[..context],
            &mut draft_cache,
            NewTokens::Causal,
        )?;
        let one = h.narrow(0, 0, 1)?;
        let mut times = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            draft_cache.truncate(context);
            let t = Instant::now();
            let out = head.step(
                model.head(),
                &one,
                &tokens[..1],
                &mut draft_cache,
                NewTokens::Causal,
            )?;
            head.logits(&out)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(CostProfile {
            context,
            target_ms,
            draft_step_ms: median(&mut times),
        })
    }

    /// Median milliseconds of a target pass over `n` tokens (the largest measured beyond).
    pub fn target(&self, n: usize) -> f64 {
        self.target_ms
            .iter()
            .find(|(m, _)| *m == n)
            .or(self.target_ms.last())
            .map_or(0.0, |(_, t)| *t)
    }
}

/// Expected tokens per round of a chain of `k` drafts with per-depth acceptance `rates`
/// (depths beyond the list accept at its last rate).
pub fn expected_tokens(k: usize, rates: &[f64]) -> f64 {
    let mut reach = 1.0;
    let mut total = 1.0;
    for j in 0..k {
        let a = rates.get(j).or(rates.last()).copied().unwrap_or(0.0);
        reach *= a;
        total += reach;
    }
    total
}

/// The chain length with the best expected speed over plain decoding, and that speed-up.
/// Returns a chain of 1 with its estimate when nothing beats it.
pub fn choose_shape(profile: &CostProfile, rates: &[f64], max_depth: usize) -> (TreeShape, f64) {
    let plain = profile.target(1);
    (1..=max_depth
        .min(profile.target_ms.len().saturating_sub(1))
        .max(1))
        .map(|k| {
            let round = profile.target(k + 1) + k as f64 * profile.draft_step_ms;
            (
                TreeShape::chain(k),
                expected_tokens(k, rates) * plain / round,
            )
        })
        .fold((TreeShape::chain(1), 0.0), |best, c| {
            if c.1 > best.1 {
                c
            } else {
                best
            }
        })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_tokens_follow_the_acceptance_product() {
        assert_eq!(expected_tokens(0, &[0.5]), 1.0);
        assert!((expected_tokens(3, &[0.8, 0.5, 0.5]) - (1.0 + 0.8 + 0.4 + 0.2)).abs() < 1e-12);
        assert!((expected_tokens(2, &[1.0]) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_flat_target_cost_favours_long_chains_and_a_linear_one_none() {
        let flat = CostProfile {
            context: 100,
            target_ms: (1..=8).map(|n| (n, 10.0)).collect(),
            draft_step_ms: 0.1,
        };
        let (shape, speed) = choose_shape(&flat, &[0.9], 6);
        assert_eq!(shape.depth, 6);
        assert!(speed > 3.0);
        let linear = CostProfile {
            context: 100,
            target_ms: (1..=8).map(|n| (n, 10.0 * n as f64)).collect(),
            draft_step_ms: 1.0,
        };
        let (_, speed) = choose_shape(&linear, &[0.9], 6);
        assert!(speed < 1.0, "speculation cannot win when T(N) = N T(1)");
    }
}
