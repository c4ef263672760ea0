//! AVX-512 matrix-vector products on INT4 weights ([`Weights::Int4`](super::Weights::Int4)),
//! the decode step of W4A16 models. The activations arrive rounded to bf16 (`matmul` does it for
//! every INT4 product), and each (row, group) gets a register table of its 16 possible weights,
//! which the nibbles index directly. Two tiles:
//!
//! - [`gemv_bf16`], where the CPU has AVX-512 BF16 and groups are multiples of 64: a 32-word
//!   table of `code - zero` in bf16 (exact), looked up with `vpermw` (it takes the low 5 bits of
//!   each word, so the table's upper half repeats the lower), and `vdpbf16ps` with the
//!   activations (32 exact products per instruction); the group's sum is scaled once. Per 64
//!   weights: one widening of 32 bytes to words, one shift, two lookups, two dot instructions.
//! - [`gemv`] otherwise (groups multiples of 32): a 16-float table of `(code - zero) * scale`
//!   (one rounding, the values [`Matrix::row`](super::Matrix::row) gives) looked up with
//!   `vpermps` (low 4 bits of each 32-bit lane), then FMAs: per 32 weights one zero-extending
//!   load, one shift, two permutes and two FMAs, INT8's instruction count.
//!
//! The low nibbles are the even elements of a block and the high nibbles the odd ones, so the
//! activations are permuted once per call into that order ([`deinterleave_blocks`],
//! [`bf16_blocks`]). Other INT4 groups take the decode-then-dense path of `int4.rs`, and so does
//! the matrix-matrix path (prefill), 32 codes at a time ([`decode_rows`]).

use core::arch::x86_64::*;
use std::cell::RefCell;

use super::Matrix;

/// f32 lanes per vector.
const W: usize = 16;

/// Rows are prefetched this many tiles ahead: INT4 rows are short in bytes (288 for SmolLM2's
/// 576 columns) and consumed fast, so the look-ahead is longer than for the byte-wide kinds
/// (2 tiles gave 6.5 ms per SmolLM2 decode step, 8 gave 4.8, 16 gave 5.1 with the earlier tile).
const PREFETCH_TILES: usize = 8;

/// `CENTRED[z][i] = i - z`: the codes relative to each possible zero point, exact.
static CENTRED: [[f32; 16]; 16] = {
    let mut t = [[0f32; 16]; 16];
    let mut z = 0;
    while z < 16 {
        let mut i = 0;
        while i < 16 {
            t[z][i] = i as f32 - z as f32;
            i += 1;
        }
        z += 1;
    }
    t
};

/// `BF16_TABLES[z][i]` = the bf16 bits of `(i & 15) - z`: a 32-word `vpermw` table whose upper
/// half repeats the lower (the low nibble's index word still carries bit 4 of its byte).
static BF16_TABLES: [[u16; 32]; 16] = {
    let mut t = [[0u16; 32]; 16];
    let mut z = 0;
    while z < 16 {
        let mut i = 0;
        while i < 32 {
            // Small integers are exact in bf16: the top half of their f32 bits.
            t[z][i] = (((i & 15) as f32 - z as f32).to_bits() >> 16) as u16;
            i += 1;
        }
        z += 1;
    }
    t
};

thread_local! {
    /// The permuted activations of a call (grown, never shrunk).
    static DEINTERLEAVED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The bf16 activations of a call in the `vdpbf16ps` tiles' order (grown, never shrunk).
    static BF16_X: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// `x` (rows of `cols`, `cols` a multiple of 32) with each 32-element block reordered as its
/// 16 even elements, then its 16 odd ones: the order the tiles produce the weights in.
fn deinterleave_blocks(x: &[f32], out: &mut [f32]) {
    for (src, dst) in x.chunks_exact(32).zip(out.chunks_exact_mut(32)) {
        for k in 0..16 {
            dst[k] = src[2 * k];
            dst[16 + k] = src[2 * k + 1];
        }
    }
}

/// Where a tile's codes, scales, zero points, activations and outputs live; `X` is the
/// activations' element type (f32, or bf16 bits).
#[derive(Clone, Copy)]
struct Tile<X> {
    /// Packed codes of row 0; rows are `cols / 2` bytes apart.
    packed: *const u8,
    /// Scales and zero points of row 0, `cols / group` per row.
    scales: *const f32,
    zeros: *const u8,
    cols: usize,
    group: usize,
    /// Token 0 of the prepared activations; tokens are `cols` apart.
    x: *const X,
    /// `out[t * ldo + r]`.
    out: *mut f32,
    ldo: usize,
}

/// Calls `run(tile, rows, tokens)` over the tiles covering rows `r0..r0 + nr` and `tokens`
/// tokens: one row for one token (the weights then stream strictly in order, which the
/// hardware prefetchers follow), two rows for 2-4 tokens (the weights are decoded once for all
/// of them); three tokens get their own tile (as 2 + 1 they would stream the weights twice).
///
/// # Safety
/// `packed` holds rows `..r0 + nr` of `cols / 2` bytes, `scales` and `zeros` their `cols / group`
/// entries, `x` `tokens` rows of `cols`, `out` `tokens * nr` elements.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn for_each_tile<X>(
    packed: &[u8],
    scales: &[f32],
    zeros: &[u8],
    cols: usize,
    group: usize,
    r0: usize,
    nr: usize,
    x: &[X],
    tokens: usize,
    out: &mut [f32],
    mut run: impl FnMut(Tile<X>, usize, usize),
) {
    let groups = cols / group;
    let mut t = 0;
    while t < tokens {
        let tk = (tokens - t).min(4);
        let full = if tk == 1 { 1 } else { 2 };
        let mut r = 0;
        while r < nr {
            let rk = if nr - r >= full { full } else { 1 };
            let row = r0 + r;
            // SAFETY: every offset stays inside its slice by the contract (`row + rk <= r0 + nr`,
            // `t + tk <= tokens`).
            let tile = unsafe {
                Tile {
                    packed: packed.as_ptr().add(row * cols / 2),
                    scales: scales.as_ptr().add(row * groups),
                    zeros: zeros.as_ptr().add(row * groups),
                    cols,
                    group,
                    x: x.as_ptr().add(t * cols),
                    out: out.as_mut_ptr().add(t * nr + r),
                    ldo: nr,
                }
            };
            run(tile, rk, tk);
            r += rk;
        }
        t += tk;
    }
}

/// `out[t][r] = sum_j x[t][j] * ((code[r][j] - zero[r][g]) * scale[r][g])` for rows
/// `r0..r0 + nr` and `tokens` tokens: tiles of one row for one token (the weights then stream
/// strictly in order, which the hardware prefetchers follow), two rows for 2-4 tokens (the
/// weights are decoded once for all of them).
///
/// # Safety
/// AVX-512 F/BW/VL available; `packed` holds rows `..r0 + nr` of `cols / 2` bytes, `scales` and
/// `zeros` their `cols / group` entries, `x` `tokens` rows of `cols`, `out` `tokens * nr`
/// elements; `group` a multiple of 32 dividing `cols`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemv(
    packed: &[u8],
    scales: &[f32],
    zeros: &[u8],
    cols: usize,
    group: usize,
    r0: usize,
    nr: usize,
    x: &[f32],
    tokens: usize,
    out: &mut [f32],
) {
    debug_assert!(group.is_multiple_of(32) && cols.is_multiple_of(group));
    DEINTERLEAVED.with(|d| {
        let mut d = d.borrow_mut();
        super::grow(&mut d, tokens * cols, 0.0);
        let xp = &mut d[..tokens * cols];
        deinterleave_blocks(&x[..tokens * cols], xp);
        // SAFETY: the slices satisfy `for_each_tile`'s contract (this function's), and the tiles
        // need only this function's features.
        unsafe {
            for_each_tile(
                packed,
                scales,
                zeros,
                cols,
                group,
                r0,
                nr,
                xp,
                tokens,
                out,
                |tile, rk, tk| match (rk, tk) {
                    (2, 4) => tile_product::<2, 4>(tile),
                    (2, 3) => tile_product::<2, 3>(tile),
                    (2, _) => tile_product::<2, 2>(tile),
                    (_, 4) => tile_product::<1, 4>(tile),
                    (_, 3) => tile_product::<1, 3>(tile),
                    (_, 2) => tile_product::<1, 2>(tile),
                    _ => tile_product::<1, 1>(tile),
                },
            )
        }
    });
}

/// `R` rows x `T` tokens of the product (see [`gemv`]). One token keeps four FMA chains in
/// flight (two 32-weight blocks per step, even and odd lanes apart); with more tokens each
/// (row, token) pair is a chain of its own.
///
/// # Safety
/// As [`gemv`], for `R` rows and `T` tokens starting at the tile's pointers.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn tile_product<const R: usize, const T: usize>(tile: Tile<f32>) {
    let Tile {
        packed,
        scales,
        zeros,
        cols,
        group,
        x,
        out,
        ldo,
    } = tile;
    let groups = cols / group;
    let zero = _mm512_setzero_ps();
    // Chains per (row, token): 4 for one token, else 1 (the unused ones are optimised away).
    let chains = if T == 1 { 4 } else { 1 };
    let mut acc = [[[zero; 4]; T]; R];
    // One 32-weight block at column `i` into chains `c` (even lanes) and `c + 1` (odd lanes).
    // `prefetch`: ask for the row's bytes `PREFETCH_TILES` tiles ahead (once per 64-byte line
    // is enough; the one-token loop asks every other block).
    let block = |acc: &mut [[[__m512; 4]; T]; R],
                 table: &[__m512; R],
                 i: usize,
                 c: usize,
                 prefetch: bool| {
        let mut xv = [[zero; 2]; T];
        for (t, v) in xv.iter_mut().enumerate() {
            // SAFETY: elements `i..i + 32 <= cols` of token `t` are readable (contract).
            unsafe {
                let p = x.add(t * cols + i);
                *v = [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(W))];
            }
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let p = packed.wrapping_add((r * cols + i) / 2);
            if prefetch {
                // A hint that never faults, whatever the address.
                _mm_prefetch::<_MM_HINT_T0>(
                    p.wrapping_add(PREFETCH_TILES * R * cols / 2).cast::<i8>(),
                );
            }
            // SAFETY: the 16 bytes of columns `i..i + 32` of row `r` are readable (contract).
            let lanes = _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(p.cast()) });
            let even = _mm512_permutexvar_ps(lanes, table[r]);
            let odd = _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(lanes), table[r]);
            for (acc_rt, xt) in acc_r.iter_mut().zip(&xv) {
                let (ce, co) = ((c) % chains, (c + 1) % chains);
                acc_rt[ce] = _mm512_fmadd_ps(even, xt[0], acc_rt[ce]);
                acc_rt[co] = _mm512_fmadd_ps(odd, xt[1], acc_rt[co]);
            }
        }
    };
    for g in 0..groups {
        let mut table = [zero; R];
        for (r, tb) in table.iter_mut().enumerate() {
            // SAFETY: row `r` has `groups` scales and zero points (contract), `g < groups`.
            let (z, s) = unsafe { (*zeros.add(r * groups + g), *scales.add(r * groups + g)) };
            // `code - zero` is exact; one rounding in the scale multiply. Zero points are codes,
            // `0..=15` (checked by `Matrix::new`).
            let centred = CENTRED[usize::from(z & 15)];
            // SAFETY: `centred` holds 16 f32.
            let centred = unsafe { _mm512_loadu_ps(centred.as_ptr()) };
            *tb = _mm512_mul_ps(centred, _mm512_set1_ps(s));
        }
        let end = (g + 1) * group;
        let mut i = g * group;
        if T == 1 {
            while i + 64 <= end {
                block(&mut acc, &table, i, 0, true);
                block(&mut acc, &table, i + 32, 2, false);
                i += 64;
            }
        }
        while i < end {
            block(&mut acc, &table, i, 0, true);
            i += 32;
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (t, a) in acc_r.iter().enumerate() {
            let sum = if T == 1 {
                _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]))
            } else {
                a[0]
            };
            // SAFETY: output `(t, r)` is writable (contract).
            unsafe { *out.add(t * ldo + r) = _mm512_reduce_add_ps(sum) };
        }
    }
}

/// INT4 rows decoded to f32 (see `int4::decode_rows_with`), 32 codes per vector step.
///
/// # Safety
/// AVX-512 F/BW/VL available (bounds are checked by `decode_rows_with`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn decode_rows(
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
/// of byte `k`): nibbles split by mask and shift, re-interleaved in order by `punpck{l,h}bw`,
/// zero-extended to i32, the zero point subtracted (exact), converted and scaled (one rounding).
///
/// # Safety
/// AVX-512 F/BW/VL available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn decode32_int4(bytes: &[u8; 16], zero: u8, scale: f32, dst: &mut [f32; 32]) {
    // SAFETY: `bytes` holds 16 readable bytes.
    let raw = unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) };
    let low4 = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(raw, low4);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), low4);
    let z = _mm512_set1_epi32(i32::from(zero));
    let s = _mm512_set1_ps(scale);
    let halves = [_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)];
    for (k, half) in halves.into_iter().enumerate() {
        let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(half), z));
        // SAFETY: `dst` holds 32 f32; `k * 16 + 16 <= 32`.
        unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(k * W), _mm512_mul_ps(v, s)) };
    }
}

/// `x` (already bf16 values, rows of `cols`, a multiple of 64) as bf16 bits, each 64-element
/// block as its 32 even elements, then its 32 odd ones: the order the bf16 tiles produce the
/// weights in (low nibbles, then high nibbles of 32 bytes).
fn bf16_blocks(x: &[f32], out: &mut [u16]) {
    for (src, dst) in x.chunks_exact(64).zip(out.chunks_exact_mut(64)) {
        for k in 0..32 {
            dst[k] = half::bf16::from_f32(src[2 * k]).to_bits();
            dst[32 + k] = half::bf16::from_f32(src[2 * k + 1]).to_bits();
        }
    }
}

/// As [`gemv`] with `vdpbf16ps`: per 64 weights one zero-extension of 32 bytes to words, one
/// shift, two `vpermw` lookups into the group's 32-word table of `code - zero` (exact in bf16)
/// and two `vdpbf16ps` with the bf16 activations (32 exact products each), the group's sum
/// scaled once. The activations must be bf16 values already (the caller rounds them, as every
/// INT4 product does); the result then differs from the reference only by summation order.
///
/// # Safety
/// As [`gemv`], plus AVX-512 BF16 available and `group` a multiple of 64.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemv_bf16(
    packed: &[u8],
    scales: &[f32],
    zeros: &[u8],
    cols: usize,
    group: usize,
    r0: usize,
    nr: usize,
    x: &[f32],
    tokens: usize,
    out: &mut [f32],
) {
    debug_assert!(group.is_multiple_of(64) && cols.is_multiple_of(group));
    BF16_X.with(|d| {
        let mut d = d.borrow_mut();
        super::grow(&mut d, tokens * cols, 0);
        let xp = &mut d[..tokens * cols];
        bf16_blocks(&x[..tokens * cols], xp);
        // SAFETY: as in `gemv`.
        unsafe {
            for_each_tile(
                packed,
                scales,
                zeros,
                cols,
                group,
                r0,
                nr,
                xp,
                tokens,
                out,
                |tile, rk, tk| match (rk, tk) {
                    (2, 4) => tile_bf16::<2, 4>(tile),
                    (2, 3) => tile_bf16::<2, 3>(tile),
                    (2, _) => tile_bf16::<2, 2>(tile),
                    (_, 4) => tile_bf16::<1, 4>(tile),
                    (_, 3) => tile_bf16::<1, 3>(tile),
                    (_, 2) => tile_bf16::<1, 2>(tile),
                    _ => tile_bf16::<1, 1>(tile),
                },
            )
        }
    });
}

/// `R` rows x `T` tokens of [`gemv_bf16`]: per group, even and odd lanes in two chains per
/// (row, token), each scaled into its running total at the group's end.
///
/// # Safety
/// As [`gemv_bf16`], for `R` rows and `T` tokens starting at the tile's pointers.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn tile_bf16<const R: usize, const T: usize>(tile: Tile<u16>) {
    let Tile {
        packed,
        scales,
        zeros,
        cols,
        group,
        x,
        out,
        ldo,
    } = tile;
    let groups = cols / group;
    let zero = _mm512_setzero_ps();
    // Two running totals per (row, token), even and odd lanes: two independent FMA chains
    // across the groups.
    let mut total = [[[zero; 2]; T]; R];
    for g in 0..groups {
        let mut table = [_mm512_setzero_si512(); R];
        for (r, tb) in table.iter_mut().enumerate() {
            // SAFETY: row `r` has `groups` zero points (contract); a table is 64 bytes.
            *tb = unsafe {
                let z = usize::from(*zeros.add(r * groups + g) & 15);
                _mm512_loadu_si512(BF16_TABLES[z].as_ptr().cast())
            };
        }
        let mut acc = [[[zero; 2]; T]; R];
        let mut i = g * group;
        while i < (g + 1) * group {
            let mut xv = [[_mm512_setzero_si512(); 2]; T];
            for (t, v) in xv.iter_mut().enumerate() {
                // SAFETY: the 64 activation words of columns `i..i + 64` of token `t`.
                unsafe {
                    let p = x.add(t * cols + i);
                    *v = [
                        _mm512_loadu_si512(p.cast()),
                        _mm512_loadu_si512(p.add(32).cast()),
                    ];
                }
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let p = packed.wrapping_add((r * cols + i) / 2);
                // A hint that never faults, whatever the address.
                _mm_prefetch::<_MM_HINT_T0>(
                    p.wrapping_add(PREFETCH_TILES * R * cols / 2).cast::<i8>(),
                );
                // SAFETY: the 32 bytes of columns `i..i + 64` of row `r` (contract).
                let words = _mm512_cvtepu8_epi16(unsafe { _mm256_loadu_si256(p.cast()) });
                let low = _mm512_permutexvar_epi16(words, table[r]);
                let high = _mm512_permutexvar_epi16(_mm512_srli_epi16::<4>(words), table[r]);
                let (low, high) = (as_bf16(low), as_bf16(high));
                for (acc_rt, xt) in acc_r.iter_mut().zip(&xv) {
                    acc_rt[0] = _mm512_dpbf16_ps(acc_rt[0], low, as_bf16(xt[0]));
                    acc_rt[1] = _mm512_dpbf16_ps(acc_rt[1], high, as_bf16(xt[1]));
                }
            }
            i += 64;
        }
        for (r, (acc_r, total_r)) in acc.iter().zip(&mut total).enumerate() {
            // SAFETY: row `r` has `groups` scales (contract).
            let s = _mm512_set1_ps(unsafe { *scales.add(r * groups + g) });
            for (a, tot) in acc_r.iter().zip(total_r.iter_mut()) {
                tot[0] = _mm512_fmadd_ps(a[0], s, tot[0]);
                tot[1] = _mm512_fmadd_ps(a[1], s, tot[1]);
            }
        }
    }
    for (r, total_r) in total.iter().enumerate() {
        for (t, v) in total_r.iter().enumerate() {
            // SAFETY: output `(t, r)` is writable (contract).
            unsafe { *out.add(t * ldo + r) = _mm512_reduce_add_ps(_mm512_add_ps(v[0], v[1])) };
        }
    }
}

/// 32 bf16 values held as 16-bit lanes of an integer vector, as the bf16 vector type.
#[inline(always)]
fn as_bf16(v: __m512i) -> __m512bh {
    // SAFETY: both are plain 512-bit vectors with no invalid bit patterns; this only changes
    // the type the bits are seen as.
    unsafe { core::mem::transmute::<__m512i, __m512bh>(v) }
}
