//! AVX-512 (F + BW + VL) products: 16 f32 lanes; group tails use masked loads, so no element
//! goes through scalar code. INT8 x INT8 dots use VNNI (`vpdpbusd`) when the CPU has it.
//!
//! Weights are widened exactly: f16 by `vcvtph2ps`, bf16 by a 16-bit shift, INT8 by sign
//! extension and conversion, FP8 E4M3 by moving its bits into an f16 (see [`Fp8`]) whose value
//! is the E4M3 value / 256; the factor 256 is applied once per group sum (exact).

use core::arch::x86_64::*;

use half::{bf16, f16};

use super::{Backend, Matrix, Weights, KC};
use crate::isa::Usable;
use crate::Isa;

/// f32 lanes per vector.
const W: usize = 16;
/// The matrix-vector tiles prefetch the rows this many tiles ahead. A decode step streams each
/// matrix once from DRAM in short rows (576 bytes for SmolLM2's INT8 projections), interleaved
/// a tile of rows at a time: too short for the hardware stream prefetchers to ramp up, so without
/// this the products reached about a third of the read bandwidth on weights not in cache.
const PREFETCH_TILES: usize = 2;

/// Asks for the cache lines of the 32 elements at `p` (a prefetch never faults, so `p` may lie
/// past the matrix at its end).
#[inline(always)]
fn prefetch_ahead<C>(p: *const C) {
    let bytes = 32 * core::mem::size_of::<C>();
    let mut off = 0;
    while off < bytes {
        // SAFETY: a prefetch is a hint that neither faults nor changes program state, whatever
        // the address; the pointer is never dereferenced.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>().wrapping_add(off)) };
        off += 64;
    }
}
/// Weight rows per register tile of the matrix-matrix kernel.
const NR: usize = 12;
/// Tokens per packed panel (two vectors).
const P: usize = 2 * W;

/// The AVX-512 backend; exists only where AVX-512 F/BW/VL are usable.
#[derive(Clone, Copy)]
pub(crate) struct Avx512 {
    /// AVX-512 VNNI is available too.
    vnni: bool,
    /// AVX-512 BF16 is available too (the INT4 matrix-vector products use `vdpbf16ps`).
    bf16: bool,
}

impl Avx512 {
    /// # Panics
    /// If `u` is not [`Isa::Avx512`] (the dispatch never asks for that).
    pub(crate) fn new(u: Usable) -> Self {
        assert_eq!(u.isa(), Isa::Avx512, "Avx512 backend for another ISA");
        Avx512 {
            vnni: u.avx512_vnni(),
            bf16: u.avx512_bf16(),
        }
    }
}

/// Mask of the low `n` lanes, `n <= 16`.
#[inline]
fn mask16(n: usize) -> __mmask16 {
    debug_assert!(n <= W);
    ((1u32 << n) - 1) as __mmask16
}

/// A stored weight type widened to f32 lanes ("raw" values: the code's value, except FP8 whose
/// raw value is its E4M3 value / 256).
trait Dec {
    type C: Copy;
    /// Raw lanes are the value / 256 (FP8).
    const FP8: bool;

    /// 32 consecutive elements at `p` as two vectors.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL available; 32 elements readable at `p`.
    unsafe fn load32(p: *const Self::C) -> [__m512; 2];

    /// The lanes selected by `mask` (a prefix) at `p`; the others are 0 and not read.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL available; the selected elements readable at `p`.
    unsafe fn load16(p: *const Self::C, mask: __mmask16) -> __m512;
}

struct F32;
struct F16;
struct Bf16;
struct I8;
/// E4M3 -> f16 bits, exact for normals and subnormals alike: with `s` the code sign-extended to
/// 16 bits, `(s << 7) & 0xBFFF` puts the sign in bit 15 and `eeee mmm` in bits 13..7, i.e. an
/// f16 with exponent `e` (bias 15 instead of 7) and the same mantissa: the E4M3 value / 256.
/// `0x7F`/`0xFF` give ±1.875 (±480 after the factor 256), see `FP8_NAN_CODE_VALUE`.
struct Fp8;

impl Dec for F32 {
    type C = f32;
    const FP8: bool = false;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load32(p: *const f32) -> [__m512; 2] {
        // SAFETY: the caller guarantees 32 readable elements.
        unsafe { [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(W))] }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load16(p: *const f32, mask: __mmask16) -> __m512 {
        // SAFETY: the caller guarantees the selected lanes are readable; others are suppressed.
        unsafe { _mm512_maskz_loadu_ps(mask, p) }
    }
}

impl Dec for F16 {
    type C = f16;
    const FP8: bool = false;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load32(p: *const f16) -> [__m512; 2] {
        // SAFETY: the caller guarantees 32 readable f16 (two 32-byte loads); f16 is a u16.
        unsafe {
            [
                _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())),
                _mm512_cvtph_ps(_mm256_loadu_si256(p.add(W).cast())),
            ]
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load16(p: *const f16, mask: __mmask16) -> __m512 {
        // SAFETY: the caller guarantees the selected lanes are readable; others are suppressed.
        unsafe { _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p.cast())) }
    }
}

impl Dec for Bf16 {
    type C = bf16;
    const FP8: bool = false;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load32(p: *const bf16) -> [__m512; 2] {
        // SAFETY: the caller guarantees 32 readable bf16 (two 32-byte loads); bf16 is a u16.
        let (a, b) = unsafe {
            (
                _mm256_loadu_si256(p.cast()),
                _mm256_loadu_si256(p.add(W).cast()),
            )
        };
        [widen_bf16(a), widen_bf16(b)]
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load16(p: *const bf16, mask: __mmask16) -> __m512 {
        // SAFETY: the caller guarantees the selected lanes are readable; others are suppressed.
        widen_bf16(unsafe { _mm256_maskz_loadu_epi16(mask, p.cast()) })
    }
}

/// bf16 is the top half of an f32: widening is a 16-bit shift, exact for every value.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn widen_bf16(raw: __m256i) -> __m512 {
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(raw)))
}

impl Dec for I8 {
    type C = i8;
    const FP8: bool = false;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load32(p: *const i8) -> [__m512; 2] {
        // SAFETY: the caller guarantees 32 readable bytes (two 16-byte loads).
        let (a, b) = unsafe { (_mm_loadu_si128(p.cast()), _mm_loadu_si128(p.add(W).cast())) };
        [
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(a)),
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)),
        ]
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load16(p: *const i8, mask: __mmask16) -> __m512 {
        // SAFETY: the caller guarantees the selected lanes are readable; others are suppressed.
        let raw = unsafe { _mm_maskz_loadu_epi8(mask, p) };
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(raw))
    }
}

impl Dec for Fp8 {
    type C = u8;
    const FP8: bool = true;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load32(p: *const u8) -> [__m512; 2] {
        // SAFETY: the caller guarantees 32 readable bytes.
        let raw = unsafe { _mm256_loadu_si256(p.cast()) };
        let s = _mm512_cvtepi8_epi16(raw);
        let h = _mm512_and_si512(
            _mm512_slli_epi16::<7>(s),
            _mm512_set1_epi16(0xBFFF_u16 as i16),
        );
        [
            _mm512_cvtph_ps(_mm512_castsi512_si256(h)),
            _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(h)),
        ]
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load16(p: *const u8, mask: __mmask16) -> __m512 {
        // SAFETY: the caller guarantees the selected lanes are readable; others are suppressed.
        let raw = unsafe { _mm_maskz_loadu_epi8(mask, p.cast()) };
        let s = _mm256_cvtepi8_epi16(raw);
        let h = _mm256_and_si256(
            _mm256_slli_epi16::<7>(s),
            _mm256_set1_epi16(0xBFFF_u16 as i16),
        );
        _mm512_cvtph_ps(h)
    }
}

/// Where a tile's weights, scales, activations and outputs live.
#[derive(Clone, Copy)]
struct Tile<C> {
    /// Row 0 of the tile; rows are `cols` apart.
    w: *const C,
    /// Scales of row 0 (`cols / group` per row), or null for dense weights.
    scales: *const f32,
    cols: usize,
    group: usize,
    /// Token 0 of the activations; tokens are `cols` apart.
    x: *const f32,
    /// `out[t * ldo + r]`.
    out: *mut f32,
    ldo: usize,
}

/// `out[t][r] = sum_g (sum_{j in g} x[t][j] * raw(w[r][j])) * (256 if FP8) * scale[r][g]` for
/// `R` rows and `T` tokens, the weights decoded in registers once for all `T` tokens. With one
/// token, two accumulators per row keep enough FMA chains in flight. `GROUPED` (more than one
/// group per row) keeps a running total per (row, token) besides the group sums; otherwise the
/// single group's sum is scaled at the end, which leaves registers for 4 x 4 tiles.
///
/// # Safety
/// AVX-512 F/BW/VL available; `R` rows of `cols` weights (and `cols / group` scales unless null),
/// `T` rows of `cols` activations readable, outputs writable; `group > 0` divides `cols`, and
/// `group == cols` unless `GROUPED`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn gemv_tile<D: Dec, const R: usize, const T: usize, const GROUPED: bool>(tile: Tile<D::C>) {
    let Tile {
        w,
        scales,
        cols,
        group,
        x,
        out,
        ldo,
    } = tile;
    let groups = cols / group;
    let zero = _mm512_setzero_ps();
    // Second accumulator of the pair for one token; with several tokens one chain per token.
    let b_half = usize::from(T == 1);
    let mut total = [[zero; T]; R];
    for g in 0..groups {
        let mut acc = [[[zero; 2]; T]; R];
        let end = (g + 1) * group;
        let mut i = g * group;
        while i + 2 * W <= end {
            let mut xv = [[zero; 2]; T];
            for (t, v) in xv.iter_mut().enumerate() {
                // SAFETY: elements `i..i + 32 <= cols` of token `t` are readable (contract).
                *v = unsafe { F32::load32(x.add(t * cols + i)) };
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                prefetch_ahead(w.wrapping_add((r + PREFETCH_TILES * R) * cols + i));
                // SAFETY: elements `i..i + 32 <= cols` of row `r` are readable (contract).
                let [a, b] = unsafe { D::load32(w.add(r * cols + i)) };
                for (acc_rt, xt) in acc_r.iter_mut().zip(&xv) {
                    acc_rt[0] = _mm512_fmadd_ps(a, xt[0], acc_rt[0]);
                    acc_rt[b_half] = _mm512_fmadd_ps(b, xt[1], acc_rt[b_half]);
                }
            }
            i += 2 * W;
        }
        while i < end {
            let mask = mask16((end - i).min(W));
            let mut xv = [zero; T];
            for (t, v) in xv.iter_mut().enumerate() {
                // SAFETY: the mask selects elements `i..min(i + 16, end)`, all `< cols`.
                *v = unsafe { F32::load16(x.add(t * cols + i), mask) };
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // SAFETY: as above, for row `r`.
                let a = unsafe { D::load16(w.add(r * cols + i), mask) };
                for (acc_rt, &xt) in acc_r.iter_mut().zip(&xv) {
                    acc_rt[0] = _mm512_fmadd_ps(a, xt, acc_rt[0]);
                }
            }
            i += W;
        }
        for (r, (acc_r, total_r)) in acc.iter().zip(&mut total).enumerate() {
            let scale = if scales.is_null() {
                None
            } else {
                // SAFETY: row `r` has `groups` readable scales (contract) and `g < groups`.
                Some(_mm512_set1_ps(unsafe { *scales.add(r * groups + g) }))
            };
            for (acc_rt, total_rt) in acc_r.iter().zip(total_r.iter_mut()) {
                let mut sum = if b_half == 1 {
                    _mm512_add_ps(acc_rt[0], acc_rt[1])
                } else {
                    acc_rt[0]
                };
                if D::FP8 {
                    sum = _mm512_mul_ps(sum, _mm512_set1_ps(256.0));
                }
                let base = if GROUPED { *total_rt } else { zero };
                *total_rt = match scale {
                    Some(s) => _mm512_fmadd_ps(sum, s, base),
                    None => _mm512_add_ps(sum, base),
                };
            }
        }
    }
    for (r, total_r) in total.iter().enumerate() {
        for (t, &v) in total_r.iter().enumerate() {
            // SAFETY: output `(t, r)` is writable (contract).
            unsafe { *out.add(t * ldo + r) = _mm512_reduce_add_ps(v) };
        }
    }
}

/// Rows `r0..r0 + nr` for `tokens` tokens: tiles of up to 4 tokens x 2 rows (one row for one
/// token), then single rows.
///
/// # Safety
/// AVX-512 F/BW/VL available; `codes` holds rows `..r0 + nr` of `cols`, `scales` (if any) their
/// `cols / group` scales, `x` holds `tokens` rows of `cols`, `out` `tokens * nr` elements;
/// `group > 0` divides `cols`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemv_rows<D: Dec>(
    codes: &[D::C],
    scales: Option<&[f32]>,
    cols: usize,
    group: usize,
    r0: usize,
    nr: usize,
    x: &[f32],
    tokens: usize,
    out: &mut [f32],
) {
    let groups = cols / group;
    let grouped = groups > 1;
    let mut t = 0;
    while t < tokens {
        // Three tokens get their own tile: as 2 + 1 they would stream the weights twice (a
        // 3-token speculative verify step cost more than a 4-token one).
        let tk = (tokens - t).min(4);
        // One token: one row at a time. Weights then stream strictly in order, which the
        // hardware prefetchers follow; four interleaved 576-byte rows (SmolLM2) reached only
        // about 0.4 of the read bandwidth on weights coming from DRAM, one row 0.96
        // (`decode_smollm2_30_layers` in the matmul bench). With 2-4 tokens, two rows: on SmolLM2 (bf16, 200 cached positions) a forward of 4
        // new tokens took 22.3 ms with 2-row tiles against 25.3 ms with 4-row ones (2 tokens:
        // 19.9 against 23.4), the speculative verify step (`verify_cost` in the speculative bench).
        let full = if tk == 1 { 1 } else { 2 };
        let mut r = 0;
        while r < nr {
            let rk = if nr - r >= full { full } else { 1 };
            let row = r0 + r;
            // SAFETY: every offset stays inside its slice by the contract (`row + rk <= r0 + nr`,
            // `t + tk <= tokens`); the tile functions need only this function's features, and
            // `GROUPED` is false only with one group.
            unsafe {
                let tile = Tile {
                    w: codes.as_ptr().add(row * cols),
                    scales: scales.map_or(core::ptr::null(), |s| s.as_ptr().add(row * groups)),
                    cols,
                    group,
                    x: x.as_ptr().add(t * cols),
                    out: out.as_mut_ptr().add(t * nr + r),
                    ldo: nr,
                };
                match (grouped, rk, tk) {
                    (false, 2, 4) => gemv_tile::<D, 2, 4, false>(tile),
                    (false, 2, 3) => gemv_tile::<D, 2, 3, false>(tile),
                    (false, 2, _) => gemv_tile::<D, 2, 2, false>(tile),
                    (false, _, 4) => gemv_tile::<D, 1, 4, false>(tile),
                    (false, _, 3) => gemv_tile::<D, 1, 3, false>(tile),
                    (false, _, 2) => gemv_tile::<D, 1, 2, false>(tile),
                    (false, _, _) => gemv_tile::<D, 1, 1, false>(tile),
                    (true, 2, 4) => gemv_tile::<D, 2, 4, true>(tile),
                    (true, 2, 3) => gemv_tile::<D, 2, 3, true>(tile),
                    (true, 2, _) => gemv_tile::<D, 2, 2, true>(tile),
                    (true, _, 4) => gemv_tile::<D, 1, 4, true>(tile),
                    (true, _, 3) => gemv_tile::<D, 1, 3, true>(tile),
                    (true, _, 2) => gemv_tile::<D, 1, 2, true>(tile),
                    (true, _, _) => gemv_tile::<D, 1, 1, true>(tile),
                }
            }
            r += rk;
        }
        t += tk;
    }
}

/// `out[j * ld + i] = raw(W[r0 + j, k0 + i]) * (256 if FP8) * scale(r0 + j, k0 + i)` for
/// `j < nr`, `i < kc`: exact up to the one rounding of the scale multiply (256 is exact).
///
/// # Safety
/// AVX-512 F/BW/VL available; `codes` holds rows `..r0 + nr` of `cols`, `scales` (if any) their
/// groups; `k0 + kc <= cols`; `out` writable at `j * ld + [0, kc)` for `j < nr`; `group > 0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
unsafe fn decode_rows<D: Dec>(
    codes: &[D::C],
    scales: Option<&[f32]>,
    cols: usize,
    group: usize,
    r0: usize,
    nr: usize,
    k0: usize,
    kc: usize,
    out: *mut f32,
    ld: usize,
) {
    let groups = cols / group;
    let end = k0 + kc;
    for j in 0..nr {
        let row = r0 + j;
        let mut i = k0;
        while i < end {
            let (stop, scale) = match scales {
                Some(s) => (
                    end.min((i / group + 1) * group),
                    Some(_mm512_set1_ps(s[row * groups + i / group])),
                ),
                None => (end, None),
            };
            let value = |v: __m512| {
                let v = if D::FP8 {
                    _mm512_mul_ps(v, _mm512_set1_ps(256.0))
                } else {
                    v
                };
                match scale {
                    Some(s) => _mm512_mul_ps(v, s),
                    None => v,
                }
            };
            while i + 2 * W <= stop {
                // SAFETY: columns `i..i + 32 <= stop` of row `row` are inside `codes`, and `out`
                // is writable there (shifted by `k0`) by the contract.
                unsafe {
                    let [a, b] = D::load32(codes.as_ptr().add(row * cols + i));
                    let o = out.add(j * ld + i - k0);
                    _mm512_storeu_ps(o, value(a));
                    _mm512_storeu_ps(o.add(W), value(b));
                }
                i += 2 * W;
            }
            while i < stop {
                let mask = mask16((stop - i).min(W));
                // SAFETY: the mask selects columns `i..min(i + 16, stop)` of row `row`, inside
                // `codes`, and `out` is writable there (shifted by `k0`) by the contract.
                unsafe {
                    let v = D::load16(codes.as_ptr().add(row * cols + i), mask);
                    _mm512_mask_storeu_ps(out.add(j * ld + i - k0), mask, value(v));
                }
                i += W;
            }
            i = stop;
        }
    }
}

/// `c[j * ldc + t] (+)= sum_kk panel[kk * P + t] * wt[j * KC + kk]` for `j < 12`, `t < 16 * H`.
/// 12 x `H` accumulators; per column one or two panel loads and 12 broadcasts (constant offsets
/// `j * KC * 4` from one pointer).
///
/// # Safety
/// AVX-512 F/BW/VL available; `panel` readable for `kc * P`, `wt` for `11 * KC + kc`, `c`
/// readable and writable at `j * ldc + [0, 16 * H)` for `j < 12`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn gemm_kernel<const H: usize>(
    panel: *const f32,
    kc: usize,
    wt: *const f32,
    c: *mut f32,
    ldc: usize,
    first: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); NR]; H];
    if !first {
        for (v, acc_v) in acc.iter_mut().enumerate() {
            for (j, a) in acc_v.iter_mut().enumerate() {
                // SAFETY: inside `c` by the contract.
                *a = unsafe { _mm512_loadu_ps(c.add(j * ldc + v * W)) };
            }
        }
    }
    for kk in 0..kc {
        let mut xv = [_mm512_setzero_ps(); H];
        for (v, x) in xv.iter_mut().enumerate() {
            // SAFETY: `kk * P + 16 * v + 16 <= kc * P`, inside `panel`.
            *x = unsafe { _mm512_loadu_ps(panel.add(kk * P + v * W)) };
        }
        for j in 0..NR {
            // SAFETY: `j * KC + kk < 11 * KC + kc`, inside `wt`.
            let b = _mm512_set1_ps(unsafe { *wt.add(j * KC + kk) });
            for (acc_v, &x) in acc.iter_mut().zip(&xv) {
                acc_v[j] = _mm512_fmadd_ps(x, b, acc_v[j]);
            }
        }
    }
    for (v, acc_v) in acc.iter().enumerate() {
        for (j, &a) in acc_v.iter().enumerate() {
            // SAFETY: inside `c` by the contract.
            unsafe { _mm512_storeu_ps(c.add(j * ldc + v * W), a) };
        }
    }
}

/// Where an INT8 dot tile's codes, activations and outputs live.
#[derive(Clone, Copy)]
struct DotTile {
    /// Row 0 of the codes; rows are `cols` apart.
    w: *const i8,
    /// Row sums of the codes from row 0 (VNNI only).
    sums: *const i32,
    cols: usize,
    /// Token 0 of the activation codes; tokens are `cols` apart.
    x: *const i8,
    /// `out[t * ldo + r]`.
    out: *mut i32,
    ldo: usize,
}

/// 64 bytes at `p`, or the prefix selected by `mask` (others 0, not read) unless `FULL`.
///
/// # Safety
/// AVX-512 F/BW/VL available; the selected bytes readable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load_i8<const FULL: bool>(p: *const i8, mask: __mmask64) -> __m512i {
    // SAFETY: the caller guarantees the selected bytes are readable.
    unsafe {
        if FULL {
            _mm512_loadu_si512(p.cast())
        } else {
            _mm512_maskz_loadu_epi8(mask, p)
        }
    }
}

/// One 64-column step of [`dots_vnni`]: `acc[r][t] += sum (x + 128) * w` per dword of 4 bytes.
/// Masked-off columns read `x = 0` (so `x + 128 = 128`) and `w = 0`, adding nothing.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI available; columns `i..i + 64` (or the masked prefix) of `R` rows and `T`
/// tokens readable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn vnni_step<const R: usize, const T: usize, const FULL: bool>(
    acc: &mut [[__m512i; T]; R],
    tile: &DotTile,
    i: usize,
    mask: __mmask64,
) {
    let bias = _mm512_set1_epi8(i8::MIN);
    let mut xu = [_mm512_setzero_si512(); T];
    for (t, v) in xu.iter_mut().enumerate() {
        // SAFETY: inside token `t`'s row by the contract.
        let xq = unsafe { load_i8::<FULL>(tile.x.add(t * tile.cols + i), mask) };
        // x + 128 as u8: flipping the sign bit maps [-128, 127] onto [0, 255].
        *v = _mm512_xor_si512(xq, bias);
    }
    for (r, acc_r) in acc.iter_mut().enumerate() {
        // SAFETY: inside row `r` by the contract.
        let wv = unsafe { load_i8::<FULL>(tile.w.add(r * tile.cols + i), mask) };
        for (a, &x) in acc_r.iter_mut().zip(&xu) {
            *a = _mm512_dpbusd_epi32(*a, x, wv);
        }
    }
}

/// Exact `out[t][r] = sum_j x[t][j] * w[r][j]` with VNNI: `sum (x + 128) * w - 128 * rowsum(w)`,
/// all in wrapping i32 arithmetic, which is exact because the true dot fits in i32.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI available; `R` rows of codes and sums, `T` rows of activation codes
/// readable, outputs writable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dots_vnni<const R: usize, const T: usize>(tile: DotTile) {
    let mut acc = [[_mm512_setzero_si512(); T]; R];
    let mut i = 0;
    while i + 64 <= tile.cols {
        // SAFETY: columns `i..i + 64` are inside every row (`i + 64 <= cols`).
        unsafe { vnni_step::<R, T, true>(&mut acc, &tile, i, u64::MAX) };
        i += 64;
    }
    if i < tile.cols {
        let mask = (1u64 << (tile.cols - i)) - 1;
        // SAFETY: the mask selects columns `i..cols`, inside every row.
        unsafe { vnni_step::<R, T, false>(&mut acc, &tile, i, mask) };
    }
    for (r, acc_r) in acc.iter().enumerate() {
        // SAFETY: row `r`'s sum is readable (contract).
        let bias = unsafe { *tile.sums.add(r) }.wrapping_mul(128);
        for (t, &a) in acc_r.iter().enumerate() {
            // SAFETY: output `(t, r)` is writable (contract).
            unsafe {
                *tile.out.add(t * tile.ldo + r) = _mm512_reduce_add_epi32(a).wrapping_sub(bias)
            };
        }
    }
}

/// One 64-column step of [`dots_bw`]: `|w| * (x with the sign of w)` by `vpmaddubsw` (pairs are
/// at most `2 * 128 * 127 < 2^15`, so never saturate), widened to i32 by `vpmaddwd` with ones.
///
/// # Safety
/// As [`vnni_step`], without VNNI.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn bw_step<const R: usize, const T: usize, const FULL: bool>(
    acc: &mut [[__m512i; T]; R],
    tile: &DotTile,
    i: usize,
    mask: __mmask64,
) {
    let ones = _mm512_set1_epi16(1);
    let zero = _mm512_setzero_si512();
    let mut xv = [zero; T];
    for (t, v) in xv.iter_mut().enumerate() {
        // SAFETY: inside token `t`'s row by the contract.
        *v = unsafe { load_i8::<FULL>(tile.x.add(t * tile.cols + i), mask) };
    }
    for (r, acc_r) in acc.iter_mut().enumerate() {
        // SAFETY: inside row `r` by the contract.
        let wv = unsafe { load_i8::<FULL>(tile.w.add(r * tile.cols + i), mask) };
        // |-128| = 128 is fine as an unsigned byte; x is in [-127, 127], so negating is exact.
        let wabs = _mm512_abs_epi8(wv);
        let neg = _mm512_movepi8_mask(wv);
        for (a, &x) in acc_r.iter_mut().zip(&xv) {
            let xs = _mm512_mask_sub_epi8(x, neg, zero, x);
            let pairs = _mm512_maddubs_epi16(wabs, xs);
            *a = _mm512_add_epi32(*a, _mm512_madd_epi16(pairs, ones));
        }
    }
}

/// Exact `out[t][r] = sum_j x[t][j] * w[r][j]` with AVX-512 BW (no VNNI).
///
/// # Safety
/// As [`dots_vnni`], without VNNI; `sums` is not read.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn dots_bw<const R: usize, const T: usize>(tile: DotTile) {
    let mut acc = [[_mm512_setzero_si512(); T]; R];
    let mut i = 0;
    while i + 64 <= tile.cols {
        // SAFETY: columns `i..i + 64` are inside every row (`i + 64 <= cols`).
        unsafe { bw_step::<R, T, true>(&mut acc, &tile, i, u64::MAX) };
        i += 64;
    }
    if i < tile.cols {
        let mask = (1u64 << (tile.cols - i)) - 1;
        // SAFETY: the mask selects columns `i..cols`, inside every row.
        unsafe { bw_step::<R, T, false>(&mut acc, &tile, i, mask) };
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (t, &a) in acc_r.iter().enumerate() {
            // SAFETY: output `(t, r)` is writable (contract).
            unsafe { *tile.out.add(t * tile.ldo + r) = _mm512_reduce_add_epi32(a) };
        }
    }
}

/// Dispatches one dot tile of `rk` rows (4 or 1) x `tk` tokens (4, 2 or 1).
///
/// # Safety
/// As [`dots_vnni`] (with VNNI available when `vnni`) for `R = rk`, `T = tk`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn dots_tile(vnni: bool, rk: usize, tk: usize, tile: DotTile) {
    // SAFETY: forwarded contract; VNNI is only used when `vnni` says the CPU has it.
    unsafe {
        match (vnni, rk, tk) {
            (true, 4, 4) => dots_vnni::<4, 4>(tile),
            (true, 4, 2) => dots_vnni::<4, 2>(tile),
            (true, 4, _) => dots_vnni::<4, 1>(tile),
            (true, _, 4) => dots_vnni::<1, 4>(tile),
            (true, _, 2) => dots_vnni::<1, 2>(tile),
            (true, _, _) => dots_vnni::<1, 1>(tile),
            (false, 4, 4) => dots_bw::<4, 4>(tile),
            (false, 4, 2) => dots_bw::<4, 2>(tile),
            (false, 4, _) => dots_bw::<4, 1>(tile),
            (false, _, 4) => dots_bw::<1, 4>(tile),
            (false, _, 2) => dots_bw::<1, 2>(tile),
            (false, _, _) => dots_bw::<1, 1>(tile),
        }
    }
}

impl Avx512 {
    /// [`Backend::int8_dots`] with VNNI or without; `pub(crate)` so tests can run the AVX-512 BW
    /// path on CPUs that have VNNI.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn int8_dots_with(
        self,
        vnni: bool,
        w: &Matrix,
        r0: usize,
        nr: usize,
        xq: &[i8],
        tokens: usize,
        out: &mut [i32],
    ) {
        let Weights::Int8 { codes, .. } = &w.weights else {
            panic!("int8_dots needs INT8 weights");
        };
        let cols = w.cols;
        assert!(
            w.row_sums.len() >= r0 + nr || !vnni,
            "INT8 dots need per-channel codes"
        );
        assert!(codes.len() >= (r0 + nr) * cols);
        assert!(xq.len() >= tokens * cols && out.len() >= tokens * nr);
        let vnni = vnni && self.vnni;
        // Rows outer: a 4-row tile of codes stays in L1 while all tokens pass over it.
        let mut r = 0;
        while r < nr {
            // One token: one row at a time, so the codes stream in order (see `gemv_rows`).
            let rk = if tokens > 1 && nr - r >= 4 { 4 } else { 1 };
            let mut t = 0;
            while t < tokens {
                let tk = match tokens - t {
                    1 => 1,
                    2 | 3 => 2,
                    _ => 4,
                };
                let row = r0 + r;
                // SAFETY: `self` exists only where AVX-512 F/BW/VL are usable, and VNNI is used
                // only when detected; every tile stays inside the slices checked above.
                unsafe {
                    let tile = DotTile {
                        w: codes.as_ptr().add(row * cols),
                        sums: if vnni {
                            w.row_sums.as_ptr().add(row)
                        } else {
                            core::ptr::null()
                        },
                        cols,
                        x: xq.as_ptr().add(t * cols),
                        out: out.as_mut_ptr().add(t * nr + r),
                        ldo: nr,
                    };
                    dots_tile(vnni, rk, tk, tile);
                }
                t += tk;
            }
            r += rk;
        }
    }
}

impl Backend for Avx512 {
    const P: usize = P;
    const NR: usize = NR;

    fn gemv(self, w: &Matrix, r0: usize, nr: usize, x: &[f32], tokens: usize, out: &mut [f32]) {
        let (cols, group) = (w.cols, w.group());
        assert!(r0 + nr <= w.rows && cols > 0 && group > 0 && cols.is_multiple_of(group));
        assert!(x.len() >= tokens * cols && out.len() >= tokens * nr);
        let scales = w.scales();
        // SAFETY: `self` exists only where AVX-512 F/BW/VL are usable; `Matrix::new` checked the
        // code and scale lengths against the shape, and the other bounds are asserted above.
        unsafe {
            match &w.weights {
                Weights::F32(c) => gemv_rows::<F32>(c, None, cols, group, r0, nr, x, tokens, out),
                Weights::F16(c) => gemv_rows::<F16>(c, None, cols, group, r0, nr, x, tokens, out),
                Weights::Bf16(c) => gemv_rows::<Bf16>(c, None, cols, group, r0, nr, x, tokens, out),
                Weights::Int8 { codes, .. } => {
                    gemv_rows::<I8>(codes, scales, cols, group, r0, nr, x, tokens, out)
                }
                Weights::Fp8 { codes, .. } => {
                    gemv_rows::<Fp8>(codes, scales, cols, group, r0, nr, x, tokens, out)
                }
                // Nibbles looked up in per-group tables of their weights (see `avx512_int4`);
                // groups of whole 32-element blocks only.
                Weights::Int4 {
                    packed,
                    scales,
                    zeros,
                    ..
                } if self.bf16 && group.is_multiple_of(64) => super::avx512_int4::gemv_bf16(
                    packed, scales, zeros, cols, group, r0, nr, x, tokens, out,
                ),
                Weights::Int4 {
                    packed,
                    scales,
                    zeros,
                    ..
                } if group.is_multiple_of(32) => super::avx512_int4::gemv(
                    packed, scales, zeros, cols, group, r0, nr, x, tokens, out,
                ),
                Weights::Int4 { .. } => super::int4::gemv_int4(self, w, r0, nr, x, tokens, out),
            }
        }
    }

    fn gemv_dense_rows(
        self,
        rows: &[f32],
        cols: usize,
        nr: usize,
        x: &[f32],
        tokens: usize,
        out: &mut [f32],
    ) {
        assert!(cols > 0 && rows.len() >= nr * cols);
        assert!(x.len() >= tokens * cols && out.len() >= tokens * nr);
        // SAFETY: `self` exists only where the ISA is usable; bounds asserted above.
        unsafe { gemv_rows::<F32>(rows, None, cols, cols, 0, nr, x, tokens, out) }
    }

    fn decode_rows(
        self,
        w: &Matrix,
        r0: usize,
        nr: usize,
        k0: usize,
        kc: usize,
        out: &mut [f32],
        ld: usize,
    ) {
        let (cols, group) = (w.cols, w.group());
        assert!(r0 + nr <= w.rows && k0 + kc <= cols && kc <= ld && group > 0);
        assert!(nr == 0 || out.len() >= (nr - 1) * ld + kc);
        let scales = w.scales();
        let o = out.as_mut_ptr();
        // SAFETY: `self` exists only where AVX-512 F/BW/VL are usable; `Matrix::new` checked the
        // code and scale lengths against the shape, and the other bounds are asserted above.
        unsafe {
            match &w.weights {
                Weights::F32(c) => decode_rows::<F32>(c, None, cols, group, r0, nr, k0, kc, o, ld),
                Weights::F16(c) => decode_rows::<F16>(c, None, cols, group, r0, nr, k0, kc, o, ld),
                Weights::Bf16(c) => {
                    decode_rows::<Bf16>(c, None, cols, group, r0, nr, k0, kc, o, ld)
                }
                Weights::Int8 { codes, .. } => {
                    decode_rows::<I8>(codes, scales, cols, group, r0, nr, k0, kc, o, ld)
                }
                Weights::Fp8 { codes, .. } => {
                    decode_rows::<Fp8>(codes, scales, cols, group, r0, nr, k0, kc, o, ld)
                }
                Weights::Int4 { .. } => super::avx512_int4::decode_rows(w, r0, nr, k0, kc, out, ld),
            }
        }
    }

    fn gemm_tile(
        self,
        panel: &[f32],
        kc: usize,
        half: usize,
        wt: &[f32],
        c: &mut [f32],
        ldc: usize,
        first: bool,
    ) {
        assert!(kc <= KC && panel.len() >= kc * P && wt.len() >= (NR - 1) * KC + kc);
        assert!((half == 1 || half == 2) && ldc >= half * W);
        assert!(c.len() >= (NR - 1) * ldc + half * W);
        // SAFETY: `self` exists only where AVX-512 F/BW/VL are usable; bounds asserted above.
        unsafe {
            if half == 2 {
                gemm_kernel::<2>(panel.as_ptr(), kc, wt.as_ptr(), c.as_mut_ptr(), ldc, first);
            } else {
                gemm_kernel::<1>(panel.as_ptr(), kc, wt.as_ptr(), c.as_mut_ptr(), ldc, first);
            }
        }
    }

    fn int8_dots(
        self,
        w: &Matrix,
        r0: usize,
        nr: usize,
        xq: &[i8],
        tokens: usize,
        out: &mut [i32],
    ) {
        self.int8_dots_with(true, w, r0, nr, xq, tokens, out);
    }
}
