//! CPU quantization kernels for temper.
//!
//! Every kernel exists as a scalar reference ([`Isa::Scalar`]) and, on x86_64, as AVX2 and AVX-512
//! versions. The SIMD versions are **bit-identical** to the reference for every input (NaN, ±Inf,
//! ±0, subnormals, ties, saturation), so which one runs is purely a speed question:
//! [`Isa::detect`] picks the best one once per process.
//!
//! Element-level kernels ([`row_stats`], [`quantize_int8`], [`quantize_fp8`], [`dequantize_int8`],
//! [`dequantize_fp8`]) work on one contiguous run of values. Matrix-level helpers
//! ([`quantize_int8_rows`], [`quantize_fp8_rows`], [`quantize_fp8_blocks`], [`tensor_stats`]) split
//! whole row-major tensors across rayon's thread pool.
//!
//! Conventions shared by all versions:
//! - codes are computed as `x * inv_scale` (a multiply, never a divide), so versions agree exactly;
//! - rounding is round-half-to-even;
//! - a NaN input becomes INT8 code `0` and FP8 code `0x7F` (`0xFF` if its sign bit is set, as in
//!   PyTorch's `float8_e4m3fn` cast); the pipeline rejects non-finite weights before quantizing,
//!   so this only has to be defined, not meaningful;
//! - the element-level kernels panic if their slices differ in length (a caller bug).
//!
//! [`matmul`] holds the products the model runtime runs on these weights (dense, weight-only
//! INT8/FP8, and W8A8 INT8), with the same scalar/AVX2/AVX-512 structure.
//!
//! All versions assume the default floating-point environment (round-to-nearest, no FTZ/DAZ),
//! which Rust never changes.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod dispatch;
mod error;
mod isa;
pub mod matmul;
mod matrix;
mod scalar;
pub mod scale;

use std::ops::Range;

pub use error::KernelError;
pub use half::{bf16, f16};
pub use isa::Isa;
pub use matrix::{
    quantize_fp8_blocks, quantize_fp8_rows, quantize_int8_rows, tensor_stats, ScaleFor,
};
pub use scalar::{f32_to_fp8_e4m3, fp8_e4m3_to_f32};
pub use scale::{round_scale_up, scale_for, ScaleDtype};

/// Largest finite FP8 E4M3 ("fn") magnitude.
pub const FP8_E4M3_MAX: f32 = 448.0;

/// A row (or any contiguous run) of source weights in their stored dtype.
///
/// Values are widened to f32 exactly before any arithmetic.
#[derive(Clone, Copy, Debug)]
pub enum Src<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
}

impl<'a> Src<'a> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Src::F32(s) => s.len(),
            Src::F16(s) => s.len(),
            Src::Bf16(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sub-run `range`.
    ///
    /// # Panics
    /// If `range` is out of bounds, like slice indexing.
    pub fn slice(&self, range: Range<usize>) -> Src<'a> {
        match *self {
            Src::F32(s) => Src::F32(&s[range]),
            Src::F16(s) => Src::F16(&s[range]),
            Src::Bf16(s) => Src::Bf16(&s[range]),
        }
    }

    /// Size of one element in bytes (4 or 2).
    pub fn bytes_per_elem(&self) -> usize {
        match self {
            Src::F32(_) => 4,
            Src::F16(_) | Src::Bf16(_) => 2,
        }
    }

    /// Element `i` widened to f32.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Src::F32(s) => s[i],
            Src::F16(s) => s[i].to_f32(),
            Src::Bf16(s) => s[i].to_f32(),
        }
    }
}

impl<'a> From<&'a [f32]> for Src<'a> {
    fn from(s: &'a [f32]) -> Self {
        Src::F32(s)
    }
}

impl<'a> From<&'a [f16]> for Src<'a> {
    fn from(s: &'a [f16]) -> Self {
        Src::F16(s)
    }
}

impl<'a> From<&'a [bf16]> for Src<'a> {
    fn from(s: &'a [bf16]) -> Self {
        Src::Bf16(s)
    }
}

/// Magnitude statistics of one run of values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowStats {
    /// `max |x|` over the finite values (0 for an empty run or all zeros).
    pub absmax: f32,
    /// Index of the first NaN or ±Inf, if any.
    pub first_non_finite: Option<usize>,
}

/// `absmax = max |x[i]|` over finite `x[i]`, and the index of the first non-finite value.
///
/// If `isa` is not supported by this CPU, the best supported one is used (results are identical).
pub fn row_stats(isa: Isa, src: Src) -> RowStats {
    dispatch::row_stats(isa.usable(), src)
}

/// `out[i] = clamp(round_half_even(x[i] * inv_scale), -128, 127) as i8`; NaN gives 0.
///
/// # Panics
/// If `src.len() != out.len()`.
pub fn quantize_int8(isa: Isa, src: Src, inv_scale: f32, out: &mut [i8]) {
    assert_eq!(
        src.len(),
        out.len(),
        "quantize_int8: src and out lengths differ"
    );
    dispatch::quantize_int8(isa.usable(), src, inv_scale, out);
}

/// `out[i] = f32_to_fp8_e4m3(x[i] * inv_scale)`: OCP E4M3 "fn" codes, round-half-even,
/// out-of-range values and ±Inf saturate to ±448 (`0x7E`/`0xFE`), NaN gives `0x7F` (`0xFF` if
/// its sign bit is set).
///
/// # Panics
/// If `src.len() != out.len()`.
pub fn quantize_fp8(isa: Isa, src: Src, inv_scale: f32, out: &mut [u8]) {
    assert_eq!(
        src.len(),
        out.len(),
        "quantize_fp8: src and out lengths differ"
    );
    dispatch::quantize_fp8(isa.usable(), src, inv_scale, out);
}

/// `out[i] = q[i] as f32 * scale`.
///
/// # Panics
/// If `q.len() != out.len()`.
pub fn dequantize_int8(isa: Isa, q: &[i8], scale: f32, out: &mut [f32]) {
    assert_eq!(
        q.len(),
        out.len(),
        "dequantize_int8: q and out lengths differ"
    );
    dispatch::dequantize_int8(isa.usable(), q, scale, out);
}

/// `out[i] = fp8_e4m3_to_f32(q[i]) * scale` (NaN codes stay NaN).
///
/// # Panics
/// If `q.len() != out.len()`.
pub fn dequantize_fp8(isa: Isa, q: &[u8], scale: f32, out: &mut [f32]) {
    assert_eq!(
        q.len(),
        out.len(),
        "dequantize_fp8: q and out lengths differ"
    );
    dispatch::dequantize_fp8(isa.usable(), q, scale, out);
}
