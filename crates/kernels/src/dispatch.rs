//! Routes each element-level kernel to the version for a [`Usable`] ISA.
//!
//! The SIMD entry points are `unsafe` only because they use `#[target_feature]`; they bound every
//! access by the slice lengths themselves. A [`Usable`] is built only for ISAs the CPU supports,
//! which is what makes each call below sound.

#[cfg(target_arch = "x86_64")]
use crate::{avx2, avx512, Isa};
use crate::{isa::Usable, scalar, RowStats, Src};

pub(crate) fn row_stats(u: Usable, src: Src) -> RowStats {
    match u.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: `u` holds Avx512 only if this CPU has AVX-512 F/BW/VL (see `Isa::usable`).
            finish_stats(src, unsafe { avx512::absmax_bits(src) })
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: `u` holds Avx2 only if this CPU has AVX2/FMA/F16C (see `Isa::usable`).
            finish_stats(src, unsafe { avx2::absmax_bits(src) })
        }
        _ => scalar::row_stats(src),
    }
}

/// Turns the largest `|x|` bit pattern found by a SIMD scan into [`RowStats`].
///
/// Non-negative floats order like their bit patterns, so the largest pattern is the absmax unless
/// it encodes Inf/NaN (exponent all ones). Then the reference scan runs instead: it finds the first
/// non-finite index and keeps the results identical to [`Isa::Scalar`]; this is an error path.
#[cfg(target_arch = "x86_64")]
fn finish_stats(src: Src, max_bits: u32) -> RowStats {
    let absmax = match src {
        Src::F32(_) if max_bits < 0x7F80_0000 => f32::from_bits(max_bits),
        Src::F16(_) if max_bits < 0x7C00 => half::f16::from_bits(max_bits as u16).to_f32(),
        Src::Bf16(_) if max_bits < 0x7F80 => f32::from_bits(max_bits << 16),
        _ => return scalar::row_stats(src),
    };
    RowStats {
        absmax,
        first_non_finite: None,
    }
}

pub(crate) fn quantize_int8(u: Usable, src: Src, inv_scale: f32, out: &mut [i8]) {
    match u.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: `u` holds Avx512 only if this CPU has AVX-512 F/BW/VL (see `Isa::usable`).
            unsafe { avx512::quantize_int8(src, inv_scale, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: `u` holds Avx2 only if this CPU has AVX2/FMA/F16C (see `Isa::usable`).
            unsafe { avx2::quantize_int8(src, inv_scale, out) }
        }
        _ => scalar::quantize_int8(src, inv_scale, out),
    }
}

pub(crate) fn quantize_fp8(u: Usable, src: Src, inv_scale: f32, out: &mut [u8]) {
    match u.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: `u` holds Avx512 only if this CPU has AVX-512 F/BW/VL (see `Isa::usable`).
            unsafe { avx512::quantize_fp8(src, inv_scale, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: `u` holds Avx2 only if this CPU has AVX2/FMA/F16C (see `Isa::usable`).
            unsafe { avx2::quantize_fp8(src, inv_scale, out) }
        }
        _ => scalar::quantize_fp8(src, inv_scale, out),
    }
}

pub(crate) fn dequantize_int8(u: Usable, q: &[i8], scale: f32, out: &mut [f32]) {
    match u.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: `u` holds Avx512 only if this CPU has AVX-512 F/BW/VL (see `Isa::usable`).
            unsafe { avx512::dequantize_int8(q, scale, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: `u` holds Avx2 only if this CPU has AVX2/FMA/F16C (see `Isa::usable`).
            unsafe { avx2::dequantize_int8(q, scale, out) }
        }
        _ => scalar::dequantize_int8(q, scale, out),
    }
}

pub(crate) fn dequantize_fp8(u: Usable, q: &[u8], scale: f32, out: &mut [f32]) {
    match u.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: `u` holds Avx512 only if this CPU has AVX-512 F/BW/VL (see `Isa::usable`).
            unsafe { avx512::dequantize_fp8(q, scale, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: `u` holds Avx2 only if this CPU has AVX2/FMA/F16C (see `Isa::usable`).
            unsafe { avx2::dequantize_fp8(q, scale, out) }
        }
        _ => scalar::dequantize_fp8(q, scale, out),
    }
}
