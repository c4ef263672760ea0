//! Routes each element-level kernel to the version for a [`Usable`] ISA.
//!
//! The SIMD entry points are `unsafe` only because they use `#[target_feature]`; they bound every
//! access by the slice lengths themselves. A [`Usable`] is built only for ISAs the CPU supports,
//! which is what makes each call below sound.

#[cfg(target_arch = "x86_64")]
use crate::{avx2, avx512};
use crate::{isa::Usable, scalar, Isa, RowStats, Src};

pub(crate) fn row_stats(u: Usable, src: Src) -> RowStats {
    if u.isa() == Isa::Scalar {
        return scalar::row_stats(src);
    }
    let mut max_bits = [0];
    absmax_bits_segments(u, src, src.len().max(1), &mut max_bits);
    match absmax_from_bits(src, max_bits[0]) {
        Some(absmax) => RowStats {
            absmax,
            first_non_finite: None,
        },
        // The reference scan finds the first non-finite index and keeps the result identical to
        // `Isa::Scalar`; this is an error path.
        None => scalar::row_stats(src),
    }
}

/// `acc[j] = max(acc[j], bits)` where `bits` is the largest sign-cleared bit pattern of segment
/// `j` (`seg` elements; the last may be shorter). See [`absmax_from_bits`].
///
/// # Panics
/// If `seg == 0`.
pub(crate) fn absmax_bits_segments(u: Usable, src: Src, seg: usize, acc: &mut [u32]) {
    assert!(seg > 0, "segment length must be positive");
    match u.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: `u` holds Avx512 only if this CPU has AVX-512 F/BW/VL (see `Isa::usable`),
            // and `seg > 0` was checked above.
            unsafe { avx512::absmax_bits_segments(src, seg, acc) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: `u` holds Avx2 only if this CPU has AVX2/FMA/F16C (see `Isa::usable`), and
            // `seg > 0` was checked above.
            unsafe { avx2::absmax_bits_segments(src, seg, acc) }
        }
        _ => scalar::absmax_bits_segments(src, seg, acc),
    }
}

/// The absmax that a largest sign-cleared bit pattern of `src`'s dtype stands for, or `None` if
/// the pattern is Inf/NaN (exponent all ones).
///
/// Non-negative floats order like their bit patterns, so an integer maximum over `|bits|` is the
/// float maximum of `|x|`, and any non-finite value surfaces as a pattern above the finite ones.
pub(crate) fn absmax_from_bits(src: Src, max_bits: u32) -> Option<f32> {
    match src {
        Src::F32(_) if max_bits < 0x7F80_0000 => Some(f32::from_bits(max_bits)),
        Src::F16(_) if max_bits < 0x7C00 => Some(half::f16::from_bits(max_bits as u16).to_f32()),
        Src::Bf16(_) if max_bits < 0x7F80 => Some(f32::from_bits(max_bits << 16)),
        _ => None,
    }
}

pub(crate) fn quantize_int8(u: Usable, src: Src, inv_scale: f32, out: &mut [i8]) {
    quantize_int8_segments(u, src, src.len().max(1), &[inv_scale], out);
}

pub(crate) fn quantize_fp8(u: Usable, src: Src, inv_scale: f32, out: &mut [u8]) {
    quantize_fp8_segments(u, src, src.len().max(1), &[inv_scale], out);
}

/// INT8 codes of each `seg`-element segment `j` of `src` (last may be shorter) with `invs[j]`.
///
/// # Panics
/// If `seg == 0`.
pub(crate) fn quantize_int8_segments(
    u: Usable,
    src: Src,
    seg: usize,
    invs: &[f32],
    out: &mut [i8],
) {
    assert!(seg > 0, "segment length must be positive");
    match u.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: `u` holds Avx512 only if this CPU has AVX-512 F/BW/VL (see `Isa::usable`),
            // and `seg > 0` was checked above.
            unsafe { avx512::quantize_int8(src, seg, invs, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: `u` holds Avx2 only if this CPU has AVX2/FMA/F16C (see `Isa::usable`), and
            // `seg > 0` was checked above.
            unsafe { avx2::quantize_int8(src, seg, invs, out) }
        }
        _ => {
            for (j, (o, &inv)) in out.chunks_mut(seg).zip(invs).enumerate() {
                scalar::quantize_int8(src.slice(j * seg..j * seg + o.len()), inv, o);
            }
        }
    }
}

/// FP8 codes of each `seg`-element segment `j` of `src` (last may be shorter) with `invs[j]`.
///
/// # Panics
/// If `seg == 0`.
pub(crate) fn quantize_fp8_segments(u: Usable, src: Src, seg: usize, invs: &[f32], out: &mut [u8]) {
    assert!(seg > 0, "segment length must be positive");
    match u.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: `u` holds Avx512 only if this CPU has AVX-512 F/BW/VL (see `Isa::usable`),
            // and `seg > 0` was checked above.
            unsafe { avx512::quantize_fp8(src, seg, invs, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: `u` holds Avx2 only if this CPU has AVX2/FMA/F16C (see `Isa::usable`), and
            // `seg > 0` was checked above.
            unsafe { avx2::quantize_fp8(src, seg, invs, out) }
        }
        _ => {
            for (j, (o, &inv)) in out.chunks_mut(seg).zip(invs).enumerate() {
                scalar::quantize_fp8(src.slice(j * seg..j * seg + o.len()), inv, o);
            }
        }
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
