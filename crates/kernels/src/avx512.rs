//! AVX-512 (F + BW + VL) kernels: 16 f32 lanes per vector; tails use masked loads and stores, so
//! no element is ever handled by scalar code and no padding buffer is needed.
//!
//! Every function requires AVX-512 F, BW and VL at run time (checked once by [`crate::Isa`]).
//! Results are bit-identical to [`crate::scalar`]; each lane helper states how.

use core::arch::x86_64::*;
use core::mem::size_of;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::scalar::{FP8_BIAS_SHIFT, FP8_MAX_BITS, FP8_MIN_NORMAL_BITS, FP8_NAN};
use crate::Src;

/// f32 lanes per vector.
const W: usize = 16;
/// 16-bit lanes per vector.
const W16: usize = 32;
/// Round to nearest, ties to even, from the instruction itself rather than MXCSR.
const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

/// Mask of the low `n` lanes, `n < 16`.
#[inline]
fn tail_mask(n: usize) -> __mmask16 {
    debug_assert!(n < W);
    (1u16 << n) - 1
}

/// Source dtypes that widen exactly to 16 f32 lanes.
trait Widen: Copy {
    /// Loads the lanes selected by `mask` from `p` as f32; other lanes are 0 and are not read.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL must be available and every selected lane readable at `p`.
    unsafe fn load(p: *const Self, mask: __mmask16) -> __m512;

    /// Dword permutation that puts the bytes of `pack(load64(p))` back in element order.
    const ORDER: [i32; 16];

    /// Loads 64 elements as four vectors of f32, in whichever lane order is cheapest to produce;
    /// [`Widen::ORDER`] undoes that order after packing.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL must be available and 64 elements readable at `p`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load64(p: *const Self) -> [__m512; 4] {
        // SAFETY: the caller guarantees 64 readable elements, i.e. four full vectors.
        unsafe {
            [
                Self::load(p, u16::MAX),
                Self::load(p.add(W), u16::MAX),
                Self::load(p.add(2 * W), u16::MAX),
                Self::load(p.add(3 * W), u16::MAX),
            ]
        }
    }
}

/// Dword order after packing four in-order vectors: lane `k` holds groups `a_k b_k c_k d_k`.
const PACKED_IN_ORDER: [i32; 16] = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];

impl Widen for f32 {
    const ORDER: [i32; 16] = PACKED_IN_ORDER;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load(p: *const f32, mask: __mmask16) -> __m512 {
        // SAFETY: the caller guarantees the selected lanes are readable; masked-off lanes are
        // fault-suppressed.
        unsafe { _mm512_maskz_loadu_ps(mask, p) }
    }
}

impl Widen for bf16 {
    /// `load64` yields, per 128-bit lane `k`, elements `8k..8k+4` then `8k+4..8k+8` of each
    /// 32-element half, so after packing lane `k` holds `X[8k..8k+8] Y[8k..8k+8]` as two dword
    /// pairs; this gathers the `X` pairs first, then the `Y` pairs.
    const ORDER: [i32; 16] = [0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15];

    /// Interleaving zero words below the bf16 words builds the f32 bit patterns with one unpack
    /// per 16 lanes instead of a widen plus a shift.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load64(p: *const bf16) -> [__m512; 4] {
        // SAFETY: the caller guarantees 64 readable bf16, i.e. two full 64-byte vectors.
        let (x, y) = unsafe {
            (
                _mm512_loadu_si512(p.cast()),
                _mm512_loadu_si512(p.add(32).cast()),
            )
        };
        let z = _mm512_setzero_si512();
        [
            _mm512_castsi512_ps(_mm512_unpacklo_epi16(z, x)),
            _mm512_castsi512_ps(_mm512_unpackhi_epi16(z, x)),
            _mm512_castsi512_ps(_mm512_unpacklo_epi16(z, y)),
            _mm512_castsi512_ps(_mm512_unpackhi_epi16(z, y)),
        ]
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load(p: *const bf16, mask: __mmask16) -> __m512 {
        // SAFETY: as for f32; bf16 is a transparent u16, so reading it as i16 lanes is valid.
        let raw = unsafe { _mm256_maskz_loadu_epi16(mask, p.cast()) };
        // bf16 is the top half of an f32: widening is a 16-bit shift, exact for every value.
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(raw)))
    }
}

impl Widen for f16 {
    const ORDER: [i32; 16] = PACKED_IN_ORDER;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load(p: *const f16, mask: __mmask16) -> __m512 {
        // SAFETY: as for f32; f16 is a transparent u16, so reading it as i16 lanes is valid.
        let raw = unsafe { _mm256_maskz_loadu_epi16(mask, p.cast()) };
        // VCVTPH2PS is exact for all values, subnormals included, and ignores MXCSR.DAZ.
        _mm512_cvtph_ps(raw)
    }
}

/// `acc[j] = max(acc[j], m_j)`, where `m_j` is the largest `|x|` bit pattern of the `j`-th
/// `seg`-element segment of `src` (the last may be shorter): `max(bits & 0x7FFF_FFFF)` for f32,
/// `max(bits & 0x7FFF)` for f16/bf16 (`dispatch::absmax_from_bits` turns it into the absmax).
/// One call per row keeps per-group call overhead out of the matrix loops.
///
/// # Safety
/// AVX-512 F/BW/VL must be available; `seg > 0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
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

/// `max(bits(x[i]) & 0x7FFF_FFFF)` over an f32 run: integer max on sign-cleared bits, which
/// orders like `|x|` and lets Inf/NaN surface as patterns `>= 0x7F80_0000`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn absmax_bits_f32(s: &[f32]) -> u32 {
    let keep = _mm512_set1_epi32(0x7FFF_FFFF);
    let mut acc = _mm512_setzero_si512();
    let (n, p) = (s.len(), s.as_ptr());
    let mut i = 0;
    while i + W <= n {
        // SAFETY: lanes `i..i + 16` are within `s`.
        let v = unsafe { _mm512_loadu_si512(p.add(i).cast()) };
        acc = _mm512_max_epu32(acc, _mm512_and_si512(v, keep));
        i += W;
    }
    if i < n {
        // SAFETY: the mask selects lanes `i..n` only, all within `s`; zeros do not change a max.
        let v = unsafe { _mm512_maskz_loadu_epi32(tail_mask(n - i), p.add(i).cast()) };
        acc = _mm512_max_epu32(acc, _mm512_and_si512(v, keep));
    }
    _mm512_reduce_max_epu32(acc)
}

/// `max(bits[i] & 0x7FFF)` over a run of f16 or bf16 bit patterns, 32 lanes at a time; no
/// widening is needed because half-precision magnitudes also order like their bits.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn absmax_bits_u16(s: &[u16]) -> u32 {
    let keep = _mm512_set1_epi16(0x7FFF);
    let mut acc = _mm512_setzero_si512();
    let (n, p) = (s.len(), s.as_ptr());
    let mut i = 0;
    while i + W16 <= n {
        // SAFETY: lanes `i..i + 32` are within `s`.
        let v = unsafe { _mm512_loadu_si512(p.add(i).cast()) };
        acc = _mm512_max_epu16(acc, _mm512_and_si512(v, keep));
        i += W16;
    }
    if i < n {
        let mask: __mmask32 = (1u32 << (n - i)) - 1;
        // SAFETY: the mask selects lanes `i..n` only (n - i < 32), all within `s`.
        let v = unsafe { _mm512_maskz_loadu_epi16(mask, p.add(i).cast()) };
        acc = _mm512_max_epu16(acc, _mm512_and_si512(v, keep));
    }
    let lo = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(acc));
    let hi = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64::<1>(acc));
    _mm512_reduce_max_epu32(_mm512_max_epu32(lo, hi))
}

/// INT8 codes of 16 lanes, one per i32: `clamp(round_half_even(x * inv), -128, 127)`, NaN -> 0.
///
/// Clamping to the integer bounds before rounding equals rounding then saturating (the bounds
/// are integers and rounding is monotone). NaN lanes are zeroed by the `ordered` mask, matching
/// the scalar `as i8` cast.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn int8_lanes(x: __m512, inv: __m512) -> __m512i {
    let y = _mm512_mul_ps(x, inv);
    let ordered = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(y, y);
    let lo = _mm512_set1_ps(-128.0);
    let hi = _mm512_set1_ps(127.0);
    let clamped = _mm512_min_ps(_mm512_max_ps(y, lo), hi);
    _mm512_maskz_cvt_roundps_epi32::<RNE>(ordered, clamped)
}

/// FP8 E4M3 codes of 16 lanes, one per i32; equal to `scalar::f32_to_fp8_e4m3` lane by lane.
///
/// With `a = |x * inv|`, two candidate magnitude codes are computed for every lane and the
/// smaller one wins:
/// - `normal`: `c = clamp(a, 2^-6, 448)` has its mantissa rounded to 3 bits, half to even, in the
///   integer domain, `((c + 0x7FFFF + odd) >> 20) - (120 << 3)`, with the rebias folded into the
///   constant (`c >= 2^-6` keeps `c - (120 << 23)` positive). Subnormal lanes get 8 here.
/// - `sub`: `round_half_even(a * 512)`, the subnormal code (`<= 8` below 2^-6). For `a >= 2^-6`
///   it is `>=` the normal code (equal in the first binade, larger above, and `0x8000_0000` when
///   out of `i32` range or NaN), so the unsigned minimum picks the right one everywhere.
/// - NaN: `MAXPS`/`MINPS` return their second operand when one is NaN, so with `a` second the
///   clamp keeps NaN, whose `normal` code exceeds `0x7F`; the final `min(.., 0x7F)` maps it to
///   `0x7F` and leaves real codes (`<= 0x7E`) alone.
///
/// The sign then goes into bit 7 with one ternary-logic op (`0xF8` = `A | (B & C)`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn fp8_lanes(x: __m512, inv: __m512) -> __m512i {
    let bits = _mm512_castps_si512(_mm512_mul_ps(x, inv));
    let abs = _mm512_castsi512_ps(_mm512_and_si512(bits, _mm512_set1_epi32(0x7FFF_FFFF)));
    let lo = _mm512_set1_ps(f32::from_bits(FP8_MIN_NORMAL_BITS));
    let hi = _mm512_set1_ps(f32::from_bits(FP8_MAX_BITS));
    let c = _mm512_castps_si512(_mm512_min_ps(hi, _mm512_max_ps(lo, abs)));
    let odd = _mm512_and_si512(_mm512_srli_epi32::<20>(c), _mm512_set1_epi32(1));
    let round_and_rebias = 0x7FFFF_u32.wrapping_sub(FP8_BIAS_SHIFT << 20) as i32;
    let rounded = _mm512_add_epi32(
        _mm512_add_epi32(c, _mm512_set1_epi32(round_and_rebias)),
        odd,
    );
    let normal = _mm512_srli_epi32::<20>(rounded);
    let scaled = _mm512_mul_ps(abs, _mm512_set1_ps(512.0));
    let sub = _mm512_cvt_roundps_epi32::<RNE>(scaled);
    let mag = _mm512_min_epu32(
        _mm512_min_epu32(normal, sub),
        _mm512_set1_epi32(i32::from(FP8_NAN)),
    );
    let sign_byte = _mm512_srli_epi32::<24>(bits);
    _mm512_ternarylogic_epi32::<0xF8>(mag, sign_byte, _mm512_set1_epi32(0x80))
}

/// Codes of 16 lanes as i32, INT8 or FP8 by `FP8`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn codes<const FP8: bool>(x: __m512, inv: __m512) -> __m512i {
    // SAFETY: both helpers need only the features this function requires.
    unsafe {
        if FP8 {
            fp8_lanes(x, inv)
        } else {
            int8_lanes(x, inv)
        }
    }
}

/// Packs four vectors of i32 codes (`a, b, c, d`, each already in byte range) into 64 bytes and
/// permutes their dwords by `order` (see [`Widen::ORDER`]).
///
/// The packs work per 128-bit lane, so lane `k` ends up holding the 4-byte groups
/// `a_k b_k c_k d_k`; for in-order inputs the permute restores `a_0..a_3 b_0..b_3 ...`. Three
/// shuffles and one full store per 64 codes are much cheaper than four `vpmovdb` stores.
/// `UNSIGNED` picks unsigned byte saturation (FP8 codes 0..=255) over signed (INT8); the codes are
/// in range, so saturation never changes a value.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pack<const UNSIGNED: bool>(v: [__m512i; 4], order: [i32; 16]) -> __m512i {
    let [a, b, c, d] = v;
    let ab = _mm512_packs_epi32(a, b);
    let cd = _mm512_packs_epi32(c, d);
    let bytes = if UNSIGNED {
        _mm512_packus_epi16(ab, cd)
    } else {
        _mm512_packs_epi16(ab, cd)
    };
    let o = order;
    let order = _mm512_setr_epi32(
        o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7], o[8], o[9], o[10], o[11], o[12], o[13],
        o[14], o[15],
    );
    _mm512_permutexvar_epi32(order, bytes)
}

/// `dst[i] = code(src[i] * inv_scale)` for `i < n`, INT8 or FP8 codes by `FP8`.
///
/// Blocks of 64 use full loads and one packed 64-byte store; the remaining `< 64` elements go 16
/// at a time with masked loads and masked byte stores.
///
/// # Safety
/// AVX-512 F/BW/VL available; `src` readable and `dst` writable for `n` elements.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn quantize<T: Widen, const FP8: bool>(src: *const T, n: usize, inv: f32, dst: *mut u8) {
    let inv = _mm512_set1_ps(inv);
    let mut i = 0;
    while i + 4 * W <= n {
        // SAFETY: elements `i..i + 64` are within both buffers by the contract; the helpers need
        // only the features this function requires.
        unsafe {
            let [a, b, c, d] = T::load64(src.add(i));
            let (a, b) = (codes::<FP8>(a, inv), codes::<FP8>(b, inv));
            let (c, d) = (codes::<FP8>(c, inv), codes::<FP8>(d, inv));
            _mm512_storeu_si512(dst.add(i).cast(), pack::<FP8>([a, b, c, d], T::ORDER));
        }
        i += 4 * W;
    }
    while i < n {
        let mask = if n - i >= W {
            u16::MAX
        } else {
            tail_mask(n - i)
        };
        // SAFETY: `mask` selects lanes `i..min(i + 16, n)`, within both buffers by the contract;
        // the helpers need only the features this function requires.
        unsafe {
            let q = codes::<FP8>(T::load(src.add(i), mask), inv);
            // Codes are in byte range, so truncating each lane to a byte is exact.
            _mm_mask_storeu_epi8(dst.add(i).cast(), mask, _mm512_cvtepi32_epi8(q));
        }
        i += W;
    }
}

/// Quantizes each `seg`-element segment `j` of `src` (the last may be shorter) with `invs[j]`
/// into the matching segment of `out` (one byte per code), stopping at the shortest input.
///
/// # Safety
/// AVX-512 F/BW/VL must be available; `seg > 0`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn quantize_segments<T: Widen, Q, const FP8: bool>(
    src: &[T],
    seg: usize,
    invs: &[f32],
    out: &mut [Q],
) {
    const { assert!(size_of::<Q>() == 1) };
    for ((s, &inv), o) in src.chunks(seg).zip(invs).zip(out.chunks_mut(seg)) {
        let n = s.len().min(o.len());
        // SAFETY: `s` and `o` hold at least `n` elements and `Q` is one byte; features as here.
        unsafe { quantize::<T, FP8>(s.as_ptr(), n, inv, o.as_mut_ptr().cast()) }
    }
}

/// Per segment `j`: `out[i] = clamp(round_half_even(x[i] * invs[j]), -128, 127)`.
///
/// # Safety
/// AVX-512 F/BW/VL must be available; `seg > 0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
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
/// AVX-512 F/BW/VL must be available; `seg > 0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
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

/// Exact f32 values of 16 E4M3 codes (one per i32 lane, 0..=255).
///
/// Normal codes rebias the exponent by adding `120 << 23` to `(code & 0x7F) << 20`; subnormal
/// codes are `m * 2^-9` computed as an exact int-to-float conversion and multiply, so no f32
/// subnormal is ever an operand (immune to DAZ). `0x7F`/`0xFF` become quiet NaN with the sign
/// kept, the same patterns as the scalar table.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn fp8_decode(c: __m512i) -> __m512 {
    let mag = _mm512_and_si512(c, _mm512_set1_epi32(0x7F));
    let rebias = _mm512_set1_epi32(120 << 23);
    let normal = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_slli_epi32::<20>(mag), rebias));
    let sub = _mm512_mul_ps(_mm512_cvtepi32_ps(mag), _mm512_set1_ps(1.0 / 512.0));
    let is_sub = _mm512_cmplt_epu32_mask(mag, _mm512_set1_epi32(8));
    let v = _mm512_mask_blend_ps(is_sub, normal, sub);
    let is_nan = _mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(0x7F));
    let quiet_nan = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FC0_0000));
    let v = _mm512_mask_blend_ps(is_nan, v, quiet_nan);
    // v | ((c << 24) & 0x8000_0000) in one ternary-logic op (0xF8 = A | (B & C)).
    let sign = _mm512_set1_epi32(i32::MIN);
    let v = _mm512_castps_si512(v);
    _mm512_castsi512_ps(_mm512_ternarylogic_epi32::<0xF8>(
        v,
        _mm512_slli_epi32::<24>(c),
        sign,
    ))
}

/// `out[i] = value(q[i]) * scale` for `i < n`, codes INT8 or FP8 by `FP8`.
///
/// # Safety
/// AVX-512 F/BW/VL available; `q` readable and `out` writable for `n` elements.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn dequantize<const FP8: bool>(q: *const u8, n: usize, scale: f32, out: *mut f32) {
    let scale = _mm512_set1_ps(scale);
    let mut i = 0;
    while i < n {
        let mask = if n - i >= W {
            u16::MAX
        } else {
            tail_mask(n - i)
        };
        // SAFETY: `mask` selects lanes `i..min(i + 16, n)`, within both buffers by the contract;
        // `fp8_decode` needs only the features this function requires.
        unsafe {
            let bytes = _mm_maskz_loadu_epi8(mask, q.add(i).cast());
            let v = if FP8 {
                fp8_decode(_mm512_cvtepu8_epi32(bytes))
            } else {
                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes))
            };
            _mm512_mask_storeu_ps(out.add(i), mask, _mm512_mul_ps(v, scale));
        }
        i += W;
    }
}

/// `out[i] = q[i] as f32 * scale` over `min(len)` elements.
///
/// # Safety
/// AVX-512 F/BW/VL must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn dequantize_int8(q: &[i8], scale: f32, out: &mut [f32]) {
    let n = q.len().min(out.len());
    // SAFETY: both buffers hold at least `n` elements; features as required here.
    unsafe { dequantize::<false>(q.as_ptr().cast(), n, scale, out.as_mut_ptr()) }
}

/// `out[i] = e4m3fn_to_f32(q[i]) * scale` over `min(len)` elements.
///
/// # Safety
/// AVX-512 F/BW/VL must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn dequantize_fp8(q: &[u8], scale: f32, out: &mut [f32]) {
    let n = q.len().min(out.len());
    // SAFETY: both buffers hold at least `n` elements; features as required here.
    unsafe { dequantize::<true>(q.as_ptr(), n, scale, out.as_mut_ptr()) }
}
