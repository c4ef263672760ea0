//! Drivers of the SIMD products: chunks of output rows over rayon, per-thread scratch, and the
//! blocking of the matrix-matrix path. Generic over a [`Backend`]; no `unsafe` here except the
//! column writer [`Out`].

use std::cell::RefCell;
use std::marker::PhantomData;

use rayon::prelude::*;

use super::{grow, Backend, Matrix, Scratch, Weights, KC};

/// Up to this many tokens the weights are decoded in registers once per four tokens
/// ([`Backend::gemv`]; 4 x 4 register tiles reach about the matrix-matrix kernel's speed there);
/// above it, once per call into f32 tiles ([`Backend::gemm_tile`]).
pub(crate) const GEMV_MAX_M: usize = 16;
/// Chunks per thread to aim for, so that work stealing can balance a busy core.
const CHUNKS_PER_THREAD: usize = 8;
/// Smallest chunk worth a task, in bytes of weights read (times the passes over them).
const MIN_CHUNK_BYTES: usize = 16 << 10;
/// Below this many weight bytes read (times the passes over them), a product runs on the calling
/// thread: when it is a rayon worker, splitting costs well under a microsecond...
const SERIAL_BYTES_IN_POOL: usize = 64 << 10;
/// ...but from outside the pool rayon injects the job and the caller sleeps until it is done,
/// a futex wake-up each way (10-15 µs measured on a 2-vCPU VM), which only large products repay.
const SERIAL_BYTES_OUTSIDE: usize = 1536 << 10;
/// As [`SERIAL_BYTES_IN_POOL`] for the matrix-matrix path, in multiply-adds.
const SERIAL_MACS_IN_POOL: usize = 1 << 18;
/// As [`SERIAL_BYTES_OUTSIDE`] for the matrix-matrix path, in multiply-adds.
const SERIAL_MACS_OUTSIDE: usize = 4 << 20;
/// Row counts of chunks are multiples of this (the register tiles have 4, 6 or 12 rows).
const ROW_ALIGN: usize = 12;
/// Most rows per chunk of the matrix-matrix path: its decoded `rows x KC` f32 tile stays in L2.
const GEMM_MAX_CHUNK: usize = 96;

/// Per-thread buffers, grown on demand and kept for the thread's life.
struct Local {
    /// Decoded weight tile of the matrix-matrix path, `rows x KC`.
    wt: Vec<f32>,
    /// Transposed f32 accumulators of the matrix-matrix path, `rows x m_pad`.
    acc: Vec<f32>,
    /// Output staging of one chunk, `m x rows`.
    stage: Vec<f32>,
    /// Integer dot products of one chunk, `m x rows`.
    dots: Vec<i32>,
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local {
            wt: Vec::new(),
            acc: Vec::new(),
            stage: Vec::new(),
            dots: Vec::new(),
        })
    };
}

/// Runs `f` with this thread's buffers. Chunk bodies never call into rayon, so a thread cannot
/// start a second chunk (and borrow again) while one is running.
fn with_local<R>(f: impl FnOnce(&mut Local) -> R) -> R {
    LOCAL.with(|l| f(&mut l.borrow_mut()))
}

/// `y` (`m x n` row-major) shared by the chunks, each of which writes its own columns.
struct Out<'a> {
    ptr: *mut f32,
    m: usize,
    n: usize,
    _y: PhantomData<&'a mut [f32]>,
}

// SAFETY: `Out` is a `&mut [f32]` split by columns; `write`'s contract keeps concurrent writers
// on disjoint columns, so sharing it between threads is sound like sharing disjoint sub-slices.
unsafe impl Sync for Out<'_> {}

impl<'a> Out<'a> {
    fn new(y: &'a mut [f32], m: usize, n: usize) -> Self {
        assert_eq!(y.len(), m * n, "y must be m x n");
        Out {
            ptr: y.as_mut_ptr(),
            m,
            n,
            _y: PhantomData,
        }
    }

    /// `y[t, n0 + j] = stage[t * nc + j]` for `t < m`, `j < nc`.
    ///
    /// # Safety
    /// No other call may write overlapping columns concurrently.
    unsafe fn write(&self, n0: usize, nc: usize, stage: &[f32]) {
        assert!(n0 + nc <= self.n && stage.len() >= self.m * nc);
        for t in 0..self.m {
            // SAFETY: `t * n + n0 + nc <= m * n`, inside `y` (checked above and in `new`); the
            // source is inside `stage`; only this call writes these columns (caller contract),
            // and nothing reads `y` while the `Out` borrows it.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    stage.as_ptr().add(t * nc),
                    self.ptr.add(t * self.n + n0),
                    nc,
                );
            }
        }
    }
}

/// Calls `f(n0, rows)` for consecutive chunks of `chunk` rows covering `0..n`, handed out by
/// rayon (work stealing) when `parallel`, else in order on the calling thread.
fn for_each_chunk(n: usize, chunk: usize, parallel: bool, f: impl Fn(usize, usize) + Sync) {
    let chunks = n.div_ceil(chunk);
    let run = |c: usize| f(c * chunk, chunk.min(n - c * chunk));
    if parallel && chunks > 1 {
        (0..chunks).into_par_iter().for_each(run);
    } else {
        (0..chunks).for_each(run);
    }
}

/// Whether a product of `work` units is worth the pool: it has more than one thread and the work
/// exceeds `in_pool` (caller is a rayon worker) or `outside` (any other thread).
fn use_pool(work: usize, in_pool: usize, outside: usize) -> bool {
    let limit = if rayon::current_thread_index().is_some() {
        in_pool
    } else {
        outside
    };
    rayon::current_num_threads() > 1 && work >= limit
}

/// Rows per chunk: about `CHUNKS_PER_THREAD` chunks per thread, each at least `min_rows`,
/// a multiple of [`ROW_ALIGN`], at most `max_rows` (rounded).
fn chunk_rows(n: usize, min_rows: usize, max_rows: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let rows = n
        .div_ceil(threads * CHUNKS_PER_THREAD)
        .max(min_rows)
        .min(max_rows)
        .max(1);
    rows.div_ceil(ROW_ALIGN) * ROW_ALIGN
}

/// Dense or weight-only quantized product with f32 activations (SIMD versions).
pub(crate) fn matmul_f32<B: Backend>(
    b: B,
    w: &Matrix,
    x: &[f32],
    m: usize,
    y: &mut [f32],
    scratch: &mut Scratch,
) {
    if m <= GEMV_MAX_M {
        gemv(b, w, x, m, y);
    } else {
        gemm(b, w, x, m, y, scratch);
    }
}

/// Small `m`: every pass decodes the weights in registers (one pass per four tokens).
fn gemv<B: Backend>(b: B, w: &Matrix, x: &[f32], m: usize, y: &mut [f32]) {
    let cols = w.cols;
    for_each_row_pass(w, m, y, |l, n0, nc| {
        grow(&mut l.stage, m * nc, 0.0);
        b.gemv(w, n0, nc, &x[..m * cols], m, &mut l.stage[..m * nc]);
    });
}

/// The matrix-vector drivers' split: one pass over the weights per four tokens, chunks of rows
/// sized by the bytes they read, serial for small products. `fill(local, n0, nc)` leaves the
/// chunk's `m x nc` outputs in `local.stage[..m * nc]`, which are then written into `y`.
fn for_each_row_pass(
    w: &Matrix,
    m: usize,
    y: &mut [f32],
    fill: impl Fn(&mut Local, usize, usize) + Sync,
) {
    let n = w.rows;
    let bytes_per_row = w.row_bytes().max(1) * m.div_ceil(4);
    let parallel = use_pool(
        n * bytes_per_row,
        SERIAL_BYTES_IN_POOL,
        SERIAL_BYTES_OUTSIDE,
    );
    let chunk = chunk_rows(n, MIN_CHUNK_BYTES.div_ceil(bytes_per_row), n);
    let out = Out::new(y, m, n);
    for_each_chunk(n, chunk, parallel, |n0, nc| {
        with_local(|l| {
            fill(l, n0, nc);
            // SAFETY: chunks cover disjoint row ranges of `W`, i.e. disjoint columns of `y`.
            unsafe { out.write(n0, nc, &l.stage[..m * nc]) };
        })
    });
}

/// Larger `m`: each chunk decodes its rows once per `KC` columns into f32 and runs the
/// register-tiled kernel over all tokens, accumulating into a transposed per-thread buffer.
fn gemm<B: Backend>(b: B, w: &Matrix, x: &[f32], m: usize, y: &mut [f32], scratch: &mut Scratch) {
    let (n, cols) = (w.rows, w.cols);
    let p = B::P;
    let blocks = m.div_ceil(p);
    let m_pad = blocks * p;
    pack_transposed(x, m, cols, p, &mut scratch.xt);
    let xt = &scratch.xt[..m_pad * cols];

    let parallel = use_pool(n * cols * m, SERIAL_MACS_IN_POOL, SERIAL_MACS_OUTSIDE);
    let chunk = chunk_rows(n, B::NR, GEMM_MAX_CHUNK);
    let out = Out::new(y, m, n);
    for_each_chunk(n, chunk, parallel, |n0, nc| {
        with_local(|l| {
            let nc_pad = nc.div_ceil(B::NR) * B::NR;
            grow(&mut l.wt, nc_pad * KC, 0.0);
            grow(&mut l.acc, nc_pad * m_pad, 0.0);
            grow(&mut l.stage, m * nc, 0.0);
            let (wt, acc) = (&mut l.wt[..nc_pad * KC], &mut l.acc[..nc_pad * m_pad]);
            for k0 in (0..cols).step_by(KC) {
                let kc = KC.min(cols - k0);
                // Rows past `nc` keep whatever the buffer held: their sums are never read.
                b.decode_rows(w, n0, nc, k0, kc, wt, KC);
                // Row tiles outer: a tile's decoded rows (`NR` KiB) stay in L1 while the token
                // panels stream past them in order.
                for jt in (0..nc_pad).step_by(B::NR) {
                    let wtile = &wt[jt * KC..(jt + B::NR) * KC];
                    for tb in 0..blocks {
                        let tokens = p.min(m - tb * p);
                        let half = if 2 * tokens <= p { 1 } else { 2 };
                        let panel = &xt[tb * cols * p + k0 * p..][..kc * p];
                        let c = &mut acc[jt * m_pad + tb * p..];
                        b.gemm_tile(panel, kc, half, wtile, c, m_pad, k0 == 0);
                    }
                }
            }
            let stage = &mut l.stage[..m * nc];
            for (t, row) in stage.chunks_exact_mut(nc).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = acc[j * m_pad + t];
                }
            }
            // SAFETY: chunks cover disjoint row ranges of `W`, i.e. disjoint columns of `y`.
            unsafe { out.write(n0, nc, stage) };
        })
    });
}

/// `xt[(tb * cols + c) * p + i] = x[(tb * p + i) * cols + c]`, zero for tokens `>= m`: panels of
/// `p` tokens, each `cols x p`, so the kernel loads `p` tokens of one column contiguously.
fn pack_transposed(x: &[f32], m: usize, cols: usize, p: usize, xt: &mut Vec<f32>) {
    let blocks = m.div_ceil(p);
    grow(xt, blocks * p * cols, 0.0);
    let pack = |tb: usize, panel: &mut [f32]| {
        for i in 0..p {
            let t = tb * p + i;
            if t < m {
                for (c, &v) in x[t * cols..(t + 1) * cols].iter().enumerate() {
                    panel[c * p + i] = v;
                }
            } else {
                for c in 0..cols {
                    panel[c * p + i] = 0.0;
                }
            }
        }
    };
    if use_pool(m * cols, 1 << 16, 1 << 20) {
        xt[..blocks * p * cols]
            .par_chunks_mut(p * cols)
            .enumerate()
            .for_each(|(tb, panel)| pack(tb, panel));
    } else {
        xt[..blocks * p * cols]
            .chunks_mut(p * cols)
            .enumerate()
            .for_each(|(tb, panel)| pack(tb, panel));
    }
}

/// W8A8 product: exact integer dots, then `(s_t * scale_n) * dot as f32`.
pub(crate) fn matmul_int8<B: Backend>(
    b: B,
    w: &Matrix,
    xq: &[i8],
    xs: &[f32],
    m: usize,
    y: &mut [f32],
) {
    let Weights::Int8 { scales, .. } = &w.weights else {
        unreachable!("checked by matmul");
    };
    // The weight tile is reused from L1 by up to four tokens between passes.
    for_each_row_pass(w, m, y, |l, n0, nc| {
        grow(&mut l.dots, m * nc, 0);
        grow(&mut l.stage, m * nc, 0.0);
        let dots = &mut l.dots[..m * nc];
        b.int8_dots(w, n0, nc, xq, m, dots);
        let stage = &mut l.stage[..m * nc];
        for (t, (row, drow)) in stage
            .chunks_exact_mut(nc)
            .zip(dots.chunks_exact(nc))
            .enumerate()
        {
            for ((v, &d), &s) in row.iter_mut().zip(drow).zip(&scales[n0..n0 + nc]) {
                *v = (xs[t] * s) * d as f32;
            }
        }
    });
}
