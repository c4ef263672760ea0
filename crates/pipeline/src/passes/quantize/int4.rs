//! INT4 group-wise quantization (W4A16): round-to-nearest codes for one group given its
//! scale and zero point, the minmax choice of those, and the stored tensors
//! (compressed-tensors pack-quantized, FORMATS.md).
//!
//! Stored values are unsigned nibbles: a code `q` in `[-8, 7]` is stored as `q + 8`, and so is a
//! zero point, so that `w = (stored_code - stored_zero) * scale` whichever the scheme; a
//! symmetric scheme has the stored zero 8 everywhere and writes no zero points.
//!
//! These loops are plain scalar Rust on purpose: quantizing runs once per weight (about 0.1 s
//! for SmolLM2), unlike the runtime's products, and the scale searches (AWQ, MSE) call
//! [`fake_quantize_group`] on the same definition.

use super::tensor::{round_scale_up, scales_to_bytes, QuantizedTensor, TensorError, TensorInput};
use crate::{Error, Result};
use rayon::prelude::*;
use safetensors::Dtype;

/// One group's quantization grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    pub scale: f32,
    /// Stored zero point, `0..=15` (8 for symmetric schemes).
    pub zero: u8,
}

impl Grid {
    /// The stored code (`0..=15`) of `w`: nearest grid point, clamped to the 16 codes.
    #[inline]
    pub fn code(&self, w: f32, inv: f32) -> u8 {
        (w * inv + f32::from(self.zero))
            .round_ties_even()
            .clamp(0.0, 15.0) as u8
    }

    /// The weight a stored code stands for.
    #[inline]
    pub fn value(&self, code: u8) -> f32 {
        f32::from(i16::from(code) - i16::from(self.zero)) * self.scale
    }
}

/// The scale stored for an all-zero group (any positive scale maps zeros to zero).
const ZERO_SCALE: f32 = 1.0;

/// The minmax grid of `values` with their range shrunk by `clip` (1.0 = the full range; the
/// MSE and AWQ searches try smaller ones), the scale rounded up to `scale_dtype`.
///
/// With zero points (asymmetric): the range `[min(w, 0), max(w, 0)] * clip` is split into 15
/// steps and the zero point is the code nearest to 0. Symmetric: `scale = absmax * clip / 7.5`
/// and codes `[-8, 7]` (llm-compressor's choice; the largest weight rounds to 8 and clamps to 7,
/// within half a step).
pub fn minmax_grid(values: &[f32], zero_point: bool, clip: f32, scale_dtype: Dtype) -> Grid {
    let (mut lo, mut hi) = (0.0f32, 0.0f32);
    for &v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let (lo, hi) = (lo * clip, hi * clip);
    let raw = if zero_point {
        (hi - lo) / 15.0
    } else {
        hi.max(-lo) / 7.5
    };
    if raw == 0.0 {
        return Grid {
            scale: ZERO_SCALE,
            zero: 8,
        };
    }
    let mut scale = round_scale_up(raw, scale_dtype);
    if scale <= 0.0 {
        scale = round_scale_up(f32::MIN_POSITIVE, scale_dtype);
    }
    let zero = if zero_point {
        (-lo / scale).round_ties_even().clamp(0.0, 15.0) as u8
    } else {
        8
    };
    Grid { scale, zero }
}

/// `out[i]` = the value `values[i]` quantizes to on `grid`.
pub fn fake_quantize_group(values: &[f32], grid: Grid, out: &mut [f32]) {
    let inv = 1.0 / grid.scale;
    for (o, &v) in out.iter_mut().zip(values) {
        *o = grid.value(grid.code(v, inv));
    }
}

/// How each group's grid is chosen.
pub trait GridChoice: Sync {
    /// The grid for group `g` of row `row` (its `values`).
    fn grid(&self, row: usize, g: usize, values: &[f32]) -> Grid;
}

/// Plain minmax grids (round-to-nearest).
pub struct MinMax {
    pub zero_point: bool,
    pub scale_dtype: Dtype,
}

impl GridChoice for MinMax {
    fn grid(&self, _row: usize, _g: usize, values: &[f32]) -> Grid {
        minmax_grid(values, self.zero_point, 1.0, self.scale_dtype)
    }
}

/// Clip ratios the searches (MSE here, AWQ's on outputs) try: the minmax range times 1.0,
/// 0.95, ..., 0.55.
pub fn clip_ratios() -> impl Iterator<Item = f32> {
    (0..10).map(|step| 1.0 - 0.05 * step as f32)
}

/// Each group's grid chosen for the least squared weight error among the [`clip_ratios`] (llm-compressor's `mse` observer does the same search on the range).
pub struct MseSearch {
    pub minmax: MinMax,
}

impl GridChoice for MseSearch {
    fn grid(&self, _row: usize, _g: usize, values: &[f32]) -> Grid {
        let mut deq = vec![0f32; values.len()];
        let mut best: Option<(f64, Grid)> = None;
        for clip in clip_ratios() {
            let grid = minmax_grid(
                values,
                self.minmax.zero_point,
                clip,
                self.minmax.scale_dtype,
            );
            fake_quantize_group(values, grid, &mut deq);
            let err: f64 = values
                .iter()
                .zip(&deq)
                .map(|(&v, &d)| f64::from(v - d).powi(2))
                .sum();
            if best.is_none_or(|(e, _)| err < e) {
                best = Some((err, grid));
            }
        }
        best.map(|(_, g)| g).expect("at least one clip ratio")
    }
}

/// Minmax grids with the range of each group shrunk by a searched ratio (AWQ's clip search).
pub struct Clipped<'a> {
    pub minmax: MinMax,
    /// `rows x groups` ratios in `(0, 1]`.
    pub clip: &'a [f32],
    pub groups: usize,
}

impl GridChoice for Clipped<'_> {
    fn grid(&self, row: usize, g: usize, values: &[f32]) -> Grid {
        let clip = self.clip[row * self.groups + g];
        minmax_grid(
            values,
            self.minmax.zero_point,
            clip,
            self.minmax.scale_dtype,
        )
    }
}

/// Codes chosen elsewhere (GPTQ's error feedback): one stored code per weight, row-major,
/// and the grid of every row's groups (`rows x groups`).
#[derive(Debug, Clone)]
pub struct FixedCodes {
    pub codes: Codes,
    pub grids: Vec<Grid>,
}

/// Where [`FixedCodes`] keeps its codes: in memory, or in a scratch file until the tensor is
/// written, so that a calibrated run holds one layer's codes, not the model's.
#[derive(Debug, Clone)]
pub enum Codes {
    Memory(Vec<u8>),
    /// `len` codes at `offset` of a scratch file (unlinked: it goes away with the process).
    Spilled {
        file: std::sync::Arc<std::fs::File>,
        offset: u64,
        len: usize,
    },
}

impl Codes {
    /// The codes, read back from the scratch file when spilled.
    pub fn load(&self) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
        match self {
            Codes::Memory(v) => Ok(std::borrow::Cow::Borrowed(v)),
            Codes::Spilled { file, offset, len } => {
                use std::os::unix::fs::FileExt;
                let mut v = vec![0u8; *len];
                file.read_exact_at(&mut v, *offset)?;
                Ok(std::borrow::Cow::Owned(v))
            }
        }
    }
}

/// An append-only scratch file for [`Codes::Spilled`].
pub struct Spill {
    file: std::sync::Arc<std::fs::File>,
    dir: std::path::PathBuf,
    end: u64,
}

impl Spill {
    /// An unlinked temporary file in `dir` (removed by the OS when the process ends, whatever
    /// happens to the job).
    pub fn create(dir: &std::path::Path) -> Result<Spill> {
        let file = tempfile::tempfile_in(dir).map_err(|e| temper_core::Error::io(dir, e))?;
        Ok(Spill {
            file: std::sync::Arc::new(file),
            dir: dir.to_path_buf(),
            end: 0,
        })
    }

    /// Appends `codes` and says where they are.
    pub fn put(&mut self, codes: &[u8]) -> Result<Codes> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(codes, self.end)
            .map_err(|e| temper_core::Error::io(&self.dir, e))?;
        let at = Codes::Spilled {
            file: self.file.clone(),
            offset: self.end,
            len: codes.len(),
        };
        self.end += codes.len() as u64;
        Ok(at)
    }
}

/// Quantizes one `[rows, cols]` weight to pack-quantized INT4 with groups of `group` columns:
/// grids from `choice` and round-to-nearest codes, or `fixed` codes and grids. Either way the
/// error statistics compare the stored values with `input.data` (the source weights).
pub fn quantize_int4(
    input: &TensorInput,
    group: usize,
    zero_point: bool,
    choice: &dyn GridChoice,
    fixed: Option<&FixedCodes>,
) -> Result<QuantizedTensor> {
    let (rows, cols) = (input.rows, input.cols);
    if !cols.is_multiple_of(group) || !cols.is_multiple_of(8) {
        return Err(Error::Tensor {
            path: input.file.to_path_buf(),
            tensor: input.name.to_string(),
            reason: format!(
                "{cols} input columns do not split into groups of {group} packed eight per int32"
            ),
        });
    }
    let groups = cols / group;
    let fixed_codes = fixed
        .map(|f| f.codes.load())
        .transpose()
        .map_err(|e| Error::Tensor {
            path: input.file.to_path_buf(),
            tensor: input.name.to_string(),
            reason: format!("reading its GPTQ codes back from the scratch file failed: {e}"),
        })?;
    if let Some(stored) = &fixed_codes {
        if stored.len() != rows * cols {
            return Err(Error::Tensor {
                path: input.file.to_path_buf(),
                tensor: input.name.to_string(),
                reason: format!(
                    "GPTQ chose {} codes for its {rows} x {cols} weights",
                    stored.len()
                ),
            });
        }
    }
    // Per row: stored codes, grids, error sums.
    let per_row: Vec<(Vec<u8>, Vec<Grid>, RowError)> = (0..rows)
        .into_par_iter()
        .map_init(
            || (vec![0f32; cols], vec![0f32; group]),
            |(source, deq), row| -> Result<_> {
                input.data.copy_to_f32(row * cols, source);
                if let Some(col) = source.iter().position(|v| !v.is_finite()) {
                    return Err(Error::Tensor {
                        path: input.file.to_path_buf(),
                        tensor: input.name.to_string(),
                        reason: format!(
                            "has a non-finite weight ({}) at row {row}, column {col}; the \
                             checkpoint is corrupt or was saved from a diverged run: fix or \
                             re-export these weights before quantizing",
                            source[col]
                        ),
                    });
                }
                let mut codes = vec![0u8; cols];
                let mut grids = Vec::with_capacity(groups);
                let mut err = RowError::default();
                for g in 0..groups {
                    let span = g * group..(g + 1) * group;
                    let values = &source[span.clone()];
                    let grid = match (fixed, &fixed_codes) {
                        (Some(f), Some(stored)) => {
                            let base = row * cols;
                            codes[span.clone()]
                                .copy_from_slice(&stored[base + span.start..base + span.end]);
                            f.grids[row * groups + g]
                        }
                        _ => {
                            let grid = choice.grid(row, g, values);
                            let inv = 1.0 / grid.scale;
                            for (c, &v) in codes[span.clone()].iter_mut().zip(values) {
                                *c = grid.code(v, inv);
                            }
                            grid
                        }
                    };
                    for (d, &c) in deq.iter_mut().zip(&codes[span.clone()]) {
                        *d = grid.value(c);
                    }
                    err.add(values, deq, grid.scale);
                    grids.push(grid);
                }
                Ok((codes, grids, err))
            },
        )
        .collect::<Result<_>>()?;
    let mut nibbles = Vec::with_capacity(rows * cols);
    let mut scales = Vec::with_capacity(rows * groups);
    let mut zeros = Vec::with_capacity(rows * groups);
    let mut total = RowError::default();
    for (codes, grids, err) in per_row {
        nibbles.extend_from_slice(&codes);
        scales.extend(grids.iter().map(|g| g.scale));
        zeros.extend(grids.iter().map(|g| g.zero));
        total = total.merge(err);
    }
    let prefix = temper_core::select::module_name(input.name);
    let mut outputs = vec![
        (
            format!("{prefix}.weight_packed"),
            temper_format::pack::pack_int4(&nibbles),
        ),
        (
            format!("{prefix}.weight_shape"),
            temper_format::pack::weight_shape_bytes(rows, cols),
        ),
        (
            format!("{prefix}.weight_scale"),
            scales_to_bytes(&scales, input.scale_dtype),
        ),
    ];
    if zero_point {
        outputs.push((
            format!("{prefix}.weight_zero_point"),
            temper_format::pack::pack_int4_columns(&zeros, rows, groups),
        ));
    }
    Ok(QuantizedTensor {
        outputs,
        error: TensorError {
            name: input.name.to_string(),
            shape: [rows, cols],
            relative_rms_error: if total.w_sq > 0.0 {
                (total.err_sq / total.w_sq).sqrt()
            } else {
                0.0
            },
            max_abs_error: total.max_abs,
            max_error_over_bound: total.max_ratio,
            zero_groups: total.zero_groups,
        },
    })
}

/// Error sums of quantized rows against their source.
#[derive(Default, Clone, Copy)]
struct RowError {
    err_sq: f64,
    w_sq: f64,
    max_abs: f32,
    /// Largest error over half a step (at most 1 for round-to-nearest on a minmax grid; a
    /// clipped grid exceeds it on purpose at the clipped weights).
    max_ratio: f32,
    zero_groups: usize,
}

impl RowError {
    fn add(&mut self, source: &[f32], deq: &[f32], scale: f32) {
        if source.iter().all(|&v| v == 0.0) {
            self.zero_groups += 1;
        }
        let half_step = 0.5 * scale;
        for (&w, &d) in source.iter().zip(deq) {
            let e = (w - d).abs();
            self.err_sq += f64::from(e) * f64::from(e);
            self.w_sq += f64::from(w) * f64::from(w);
            self.max_abs = self.max_abs.max(e);
            self.max_ratio = self.max_ratio.max(e / half_step);
        }
    }

    fn merge(self, o: RowError) -> RowError {
        RowError {
            err_sq: self.err_sq + o.err_sq,
            w_sq: self.w_sq + o.w_sq,
            max_abs: self.max_abs.max(o.max_abs),
            max_ratio: self.max_ratio.max(o.max_ratio),
            zero_groups: self.zero_groups + o.zero_groups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asymmetric_grid_covers_the_range_within_half_a_step() {
        let values: Vec<f32> = (0..128)
            .map(|i| (i as f32 * 0.37).sin() * 2.0 + 0.5)
            .collect();
        let grid = minmax_grid(&values, true, 1.0, Dtype::BF16);
        let mut deq = vec![0f32; 128];
        fake_quantize_group(&values, grid, &mut deq);
        for (w, d) in values.iter().zip(&deq) {
            assert!((w - d).abs() <= 0.5 * grid.scale * 1.0001, "{w} vs {d}");
        }
        // Zero is exactly representable (padding and ReLU-like zeros stay zero).
        assert_eq!(grid.value(grid.code(0.0, 1.0 / grid.scale)), 0.0);
        // The scale is a bf16 value.
        assert_eq!(half::bf16::from_f32(grid.scale).to_f32(), grid.scale);
    }

    #[test]
    fn mse_search_never_loses_to_minmax_and_clips_outliers() {
        // One outlier stretches the minmax range: clipping it lowers the total error.
        let mut values: Vec<f32> = (0..64)
            .map(|i| ((i * 37) % 23) as f32 / 23.0 - 0.5)
            .collect();
        values[5] = 6.0;
        let minmax = MinMax {
            zero_point: true,
            scale_dtype: Dtype::F32,
        };
        let err = |grid: Grid| -> f64 {
            let mut deq = vec![0f32; 64];
            fake_quantize_group(&values, grid, &mut deq);
            values
                .iter()
                .zip(&deq)
                .map(|(&v, &d)| f64::from(v - d).powi(2))
                .sum()
        };
        let full = minmax.grid(0, 0, &values);
        let searched = MseSearch { minmax }.grid(0, 0, &values);
        assert!(err(searched) <= err(full));
        assert!(searched.scale < full.scale, "{searched:?} vs {full:?}");
    }

    #[test]
    fn symmetric_grid_uses_codes_minus_8_to_7() {
        let values = [-3.0f32, -1.0, 0.0, 1.0, 2.9, 3.0];
        let grid = minmax_grid(&values, false, 1.0, Dtype::F32);
        assert_eq!(grid.zero, 8);
        assert_eq!(grid.scale, 3.0 / 7.5);
        let inv = 1.0 / grid.scale;
        // -3 / 0.4 = -7.5 rounds to -8 (even): stored 0; +3 rounds to 8 and clamps to 7.
        assert_eq!(grid.code(-3.0, inv), 0);
        assert_eq!(grid.code(3.0, inv), 15);
        let all_zero = minmax_grid(&[0.0; 4], true, 1.0, Dtype::F16);
        assert_eq!(all_zero.value(all_zero.code(0.0, 1.0)), 0.0);
    }
}
