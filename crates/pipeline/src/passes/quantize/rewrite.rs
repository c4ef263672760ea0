//! What the calibrated methods decide per tensor, applied by the quantize run tensor by tensor
//! (`run.rs`): AWQ's and SmoothQuant's scales folded into consumers and producers, AWQ's clip
//! ratios, GPTQ's codes.

use super::int4::FixedCodes;
use std::collections::BTreeMap;

/// How one tensor is rewritten before it is quantized or copied: columns multiplied by
/// `col_mul` (a consumer of smoothed inputs), rows (or the elements of a norm weight) divided
/// by `row_div` (the producer of those inputs), and for a quantized tensor the clip ratio of
/// each row's groups (`rows x groups`, the minmax range shrunk by that factor), or GPTQ's
/// codes (`fixed`).
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    pub col_mul: Option<Vec<f32>>,
    pub row_div: Option<Vec<f32>>,
    pub clip: Option<Vec<f32>>,
    pub fixed: Option<FixedCodes>,
}

/// Rewrites by tensor name (`model.layers.0.mlp.up_proj.weight`).
pub type Rewrites = BTreeMap<String, Rewrite>;

/// The rewrites that make a producer's output `y / s`: its weight's rows (a norm weight's
/// elements) divided by `s`, and its bias the same way (a Qwen2 `v_proj` has one; an absent
/// tensor's rewrite is never looked up).
pub fn divide_producer(producer_weight: &str, s: Vec<f32>) -> Vec<(String, Rewrite)> {
    let divide = |s: Vec<f32>| Rewrite {
        row_div: Some(s),
        ..Default::default()
    };
    match producer_weight.strip_suffix(".weight") {
        Some(module) => vec![
            (format!("{module}.bias"), divide(s.clone())),
            (producer_weight.to_string(), divide(s)),
        ],
        None => vec![(producer_weight.to_string(), divide(s))],
    }
}

impl Rewrite {
    /// Adds `from`'s parts: a consumer's column scales and a producer's divisors for the same
    /// tensor compose (up_proj is both under AWQ: its columns read the smoothed
    /// post-attention norm, its rows feed down_proj).
    pub fn merge(&mut self, from: Rewrite) {
        if from.col_mul.is_some() {
            self.col_mul = from.col_mul;
        }
        if from.row_div.is_some() {
            self.row_div = from.row_div;
        }
        if from.clip.is_some() {
            self.clip = from.clip;
        }
        if from.fixed.is_some() {
            self.fixed = from.fixed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_divided_producer_takes_its_bias_along() {
        let found = divide_producer("model.layers.0.self_attn.v_proj.weight", vec![2.0, 4.0]);
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "model.layers.0.self_attn.v_proj.bias",
                "model.layers.0.self_attn.v_proj.weight"
            ]
        );
        assert!(found
            .iter()
            .all(|(_, r)| r.row_div.as_deref() == Some(&[2.0, 4.0][..]) && r.col_mul.is_none()));
    }
}
