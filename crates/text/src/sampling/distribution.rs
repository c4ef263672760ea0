//! The distribution [`Sampler::sample`] draws from, written out: what lossless speculative
//! sampling needs to accept or reject drafted tokens (and draw from what is left) so that
//! its output follows exactly the distribution plain sampling would.

use super::exp::exp_nonpositive;
use super::select::{argmax_with_value, by_value_desc, nucleus, Candidate};
use super::{Sampler, NEGLIGIBLE};
use rand::RngExt;

/// Tokens that can be drawn and their probabilities (summing to 1), most likely first.
#[derive(Clone, Debug, PartialEq)]
pub struct Distribution {
    pub tokens: Vec<(u32, f32)>,
}

impl Distribution {
    /// Probability of `token` (0 when it cannot be drawn).
    pub fn probability(&self, token: u32) -> f32 {
        self.tokens
            .iter()
            .find(|(t, _)| *t == token)
            .map_or(0.0, |(_, p)| *p)
    }

    /// Removes `token` and renormalises what is left (the residual after a rejected draft
    /// with a deterministic proposal). Returns false when nothing would be left.
    pub fn remove(&mut self, token: u32) -> bool {
        self.tokens.retain(|(t, _)| *t != token);
        let total: f64 = self.tokens.iter().map(|(_, p)| f64::from(*p)).sum();
        if total <= 0.0 {
            return false;
        }
        for (_, p) in self.tokens.iter_mut() {
            *p = (f64::from(*p) / total) as f32;
        }
        true
    }
}

impl Sampler {
    /// The distribution [`Sampler::sample`] would draw from for `logits`: temperature, top-k,
    /// softmax, top-p, with the same negligible-weight cut-off. Greedy is the argmax with
    /// probability 1.
    pub fn distribution(&self, logits: &[f32]) -> Distribution {
        let (best, max) = argmax_with_value(logits);
        let temperature = self.params.temperature;
        let top_k = self.params.top_k.filter(|&k| k < logits.len());
        if temperature == 0.0 || top_k == Some(1) || !max.is_finite() {
            return Distribution {
                tokens: vec![(best, 1.0)],
            };
        }
        let cutoff = max - NEGLIGIBLE * temperature;
        let mut cands: Vec<Candidate> = logits
            .iter()
            .enumerate()
            .filter(|(_, &l)| l >= cutoff)
            .map(|(id, &l)| Candidate {
                v: exp_nonpositive((l - max) / temperature),
                id: id as u32,
            })
            .filter(|c| c.v > 0.0)
            .collect();
        cands.sort_unstable_by(by_value_desc);
        if let Some(k) = top_k {
            cands.truncate(k);
        }
        if let Some(p) = self.params.top_p.filter(|&p| p < 1.0) {
            let total: f64 = cands.iter().map(|c| f64::from(c.v)).sum();
            let sorted = cands.len();
            let kept = nucleus(&mut cands, sorted, f64::from(p) * total);
            cands.truncate(kept);
        }
        let total: f64 = cands.iter().map(|c| f64::from(c.v)).sum();
        Distribution {
            tokens: cands
                .iter()
                .map(|c| (c.id, (f64::from(c.v) / total) as f32))
                .collect(),
        }
    }

    /// A uniform draw in `[0, 1)` from the sampler's generator.
    pub fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    /// Draws a token from `dist`.
    pub fn draw(&mut self, dist: &Distribution) -> u32 {
        let mut r = self.uniform();
        for &(t, p) in &dist.tokens {
            r -= f64::from(p);
            if r < 0.0 {
                return t;
            }
        }
        dist.tokens.last().map_or(0, |(t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::super::SamplingParams;
    use super::*;

    fn sampler(temperature: f32, top_k: Option<usize>, top_p: Option<f32>) -> Sampler {
        Sampler::new(SamplingParams {
            temperature,
            top_k,
            top_p,
            seed: 7,
        })
        .unwrap()
    }

    #[test]
    fn the_distribution_is_softmax_with_top_k_and_top_p() {
        let logits = [2.0f32, 1.0, 0.0, -1.0];
        let d = sampler(1.0, None, None).distribution(&logits);
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        for (t, p) in &d.tokens {
            assert!((p - logits[*t as usize].exp() / z).abs() < 1e-6);
        }
        let top2 = sampler(1.0, Some(2), None).distribution(&logits);
        assert_eq!(top2.tokens.len(), 2);
        assert!((top2.probability(0) - 1.0f32.exp() / (1.0f32.exp() + 1.0)).abs() < 1e-6);
        // p(0) = 0.644, p(0) + p(1) = 0.881: a nucleus of 0.7 keeps two tokens.
        assert_eq!(
            sampler(1.0, None, Some(0.7))
                .distribution(&logits)
                .tokens
                .len(),
            2
        );
        assert_eq!(
            sampler(0.0, None, None).distribution(&logits).tokens,
            vec![(0, 1.0)]
        );
    }

    #[test]
    fn draws_follow_the_distribution() {
        let logits = [1.0f32, 0.5, 0.0];
        let mut s = sampler(1.0, None, None);
        let d = s.distribution(&logits);
        let mut counts = [0usize; 3];
        let n = 30_000;
        for _ in 0..n {
            counts[s.draw(&d) as usize] += 1;
        }
        for (t, c) in counts.iter().enumerate() {
            let p = f64::from(d.probability(t as u32));
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!((*c as f64 / n as f64 - p).abs() < 5.0 * sd, "token {t}");
        }
    }

    #[test]
    fn removing_a_token_renormalises_the_rest() {
        let mut d = sampler(1.0, None, None).distribution(&[0.0f32, 0.0, 0.0, 0.0]);
        assert!(d.remove(2));
        assert_eq!(d.tokens.len(), 3);
        for (_, p) in &d.tokens {
            assert!((p - 1.0 / 3.0).abs() < 1e-6);
        }
        let mut one = Distribution {
            tokens: vec![(4, 1.0)],
        };
        assert!(!one.remove(4));
    }
}
