//! Error-minimising scales for the 8-bit round-to-nearest schemes (`OPTION_QUANT_SCALE_SEARCH=mse`
//! with INT8 W8A16/W8A8 or FP8_DYNAMIC): each row's (or group's) range is shrunk by the ratio in
//! [`clip_ratios`] whose codes have the least squared weight error, as llm-compressor's `mse`
//! observer searches it (shrinking the range by up to 20% in 1% steps). Each candidate is rounded
//! and measured with the kernels' own quantizers (`quantize_int8`/`quantize_fp8` and their
//! dequantizers), so the codes are the ones the round-to-nearest pass would write for that scale.

use rayon::prelude::*;
use temper_core::dtype::FloatData;
use temper_kernels::{Isa, KernelError, Src};

/// The 8-bit codebooks the search rounds onto.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Code8 {
    /// Symmetric INT8, codes `[-128, 127]` stored as their `i8` bits.
    Int8,
    /// FP8 E4M3 (largest finite 448).
    Fp8,
}

impl Code8 {
    /// `out` = the codes of `values` at `1 / inv` per step.
    fn quantize(self, isa: Isa, values: &[f32], inv: f32, out: &mut [u8]) {
        match self {
            Code8::Int8 => temper_kernels::quantize_int8(
                isa,
                Src::F32(values),
                inv,
                bytemuck::cast_slice_mut(out),
            ),
            Code8::Fp8 => temper_kernels::quantize_fp8(isa, Src::F32(values), inv, out),
        }
    }

    /// `out` = the values the codes stand for at `scale`.
    fn dequantize(self, isa: Isa, codes: &[u8], scale: f32, out: &mut [f32]) {
        match self {
            Code8::Int8 => {
                temper_kernels::dequantize_int8(isa, bytemuck::cast_slice(codes), scale, out)
            }
            Code8::Fp8 => temper_kernels::dequantize_fp8(isa, codes, scale, out),
        }
    }
}

/// The fractions of a group's largest |w| its scale may cover: 1.00, 0.99, ..., 0.80.
pub fn clip_ratios() -> impl Iterator<Item = f32> {
    (0..=20).map(|step| 1.0 - 0.01 * step as f32)
}

/// Quantizes the row-major `[rows, cols]` weights in `data` with one scale per `group` columns
/// of each row, each scale `scale_for(ratio * absmax)` for the ratio with the least squared
/// error. `scale_for` is the scheme's policy (rounded up to the scale dtype; called once, with
/// 0, for an all-zero group). Errors: the first non-finite weight, as the SIMD quantizers report it.
#[allow(clippy::too_many_arguments)]
pub fn quantize_rows(
    isa: Isa,
    book: Code8,
    data: &FloatData,
    cols: usize,
    group: usize,
    scale_for: &(dyn Fn(f32) -> f32 + Sync),
    codes: &mut [u8],
    scales: &mut [f32],
) -> Result<(), KernelError> {
    let groups = cols / group;
    let first = codes
        .par_chunks_mut(cols)
        .zip(scales.par_chunks_mut(groups))
        .enumerate()
        .map_init(
            || (vec![0f32; cols], vec![0u8; group], vec![0f32; group]),
            |(row, trial, deq), (r, (row_codes, row_scales))| {
                data.copy_to_f32(r * cols, row);
                if let Some(col) = row.iter().position(|v| !v.is_finite()) {
                    return Some(KernelError::NonFinite {
                        row: r,
                        col,
                        value: row[col],
                    });
                }
                for ((values, out), scale) in row
                    .chunks_exact(group)
                    .zip(row_codes.chunks_exact_mut(group))
                    .zip(row_scales.iter_mut())
                {
                    *scale = search_group(isa, book, values, scale_for, out, (trial, deq));
                }
                None
            },
        )
        .find_first(Option::is_some);
    match first.flatten() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Writes the best codes of one group into `out` and returns their scale; `scratch` holds a
/// candidate's codes and values.
fn search_group(
    isa: Isa,
    book: Code8,
    values: &[f32],
    scale_for: &(dyn Fn(f32) -> f32 + Sync),
    out: &mut [u8],
    (trial, deq): (&mut [u8], &mut [f32]),
) -> f32 {
    let absmax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    if absmax == 0.0 {
        // Zero is code 0 in both codebooks.
        out.fill(0);
        return scale_for(0.0);
    }
    let mut best: Option<(f64, f32)> = None;
    for ratio in clip_ratios() {
        let scale = scale_for(ratio * absmax);
        book.quantize(isa, values, 1.0 / scale, trial);
        book.dequantize(isa, trial, scale, deq);
        let err: f64 = values
            .iter()
            .zip(deq.iter())
            .map(|(&w, &d)| f64::from(w - d).powi(2))
            .sum();
        if best.is_none_or(|(e, _)| err < e) {
            best = Some((err, scale));
            out.copy_from_slice(trial);
        }
    }
    best.expect("at least one ratio").1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn quantize(
        book: Code8,
        w: &[f32],
        cols: usize,
        group: usize,
        qmax: f32,
    ) -> (Vec<u8>, Vec<f32>) {
        let mut codes = vec![0u8; w.len()];
        let mut scales = vec![0f32; w.len() / group];
        let scale_for = |a: f32| if a == 0.0 { 1.0 } else { a / qmax };
        quantize_rows(
            Isa::detect(),
            book,
            &FloatData::F32(Cow::Borrowed(w)),
            cols,
            group,
            &scale_for,
            &mut codes,
            &mut scales,
        )
        .unwrap();
        (codes, scales)
    }

    /// Squared error of `codes` (one scale per `group`) against `w`.
    fn error(book: Code8, w: &[f32], codes: &[u8], scales: &[f32], group: usize) -> f64 {
        let mut deq = vec![0f32; group];
        w.chunks(group)
            .zip(codes.chunks(group))
            .zip(scales)
            .map(|((w, c), &scale)| {
                book.dequantize(Isa::detect(), c, scale, &mut deq[..c.len()]);
                w.iter()
                    .zip(&deq)
                    .map(|(&v, &d)| f64::from(v - d).powi(2))
                    .sum::<f64>()
            })
            .sum()
    }

    /// The codes of `w` on the full range (one scale `full`).
    fn full_range(book: Code8, w: &[f32], full: f32) -> Vec<u8> {
        let mut codes = vec![0u8; w.len()];
        book.quantize(Isa::detect(), w, 1.0 / full, &mut codes);
        codes
    }

    #[test]
    fn an_outlier_is_clipped_when_that_lowers_the_error() {
        // Many weights halfway between two codes of the full-range grid (0.5 is 63.5 steps of
        // 1/127) and one at the maximum: a range 1% shorter puts the many near a code and
        // saturates the one by 0.01.
        let mut w = vec![0.5f32; 256];
        w[7] = 1.0;
        let (codes, scales) = quantize(Code8::Int8, &w, 256, 256, 127.0);
        assert!(scales[0] < 1.0 / 127.0, "scale {}", scales[0]);
        let full = 1.0 / 127.0;
        let full_codes = full_range(Code8::Int8, &w, full);
        let searched = error(Code8::Int8, &w, &codes, &scales, 256);
        let minmax = error(Code8::Int8, &w, &full_codes, &[full], 256);
        assert!(searched < minmax, "{searched} vs {minmax}");
    }

    #[test]
    fn the_search_never_loses_to_the_full_range() {
        // The full range is one of the ratios tried, so no group's error can exceed minmax's.
        for book in [Code8::Int8, Code8::Fp8] {
            let qmax = if book == Code8::Int8 { 127.0 } else { 448.0 };
            let w: Vec<f32> = (0..512)
                .map(|i| ((i as f32) * 0.37).sin() * (1.0 + (i % 7) as f32))
                .collect();
            let (codes, scales) = quantize(book, &w, 128, 64, qmax);
            for g in 0..w.len() / 64 {
                let span = g * 64..(g + 1) * 64;
                let part = &w[span.clone()];
                let absmax = part.iter().fold(0f32, |m, v| m.max(v.abs()));
                let full = absmax / qmax;
                let full_codes = full_range(book, part, full);
                let searched = error(book, part, &codes[span], &scales[g..g + 1], 64);
                let minmax = error(book, part, &full_codes, &[full], 64);
                assert!(
                    searched <= minmax,
                    "{book:?} group {g}: {searched} vs {minmax}"
                );
            }
        }
    }

    #[test]
    fn zero_groups_and_non_finite_weights() {
        let (codes, scales) = quantize(Code8::Int8, &[0.0; 8], 8, 4, 127.0);
        assert_eq!(scales, vec![1.0, 1.0]);
        assert!(codes.iter().all(|&c| c == 0));
        let mut w = vec![0.5f32; 8];
        w[6] = f32::NAN;
        let mut codes = vec![0u8; 8];
        let mut scales = vec![0f32; 2];
        let err = quantize_rows(
            Isa::detect(),
            Code8::Fp8,
            &FloatData::F32(Cow::Borrowed(&w)),
            4,
            4,
            &|a| a / 448.0,
            &mut codes,
            &mut scales,
        )
        .unwrap_err();
        assert!(
            matches!(err, KernelError::NonFinite { row: 1, col: 2, .. }),
            "{err:?}"
        );
    }
}
