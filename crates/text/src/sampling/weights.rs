//! Softmax numerators over a whole vocabulary, and drawing from them, without
//! building (id, weight) pairs: plain slices the compiler vectorizes.

use super::exp::exp_nonpositive;

/// Weights are summed per block so a draw walks block sums, then one block.
pub(super) const BLOCK: usize = 1024;

/// Fills `weights[i] = e^((logits[i] - max) / temperature)`, 0 for logits below
/// `cutoff` and for NaN, and `block_sums` with the sum of each [`BLOCK`]; returns the
/// total. `max` must be the largest logit, so every weight is in [0, 1].
pub(super) fn fill(
    logits: &[f32],
    max: f32,
    temperature: f32,
    cutoff: f32,
    weights: &mut Vec<f32>,
    block_sums: &mut Vec<f64>,
) -> f64 {
    // Multiplying is much cheaper than dividing; capped so that a subnormal temperature
    // gives a huge factor instead of infinity (0 · inf would be NaN for the maximum).
    let inv_t = (1.0 / temperature).min(f32::MAX);
    weights.resize(logits.len(), 0.0);
    block_sums.clear();
    let mut total = 0.0;
    // Block by block, so each block is summed while it is still in cache.
    for (l, w) in logits.chunks(BLOCK).zip(weights.chunks_mut(BLOCK)) {
        for (w, &l) in w.iter_mut().zip(l) {
            let e = exp_nonpositive((l - max) * inv_t);
            // NaN fails `>=`.
            *w = if l >= cutoff { e } else { 0.0 };
        }
        let s = sum(w);
        block_sums.push(s);
        total += s;
    }
    total
}

/// The sum in f64 with independent accumulators, so it is not one long dependency chain.
pub(super) fn sum(values: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(v);
        }
    }
    let tail: f64 = rest.iter().map(|&v| f64::from(v)).sum();
    lanes.iter().sum::<f64>() + tail
}

/// The index where the running sum of `weights` first exceeds `r` (0 <= r < total).
/// Floating-point rounding can leave `r` just past the end of a block or of the
/// whole list; then the last positive weight there is taken.
pub(super) fn draw(weights: &[f32], block_sums: &[f64], mut r: f64) -> usize {
    for (b, &block_sum) in block_sums.iter().enumerate() {
        if r < block_sum {
            let start = b * BLOCK;
            let block = &weights[start..(start + BLOCK).min(weights.len())];
            for (i, &w) in block.iter().enumerate() {
                r -= f64::from(w);
                if r < 0.0 {
                    return start + i;
                }
            }
            return start + last_positive(block);
        }
        r -= block_sum;
    }
    last_positive(weights)
}

fn last_positive(weights: &[f32]) -> usize {
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{draw, fill, sum, BLOCK};

    #[test]
    fn draw_walks_blocks() {
        let weights: Vec<f32> = (0..3 * BLOCK + 5).map(|i| (i % 3) as f32).collect();
        let blocks: Vec<f64> = weights.chunks(BLOCK).map(sum).collect();
        let total: f64 = blocks.iter().sum();
        assert_eq!(total, weights.iter().map(|&w| f64::from(w)).sum::<f64>());
        // Token i (weight w_i) owns [prefix_i, prefix_i + w_i).
        let mut prefix = 0.0;
        for (i, &w) in weights.iter().enumerate() {
            if w > 0.0 {
                assert_eq!(draw(&weights, &blocks, prefix), i);
                assert_eq!(draw(&weights, &blocks, prefix + f64::from(w) - 0.5), i);
            }
            prefix += f64::from(w);
        }
        // Past the end (rounding): the last positive weight.
        assert_eq!(draw(&weights, &blocks, total + 1.0), 3 * BLOCK + 4);
    }

    #[test]
    fn weights_are_zero_for_nan_and_below_cutoff() {
        let (mut w, mut b) = (Vec::new(), Vec::new());
        let total = fill(
            &[0.0, f32::NAN, -100.0, f32::NEG_INFINITY, -1.0],
            0.0,
            1.0,
            -30.0,
            &mut w,
            &mut b,
        );
        assert_eq!(w[..4], [1.0, 0.0, 0.0, 0.0]);
        assert!((w[4] - (-1.0f32).exp()).abs() < 1e-7);
        assert!((total - 1.0 - f64::from(w[4])).abs() < 1e-12);
    }
}
