//! INT4 weights ([`Weights::Int4`]: two codes per byte, a scale and a zero point per row and
//! group) in the SIMD products.
//!
//! Both paths decode the codes into f32 weights first, `(code - zero) * scale` with one
//! rounding (exactly [`Matrix::row`]'s values), and then run the dense f32 kernels:
//! - the matrix-matrix path decodes `KC`-column blocks through [`Backend::decode_rows`], as for
//!   the other quantized kinds;
//! - the matrix-vector path ([`gemv_int4`]) decodes a few whole rows at a time into a buffer
//!   that stays in L1 and runs the dense matrix-vector kernel over it, so the weights stream
//!   from memory at half a byte each and are widened once per four tokens.
//!
//! The per-ISA part is one step that widens 32 codes (16 bytes); the loops around it are here,
//! generic, and inlined into each ISA's `#[target_feature]` function.

use std::cell::RefCell;

use super::{grow, Backend, Matrix, Weights};

/// Decoded rows of one matrix-vector sub-tile: about this many bytes of f32, so that they stay
/// in L1 while up to four tokens are dotted with them.
const DECODED_BYTES: usize = 16 << 10;

thread_local! {
    /// Per-thread decoded rows and sub-tile outputs of [`gemv_int4`] (grown, never shrunk).
    static DECODED: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `out[j * ld + i] = (code(r0 + j, k0 + i) - zero) as f32 * scale` for `j < nr`, `i < kc`,
/// with `step(bytes, zero, scale, dst)` widening the 32 codes of 16 bytes at once (an ISA's
/// vector step) and single elements done here; `step` must give the same values.
///
/// # Panics
/// If `w` is not [`Weights::Int4`] or a bound is violated.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode_rows_with(
    w: &Matrix,
    r0: usize,
    nr: usize,
    k0: usize,
    kc: usize,
    out: &mut [f32],
    ld: usize,
    step: impl Fn(&[u8; 16], u8, f32, &mut [f32; 32]),
) {
    let Weights::Int4 {
        packed,
        scales,
        zeros,
        group,
    } = &w.weights
    else {
        panic!("decode_rows_with needs INT4 weights");
    };
    let (cols, group) = (w.cols, *group);
    let groups = cols / group;
    assert!(r0 + nr <= w.rows && k0 + kc <= cols && kc <= ld);
    assert!(nr == 0 || out.len() >= (nr - 1) * ld + kc);
    let end = k0 + kc;
    for j in 0..nr {
        let row = r0 + j;
        let base = row * cols;
        let dst = &mut out[j * ld..j * ld + kc];
        let mut i = k0;
        while i < end {
            let g = i / group;
            let stop = end.min((g + 1) * group);
            let (zero, scale) = (zeros[row * groups + g], scales[row * groups + g]);
            // `cols` and `group` are even, so an even `i` starts on a byte.
            while i.is_multiple_of(2) && i + 32 <= stop {
                let at = (base + i) / 2;
                let bytes: &[u8; 16] = packed[at..at + 16].try_into().expect("16 bytes");
                let o: &mut [f32; 32] = (&mut dst[i - k0..i - k0 + 32])
                    .try_into()
                    .expect("32 outputs");
                step(bytes, zero, scale, o);
                i += 32;
            }
            while i < stop {
                let code = super::scalar::int4_code(packed, base + i);
                dst[i - k0] = f32::from(i16::from(code) - i16::from(zero)) * scale;
                i += 1;
            }
        }
    }
}

/// [`Backend::gemv`] for INT4 weights: rows `r0..r0 + nr` decoded a sub-tile at a time, then
/// [`Backend::gemv_dense_rows`]; `out[t * nr + j]` as for the other kinds.
pub(crate) fn gemv_int4<B: Backend>(
    b: B,
    w: &Matrix,
    r0: usize,
    nr: usize,
    x: &[f32],
    tokens: usize,
    out: &mut [f32],
) {
    let cols = w.cols;
    let sub = (DECODED_BYTES / (cols * 4).max(1)).clamp(1, 8);
    DECODED.with(|d| {
        let (rows, part) = &mut *d.borrow_mut();
        grow(rows, sub * cols, 0.0);
        grow(part, sub * tokens, 0.0);
        let mut s0 = 0;
        while s0 < nr {
            let ns = sub.min(nr - s0);
            let decoded = &mut rows[..ns * cols];
            b.decode_rows(w, r0 + s0, ns, 0, cols, decoded, cols);
            let part = &mut part[..ns * tokens];
            b.gemv_dense_rows(decoded, cols, ns, x, tokens, part);
            for t in 0..tokens {
                out[t * nr + s0..t * nr + s0 + ns].copy_from_slice(&part[t * ns..(t + 1) * ns]);
            }
            s0 += ns;
        }
    });
}
