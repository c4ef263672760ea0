//! AVX2 (+ FMA + F16C) kernels: 8 f32 lanes per vector.
//!
//! AVX2 has no byte-granular masked stores, so a tail shorter than a block is copied into a
//! zero-padded stack block, run through the same vector code, and copied back; every element
//! therefore goes through the SIMD path, and nothing is allocated.
//!
//! Every function requires AVX2, FMA and F16C at run time (checked once by [`crate::Isa`]).
//! Results are bit-identical to [`crate::scalar`]; each lane helper states how.

use core::arch::x86_64::*;
use core::mem::size_of;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::scalar::{FP8_BIAS_SHIFT, FP8_MAX_BITS, FP8_MIN_NORMAL_BITS, FP8_NAN};
use crate::Src;

/// f32 lanes per vector.
const W: usize = 8;
/// Elements per quantize block: four vectors of codes pack into one 32-byte store.
const BLOCK: usize = 32;
/// Round to nearest, ties to even, from the instruction itself rather than MXCSR.
const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

/// Source dtypes that widen exactly to 8 f32 lanes.
trait Widen: Copy + Default {
    /// Loads 8 elements from `p` as f32.
    ///
    /// # Safety
    /// AVX2/FMA/F16C must be available and 8 elements readable at `p`.
    unsafe fn load(p: *const Self) -> __m256;
}

impl Widen for f32 {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable f32 at `p`.
        unsafe { _mm256_loadu_ps(p) }
    }
}

impl Widen for bf16 {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load(p: *const bf16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable bf16 (16 bytes) at `p`.
        let raw = unsafe { _mm_loadu_si128(p.cast()) };
        // bf16 is the top half of an f32: widening is a 16-bit shift, exact for every value.
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(raw)))
    }
}

impl Widen for f16 {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load(p: *const f16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable f16 (16 bytes) at `p`.
        let raw = unsafe { _mm_loadu_si128(p.cast()) };
        // VCVTPH2PS is exact for all values, subnormals included, and ignores MXCSR.DAZ.
        _mm256_cvtph_ps(raw)
    }
}

/// `acc[j] = max(acc[j], m_j)`, where `m_j` is the largest `|x|` bit pattern of the `j`-th
/// `seg`-element segment of `src` (the last may be shorter): `max(bits & 0x7FFF_FFFF)` for f32,
/// `max(bits & 0x7FFF)` for f16/bf16 (`dispatch::absmax_from_bits` turns it into the absmax).
/// One call per row keeps per-group call overhead out of the matrix loops.
///
/// # Safety
/// AVX2/FMA/F16C must be available; `seg > 0`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn absmax_bits_segments(src: Src, seg: usize, acc: &mut [u32]) {
    // SAFETY: the callees need only the features this function requires.
    unsafe {
        match src {
            Src::F32(s) => {
                for (a, c) in acc.iter_mut().zip(s.chunks(seg)) {
                    *a = (*a).max(absmax_bits_f32(c));
                }
            }
            Src::F16(s) => {
                for (a, c) in acc.iter_mut().zip(s.reinterpret_cast().chunks(seg)) {
                    *a = (*a).max(absmax_bits_u16(c));
                }
            }
            Src::Bf16(s) => {
                for (a, c) in acc.iter_mut().zip(s.reinterpret_cast().chunks(seg)) {
                    *a = (*a).max(absmax_bits_u16(c));
                }
            }
        }
    }
}

/// `max(bits(x[i]) & 0x7FFF_FFFF)`: integer max on sign-cleared bits orders like `|x|` and lets
/// Inf/NaN surface as patterns `>= 0x7F80_0000`. The < 8 element tail is folded in scalar code,
/// which is the same integer max.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn absmax_bits_f32(s: &[f32]) -> u32 {
    let keep = _mm256_set1_epi32(0x7FFF_FFFF);
    let mut acc = _mm256_setzero_si256();
    let mut chunks = s.chunks_exact(W);
    for c in &mut chunks {
        // SAFETY: `c` holds exactly 8 f32.
        let v = unsafe { _mm256_loadu_si256(c.as_ptr().cast()) };
        acc = _mm256_max_epu32(acc, _mm256_and_si256(v, keep));
    }
    let m = _mm_max_epu32(
        _mm256_castsi256_si128(acc),
        _mm256_extracti128_si256::<1>(acc),
    );
    let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
    let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
    let head = _mm_cvtsi128_si32(m) as u32;
    chunks
        .remainder()
        .iter()
        .fold(head, |m, x| m.max(x.to_bits() & 0x7FFF_FFFF))
}

/// `max(bits[i] & 0x7FFF)` over f16/bf16 bit patterns, 16 lanes at a time (half-precision
/// magnitudes also order like their bits, so no widening is needed).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn absmax_bits_u16(s: &[u16]) -> u32 {
    let keep = _mm256_set1_epi16(0x7FFF);
    let mut acc = _mm256_setzero_si256();
    let mut chunks = s.chunks_exact(2 * W);
    for c in &mut chunks {
        // SAFETY: `c` holds exactly 16 u16.
        let v = unsafe { _mm256_loadu_si256(c.as_ptr().cast()) };
        acc = _mm256_max_epu16(acc, _mm256_and_si256(v, keep));
    }
    let m = _mm_max_epu16(
        _mm256_castsi256_si128(acc),
        _mm256_extracti128_si256::<1>(acc),
    );
    let m = _mm_max_epu16(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
    let m = _mm_max_epu16(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
    let m = _mm_max_epu16(m, _mm_srli_epi32::<16>(m));
    let head = _mm_extract_epi16::<0>(m) as u32 & 0xFFFF;
    chunks
        .remainder()
        .iter()
        .fold(head, |m, &b| m.max(u32::from(b & 0x7FFF)))
}

/// INT8 codes of 8 lanes as i32: `clamp(round_half_even(x * inv), -128, 127)`, NaN -> 0.
///
/// Clamping to the integer bounds before rounding equals rounding then saturating (the bounds
/// are integers and rounding is monotone); NaN lanes are zeroed by the `ordered` mask, matching
/// the scalar `as i8` cast.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn int8_lanes(x: __m256, inv: __m256) -> __m256i {
    let y = _mm256_mul_ps(x, inv);
    let ordered = _mm256_cmp_ps::<_CMP_ORD_Q>(y, y);
    let clamped = _mm256_min_ps(
        _mm256_max_ps(y, _mm256_set1_ps(-128.0)),
        _mm256_set1_ps(127.0),
    );
    let rounded = _mm256_round_ps::<RNE>(_mm256_and_ps(clamped, ordered));
    _mm256_cvtps_epi32(rounded)
}

/// FP8 E4M3 codes of 8 lanes as i32; the same min-of-two-candidates algorithm as
/// `avx512::fp8_lanes` (see there for why it equals `scalar::f32_to_fp8_e4m3`):
/// `normal` rounds the mantissa of `clamp(a, 2^-6, 448)` in the integer domain, `sub` is
/// `round_half_even(a * 512)`, the unsigned minimum selects, NaN (kept by the operand order of
/// `MAXPS`/`MINPS`) is capped to `0x7F`, and the sign goes into bit 7.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fp8_lanes(x: __m256, inv: __m256) -> __m256i {
    let bits = _mm256_castps_si256(_mm256_mul_ps(x, inv));
    let abs_mask = _mm256_set1_epi32(0x7FFF_FFFF);
    let abs = _mm256_castsi256_ps(_mm256_and_si256(bits, abs_mask));
    let lo = _mm256_set1_ps(f32::from_bits(FP8_MIN_NORMAL_BITS));
    let hi = _mm256_set1_ps(f32::from_bits(FP8_MAX_BITS));
    let c = _mm256_castps_si256(_mm256_min_ps(hi, _mm256_max_ps(lo, abs)));
    let odd = _mm256_and_si256(_mm256_srli_epi32::<20>(c), _mm256_set1_epi32(1));
    let round_and_rebias = 0x7FFFF_u32.wrapping_sub(FP8_BIAS_SHIFT << 20) as i32;
    let rounded = _mm256_add_epi32(
        _mm256_add_epi32(c, _mm256_set1_epi32(round_and_rebias)),
        odd,
    );
    let normal = _mm256_srli_epi32::<20>(rounded);
    let scaled = _mm256_mul_ps(abs, _mm256_set1_ps(512.0));
    // Out-of-range and NaN conversions give 0x8000_0000, which the unsigned minimum ignores.
    let sub = _mm256_cvtps_epi32(_mm256_round_ps::<RNE>(scaled));
    let nan_cap = _mm256_set1_epi32(i32::from(FP8_NAN));
    let mag = _mm256_min_epu32(_mm256_min_epu32(normal, sub), nan_cap);
    let sign = _mm256_srli_epi32::<24>(_mm256_andnot_si256(abs_mask, bits));
    _mm256_or_si256(mag, sign)
}

/// Packs four vectors of i32 codes (in order `a, b, c, d`) into 32 bytes, in order.
///
/// The 256-bit packs work per 128-bit half, leaving 4-byte groups in the order
/// `a0 b0 c0 d0 | a1 b1 c1 d1`; the final permute restores `a0 a1 b0 b1 c0 c1 d0 d1`.
/// `UNSIGNED` picks unsigned byte saturation (FP8 codes 0..=255) over signed (INT8 -128..=127);
/// the codes are already in range, so neither saturation ever changes a value.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack<const UNSIGNED: bool>(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> __m256i {
    let ab = _mm256_packs_epi32(a, b);
    let cd = _mm256_packs_epi32(c, d);
    let bytes = if UNSIGNED {
        _mm256_packus_epi16(ab, cd)
    } else {
        _mm256_packs_epi16(ab, cd)
    };
    _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Codes of the 8 elements at `p`, INT8 or FP8 by `FP8`.
///
/// # Safety
/// AVX2/FMA/F16C available; 8 elements readable at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes<T: Widen, const FP8: bool>(p: *const T, inv: __m256) -> __m256i {
    // SAFETY: the caller guarantees 8 readable elements; the helpers need only our features.
    unsafe {
        let x = T::load(p);
        if FP8 {
            fp8_lanes(x, inv)
        } else {
            int8_lanes(x, inv)
        }
    }
}

/// Quantizes the 32 elements at `src` into the 32 bytes at `dst`.
///
/// # Safety
/// AVX2/FMA/F16C available; 32 elements readable at `src`, 32 bytes writable at `dst`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_block<T: Widen, const FP8: bool>(src: *const T, inv: __m256, dst: *mut u8) {
    // SAFETY: offsets 0..32 are within both buffers by the contract; helpers need our features.
    unsafe {
        let a = codes::<T, FP8>(src, inv);
        let b = codes::<T, FP8>(src.add(W), inv);
        let c = codes::<T, FP8>(src.add(2 * W), inv);
        let d = codes::<T, FP8>(src.add(3 * W), inv);
        _mm256_storeu_si256(dst.cast(), pack::<FP8>(a, b, c, d));
    }
}

/// `out[i] = code(src[i] * inv_scale)` over `min(len)` elements; `Q` is `i8` or `u8`.
///
/// # Safety
/// AVX2/FMA/F16C must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize<T: Widen, Q: Copy + Default, const FP8: bool>(
    src: &[T],
    inv_scale: f32,
    out: &mut [Q],
) {
    const { assert!(size_of::<Q>() == 1) };
    let n = src.len().min(out.len());
    let inv = _mm256_set1_ps(inv_scale);
    let full = n - n % BLOCK;
    for i in (0..full).step_by(BLOCK) {
        // SAFETY: `i + 32 <= full <= n`, so the block lies within both slices; `Q` is one byte.
        unsafe {
            quantize_block::<T, FP8>(src.as_ptr().add(i), inv, out.as_mut_ptr().add(i).cast())
        }
    }
    if full < n {
        let mut buf = [T::default(); BLOCK];
        buf[..n - full].copy_from_slice(&src[full..n]);
        let mut codes = [Q::default(); BLOCK];
        // SAFETY: both stack blocks hold exactly 32 one-byte/element entries.
        unsafe { quantize_block::<T, FP8>(buf.as_ptr(), inv, codes.as_mut_ptr().cast()) }
        out[full..n].copy_from_slice(&codes[..n - full]);
    }
}

/// Quantizes each `seg`-element segment `j` of `src` (the last may be shorter) with `invs[j]`
/// into the matching segment of `out`, stopping at the shortest input.
///
/// # Safety
/// AVX2/FMA/F16C must be available; `seg > 0`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_segments<T: Widen, Q: Copy + Default, const FP8: bool>(
    src: &[T],
    seg: usize,
    invs: &[f32],
    out: &mut [Q],
) {
    for ((s, &inv), o) in src.chunks(seg).zip(invs).zip(out.chunks_mut(seg)) {
        // SAFETY: the callee needs only the features this function requires.
        unsafe { quantize::<T, Q, FP8>(s, inv, o) }
    }
}

/// Per segment `j`: `out[i] = clamp(round_half_even(x[i] * invs[j]), -128, 127)`.
///
/// # Safety
/// AVX2/FMA/F16C must be available; `seg > 0`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_int8(src: Src, seg: usize, invs: &[f32], out: &mut [i8]) {
    // SAFETY: the callee needs only the features this function requires; `seg > 0` as here.
    unsafe {
        match src {
            Src::F32(s) => quantize_segments::<_, _, false>(s, seg, invs, out),
            Src::F16(s) => quantize_segments::<_, _, false>(s, seg, invs, out),
            Src::Bf16(s) => quantize_segments::<_, _, false>(s, seg, invs, out),
        }
    }
}

/// Per segment `j`: `out[i] = e4m3fn(x[i] * invs[j])`.
///
/// # Safety
/// AVX2/FMA/F16C must be available; `seg > 0`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_fp8(src: Src, seg: usize, invs: &[f32], out: &mut [u8]) {
    // SAFETY: the callee needs only the features this function requires; `seg > 0` as here.
    unsafe {
        match src {
            Src::F32(s) => quantize_segments::<_, _, true>(s, seg, invs, out),
            Src::F16(s) => quantize_segments::<_, _, true>(s, seg, invs, out),
            Src::Bf16(s) => quantize_segments::<_, _, true>(s, seg, invs, out),
        }
    }
}

/// Exact f32 values of 8 E4M3 codes (one per i32 lane, 0..=255).
///
/// Normal codes rebias the exponent by adding `120 << 23` to `(code & 0x7F) << 20`; subnormal
/// codes are `m * 2^-9` computed as an exact int-to-float conversion and multiply, so no f32
/// subnormal is ever an operand (immune to DAZ). `0x7F`/`0xFF` become quiet NaN with the sign
/// kept, the same patterns as the scalar table.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fp8_decode(c: __m256i) -> __m256 {
    let mag = _mm256_and_si256(c, _mm256_set1_epi32(0x7F));
    let rebias = _mm256_set1_epi32(120 << 23);
    let normal = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_slli_epi32::<20>(mag), rebias));
    let sub = _mm256_mul_ps(_mm256_cvtepi32_ps(mag), _mm256_set1_ps(1.0 / 512.0));
    let is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(8), mag);
    let v = _mm256_blendv_ps(normal, sub, _mm256_castsi256_ps(is_sub));
    let is_nan = _mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x7F));
    let quiet_nan = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC0_0000));
    let v = _mm256_blendv_ps(v, quiet_nan, _mm256_castsi256_ps(is_nan));
    let sign = _mm256_slli_epi32::<24>(_mm256_and_si256(c, _mm256_set1_epi32(0x80)));
    _mm256_castsi256_ps(_mm256_or_si256(_mm256_castps_si256(v), sign))
}

/// `out[0..8] = value(q[0..8]) * scale`, codes INT8 or FP8 by `FP8`.
///
/// # Safety
/// AVX2/FMA/F16C available; 8 bytes readable at `q`, 8 f32 writable at `out`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_block<const FP8: bool>(q: *const u8, scale: __m256, out: *mut f32) {
    // SAFETY: the contract covers the 8-byte load and 8-float store; helpers need our features.
    unsafe {
        let bytes = _mm_loadl_epi64(q.cast());
        let v = if FP8 {
            fp8_decode(_mm256_cvtepu8_epi32(bytes))
        } else {
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes))
        };
        _mm256_storeu_ps(out, _mm256_mul_ps(v, scale));
    }
}

/// `out[i] = value(q[i]) * scale` over `min(len)` elements; `Q` is `i8` or `u8`.
///
/// # Safety
/// AVX2/FMA/F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize<Q: Copy + Default, const FP8: bool>(q: &[Q], scale: f32, out: &mut [f32]) {
    const { assert!(size_of::<Q>() == 1) };
    let n = q.len().min(out.len());
    let scale = _mm256_set1_ps(scale);
    let full = n - n % W;
    for i in (0..full).step_by(W) {
        // SAFETY: `i + 8 <= full <= n`, so the block lies within both slices; `Q` is one byte.
        unsafe { dequantize_block::<FP8>(q.as_ptr().add(i).cast(), scale, out.as_mut_ptr().add(i)) }
    }
    if full < n {
        let mut codes = [Q::default(); W];
        codes[..n - full].copy_from_slice(&q[full..n]);
        let mut vals = [0.0f32; W];
        // SAFETY: both stack blocks hold exactly 8 entries; `Q` is one byte.
        unsafe { dequantize_block::<FP8>(codes.as_ptr().cast(), scale, vals.as_mut_ptr()) }
        out[full..n].copy_from_slice(&vals[..n - full]);
    }
}

/// `out[i] = q[i] as f32 * scale` over `min(len)` elements.
///
/// # Safety
/// AVX2/FMA/F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_int8(q: &[i8], scale: f32, out: &mut [f32]) {
    // SAFETY: the callee needs only the features this function requires.
    unsafe { dequantize::<_, false>(q, scale, out) }
}

/// `out[i] = e4m3fn_to_f32(q[i]) * scale` over `min(len)` elements.
///
/// # Safety
/// AVX2/FMA/F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_fp8(q: &[u8], scale: f32, out: &mut [f32]) {
    // SAFETY: the callee needs only the features this function requires.
    unsafe { dequantize::<_, true>(q, scale, out) }
}
