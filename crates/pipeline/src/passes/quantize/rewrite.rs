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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rewrite {
    pub col_mul: Option<Vec<f32>>,
    pub row_div: Option<Vec<f32>>,
    pub clip: Option<Vec<f32>>,
    pub fixed: Option<FixedCodes>,
}

/// Rewrites by tensor name (`model.layers.0.mlp.up_proj.weight`).
pub type Rewrites = BTreeMap<String, Rewrite>;

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
