//! Llama 3.1+ rope scaling: llama.cpp stores the per-frequency factors as a tensor
//! (`rope_freqs.weight`) instead of the parameters Hugging Face's `rope_scaling` holds.
//! The factors follow from four parameters; Meta's releases all use the same three
//! besides `factor`, so we recover them by recomputing the factors and comparing.

use serde_json::{json, Value};

/// (low_freq_factor, high_freq_factor, original_max_position_embeddings) of the
/// Llama 3.1, 3.2 and 3.3 releases.
const KNOWN: [(f64, f64, f64); 1] = [(1.0, 4.0, 8192.0)];

/// What the factors say about `rope_scaling`.
#[derive(Debug, Clone, PartialEq)]
pub enum Llama3Rope {
    /// All factors are 1: plain rope, nothing to write.
    None,
    /// The `rope_scaling` object that reproduces the factors.
    Scaling(Value),
    /// Factors this importer cannot express; the caller warns.
    Unrecognised,
}

/// Recovers `rope_scaling` from the GGUF factors (one per rotary frequency).
pub fn infer_llama3(factors: &[f32], rope_theta: f64, head_dim: usize) -> Llama3Rope {
    if factors.iter().all(|&f| (f - 1.0).abs() < 1e-6) {
        return Llama3Rope::None;
    }
    if factors.len() * 2 != head_dim {
        return Llama3Rope::Unrecognised;
    }
    let factor = factors.iter().fold(0f32, |m, &f| m.max(f)) as f64;
    for (low, high, original) in KNOWN {
        let expected = llama3_factors(factor, low, high, original, rope_theta, head_dim);
        let matches = expected
            .iter()
            .zip(factors)
            .all(|(e, &g)| ((e - g as f64) / e).abs() < 1e-3);
        if matches {
            return Llama3Rope::Scaling(json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low,
                "high_freq_factor": high,
                "original_max_position_embeddings": original as u64,
            }));
        }
    }
    Llama3Rope::Unrecognised
}

/// The factors llama.cpp's converter writes for these parameters (divisors of each
/// rotary frequency: 1 for short wavelengths, `factor` for long, smooth in between).
fn llama3_factors(
    factor: f64,
    low: f64,
    high: f64,
    original: f64,
    theta: f64,
    head_dim: usize,
) -> Vec<f64> {
    let (low_wavelen, high_wavelen) = (original / low, original / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_llama_3_1_scaling() {
        let factors: Vec<f32> = llama3_factors(8.0, 1.0, 4.0, 8192.0, 500_000.0, 128)
            .into_iter()
            .map(|f| f as f32)
            .collect();
        let Llama3Rope::Scaling(v) = infer_llama3(&factors, 500_000.0, 128) else {
            panic!("not recognised")
        };
        assert_eq!(v["rope_type"], "llama3");
        assert_eq!(v["factor"], 8.0);
        assert_eq!(v["original_max_position_embeddings"], 8192);
        assert_eq!(infer_llama3(&[1.0; 64], 500_000.0, 128), Llama3Rope::None);
        let mut odd = factors.clone();
        odd[10] *= 1.5;
        assert_eq!(infer_llama3(&odd, 500_000.0, 128), Llama3Rope::Unrecognised);
    }
}
