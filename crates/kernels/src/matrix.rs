//! Matrix-level helpers: symmetric quantization of whole row-major tensors across rayon.
//!
//! Work is split into rayon tasks of whole rows (or whole block-rows) of roughly [`TASK_ELEMS`]
//! elements. A task runs stats -> scale -> codes one row (or one 128-row band) at a time, while
//! that data is still in L1/L2, with one segmented kernel call per row covering all its groups.
//! The only allocation is a per-task scratch of one `u32` and one `f32` per group or tile.
//!
//! On a [`KernelError::NonFinite`] error the contents of `codes` and `scales` are unspecified.

use rayon::prelude::*;

use crate::isa::Usable;
use crate::{dispatch, Isa, KernelError, Src};

/// The caller's scale policy: maps a group's absmax (finite, `>= 0`) to its scale, which must be
/// finite and `> 0` (e.g. `absmax / 127` rounded to the storage dtype, with a floor for zeros).
pub type ScaleFor<'a> = dyn Fn(f32) -> f32 + Sync + 'a;

/// Elements per rayon task: large enough that scheduling costs vanish, small enough to balance.
const TASK_ELEMS: usize = 1 << 16;

/// Where a non-finite value sits; the smallest `(row, col)` is reported.
#[derive(Clone, Copy, Debug)]
struct Found {
    row: usize,
    col: usize,
    value: f32,
}

impl From<Found> for KernelError {
    fn from(f: Found) -> Self {
        KernelError::NonFinite {
            row: f.row,
            col: f.col,
            value: f.value,
        }
    }
}

/// A segmented quantizer: `(isa, row, segment length, inv_scale per segment, codes)`.
type Kernel<Q> = fn(Usable, Src, usize, &[f32], &mut [Q]);

/// Per-row (`group == cols`) or per-group symmetric INT8 quantization of a row-major
/// `[rows, cols]` matrix, `rows = src.len() / cols`.
///
/// For each row `r` and group `g` (columns `g*group..(g+1)*group`):
/// `scale = scale_for(absmax)`, `scales[r * (cols/group) + g] = scale`, and
/// `codes[i] = clamp(round_half_even(x[i] * (1/scale)), -128, 127)`.
///
/// Errors: [`KernelError::Shape`] unless `cols > 0`, `0 < group`, `cols % group == 0`,
/// `src.len() % cols == 0`, `codes.len() == src.len()`, `scales.len() == rows * cols/group`
/// (an empty `src` with `cols == 0` is accepted); [`KernelError::NonFinite`] for the first NaN/Inf
/// in row-major order.
pub fn quantize_int8_rows(
    isa: Isa,
    src: Src,
    cols: usize,
    group: usize,
    scale_for: &(dyn Fn(f32) -> f32 + Sync),
    codes: &mut [i8],
    scales: &mut [f32],
) -> Result<(), KernelError> {
    let job = Rows {
        u: isa.usable(),
        src,
        cols,
        group,
        scale_for,
        kernel: dispatch::quantize_int8_segments,
    };
    job.run(codes, scales)
}

/// Per-row or per-group FP8 E4M3 quantization; as [`quantize_int8_rows`] but
/// `codes[i] = f32_to_fp8_e4m3(x[i] * (1/scale))`.
pub fn quantize_fp8_rows(
    isa: Isa,
    src: Src,
    cols: usize,
    group: usize,
    scale_for: &(dyn Fn(f32) -> f32 + Sync),
    codes: &mut [u8],
    scales: &mut [f32],
) -> Result<(), KernelError> {
    let job = Rows {
        u: isa.usable(),
        src,
        cols,
        group,
        scale_for,
        kernel: dispatch::quantize_fp8_segments,
    };
    job.run(codes, scales)
}

/// One per-row/per-group quantization call.
struct Rows<'a, Q> {
    u: Usable,
    src: Src<'a>,
    cols: usize,
    group: usize,
    scale_for: &'a ScaleFor<'a>,
    kernel: Kernel<Q>,
}

impl<Q: Send> Rows<'_, Q> {
    fn run(&self, codes: &mut [Q], scales: &mut [f32]) -> Result<(), KernelError> {
        let (n, cols, group) = (self.src.len(), self.cols, self.group);
        if cols == 0 && n == 0 && codes.is_empty() && scales.is_empty() {
            return Ok(());
        }
        if cols == 0 || group == 0 || !cols.is_multiple_of(group) {
            return Err(KernelError::shape(format!(
                "group {group} must be positive and divide cols {cols}"
            )));
        }
        check_whole_rows(n, cols)?;
        check_len("codes", codes.len(), n)?;
        let groups = cols / group;
        check_len("scales", scales.len(), n / cols * groups)?;

        let rows_per_task = (TASK_ELEMS / cols).max(1);
        let first = codes
            .par_chunks_mut(rows_per_task * cols)
            .zip(scales.par_chunks_mut(rows_per_task * groups))
            .enumerate()
            .filter_map(|(t, (codes, scales))| self.task(t * rows_per_task, codes, scales).err())
            .min_by_key(|f| (f.row, f.col));
        first.map_or(Ok(()), |f| Err(f.into()))
    }

    /// Rows `row0..` covered by `codes`; returns the first non-finite value, if any.
    ///
    /// Each row takes one stats call and one quantize call covering all its groups, so small
    /// groups do not pay a dispatch per group; the per-group scratch is allocated once per task.
    fn task(&self, row0: usize, codes: &mut [Q], scales: &mut [f32]) -> Result<(), Found> {
        let (cols, group) = (self.cols, self.group);
        let groups = cols / group;
        let mut bits = vec![0u32; groups];
        let mut invs = vec![0.0f32; groups];
        let rows = codes
            .chunks_exact_mut(cols)
            .zip(scales.chunks_exact_mut(groups));
        for (r, (row_codes, row_scales)) in rows.enumerate() {
            let row = row0 + r;
            let row_src = self.src.slice(row * cols..(row + 1) * cols);
            bits.fill(0);
            dispatch::absmax_bits_segments(self.u, row_src, group, &mut bits);
            for ((&b, scale), inv) in bits.iter().zip(row_scales).zip(&mut invs) {
                let Some(absmax) = dispatch::absmax_from_bits(row_src, b) else {
                    return Err(first_non_finite(self.u, row_src, cols, row));
                };
                *scale = (self.scale_for)(absmax);
                *inv = 1.0 / *scale;
            }
            (self.kernel)(self.u, row_src, group, &invs, row_codes);
        }
        Ok(())
    }
}

/// FP8 E4M3 quantization with one scale per `block = (block_rows, block_cols)` tile of a
/// row-major `[rows, cols]` matrix (128x128 for FP8_BLOCK); edge tiles may be partial.
///
/// `scales` is `[ceil(rows/block_rows), ceil(cols/block_cols)]` row-major; tile `(i, j)` gets
/// `scale = scale_for(absmax over the tile)` and its codes `f32_to_fp8_e4m3(x * (1/scale))`.
///
/// Errors: [`KernelError::Shape`] if a block side is 0 or a length disagrees with the shape;
/// [`KernelError::NonFinite`] for the first NaN/Inf in row-major order.
// The argument list is the pipeline's agreed API; bundling it would only move the names around.
#[allow(clippy::too_many_arguments)]
pub fn quantize_fp8_blocks(
    isa: Isa,
    src: Src,
    rows: usize,
    cols: usize,
    block: (usize, usize),
    scale_for: &(dyn Fn(f32) -> f32 + Sync),
    codes: &mut [u8],
    scales: &mut [f32],
) -> Result<(), KernelError> {
    let (br, bc) = block;
    if br == 0 || bc == 0 {
        return Err(KernelError::shape(format!(
            "block {br}x{bc} must be non-empty"
        )));
    }
    let n = rows
        .checked_mul(cols)
        .ok_or_else(|| KernelError::shape(format!("{rows}x{cols} overflows usize")))?;
    check_len("src", src.len(), n)?;
    check_len("codes", codes.len(), n)?;
    let tiles_per_row = cols.div_ceil(bc);
    check_len("scales", scales.len(), rows.div_ceil(br) * tiles_per_row)?;
    if n == 0 {
        return Ok(());
    }

    let job = Blocks {
        u: isa.usable(),
        src,
        cols,
        block,
        scale_for,
    };
    let first = codes
        // `min(rows)` keeps a huge block height from overflowing; the band is then all rows.
        .par_chunks_mut(br.min(rows) * cols)
        .zip(scales.par_chunks_mut(tiles_per_row))
        .enumerate()
        .filter_map(|(t, (codes, scales))| job.block_row(t * br, codes, scales).err())
        .min_by_key(|f| (f.row, f.col));
    first.map_or(Ok(()), |f| Err(f.into()))
}

/// One per-block quantization call.
struct Blocks<'a> {
    u: Usable,
    src: Src<'a>,
    cols: usize,
    block: (usize, usize),
    scale_for: &'a ScaleFor<'a>,
}

impl Blocks<'_> {
    /// Quantizes the block-row starting at `row0` (the rows `codes` covers).
    ///
    /// Both passes walk the band row-major, one call per row, so memory is read sequentially (tile
    /// by tile would stride through it): pass 1 folds each row's per-tile maxima into `bits`;
    /// pass 2 quantizes the band, which is still in L2 (128 rows of 4096 f32 are 2 MiB).
    fn block_row(&self, row0: usize, codes: &mut [u8], scales: &mut [f32]) -> Result<(), Found> {
        let (cols, bc) = (self.cols, self.block.1);
        let rows = codes.len() / cols;
        let band = self.src.slice(row0 * cols..(row0 + rows) * cols);
        let mut bits = vec![0u32; scales.len()];
        for r in 0..rows {
            let row = band.slice(r * cols..(r + 1) * cols);
            dispatch::absmax_bits_segments(self.u, row, bc, &mut bits);
        }
        let mut invs = vec![0.0f32; scales.len()];
        for ((&b, scale), inv) in bits.iter().zip(scales.iter_mut()).zip(&mut invs) {
            let Some(absmax) = dispatch::absmax_from_bits(band, b) else {
                return Err(first_non_finite(self.u, band, cols, row0));
            };
            *scale = (self.scale_for)(absmax);
            *inv = 1.0 / *scale;
        }
        for (r, row_codes) in codes.chunks_exact_mut(cols).enumerate() {
            let row = band.slice(r * cols..(r + 1) * cols);
            dispatch::quantize_fp8_segments(self.u, row, bc, &invs, row_codes);
        }
        Ok(())
    }
}

/// Whole-tensor `max |x|` of a row-major matrix with `cols` columns (for per-tensor scales).
///
/// Errors: [`KernelError::Shape`] if `cols == 0` with a non-empty `src`, or `src.len() % cols != 0`;
/// [`KernelError::NonFinite`] for the first NaN/Inf in row-major order.
pub fn tensor_stats(isa: Isa, src: Src, cols: usize) -> Result<f32, KernelError> {
    let n = src.len();
    if n == 0 {
        return Ok(0.0);
    }
    if cols == 0 {
        return Err(KernelError::shape("cols is 0 but src is not empty"));
    }
    check_whole_rows(n, cols)?;
    let u = isa.usable();
    let task_rows = (TASK_ELEMS / cols).max(1);
    let tasks = n.div_ceil(task_rows * cols);
    let result = (0..tasks)
        .into_par_iter()
        .map(|t| {
            let row0 = t * task_rows;
            let part = src.slice(row0 * cols..((row0 + task_rows) * cols).min(n));
            let stats = dispatch::row_stats(u, part);
            match stats.first_non_finite {
                None => Ok(stats.absmax),
                Some(i) => Err(Found {
                    row: row0 + i / cols,
                    col: i % cols,
                    value: part.get(i),
                }),
            }
        })
        .reduce(|| Ok(0.0f32), merge);
    result.map_err(KernelError::from)
}

/// Combines two partial results: the larger absmax, or the earlier non-finite value.
fn merge(a: Result<f32, Found>, b: Result<f32, Found>) -> Result<f32, Found> {
    match (a, b) {
        (Ok(x), Ok(y)) => Ok(x.max(y)),
        (Err(x), Err(y)) => Err(if (y.row, y.col) < (x.row, x.col) {
            y
        } else {
            x
        }),
        (Err(x), Ok(_)) | (Ok(_), Err(x)) => Err(x),
    }
}

/// The first non-finite value of `band` (whole rows starting at matrix row `row0`).
///
/// Only called once a non-finite value is known to be in `band`.
fn first_non_finite(u: Usable, band: Src, cols: usize, row0: usize) -> Found {
    let i = dispatch::row_stats(u, band).first_non_finite.unwrap_or(0);
    Found {
        row: row0 + i / cols,
        col: i % cols,
        value: band.get(i),
    }
}

fn check_len(what: &str, actual: usize, expected: usize) -> Result<(), KernelError> {
    if actual == expected {
        Ok(())
    } else {
        Err(KernelError::shape(format!(
            "{what}: got {actual}, expected {expected}"
        )))
    }
}

fn check_whole_rows(n: usize, cols: usize) -> Result<(), KernelError> {
    if n.is_multiple_of(cols) {
        Ok(())
    } else {
        Err(KernelError::shape(format!(
            "src length {n} is not a multiple of cols {cols}"
        )))
    }
}
