//! What the GPU quantizers take and give back.

/// How scales cover a `[rows, cols]` weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantLayout {
    /// One scale per row and `group` columns (`group == cols`: per channel); scales are
    /// `[rows, cols / group]`.
    Rows { group: usize },
    /// FP8 only: one scale per `rows x cols` block (128x128 for FP8_BLOCK); scales are
    /// `[ceil(rows / br), ceil(cols / bc)]`.
    Blocks { rows: usize, cols: usize },
    /// FP8 only: one scale for the whole tensor.
    Tensor,
}

/// Codes (INT8 as their bits, or FP8 E4M3), scales, and how many groups were all zeros.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized {
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
    pub zero_groups: usize,
}
