//! Linear layers without bias for the model runtime: matrix-vector products (decode, `m = 1`) and
//! small matrix-matrix products (prefill and batched evaluation, `m` up to a few hundred).
//!
//! ```text
//! y[t, n] = sum_j x[t, j] * W[n, j]     x: m x k row-major f32, W: n x k row-major, y: m x n f32
//! ```
//!
//! `W` is a [`Matrix`]: dense f32/f16/bf16, or INT8/FP8 E4M3 codes with one f32 scale per row and
//! `group` columns (`group == cols` is per channel):
//! `W[n, j] = value(codes[n * k + j]) * scales[n * (k / group) + j / group]`.
//!
//! Every product exists as a scalar reference ([`Isa::Scalar`], written for clarity) and as AVX2
//! and AVX-512 versions, picked through [`Isa`] like the quantizers. With
//! [`Activations::F32`] the versions differ from the reference only by summation order (each
//! group is summed in f32, then multiplied by its scale). With [`Activations::Int8PerToken`] the
//! dot products are exact integers and every version gives bit-identical results.
//!
//! How the SIMD versions work:
//! - `m <= 16`: each weight tile (4 rows; AVX2 fewer) is decoded in registers and dotted with up
//!   to 4 activation rows straight away (one pass over the weights per 4 tokens, AVX2 per 2);
//! - larger `m`: each rayon chunk of rows is decoded once per 256-column block into f32
//!   per-thread scratch (scale folded in: one rounding, as [`Matrix::row`]), and a register-tiled
//!   kernel (AVX-512: 32 tokens x 12 rows, AVX2: 16 x 6) multiplies it with a transposed copy of
//!   `x` packed once per call into [`Scratch`];
//! - `Int8PerToken`: integer dot products of 4 rows x up to 4 tokens at a time: `vpdpbusd` where
//!   the CPU has AVX-512 VNNI (activations biased by +128 to unsigned, corrected with the row sums
//!   of the codes precomputed by [`Matrix::new`]), else `vpmaddubsw` on `|w|` and `x` with the
//!   sign of `w` applied.
//!
//! Weights are widened exactly and without table lookups: f16 by `vcvtph2ps`, bf16 by a 16-bit
//! shift, INT8 by sign extension, FP8 E4M3 by moving its bits into an f16 (`(sign_extend(b) << 7)
//! & 0xBFFF` is the E4M3 value / 256, subnormals included) and `vcvtph2ps`. That conversion
//! (two uops per 16 lanes) is what bounds FP8 decode on one core (about 6 bytes per cycle against
//! about 9 for INT8), below what a core can read from L3.
//!
//! Work is split into chunks of output rows handed out by rayon (work stealing, about 8 chunks
//! per thread, each at least 16 KiB of weights). Call from a worker of the pool (e.g. run the
//! model's forward pass inside `ThreadPool::install` or `rayon::scope`): from any other thread
//! rayon has to inject the job and put the caller to sleep until it is done, which costs a
//! futex wake-up each way (10-15 µs on a 2-vCPU VM), so products below about 1.5 MB of weights
//! then stay on the calling thread. Once [`Scratch`] and the per-thread buffers are warm, a call
//! allocates nothing.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_int4;
mod int4;
mod scalar;
mod split;

use half::{bf16, f16};

use crate::isa::Usable;
use crate::{dispatch, Isa, KernelError, Src};

/// Largest `cols` accepted with [`Activations::Int8PerToken`]: `127 * 128 * cols` must fit an
/// `i32` so that the integer dot product is exact.
pub const INT8_PER_TOKEN_MAX_COLS: usize = 1 << 17;

/// Value of the FP8 codes `0x7F`/`0xFF` (E4M3 "fn" NaN) in products and in [`Matrix::row`].
///
/// The quantizer never writes these codes. The SIMD decoders widen E4M3 to f16 by moving bits,
/// which continues the format past 448 instead of producing NaN (`0x7F` -> `1.875 * 2^8`); every
/// version, the reference included, uses that value so that they all agree.
pub const FP8_NAN_CODE_VALUE: f32 = 480.0;

/// Stored weights of a [`Matrix`] with `rows x cols` elements, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Weights {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
    /// `w = codes[n * cols + j] as f32 * scales[n * (cols / group) + j / group]`.
    Int8 {
        codes: Vec<i8>,
        scales: Vec<f32>,
        group: usize,
    },
    /// `w = fp8_e4m3_to_f32(codes[n * cols + j]) * scales[n * (cols / group) + j / group]`
    /// (OCP E4M3 "fn"; see [`FP8_NAN_CODE_VALUE`] for the NaN codes).
    Fp8 {
        codes: Vec<u8>,
        scales: Vec<f32>,
        group: usize,
    },
    /// 4-bit codes, two per byte: element `i` of the row-major matrix is the low nibble of
    /// `packed[i / 2]` for even `i`, the high nibble for odd `i`. With `g = n * (cols / group) +
    /// j / group`: `w = (code - zeros[g]) as f32 * scales[g]` (the difference is an exact small
    /// integer; symmetric schemes use zero point 8). `cols` and `group` are even, so every row
    /// and group starts on a byte.
    ///
    /// W4A16: with [`Activations::F32`], products with INT4 weights take the activations
    /// rounded to bf16 (ties to even), on every backend, the reference included: 16-bit
    /// activations, as the engines that serve these checkpoints run them. Weights (`code -
    /// zero`, small integers) and such activations are exact in bf16, so the AVX-512 kernel can
    /// multiply them with `vdpbf16ps` (32 products per instruction) where the CPU has it, and
    /// still differ from the reference only by summation order.
    Int4 {
        packed: Vec<u8>,
        scales: Vec<f32>,
        zeros: Vec<u8>,
        group: usize,
    },
}

/// A weight matrix `W[rows, cols]` (`rows` = output features `n`, `cols` = input features `k`),
/// validated once and with what the kernels need precomputed.
#[derive(Clone, Debug)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    weights: Weights,
    /// `sum_j codes[r * cols + j]` per row (wrapping), for INT8 per channel only: the correction of
    /// the `+128` bias in the VNNI dot products. Empty otherwise.
    row_sums: Vec<i32>,
}

impl Matrix {
    /// Checks the weights against the shape: `len == rows * cols` for every kind, and for INT8/FP8
    /// `group > 0`, `cols % group == 0`, `scales.len() == rows * cols / group`, every scale finite.
    ///
    /// Errors: [`KernelError::Shape`] naming what disagrees (or the first non-finite scale).
    pub fn new(rows: usize, cols: usize, weights: Weights) -> Result<Matrix, KernelError> {
        let n = rows
            .checked_mul(cols)
            .ok_or_else(|| KernelError::shape(format!("{rows}x{cols} overflows usize")))?;
        let (len, scaled) = match &weights {
            Weights::F32(v) => (v.len(), None),
            Weights::F16(v) => (v.len(), None),
            Weights::Bf16(v) => (v.len(), None),
            Weights::Int8 {
                codes,
                scales,
                group,
            } => (codes.len(), Some((scales, *group))),
            Weights::Fp8 {
                codes,
                scales,
                group,
            } => (codes.len(), Some((scales, *group))),
            Weights::Int4 {
                packed,
                scales,
                zeros,
                group,
            } => {
                if !cols.is_multiple_of(2) || !group.is_multiple_of(2) {
                    return Err(KernelError::shape(format!(
                        "INT4 needs an even number of cols and an even group, got {cols} and {group}"
                    )));
                }
                if zeros.len() != scales.len() {
                    return Err(KernelError::shape(format!(
                        "zeros: got {}, expected one per scale ({})",
                        zeros.len(),
                        scales.len()
                    )));
                }
                if let Some(i) = zeros.iter().position(|&z| z > 15) {
                    return Err(KernelError::shape(format!(
                        "zero point {} at {i} is not a 4-bit value",
                        zeros[i]
                    )));
                }
                // Two elements per byte: compare in elements.
                (packed.len() * 2, Some((scales, *group)))
            }
        };
        if len != n {
            return Err(KernelError::shape(format!(
                "weights: got {len} elements, expected {rows}x{cols} = {n}"
            )));
        }
        let mut row_sums = Vec::new();
        if let Some((scales, group)) = scaled {
            if group == 0 || !cols.is_multiple_of(group) {
                return Err(KernelError::shape(format!(
                    "group {group} must be positive and divide cols {cols}"
                )));
            }
            let groups = cols / group;
            if scales.len() != rows * groups {
                return Err(KernelError::shape(format!(
                    "scales: got {}, expected {rows} rows x {groups} groups = {}",
                    scales.len(),
                    rows * groups
                )));
            }
            if let Some(i) = scales.iter().position(|s| !s.is_finite()) {
                return Err(KernelError::shape(format!(
                    "scale {} of row {}, group {} is not finite",
                    scales[i],
                    i / groups,
                    i % groups
                )));
            }
            if let Weights::Int8 { codes, .. } = &weights {
                if group == cols && cols > 0 {
                    row_sums = codes
                        .chunks_exact(cols)
                        .map(|r| r.iter().fold(0i32, |s, &c| s.wrapping_add(i32::from(c))))
                        .collect();
                }
            }
        }
        Ok(Matrix {
            rows,
            cols,
            weights,
            row_sums,
        })
    }

    /// Output features `n`.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features `k`.
    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// Bytes read from the weights by one product: codes (or dense values) plus scales.
    pub fn weight_bytes(&self) -> usize {
        match &self.weights {
            Weights::F32(v) => v.len() * 4,
            Weights::F16(v) => v.len() * 2,
            Weights::Bf16(v) => v.len() * 2,
            Weights::Int8 { codes, scales, .. } => codes.len() + scales.len() * 4,
            Weights::Fp8 { codes, scales, .. } => codes.len() + scales.len() * 4,
            Weights::Int4 {
                packed,
                scales,
                zeros,
                ..
            } => packed.len() + scales.len() * 4 + zeros.len(),
        }
    }

    /// Row `r` dequantized to f32, exactly the weights the products use:
    /// `value(code) * scale` rounded once (dense kinds are widened exactly; FP8 NaN codes read as
    /// ±[`FP8_NAN_CODE_VALUE`]). For embedding lookups with tied embeddings.
    ///
    /// # Panics
    /// If `r >= rows` or `out.len() != cols`.
    pub fn row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows, "row {r} out of range ({} rows)", self.rows);
        assert_eq!(out.len(), self.cols, "row: out must hold cols elements");
        if self.cols == 0 {
            return;
        }
        Backends::new(Isa::detect().usable()).decode_row(self, r, out);
    }

    /// Columns per scale group (`cols` for dense weights).
    fn group(&self) -> usize {
        match &self.weights {
            Weights::Int8 { group, .. }
            | Weights::Fp8 { group, .. }
            | Weights::Int4 { group, .. } => *group,
            _ => self.cols,
        }
    }

    /// All scales (`rows x cols / group`), `None` for dense weights.
    fn scales(&self) -> Option<&[f32]> {
        match &self.weights {
            Weights::Int8 { scales, .. }
            | Weights::Fp8 { scales, .. }
            | Weights::Int4 { scales, .. } => Some(scales),
            _ => None,
        }
    }

    /// Scales of row `r` (one per group), `None` for dense weights.
    fn row_scales(&self, r: usize) -> Option<&[f32]> {
        let groups = self.cols / self.group();
        self.scales().map(|s| &s[r * groups..(r + 1) * groups])
    }

    /// Bytes of one stored row (codes and scales).
    fn row_bytes(&self) -> usize {
        self.weight_bytes() / self.rows.max(1)
    }
}

/// How activations enter the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activations {
    /// `x` used as f32: dense weights and weight-only quantization ("W8A16", FP8 weight-only).
    F32,
    /// W8A8 INT8: each row `x_t` is quantized on the fly, `s_t = absmax(x_t) / 127`,
    /// `xq = round_half_even(x * (1 / s_t))`, which lies in [-127, 127] (checked in debug builds), and
    /// `y[t, n] = (s_t * scale_n) * (exact i32 dot of xq and the codes of row n) as f32`.
    ///
    /// Only for [`Weights::Int8`] with `group == cols` (per channel) and
    /// `cols <= INT8_PER_TOKEN_MAX_COLS`; otherwise [`KernelError::Shape`].
    Int8PerToken,
}

/// Reusable buffers of [`matmul`] (quantized or transposed activations). They grow on first use
/// and are then reused, so a warm `Scratch` makes calls allocation-free; per-thread buffers
/// (decoded weight tiles, output staging) live in thread-locals that grow the same way.
#[derive(Debug, Default)]
pub struct Scratch {
    /// `x` transposed into panels of `P` tokens: `[token block][k][P]`, zero-padded.
    xt: Vec<f32>,
    /// INT8 activation codes, `m x k`.
    xq: Vec<i8>,
    /// Per-token activation scales `s_t` (NaN for rows with a non-finite value, 0 for zero rows).
    xs: Vec<f32>,
    /// `x` rounded to bf16 for INT4 weights, `m x k`.
    xb: Vec<f32>,
}

/// `y[t, n] = sum_j x[t, j] * W[n, j]` for `t < m`, `n < w.rows()`; see [`Activations`].
///
/// `x` is `m x w.cols()` and `y` is `m x w.rows()`, both row-major. If `isa` is not supported by
/// this CPU, the best supported one is used.
///
/// Non-finite activations follow IEEE arithmetic with [`Activations::F32`]: a NaN in `x_t` makes
/// row `t` of `y` NaN, an infinity gives ±Inf or NaN there (which one may depend on summation
/// order, hence on the ISA); other rows are unaffected. With [`Activations::Int8PerToken`] a row
/// `x_t` holding NaN or ±Inf gives a NaN row `t`, and a row whose `s_t` is 0 (all zeros) or whose
/// `1 / s_t` overflows (`absmax < ~4e-37`) gives a zero row.
///
/// Errors: [`KernelError::Shape`] if `x.len() != m * cols`, `y.len() != m * rows`, or
/// `Int8PerToken` is asked for weights it does not support.
pub fn matmul(
    isa: Isa,
    w: &Matrix,
    x: &[f32],
    m: usize,
    y: &mut [f32],
    act: Activations,
    scratch: &mut Scratch,
) -> Result<(), KernelError> {
    let (rows, cols) = (w.rows, w.cols);
    if Some(x.len()) != m.checked_mul(cols) {
        return Err(KernelError::shape(format!(
            "x: got {} elements, expected m x cols = {m}x{cols}",
            x.len()
        )));
    }
    if Some(y.len()) != m.checked_mul(rows) {
        return Err(KernelError::shape(format!(
            "y: got {} elements, expected m x rows = {m}x{rows}",
            y.len()
        )));
    }
    let u = isa.usable();
    match act {
        Activations::F32 => {
            if m == 0 || rows == 0 {
                return Ok(());
            }
            if cols == 0 {
                y.fill(0.0);
                return Ok(());
            }
            // W4A16: INT4 weights take 16-bit activations, rounded to bf16 here for every
            // backend (see `Weights::Int4`).
            let mut rounded = std::mem::take(&mut scratch.xb);
            let x = if matches!(w.weights, Weights::Int4 { .. }) {
                grow(&mut rounded, m * cols, 0.0);
                round_to_bf16(x, &mut rounded[..m * cols]);
                &rounded[..m * cols]
            } else {
                x
            };
            match Backends::new(u) {
                Backends::Scalar => scalar::matmul_f32(w, x, m, y),
                #[cfg(target_arch = "x86_64")]
                Backends::Avx2(b) => split::matmul_f32(b, w, x, m, y, scratch),
                #[cfg(target_arch = "x86_64")]
                Backends::Avx512(b) => split::matmul_f32(b, w, x, m, y, scratch),
            }
            scratch.xb = rounded;
        }
        Activations::Int8PerToken => {
            check_int8_per_token(w)?;
            if m == 0 || rows == 0 {
                return Ok(());
            }
            quantize_activations(u, x, m, cols, scratch);
            let (xq, xs) = (&scratch.xq[..m * cols], &scratch.xs[..m]);
            match Backends::new(u) {
                Backends::Scalar => scalar::matmul_int8(w, xq, xs, m, y),
                #[cfg(target_arch = "x86_64")]
                Backends::Avx2(b) => split::matmul_int8(b, w, xq, xs, m, y),
                #[cfg(target_arch = "x86_64")]
                Backends::Avx512(b) => split::matmul_int8(b, w, xq, xs, m, y),
            }
        }
    }
    Ok(())
}

/// `out[i]` = `x[i]` rounded to the nearest bf16 (ties to even; NaN stays NaN).
fn round_to_bf16(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = bf16::from_f32(v).to_f32();
    }
}

fn check_int8_per_token(w: &Matrix) -> Result<(), KernelError> {
    match &w.weights {
        Weights::Int8 { group, .. } if *group == w.cols => {}
        Weights::Int8 { group, .. } => {
            return Err(KernelError::shape(format!(
                "Int8PerToken needs per-channel INT8 weights (group == cols {}), got group {group}",
                w.cols
            )))
        }
        _ => {
            return Err(KernelError::shape(
                "Int8PerToken needs INT8 weights (Weights::Int8)",
            ))
        }
    }
    if w.cols > INT8_PER_TOKEN_MAX_COLS {
        return Err(KernelError::shape(format!(
            "Int8PerToken supports at most {INT8_PER_TOKEN_MAX_COLS} cols (exact i32 dot), got {}",
            w.cols
        )));
    }
    Ok(())
}

/// Per-token INT8 quantization of `x` into `scratch.xq` / `scratch.xs` (see
/// [`Activations::Int8PerToken`]), with the crate's bit-identical quantizer kernels.
fn quantize_activations(u: Usable, x: &[f32], m: usize, cols: usize, scratch: &mut Scratch) {
    grow(&mut scratch.xq, m * cols, 0);
    grow(&mut scratch.xs, m, 0.0);
    let xq = &mut scratch.xq[..m * cols];
    for ((row, q), s) in x
        .chunks_exact(cols.max(1))
        .zip(xq.chunks_exact_mut(cols.max(1)))
        .zip(&mut scratch.xs[..m])
    {
        let stats = dispatch::row_stats(u, Src::F32(row));
        let scale = stats.absmax / 127.0;
        let inv = 1.0 / scale;
        if stats.first_non_finite.is_some() {
            q.fill(0);
            *s = f32::NAN;
        } else if scale == 0.0 || !inv.is_finite() {
            q.fill(0);
            *s = 0.0;
        } else {
            dispatch::quantize_int8(u, Src::F32(row), inv, q);
            // |x| * (127 / absmax) <= 127 up to one rounding, so -128 cannot occur; the integer
            // dots rely on that (sign flips and the i32 bound assume |xq| <= 127).
            debug_assert!(!q.contains(&i8::MIN), "activation code -128 in row");
            *s = scale;
        }
    }
}

/// Resizes `v` to at least `len` (never shrinks, so warm buffers are not reallocated).
fn grow<T: Clone>(v: &mut Vec<T>, len: usize, fill: T) {
    if v.len() < len {
        v.resize(len, fill);
    }
}

/// Columns per block of the decoded-weight matrix-matrix path; also the row stride of the
/// per-thread decoded tile, so the kernels address its rows with constant offsets.
const KC: usize = 256;

/// The SIMD operations the drivers in [`split`] are generic over. Implementations are zero-cost
/// tokens that can only be built for an ISA the CPU supports, which is what makes their safe
/// methods sound; each method checks its slice bounds once, outside the hot loops.
pub(crate) trait Backend: Copy + Send + Sync {
    /// Tokens per packed activation panel in the matrix-matrix kernel (two vectors).
    const P: usize;
    /// Weight rows per register tile of the matrix-matrix kernel.
    const NR: usize;

    /// `out[t * nr + j] = sum_c x[t * cols + c] * W[r0 + j, c]` for `t < tokens`, `j < nr`:
    /// weights decoded in registers (once per two tokens), each group summed in f32 then scaled.
    fn gemv(self, w: &Matrix, r0: usize, nr: usize, x: &[f32], tokens: usize, out: &mut [f32]);

    /// As [`Backend::gemv`] for `nr` dense f32 rows of `cols` given directly (`rows[j * cols +
    /// c]`): the INT4 path's decoded rows.
    fn gemv_dense_rows(
        self,
        rows: &[f32],
        cols: usize,
        nr: usize,
        x: &[f32],
        tokens: usize,
        out: &mut [f32],
    );

    /// `out[j * ld + i] = W[r0 + j, k0 + i]` for `j < nr`, `i < kc`, exactly (value times
    /// scale, one rounding).
    #[allow(clippy::too_many_arguments)]
    fn decode_rows(
        self,
        w: &Matrix,
        r0: usize,
        nr: usize,
        k0: usize,
        kc: usize,
        out: &mut [f32],
        ld: usize,
    );

    /// `c[j * ldc + t] (+)= sum_kk panel[kk * P + t] * wt[j * KC + kk]` for `j < NR`, `kk < kc`,
    /// `t < half * P / 2` (`half` = 1 or 2 vectors of tokens); overwrites when `first`.
    #[allow(clippy::too_many_arguments)]
    fn gemm_tile(
        self,
        panel: &[f32],
        kc: usize,
        half: usize,
        wt: &[f32],
        c: &mut [f32],
        ldc: usize,
        first: bool,
    );

    /// `out[t * nr + j] = sum_c xq[t * cols + c] * codes[r0 + j, c]` exactly, for `t < tokens`,
    /// `j < nr`; `w` must be INT8 per channel.
    fn int8_dots(self, w: &Matrix, r0: usize, nr: usize, xq: &[i8], tokens: usize, out: &mut [i32]);
}

/// The backend for a [`Usable`] ISA.
#[derive(Clone, Copy)]
enum Backends {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2(avx2::Avx2),
    #[cfg(target_arch = "x86_64")]
    Avx512(avx512::Avx512),
}

impl Backends {
    fn new(u: Usable) -> Backends {
        match u.isa() {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Backends::Avx512(avx512::Avx512::new(u)),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Backends::Avx2(avx2::Avx2::new(u)),
            _ => Backends::Scalar,
        }
    }

    /// One whole row, `out.len() == cols`.
    fn decode_row(self, w: &Matrix, row: usize, out: &mut [f32]) {
        let cols = out.len();
        match self {
            Backends::Scalar => scalar::decode(w, row, 0, out),
            #[cfg(target_arch = "x86_64")]
            Backends::Avx2(b) => b.decode_rows(w, row, 1, 0, cols, out, cols),
            #[cfg(target_arch = "x86_64")]
            Backends::Avx512(b) => b.decode_rows(w, row, 1, 0, cols, out, cols),
        }
    }
}

#[cfg(test)]
mod tests;
