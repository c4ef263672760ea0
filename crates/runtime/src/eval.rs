//! Quality of a model, and of an optimized model against its reference: perplexity, mean KL
//! divergence of the candidate's next-token distribution from the reference's, and top-1
//! agreement, over the same token windows (the standard non-overlapping-window protocol: every
//! position but the last of a window predicts the next token, so every token but the first is predicted).

use crate::error::{Result, RuntimeError};
use crate::layerwise::run_layers;
use crate::model::{LayerSource, LoadOptions};
use candle_core::Tensor;
use rayon::prelude::*;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// Perplexity of one model.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Perplexity {
    /// Predicted tokens (window length - 1 per window).
    pub tokens: usize,
    /// Mean negative log-likelihood per predicted token, in nats.
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub perplexity: f64,
}

/// The reference and the candidate on the same windows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Comparison {
    pub windows: usize,
    pub window_len: usize,
    pub reference: Perplexity,
    pub candidate: Perplexity,
    /// `candidate / reference - 1` (0.005 is +0.5%).
    pub perplexity_change: f64,
    /// Mean over predicted positions of KL(reference || candidate), in nats.
    pub mean_kl: f64,
    /// Fraction of positions where both models' most likely next token is the same.
    pub top1_agreement: f64,
    pub seconds: f64,
}

/// Per-position sums, combined in f64.
#[derive(Default, Clone, Copy)]
struct Sums {
    positions: usize,
    ref_nll: f64,
    cand_nll: f64,
    kl: f64,
    agree: usize,
}

impl Sums {
    fn add(self, b: Sums) -> Sums {
        Sums {
            positions: self.positions + b.positions,
            ref_nll: self.ref_nll + b.ref_nll,
            cand_nll: self.cand_nll + b.cand_nll,
            kl: self.kl + b.kl,
            agree: self.agree + b.agree,
        }
    }
}

/// A model to evaluate: its directory and how to load it.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    pub dir: &'a Path,
    pub opts: &'a LoadOptions,
}

/// Runs both models over `windows` (layer by layer, so memory stays near one layer of each plus
/// the windows' hidden states) and compares their next-token distributions.
/// `progress(done, total)` counts layers of both models, then windows; it returns `false`
/// to stop ([`RuntimeError::Stopped`]).
pub fn compare(
    reference: Side,
    candidate: Side,
    windows: &[Vec<u32>],
    mut progress: impl FnMut(usize, usize) -> bool,
) -> Result<Comparison> {
    let window_len = check_windows(windows)?;
    let start = Instant::now();
    let r = Runner::open(reference)?;
    let c = Runner::open(candidate)?;
    let vocab = r.vocab();
    if c.vocab() != vocab {
        return Err(RuntimeError::Input(format!(
            "the reference has {vocab} tokens in its vocabulary and the candidate {}; they cannot be compared",
            c.vocab()
        )));
    }
    let (lr, lc) = (r.steps(), c.steps());
    let total = lr + lc + windows.len();
    let r_out = r.run(windows, |done| progress(done, total))?;
    let c_out = c.run(windows, |done| progress(lr + done, total))?;
    let mut sums = Sums::default();
    for (i, w) in windows.iter().enumerate() {
        let rl = predicting_rows(&r_out.logits(i, w)?, w.len())?;
        let cl = predicting_rows(&c_out.logits(i, w)?, w.len())?;
        check_finite(&rl, vocab, reference.dir, i)?;
        check_finite(&cl, vocab, candidate.dir, i)?;
        sums = sums.add(compare_logits(&rl, &cl, w, vocab));
        if !progress(lr + lc + i + 1, total) {
            return Err(RuntimeError::Stopped);
        }
    }
    let n = sums.positions as f64;
    let reference = perplexity_of(sums.ref_nll, sums.positions);
    let candidate = perplexity_of(sums.cand_nll, sums.positions);
    Ok(Comparison {
        windows: windows.len(),
        window_len,
        perplexity_change: candidate.perplexity / reference.perplexity - 1.0,
        reference,
        candidate,
        mean_kl: sums.kl / n,
        top1_agreement: sums.agree as f64 / n,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Perplexity of one model over `windows`, run layer by layer.
pub fn perplexity(
    model: Side,
    windows: &[Vec<u32>],
    mut progress: impl FnMut(usize, usize) -> bool,
) -> Result<Perplexity> {
    check_windows(windows)?;
    let runner = Runner::open(model)?;
    let vocab = runner.vocab();
    let layers = runner.steps();
    let total = layers + windows.len();
    let out = runner.run(windows, |done| progress(done, total))?;
    let mut nll = 0.0;
    let mut positions = 0;
    for (i, w) in windows.iter().enumerate() {
        let logits = predicting_rows(&out.logits(i, w)?, w.len())?;
        check_finite(&logits, vocab, model.dir, i)?;
        for (row, &next) in logits.chunks_exact(vocab).zip(&w[1..]) {
            nll += log_normalizer(row) - row[next as usize] as f64;
            positions += 1;
        }
        if !progress(layers + i + 1, total) {
            return Err(RuntimeError::Stopped);
        }
    }
    Ok(perplexity_of(nll, positions))
}

/// How a model's windows are run: a whole checkpoint one layer at a time (memory near one
/// layer), or a pre-sharded artifact with all its tensor-parallel ranks loaded.
enum Runner {
    Layers(Box<LayerSource>),
    Sharded(crate::tp::ShardedModel),
}

enum Outputs {
    Hidden(crate::layerwise::Hidden),
    /// Logits are computed window by window when asked for.
    Sharded(crate::tp::ShardedModel),
}

impl Runner {
    fn open(side: Side) -> Result<Self> {
        if crate::tp::is_sharded(side.dir) {
            return Ok(Runner::Sharded(crate::tp::ShardedModel::load(
                side.dir, side.opts,
            )?));
        }
        Ok(Runner::Layers(Box::new(LayerSource::open(
            side.dir, side.opts,
        )?)))
    }

    fn vocab(&self) -> usize {
        match self {
            Runner::Layers(s) => s.params().vocab_size,
            Runner::Sharded(m) => m.params().vocab_size,
        }
    }

    /// Progress steps of [`Runner::run`].
    fn steps(&self) -> usize {
        match self {
            Runner::Layers(s) => s.params().num_layers,
            Runner::Sharded(_) => 1,
        }
    }

    fn run(self, windows: &[Vec<u32>], mut progress: impl FnMut(usize) -> bool) -> Result<Outputs> {
        match self {
            Runner::Layers(s) => Ok(Outputs::Hidden(run_layers(
                &s,
                windows,
                |_, _| {},
                |done, _| progress(done),
            )?)),
            Runner::Sharded(m) => {
                if !progress(1) {
                    return Err(RuntimeError::Stopped);
                }
                Ok(Outputs::Sharded(m))
            }
        }
    }
}

impl Outputs {
    fn logits(&self, i: usize, window: &[u32]) -> Result<Tensor> {
        match self {
            Outputs::Hidden(h) => h.logits(i),
            Outputs::Sharded(m) => {
                let mut cache = m.new_cache(window.len())?;
                m.forward(window, &mut cache, crate::model::Logits::All)
            }
        }
    }
}

/// The rows of `[len, vocab]` logits that predict a next token (all but the last).
fn predicting_rows(logits: &Tensor, len: usize) -> Result<Vec<f32>> {
    Ok(logits
        .narrow(0, 0, len - 1)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// NaN or infinite logits mean a broken model; without this check they would vanish into
/// the sums (a NaN KL term clamps to 0) and a broken artifact could look fine.
fn check_finite(logits: &[f32], vocab: usize, model: &Path, window: usize) -> Result<()> {
    match logits.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(at) => Err(RuntimeError::Input(format!(
            "{}: logit {} of position {} in evaluation window {window} is {}; the model's \
             weights or scales are broken (check them with the artifact reader)",
            model.display(),
            at % vocab,
            at / vocab,
            logits[at]
        ))),
    }
}

fn perplexity_of(nll: f64, tokens: usize) -> Perplexity {
    let mean_nll = nll / tokens as f64;
    Perplexity {
        tokens,
        mean_nll,
        perplexity: mean_nll.exp(),
    }
}

fn check_windows(windows: &[Vec<u32>]) -> Result<usize> {
    let Some(first) = windows.first() else {
        return Err(RuntimeError::Input("no evaluation windows".into()));
    };
    if first.len() < 2 {
        return Err(RuntimeError::Input(
            "evaluation windows need at least 2 tokens".into(),
        ));
    }
    if windows.iter().any(|w| w.len() != first.len()) {
        return Err(RuntimeError::Input(
            "evaluation windows must all have the same length".into(),
        ));
    }
    Ok(first.len())
}

fn compare_logits(reference: &[f32], candidate: &[f32], window: &[u32], vocab: usize) -> Sums {
    reference
        .par_chunks_exact(vocab)
        .zip(candidate.par_chunks_exact(vocab))
        .zip(window[1..].par_iter())
        .map(|((r, c), &next)| {
            let (lr, lc) = (log_normalizer(r), log_normalizer(c));
            let mut kl = 0.0f64;
            for (&a, &b) in r.iter().zip(c) {
                let log_p = a as f64 - lr;
                let log_q = b as f64 - lc;
                kl += log_p.exp() * (log_p - log_q);
            }
            let next = next as usize;
            Sums {
                positions: 1,
                ref_nll: lr - r[next] as f64,
                cand_nll: lc - c[next] as f64,
                // Rounding can make a tiny KL negative; the true value never is (the logits
                // are finite, checked by the caller, so `kl` is not NaN).
                kl: kl.max(0.0),
                agree: usize::from(argmax(r) == argmax(c)),
            }
        })
        .reduce(Sums::default, Sums::add)
}

/// `log(sum(exp(x)))`, computed stably in f64.
fn log_normalizer(x: &[f32]) -> f64 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = x.iter().map(|&v| (v as f64 - max).exp()).sum();
    max + sum.ln()
}

/// Index of the first largest value.
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_logits_have_zero_kl_and_full_agreement() {
        let r = vec![0.1, 2.0, -1.0, 0.5, 0.3, 0.2];
        let s = compare_logits(&r, &r, &[0, 1, 2], 3);
        assert_eq!(s.positions, 2);
        assert_eq!(s.agree, 2);
        assert!(s.kl.abs() < 1e-12);
        assert!((s.ref_nll - s.cand_nll).abs() < 1e-12);
    }

    #[test]
    fn non_finite_logits_are_an_error_naming_the_position() {
        let logits = vec![0.0, 1.0, 2.0, 3.0, f32::NAN, 5.0];
        let err = check_finite(&logits, 3, Path::new("/m"), 2)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/m") && err.contains("logit 1 of position 1") && err.contains("window 2"),
            "{err}"
        );
        assert!(check_finite(&logits[..3], 3, Path::new("/m"), 0).is_ok());
    }

    #[test]
    fn kl_matches_closed_form() {
        // p = softmax([0, ln 3]) = [0.25, 0.75]; q = uniform.
        let r = vec![0.0, 3f32.ln()];
        let c = vec![0.0, 0.0];
        let s = compare_logits(&r, &c, &[0, 1], 2);
        let want = 0.25 * (0.25f64 / 0.5).ln() + 0.75 * (0.75f64 / 0.5).ln();
        assert!((s.kl - want).abs() < 1e-6, "{} vs {want}", s.kl);
        assert!((s.ref_nll - -(0.75f64.ln())).abs() < 1e-6);
        assert_eq!(s.agree, 0);
    }
}
