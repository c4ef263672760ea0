//! Error-minimising scales for the 8-bit round-to-nearest schemes (`OPTION_QUANT_SCALE_SEARCH=mse`
//! with INT8 W8A16/W8A8 or FP8_DYNAMIC): each row's (or group's) range is shrunk by the ratio in
//! [`clip_ratios`] whose codes have the least squared weight error, as llm-compressor's `mse`
//! observer searches it (shrinking the range by up to 20% in 1% steps). The codes are the same
//! as the SIMD quantizers' for the chosen scale (`round_half_even(w * (1/scale))` clamped for
//! INT8, [`f32_to_fp8_e4m3`] for FP8); this scalar path runs only when the option asks for it.

use rayon::prelude::*;
use temper_core::dtype::FloatData;
use temper_kernels::{f32_to_fp8_e4m3, fp8_e4m3_to_f32, KernelError};

/// The 8-bit codebooks the search rounds onto.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Code8 {
    /// Symmetric INT8, codes `[-128, 127]` stored as their `i8` bits.
    Int8,
    /// FP8 E4M3 (largest finite 448).
    Fp8,
}

impl Code8 {
    fn code(self, w: f32, inv: f32) -> u8 {
        match self {
            Code8::Int8 => (w * inv).round_ties_even().clamp(-128.0, 127.0) as i8 as u8,
            Code8::Fp8 => f32_to_fp8_e4m3(w * inv),
        }
    }

    fn value(self, code: u8, scale: f32) -> f32 {
        match self {
            Code8::Int8 => f32::from(code as i8) * scale,
            Code8::Fp8 => fp8_e4m3_to_f32(code) * scale,
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
pub fn quantize_rows(
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
            || (vec![0f32; cols], vec![0u8; group]),
            |(row, trial), (r, (row_codes, row_scales))| {
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
                    *scale = search_group(book, values, scale_for, out, trial);
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

/// Writes the best codes of one group into `out` and returns their scale.
fn search_group(
    book: Code8,
    values: &[f32],
    scale_for: &(dyn Fn(f32) -> f32 + Sync),
    out: &mut [u8],
    trial: &mut [u8],
) -> f32 {
    let absmax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    if absmax == 0.0 {
        let scale = scale_for(0.0);
        out.fill(book.code(0.0, 1.0 / scale));
        return scale;
    }
    let mut best: Option<(f64, f32)> = None;
    for ratio in clip_ratios() {
        let scale = scale_for(ratio * absmax);
        let inv = 1.0 / scale;
        let mut err = 0f64;
        for (c, &w) in trial.iter_mut().zip(values) {
            *c = book.code(w, inv);
            err += f64::from(w - book.value(*c, scale)).powi(2);
        }
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

    fn error(book: Code8, w: &[f32], codes: &[u8], scales: &[f32], group: usize) -> f64 {
        w.iter()
            .zip(codes)
            .enumerate()
            .map(|(i, (&v, &c))| f64::from(v - book.value(c, scales[i / group])).powi(2))
            .sum()
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
        let full_codes: Vec<u8> = w.iter().map(|&v| Code8::Int8.code(v, 1.0 / full)).collect();
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
                let full_codes: Vec<u8> = part.iter().map(|&v| book.code(v, 1.0 / full)).collect();
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
