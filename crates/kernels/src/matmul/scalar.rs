//! Scalar reference of the products: plain loops that define the results.
//!
//! With f32 activations each group is summed in f32 in column order and then multiplied by its
//! scale; the SIMD versions sum in another order (lanes, then a reduction) and agree up to that.
//! The INT8 x INT8 product is exact, so the SIMD versions match it bit for bit.

use super::{Matrix, Weights, FP8_NAN_CODE_VALUE};
use crate::scalar::fp8_e4m3_to_f32;

/// Value of an FP8 weight code in the products: the E4M3 value, NaN codes read as
/// ±[`FP8_NAN_CODE_VALUE`].
pub(crate) fn fp8_weight(code: u8) -> f32 {
    if code & 0x7F == 0x7F {
        if code & 0x80 != 0 {
            -FP8_NAN_CODE_VALUE
        } else {
            FP8_NAN_CODE_VALUE
        }
    } else {
        fp8_e4m3_to_f32(code)
    }
}

/// The 4-bit code of element `i` (row-major index): low nibble for even `i`, high for odd.
pub(crate) fn int4_code(packed: &[u8], i: usize) -> u8 {
    let byte = packed[i / 2];
    if i.is_multiple_of(2) {
        byte & 0x0F
    } else {
        byte >> 4
    }
}

/// Unscaled value of element `i` (row-major index) of the stored weights.
fn raw(w: &Matrix, i: usize) -> f32 {
    match &w.weights {
        Weights::F32(v) => v[i],
        Weights::F16(v) => v[i].to_f32(),
        Weights::Bf16(v) => v[i].to_f32(),
        Weights::Int8 { codes, .. } => f32::from(codes[i]),
        Weights::Fp8 { codes, .. } => fp8_weight(codes[i]),
        Weights::Int4 {
            packed,
            zeros,
            group,
            ..
        } => {
            let (row, col) = (i / w.cols, i % w.cols);
            let zero = zeros[row * (w.cols / group) + col / group];
            f32::from(i16::from(int4_code(packed, i)) - i16::from(zero))
        }
    }
}

/// `y[t, n] = sum over groups g of (sum_{j in g} x[t, j] * raw(W[n, j])) * scale[n, g]`
/// (dense weights: one group, no scale).
pub(crate) fn matmul_f32(w: &Matrix, x: &[f32], m: usize, y: &mut [f32]) {
    let (rows, cols, group) = (w.rows, w.cols, w.group());
    for t in 0..m {
        let xt = &x[t * cols..(t + 1) * cols];
        for n in 0..rows {
            let mut total = 0.0f32;
            for g in 0..cols / group {
                let mut acc = 0.0f32;
                for (j, &xv) in xt.iter().enumerate().skip(g * group).take(group) {
                    acc += xv * raw(w, n * cols + j);
                }
                total += match w.row_scales(n) {
                    Some(scales) => acc * scales[g],
                    None => acc,
                };
            }
            y[t * rows + n] = total;
        }
    }
}

/// `y[t, n] = (xs[t] * scale[n]) * (sum_j xq[t, j] * codes[n, j]) as f32` for per-channel INT8.
pub(crate) fn matmul_int8(w: &Matrix, xq: &[i8], xs: &[f32], m: usize, y: &mut [f32]) {
    let Weights::Int8 { codes, scales, .. } = &w.weights else {
        unreachable!("checked by matmul");
    };
    let (rows, cols) = (w.rows, w.cols);
    for t in 0..m {
        let xt = &xq[t * cols..(t + 1) * cols];
        for n in 0..rows {
            let wr = &codes[n * cols..(n + 1) * cols];
            // |dot| <= 127 * 128 * cols < 2^31 (cols is bounded by matmul).
            let dot: i32 = xt
                .iter()
                .zip(wr)
                .map(|(&a, &b)| i32::from(a) * i32::from(b))
                .sum();
            y[t * rows + n] = (xs[t] * scales[n]) * dot as f32;
        }
    }
}

/// `out[i] = W[row, k0 + i]`: `raw * scale`, one rounding.
pub(crate) fn decode(w: &Matrix, row: usize, k0: usize, out: &mut [f32]) {
    let (cols, group) = (w.cols, w.group());
    let scales = w.row_scales(row);
    for (i, o) in out.iter_mut().enumerate() {
        let j = k0 + i;
        let v = raw(w, row * cols + j);
        *o = match scales {
            Some(s) => v * s[j / group],
            None => v,
        };
    }
}
