//! Scalar reference kernels and the FP8 E4M3 conversions.
//!
//! These define the results; the SIMD versions must match them bit for bit. They are written for
//! clarity rather than speed (the compiler still vectorises the simple loops).

use crate::{RowStats, Src};

/// Bits of 448.0, the largest finite E4M3 value; every finite magnitude above it saturates here.
pub(crate) const FP8_MAX_BITS: u32 = 0x43E0_0000;
/// Bits of 2^-6, the smallest normal E4M3 magnitude.
pub(crate) const FP8_MIN_NORMAL_BITS: u32 = 0x3C80_0000;
/// E4M3 magnitude code of NaN; a NaN input keeps its sign (`0x7F` or `0xFF`), as PyTorch does.
pub(crate) const FP8_NAN: u8 = 0x7F;
/// `(127 - 7) << 3`: f32 exponent bias minus E4M3 bias, aligned to the exponent field of
/// `bits >> 20` (which is `exponent << 3 | top 3 mantissa bits`).
pub(crate) const FP8_BIAS_SHIFT: u32 = 120 << 3;

/// f32 bit patterns of all 256 E4M3 codes, built at compile time.
static FP8_TO_F32_BITS: [u32; 256] = fp8_table();

const fn fp8_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = fp8_decode_bits(c as u8);
        c += 1;
    }
    t
}

/// E4M3 "fn" layout: `s eeee mmm`, bias 7. `e > 0`: `(-1)^s 2^(e-7) (1 + m/8)`;
/// `e = 0`: `(-1)^s 2^-6 (m/8)` (subnormal); `eeee mmm = 1111 111`: NaN (quiet NaN, sign kept).
const fn fp8_decode_bits(code: u8) -> u32 {
    let sign = ((code as u32) & 0x80) << 24;
    let mag = (code & 0x7F) as u32;
    let (e, m) = (mag >> 3, mag & 7);
    if mag == 0x7F {
        sign | 0x7FC0_0000
    } else if e > 0 {
        // Rebias the exponent (7 -> 127) and left-align the 3 mantissa bits.
        sign | ((e + 120) << 23) | (m << 20)
    } else if m == 0 {
        sign
    } else {
        // m * 2^-9 is a normal f32: its leading bit sets the exponent, the rest is mantissa.
        let p = 31 - m.leading_zeros();
        sign | ((127 - 9 + p) << 23) | ((m - (1 << p)) << (23 - p))
    }
}

/// Exact value of an E4M3 "fn" code (`0x7F`/`0xFF` are NaN).
pub fn fp8_e4m3_to_f32(code: u8) -> f32 {
    f32::from_bits(FP8_TO_F32_BITS[code as usize])
}

/// Nearest E4M3 "fn" code to `x`, ties to even.
///
/// Finite values beyond ±448 and ±Inf saturate to `0x7E`/`0xFE`; NaN gives `0x7F`, or `0xFF` when
/// its sign bit is set; signed zeros keep their sign (`-0.0 -> 0x80`). Magnitudes below 2^-6 become subnormal codes `m * 2^-9`.
pub fn f32_to_fp8_e4m3(x: f32) -> u8 {
    let bits = x.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let abs = bits & 0x7FFF_FFFF;
    if abs > 0x7F80_0000 {
        return sign | FP8_NAN;
    }
    // For non-negative floats, integer order is numeric order, so this clamps to 448.
    let a = abs.min(FP8_MAX_BITS);
    let mag = if a < FP8_MIN_NORMAL_BITS {
        // |x| * 512 is exact and lies in [0, 8); 8 is the first normal code, so the ranges meet.
        round_half_even_small(f32::from_bits(a) * 512.0) as u32
    } else {
        // Round the 23-bit mantissa to 3 bits, half to even; a carry bumps the exponent correctly.
        let rounded = a + 0x7FFFF + ((a >> 20) & 1);
        (rounded >> 20) - FP8_BIAS_SHIFT
    };
    sign | mag as u8
}

/// INT8 code of an already scaled value: round half even, saturate; NaN gives 0.
#[inline]
pub(crate) fn int8_code(y: f32) -> i8 {
    // Clamping to the integer bounds first keeps the rounding input small; NaN passes through
    // `clamp` and the `as` cast maps it to 0, which is the contract.
    round_half_even_small(y.clamp(-128.0, 127.0)) as i8
}

/// `x` rounded to the nearest integer, ties to even, for `|x| <= 2^22` (or NaN).
///
/// `f32::round_ties_even` becomes a libm call on baseline x86_64 (no SSE4.1 `roundss`), which
/// made the reference 10x slower. Adding 1.5 * 2^23 pushes the fraction bits out of the mantissa,
/// so the hardware's round-to-nearest-even does the rounding and the subtraction is exact.
#[inline]
fn round_half_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// Applies `f` to every element widened to f32, writing `out[i] = f(x[i])`.
#[inline]
fn map_src<Q>(src: Src, out: &mut [Q], f: impl Fn(f32) -> Q) {
    match src {
        Src::F32(s) => s.iter().zip(out).for_each(|(&x, o)| *o = f(x)),
        Src::F16(s) => s.iter().zip(out).for_each(|(x, o)| *o = f(x.to_f32())),
        Src::Bf16(s) => s.iter().zip(out).for_each(|(x, o)| *o = f(x.to_f32())),
    }
}

/// `absmax = max |x|` over finite `x`; `first_non_finite` = index of the first NaN/±Inf.
pub(crate) fn row_stats(src: Src) -> RowStats {
    match src {
        Src::F32(s) => stats_of(s.iter().copied()),
        Src::F16(s) => stats_of(s.iter().map(|x| x.to_f32())),
        Src::Bf16(s) => stats_of(s.iter().map(|x| x.to_f32())),
    }
}

fn stats_of(values: impl Iterator<Item = f32>) -> RowStats {
    let mut absmax = 0.0f32;
    let mut first_non_finite = None;
    for (i, x) in values.enumerate() {
        if x.is_finite() {
            absmax = absmax.max(x.abs());
        } else if first_non_finite.is_none() {
            first_non_finite = Some(i);
        }
    }
    RowStats {
        absmax,
        first_non_finite,
    }
}

/// `acc[j] = max(acc[j], max |bits|)` over the `seg`-element segments of `src`, where `|bits|`
/// clears the sign bit of the stored pattern (f32, or f16/bf16 as u16): the same integer maximum
/// the SIMD versions compute, interpreted by `dispatch::absmax_from_bits`.
pub(crate) fn absmax_bits_segments(src: Src, seg: usize, acc: &mut [u32]) {
    fn fold<T>(xs: &[T], seg: usize, acc: &mut [u32], bits: impl Fn(&T) -> u32) {
        for (a, c) in acc.iter_mut().zip(xs.chunks(seg)) {
            *a = c.iter().fold(*a, |m, x| m.max(bits(x)));
        }
    }
    match src {
        Src::F32(s) => fold(s, seg, acc, |x| x.to_bits() & 0x7FFF_FFFF),
        Src::F16(s) => fold(s, seg, acc, |x| u32::from(x.to_bits() & 0x7FFF)),
        Src::Bf16(s) => fold(s, seg, acc, |x| u32::from(x.to_bits() & 0x7FFF)),
    }
}

/// `out[i] = int8_code(x[i] * inv_scale)`.
pub(crate) fn quantize_int8(src: Src, inv_scale: f32, out: &mut [i8]) {
    map_src(src, out, |x| int8_code(x * inv_scale));
}

/// `out[i] = f32_to_fp8_e4m3(x[i] * inv_scale)`.
pub(crate) fn quantize_fp8(src: Src, inv_scale: f32, out: &mut [u8]) {
    map_src(src, out, |x| f32_to_fp8_e4m3(x * inv_scale));
}

/// `out[i] = q[i] as f32 * scale`.
pub(crate) fn dequantize_int8(q: &[i8], scale: f32, out: &mut [f32]) {
    for (&c, o) in q.iter().zip(out) {
        *o = f32::from(c) * scale;
    }
}

/// `out[i] = fp8_e4m3_to_f32(q[i]) * scale`.
pub(crate) fn dequantize_fp8(q: &[u8], scale: f32, out: &mut [f32]) {
    for (&c, o) in q.iter().zip(out) {
        *o = fp8_e4m3_to_f32(c) * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_rounding_equals_round_ties_even() {
        let mut x = -300.0f32;
        while x <= 300.0 {
            for v in [x, x.next_up(), x.next_down()] {
                assert_eq!(round_half_even_small(v), v.round_ties_even(), "{v}");
            }
            x += 0.25;
        }
        for v in [
            0.5f32, 1.5, 2.5, -0.5, -2.5, 4194303.5, 4194304.0, 1e-30, 7.5,
        ] {
            assert_eq!(round_half_even_small(v), v.round_ties_even(), "{v}");
        }
    }

    #[test]
    fn int8_code_saturates_and_zeroes_nan() {
        assert_eq!(int8_code(f32::NAN), 0);
        assert_eq!(int8_code(f32::INFINITY), 127);
        assert_eq!(int8_code(f32::NEG_INFINITY), -128);
        assert_eq!(int8_code(127.5), 127);
        assert_eq!(int8_code(-128.5), -128);
        assert_eq!(int8_code(-127.5), -128);
        assert_eq!(int8_code(126.5), 126);
    }
}
