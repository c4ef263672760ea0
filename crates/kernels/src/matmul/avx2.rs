//! AVX2 (+ FMA + F16C) products: 8 f32 lanes, 16 elements per step.
//!
//! AVX2 has no masked byte loads, so the `< 16`-element tail of a group is copied into
//! zero-padded stack blocks and goes through the same vector code. Weights are widened exactly as
//! in the AVX-512 version (FP8 through f16 bits, see `avx512::Fp8`).

use core::arch::x86_64::*;

use half::{bf16, f16};

use super::{Backend, Matrix, Weights, KC};
use crate::isa::Usable;
use crate::Isa;

/// f32 lanes per vector.
const W: usize = 8;
/// Elements per step (two vectors).
const STEP: usize = 2 * W;
/// Weight rows per register tile of the matrix-matrix kernel.
const NR: usize = 6;
/// Tokens per packed panel (two vectors).
const P: usize = 2 * W;

/// The AVX2 backend; exists only where AVX2/FMA/F16C are usable.
#[derive(Clone, Copy)]
pub(crate) struct Avx2(());

impl Avx2 {
    /// # Panics
    /// If `u` is not [`Isa::Avx2`] (the dispatch never asks for that).
    pub(crate) fn new(u: Usable) -> Self {
        assert_eq!(u.isa(), Isa::Avx2, "Avx2 backend for another ISA");
        Avx2(())
    }
}

/// A stored weight type widened to f32 lanes (raw values; FP8 raw = E4M3 value / 256).
trait Dec {
    type C: Copy + Default;
    const FP8: bool;

    /// 16 consecutive elements at `p` as two vectors.
    ///
    /// # Safety
    /// AVX2/FMA/F16C available; 16 elements readable at `p`.
    unsafe fn load16(p: *const Self::C) -> [__m256; 2];
}

struct F32;
struct F16;
struct Bf16;
struct I8;
struct Fp8;

impl Dec for F32 {
    type C = f32;
    const FP8: bool = false;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load16(p: *const f32) -> [__m256; 2] {
        // SAFETY: the caller guarantees 16 readable elements.
        unsafe { [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(W))] }
    }
}

impl Dec for F16 {
    type C = f16;
    const FP8: bool = false;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load16(p: *const f16) -> [__m256; 2] {
        // SAFETY: the caller guarantees 16 readable f16 (two 16-byte loads); f16 is a u16.
        unsafe {
            [
                _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
                _mm256_cvtph_ps(_mm_loadu_si128(p.add(W).cast())),
            ]
        }
    }
}

impl Dec for Bf16 {
    type C = bf16;
    const FP8: bool = false;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load16(p: *const bf16) -> [__m256; 2] {
        // SAFETY: the caller guarantees 16 readable bf16 (two 16-byte loads); bf16 is a u16.
        let (a, b) = unsafe { (_mm_loadu_si128(p.cast()), _mm_loadu_si128(p.add(W).cast())) };
        // bf16 is the top half of an f32: widening is a 16-bit shift, exact for every value.
        [
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(a))),
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(b))),
        ]
    }
}

impl Dec for I8 {
    type C = i8;
    const FP8: bool = false;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load16(p: *const i8) -> [__m256; 2] {
        // SAFETY: the caller guarantees 16 readable bytes (two 8-byte loads).
        let (a, b) = unsafe { (_mm_loadl_epi64(p.cast()), _mm_loadl_epi64(p.add(W).cast())) };
        [
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(a)),
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)),
        ]
    }
}

impl Dec for Fp8 {
    type C = u8;
    const FP8: bool = true;

    /// `(sign_extend(code) << 7) & 0xBFFF` is the f16 whose value is the E4M3 value / 256.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load16(p: *const u8) -> [__m256; 2] {
        // SAFETY: the caller guarantees 16 readable bytes.
        let raw = unsafe { _mm_loadu_si128(p.cast()) };
        let s = _mm256_cvtepi8_epi16(raw);
        let h = _mm256_and_si256(
            _mm256_slli_epi16::<7>(s),
            _mm256_set1_epi16(0xBFFF_u16 as i16),
        );
        [
            _mm256_cvtph_ps(_mm256_castsi256_si128(h)),
            _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(h)),
        ]
    }
}

/// `n < 16` elements at `p` followed by zeros, as a stack block.
///
/// # Safety
/// `n` elements readable at `p`.
#[inline]
unsafe fn padded<C: Copy + Default>(p: *const C, n: usize) -> [C; STEP] {
    let mut block = [C::default(); STEP];
    // SAFETY: `n <= 16` elements are readable at `p` (contract) and fit in `block`.
    unsafe { core::ptr::copy_nonoverlapping(p, block.as_mut_ptr(), n.min(STEP)) };
    block
}

/// Horizontal sum of 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
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
/// `R` rows and `T` tokens, weights decoded in registers once for all `T` tokens.
///
/// # Safety
/// AVX2/FMA/F16C available; `R` rows of `cols` weights (and `cols / group` scales unless null),
/// `T` rows of `cols` activations readable, outputs writable; `group > 0` divides `cols`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_tile<D: Dec, const R: usize, const T: usize>(tile: Tile<D::C>) {
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
    let zero = _mm256_setzero_ps();
    let mut total = [[zero; T]; R];
    for g in 0..groups {
        let mut acc = [[[zero; 2]; T]; R];
        let end = (g + 1) * group;
        let mut i = g * group;
        while i < end {
            let n = (end - i).min(STEP);
            let mut xv = [[zero; 2]; T];
            for (t, v) in xv.iter_mut().enumerate() {
                // SAFETY: elements `i..i + n` of token `t` are readable (`i + n <= cols`); a
                // short tail goes through a zero-padded copy.
                *v = unsafe {
                    let p = x.add(t * cols + i);
                    if n == STEP {
                        F32::load16(p)
                    } else {
                        F32::load16(padded(p, n).as_ptr())
                    }
                };
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // SAFETY: as above, for row `r` of the weights.
                let [a, b] = unsafe {
                    let p = w.add(r * cols + i);
                    if n == STEP {
                        D::load16(p)
                    } else {
                        D::load16(padded(p, n).as_ptr())
                    }
                };
                for (acc_rt, xt) in acc_r.iter_mut().zip(&xv) {
                    acc_rt[0] = _mm256_fmadd_ps(a, xt[0], acc_rt[0]);
                    acc_rt[1] = _mm256_fmadd_ps(b, xt[1], acc_rt[1]);
                }
            }
            i += n;
        }
        for (r, (acc_r, total_r)) in acc.iter().zip(&mut total).enumerate() {
            let scale = if scales.is_null() {
                None
            } else {
                // SAFETY: row `r` has `groups` readable scales (contract) and `g < groups`.
                Some(_mm256_set1_ps(unsafe { *scales.add(r * groups + g) }))
            };
            for (acc_rt, total_rt) in acc_r.iter().zip(total_r.iter_mut()) {
                let mut sum = _mm256_add_ps(acc_rt[0], acc_rt[1]);
                if D::FP8 {
                    sum = _mm256_mul_ps(sum, _mm256_set1_ps(256.0));
                }
                *total_rt = match scale {
                    Some(s) => _mm256_fmadd_ps(sum, s, *total_rt),
                    None => _mm256_add_ps(sum, *total_rt),
                };
            }
        }
    }
    for (r, total_r) in total.iter().enumerate() {
        for (t, &v) in total_r.iter().enumerate() {
            // SAFETY: output `(t, r)` is writable (contract).
            unsafe { *out.add(t * ldo + r) = hsum(v) };
        }
    }
}

/// Rows `r0..r0 + nr` for `tokens` tokens: tiles of 4 rows x 1 token, or 2 rows x 2 tokens
/// (16 registers), then single rows.
///
/// # Safety
/// AVX2/FMA/F16C available; `codes` holds rows `..r0 + nr` of `cols`, `scales` (if any) their
/// `cols / group` scales, `x` holds `tokens` rows of `cols`, `out` `tokens * nr` elements;
/// `group > 0` divides `cols`.
#[target_feature(enable = "avx2,fma,f16c")]
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
    let mut t = 0;
    while t < tokens {
        let tk = (tokens - t).min(2);
        // One token: one row at a time, so weights stream in order (see the AVX-512 `gemv_rows`).
        let full = if tokens == 1 {
            1
        } else if tk == 2 {
            2
        } else {
            4
        };
        let mut r = 0;
        while r < nr {
            let rk = if nr - r >= full { full } else { 1 };
            let row = r0 + r;
            // SAFETY: every offset stays inside its slice by the contract (`row + rk <= r0 + nr`,
            // `t + tk <= tokens`); the tile functions need only this function's features.
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
                match (rk, tk) {
                    (4, _) => gemv_tile::<D, 4, 1>(tile),
                    (2, _) => gemv_tile::<D, 2, 2>(tile),
                    (_, 2) => gemv_tile::<D, 1, 2>(tile),
                    _ => gemv_tile::<D, 1, 1>(tile),
                }
            }
            r += rk;
        }
        t += tk;
    }
}

/// `out[j * ld + i] = raw(W[r0 + j, k0 + i]) * (256 if FP8) * scale(r0 + j, k0 + i)` for
/// `j < nr`, `i < kc`: exact up to the one rounding of the scale multiply.
///
/// # Safety
/// AVX2/FMA/F16C available; `codes` holds rows `..r0 + nr` of `cols`, `scales` (if any) their
/// groups; `k0 + kc <= cols`; `out` writable at `j * ld + [0, kc)` for `j < nr`; `group > 0`.
#[target_feature(enable = "avx2,fma,f16c")]
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
    out: &mut [f32],
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
                    Some(s[row * groups + i / group]),
                ),
                None => (end, None),
            };
            while i < stop {
                let n = (stop - i).min(STEP);
                // SAFETY: columns `i..i + n` of row `row` are inside `codes`; a short tail goes
                // through a padded copy.
                let mut v = unsafe {
                    let p = codes.as_ptr().add(row * cols + i);
                    if n == STEP {
                        D::load16(p)
                    } else {
                        D::load16(padded(p, n).as_ptr())
                    }
                };
                for h in &mut v {
                    if D::FP8 {
                        *h = _mm256_mul_ps(*h, _mm256_set1_ps(256.0));
                    }
                    if let Some(s) = scale {
                        *h = _mm256_mul_ps(*h, _mm256_set1_ps(s));
                    }
                }
                let o = &mut out[j * ld + i - k0..j * ld + i - k0 + n];
                if n == STEP {
                    // SAFETY: `o` holds 16 f32.
                    unsafe {
                        _mm256_storeu_ps(o.as_mut_ptr(), v[0]);
                        _mm256_storeu_ps(o.as_mut_ptr().add(W), v[1]);
                    }
                } else {
                    let mut block = [0.0f32; STEP];
                    // SAFETY: `block` holds 16 f32.
                    unsafe {
                        _mm256_storeu_ps(block.as_mut_ptr(), v[0]);
                        _mm256_storeu_ps(block.as_mut_ptr().add(W), v[1]);
                    }
                    o.copy_from_slice(&block[..n]);
                }
                i += n;
            }
        }
    }
}

/// `c[j * ldc + t] (+)= sum_kk panel[kk * P + t] * wt[j * KC + kk]` for `j < 6`, `t < 8 * H`.
///
/// # Safety
/// AVX2/FMA/F16C available; `panel` readable for `kc * P`, `wt` for `5 * KC + kc`, `c` readable
/// and writable at `j * ldc + [0, 8 * H)` for `j < 6`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_kernel<const H: usize>(
    panel: *const f32,
    kc: usize,
    wt: *const f32,
    c: *mut f32,
    ldc: usize,
    first: bool,
) {
    let mut acc = [[_mm256_setzero_ps(); NR]; H];
    if !first {
        for (v, acc_v) in acc.iter_mut().enumerate() {
            for (j, a) in acc_v.iter_mut().enumerate() {
                // SAFETY: inside `c` by the contract.
                *a = unsafe { _mm256_loadu_ps(c.add(j * ldc + v * W)) };
            }
        }
    }
    for kk in 0..kc {
        let mut xv = [_mm256_setzero_ps(); H];
        for (v, x) in xv.iter_mut().enumerate() {
            // SAFETY: `kk * P + 8 * v + 8 <= kc * P`, inside `panel`.
            *x = unsafe { _mm256_loadu_ps(panel.add(kk * P + v * W)) };
        }
        for j in 0..NR {
            // SAFETY: `j * KC + kk < 5 * KC + kc`, inside `wt`.
            let b = _mm256_set1_ps(unsafe { *wt.add(j * KC + kk) });
            for (acc_v, &x) in acc.iter_mut().zip(&xv) {
                acc_v[j] = _mm256_fmadd_ps(x, b, acc_v[j]);
            }
        }
    }
    for (v, acc_v) in acc.iter().enumerate() {
        for (j, &a) in acc_v.iter().enumerate() {
            // SAFETY: inside `c` by the contract.
            unsafe { _mm256_storeu_ps(c.add(j * ldc + v * W), a) };
        }
    }
}

/// Exact `out[t * ldo + r] = sum_j x[t][j] * w[r][j]` for `R` rows, `T` tokens: 32 columns per
/// step as `|w| * sign(x, w)` by `vpmaddubsw` (pairs at most `2 * 128 * 127 < 2^15`, never
/// saturating; `x` is in [-127, 127] so `vpsignb` never overflows), widened by `vpmaddwd`; the
/// `< 32`-column tail in scalar integer code.
///
/// # Safety
/// AVX2/FMA/F16C available; `R` rows of codes and `T` rows of activation codes (`cols` apart)
/// readable, outputs writable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots<const R: usize, const T: usize>(
    w: *const i8,
    x: *const i8,
    cols: usize,
    out: *mut i32,
    ldo: usize,
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); T]; R];
    let mut i = 0;
    while i + 32 <= cols {
        let mut xv = [_mm256_setzero_si256(); T];
        for (t, v) in xv.iter_mut().enumerate() {
            // SAFETY: columns `i..i + 32 <= cols` of token `t` are readable.
            *v = unsafe { _mm256_loadu_si256(x.add(t * cols + i).cast()) };
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: columns `i..i + 32 <= cols` of row `r` are readable.
            let wv = unsafe { _mm256_loadu_si256(w.add(r * cols + i).cast()) };
            let wabs = _mm256_abs_epi8(wv);
            for (a, &xt) in acc_r.iter_mut().zip(&xv) {
                let pairs = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(xt, wv));
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(pairs, ones));
            }
        }
        i += 32;
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (t, &a) in acc_r.iter().enumerate() {
            let s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
            let mut dot = _mm_cvtsi128_si32(s);
            for j in i..cols {
                // SAFETY: column `j < cols` of row `r` and token `t` is readable.
                let (wj, xj) = unsafe { (*w.add(r * cols + j), *x.add(t * cols + j)) };
                dot += i32::from(wj) * i32::from(xj);
            }
            // SAFETY: output `(t, r)` is writable (contract).
            unsafe { *out.add(t * ldo + r) = dot };
        }
    }
}

impl Backend for Avx2 {
    const P: usize = P;
    const NR: usize = NR;

    fn gemv(self, w: &Matrix, r0: usize, nr: usize, x: &[f32], tokens: usize, out: &mut [f32]) {
        let (cols, group) = (w.cols, w.group());
        assert!(r0 + nr <= w.rows && cols > 0 && group > 0 && cols.is_multiple_of(group));
        assert!(x.len() >= tokens * cols && out.len() >= tokens * nr);
        let scales = w.scales();
        // SAFETY: `self` exists only where AVX2/FMA/F16C are usable; `Matrix::new` checked the
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
        let scales = w.scales();
        // SAFETY: `self` exists only where AVX2/FMA/F16C are usable; `Matrix::new` checked the
        // code and scale lengths against the shape, and `out` is indexed with bounds checks.
        unsafe {
            match &w.weights {
                Weights::F32(c) => {
                    decode_rows::<F32>(c, None, cols, group, r0, nr, k0, kc, out, ld)
                }
                Weights::F16(c) => {
                    decode_rows::<F16>(c, None, cols, group, r0, nr, k0, kc, out, ld)
                }
                Weights::Bf16(c) => {
                    decode_rows::<Bf16>(c, None, cols, group, r0, nr, k0, kc, out, ld)
                }
                Weights::Int8 { codes, .. } => {
                    decode_rows::<I8>(codes, scales, cols, group, r0, nr, k0, kc, out, ld)
                }
                Weights::Fp8 { codes, .. } => {
                    decode_rows::<Fp8>(codes, scales, cols, group, r0, nr, k0, kc, out, ld)
                }
                Weights::Int4 { .. } => decode_int4_rows(w, r0, nr, k0, kc, out, ld),
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
        // SAFETY: `self` exists only where AVX2/FMA/F16C are usable; bounds asserted above.
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
        let Weights::Int8 { codes, .. } = &w.weights else {
            panic!("int8_dots needs INT8 weights");
        };
        let cols = w.cols;
        assert!(codes.len() >= (r0 + nr) * cols);
        assert!(xq.len() >= tokens * cols && out.len() >= tokens * nr);
        let mut r = 0;
        while r < nr {
            let rk = if tokens > 1 && nr - r >= 4 { 4 } else { 1 };
            let mut t = 0;
            while t < tokens {
                let tk = (tokens - t).min(2);
                // SAFETY: `self` exists only where AVX2/FMA/F16C are usable; rows
                // `r0 + r..r0 + r + rk` and tokens `t..t + tk` are inside the slices checked above.
                unsafe {
                    let wp = codes.as_ptr().add((r0 + r) * cols);
                    let xp = xq.as_ptr().add(t * cols);
                    let op = out.as_mut_ptr().add(t * nr + r);
                    match (rk, tk) {
                        (4, 2) => dots::<4, 2>(wp, xp, cols, op, nr),
                        (4, _) => dots::<4, 1>(wp, xp, cols, op, nr),
                        (_, 2) => dots::<1, 2>(wp, xp, cols, op, nr),
                        _ => dots::<1, 1>(wp, xp, cols, op, nr),
                    }
                }
                t += tk;
            }
            r += rk;
        }
    }
}

/// INT4 rows decoded to f32 (see `int4::decode_rows_with`), 32 codes per vector step.
///
/// # Safety
/// AVX2/FMA/F16C available (bounds are checked by `decode_rows_with`).
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn decode_int4_rows(
    w: &Matrix,
    r0: usize,
    nr: usize,
    k0: usize,
    kc: usize,
    out: &mut [f32],
    ld: usize,
) {
    super::int4::decode_rows_with(w, r0, nr, k0, kc, out, ld, |bytes, zero, scale, dst| {
        // SAFETY: this closure runs inside the enclosing function, whose features it inherits.
        unsafe { decode32_int4(bytes, zero, scale, dst) }
    });
}

/// `dst[i] = (code_i - zero) * scale` for the 32 codes of `bytes` (code `2k` is the low nibble
/// of byte `k`), as the AVX-512 version with 8-lane conversions.
///
/// # Safety
/// AVX2/FMA/F16C available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode32_int4(bytes: &[u8; 16], zero: u8, scale: f32, dst: &mut [f32; 32]) {
    // SAFETY: `bytes` holds 16 readable bytes.
    let raw = unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) };
    let low4 = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(raw, low4);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), low4);
    let z = _mm256_set1_epi32(i32::from(zero));
    let s = _mm256_set1_ps(scale);
    let halves = [_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)];
    for (k, half) in halves.into_iter().enumerate() {
        for (q, quarter) in [half, _mm_srli_si128::<8>(half)].into_iter().enumerate() {
            let v = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(quarter), z));
            // SAFETY: `dst` holds 32 f32; `k * 16 + q * 8 + 8 <= 32`.
            unsafe {
                _mm256_storeu_ps(dst.as_mut_ptr().add(k * 2 * W + q * W), _mm256_mul_ps(v, s))
            };
        }
    }
}
