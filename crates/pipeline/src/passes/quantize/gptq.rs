//! GPTQ (Frantar et al. 2022) for INT4 W4A16 and INT8 W8A16 (`OPTION_GPTQ_WEIGHT_BIT_WIDTH`):
//! each Linear's columns are quantized in order,
//! and each column's rounding error is spread over the columns not yet quantized through the
//! inverse Hessian of the layer's calibration inputs (`H = 2 XᵀX / n`), so that the outputs
//! `x Wᵀ`, not the weights, stay close.
//!
//! As the reference implementation and llm-compressor's `GPTQModifier`: 1% damping of the
//! mean diagonal, dead inputs (zero diagonal) zeroed, the upper Cholesky factor of `H⁻¹`,
//! blocks of 128 columns with the error of a block applied to the rest at once, and a group's
//! grid (minmax, with zero points when asked) fixed when its first column is reached, from
//! the weights as updated so far.
//!
//! Activation order (`OPTION_GPTQ_ACTORDER=weight`, llm-compressor's `actorder="weight"`):
//! columns are processed by decreasing Hessian diagonal (the most active inputs first, while
//! the most columns remain to absorb their error), with every group's grid fixed up front from
//! the original weights, so groups stay contiguous in the stored order and no `g_idx` is
//! needed. The `group` ordering (grids fixed in the permuted order) would need `g_idx` in the
//! checkpoint, which temper does not write; it is refused with the option.
//!
//! Calibration rows come from the unquantized model one layer at a time (`capture`). Each
//! Linear's chosen codes (one byte per weight) go to an unlinked scratch file beside the output
//! until the quantize pass writes that tensor, and only the grids (one per group) stay in
//! memory: peak memory is one layer's weights, Hessians and calibration rows, not the model.

use super::capture::{sampling, CalibrationData};
use super::int4::{minmax_grid, Codes, FixedCodes, Grid, Spill};
use super::rewrite::{Rewrite, Rewrites};
use super::tensor::round_scale_up;
use crate::progress::{Cancel, Sink};
use crate::samples::SampleWindows;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use faer::{Mat, Par, Side};
use safetensors::Dtype;
use serde::Serialize;
use std::path::Path;
use temper_format::Scheme;

/// Columns per block of lazy updates.
const BLOCK: usize = 128;
/// Damping, as a fraction of the mean diagonal of `H`.
const DAMP: f64 = 0.01;
/// Most calibration rows per Linear for `H`: every token of 32 windows of 256 (llm-compressor
/// uses every calibration token). Sampling half of them measured worse out of domain on SmolLM2
/// (Hamlet KL 0.256 against 0.239; BENCHMARKS.md). The rows are held for one layer at a time:
/// `8192 x 4` bytes per input column of its Linears (760 MB for a Llama-2-7B layer).
const HESSIAN_ROWS: usize = 8192;

/// What GPTQ did, for the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct GptqRecord {
    #[serde(flatten)]
    pub data: CalibrationData,
    pub rows_per_hessian: usize,
    pub damping: f64,
    pub block: usize,
    /// Weight bits (4: W4A16, 8: W8A16).
    pub bits: u8,
    /// Columns by decreasing Hessian diagonal, grids fixed up front (`weight` ordering).
    pub actorder: bool,
    pub seconds: f64,
    pub modules: Vec<ModuleRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModuleRecord {
    pub module: String,
    /// `sum (w - q)² / (2 U_ii²)` over the weights (`U` the upper Cholesky factor of `H⁻¹`):
    /// the output error GPTQ minimises, as the reference implementation reports it.
    pub loss: f64,
    /// Input columns never active in the calibration data (their weights are zeroed).
    pub dead_inputs: usize,
}

/// Rewrites already chosen for the weights (AWQ's): GPTQ then quantizes the rewritten weights,
/// `diag(1/d) W diag(s)` (`d` = `row_div`, `s` = `col_mul`), for the inputs `x diag(1/s)`, i.e.
/// with `H` scaled to `diag(1/s) H diag(1/s)`.
#[derive(Clone, Copy)]
pub struct Smoothing<'a>(pub &'a Rewrites);

/// Runs GPTQ on every Linear of the model in `model_dir` with the calibration windows; the
/// codes are spilled to a scratch file in `scratch_dir`.
#[allow(clippy::too_many_arguments)]
pub fn search(
    model_dir: &Path,
    samples: &SampleWindows,
    scheme: Scheme,
    scale_dtype: Dtype,
    actorder: bool,
    scratch_dir: &Path,
    smoothing: Option<Smoothing>,
    sink: Sink,
    cancel: &Cancel,
) -> Result<(Rewrites, GptqRecord)> {
    let codebook = match scheme {
        Scheme::W4A16 { zero_point, .. } => Codebook::Int4 { zero_point },
        // W8A8's weights are W8A16's per-channel INT8 (SmoothQuant, then GPTQ).
        Scheme::W8A16 { .. } | Scheme::W8A8 => Codebook::Int8,
        other => {
            return Err(Error::Plan(format!(
                "GPTQ writes INT4 W4A16 or INT8 W8A16 and W8A8, not {}",
                other.label()
            )))
        }
    };
    let started = std::time::Instant::now();
    let (stride, rows_per_hessian) = sampling(samples, HESSIAN_ROWS);
    let mut out = Rewrites::new();
    let mut modules = Vec::new();
    let mut spill = Spill::create(scratch_dir)?;
    super::capture::for_each_layer(model_dir, samples, stride, sink, cancel, |_, layer, p| {
        for proj in layer.projections() {
            let recorded = proj.recorded_inputs().ok_or_else(|| {
                Error::Plan(format!(
                    "GPTQ: no inputs were recorded for {}",
                    proj.modules.join(", ")
                ))
            })?;
            let cols = proj.parts[0].cols();
            let group = match scheme.fit_columns(cols) {
                Scheme::W4A16 { group, .. } | Scheme::W8A16 { group: Some(group) } => group,
                _ => cols,
            };
            if !cols.is_multiple_of(group) {
                return Err(Error::Plan(format!(
                    "GPTQ: {} has {cols} input columns, which the group size {group} does not \
                     divide",
                    proj.modules.join(", ")
                )));
            }
            let n = recorded.rows.len() / cols;
            let x = Tensor::from_slice(&recorded.rows, (n, cols), &Device::Cpu)?;
            let h = x.t()?.matmul(&x)?.affine(2.0 / n.max(1) as f64, 0.0)?;
            let h: Vec<f32> = h.flatten_all()?.to_vec1()?;
            let quantizer = Quantizer {
                group,
                codebook,
                scale_dtype,
                actorder,
            };
            // The modules of a fused projection share its inputs (and, under AWQ, one
            // mapping's scales): one factorisation serves them all.
            let mut factorised: Option<(Option<&[f32]>, Factorised)> = None;
            let mut offset = 0;
            for (module, rows) in proj
                .modules
                .iter()
                .zip(super::capture::module_rows(proj, p))
            {
                // One module's weights in f32 at a time.
                let mut w = super::capture::weight_rows(proj, offset, offset + rows);
                offset += rows;
                let rewrite = smoothing.and_then(|Smoothing(r)| r.get(&format!("{module}.weight")));
                // A producer's rows are divided too (up_proj feeds a scaled down_proj).
                if let Some(div) = rewrite.and_then(|r| r.row_div.as_deref()) {
                    for (row, d) in w.chunks_exact_mut(cols).zip(div) {
                        row.iter_mut().for_each(|v| *v /= d);
                    }
                }
                let scales = rewrite.and_then(|r| r.col_mul.as_deref());
                if let Some(s) = scales {
                    for row in w.chunks_exact_mut(cols) {
                        row.iter_mut().zip(s).for_each(|(v, m)| *v *= m);
                    }
                }
                let reuse = matches!(&factorised, Some((seen, _)) if *seen == scales);
                if !reuse {
                    let scaled_h;
                    let h = match scales {
                        Some(s) => {
                            scaled_h = (0..cols * cols)
                                .map(|k| h[k] / (s[k / cols] * s[k % cols]))
                                .collect::<Vec<f32>>();
                            &scaled_h
                        }
                        None => &h,
                    };
                    let f = quantizer
                        .factorise(h, cols)
                        .map_err(|why| Error::Plan(format!("GPTQ on {module}: {why}")))?;
                    factorised = Some((scales, f));
                }
                let f = &factorised.as_ref().expect("factorised above").1;
                let (mut fixed, loss) = quantizer
                    .gptq(&w, rows, cols, f)
                    .map_err(|why| Error::Plan(format!("GPTQ on {module}: {why}")))?;
                let dead = f.dead();
                if let Codes::Memory(codes) = &fixed.codes {
                    fixed.codes = spill.put(codes)?;
                }
                out.insert(
                    format!("{module}.weight"),
                    Rewrite {
                        fixed: Some(fixed),
                        ..Default::default()
                    },
                );
                modules.push(ModuleRecord {
                    module: module.clone(),
                    loss,
                    dead_inputs: dead,
                });
            }
        }
        Ok(())
    })?;
    let record = GptqRecord {
        data: CalibrationData::of(samples),
        rows_per_hessian,
        damping: DAMP,
        block: BLOCK,
        bits: if codebook == Codebook::Int8 { 8 } else { 4 },
        actorder,
        seconds: started.elapsed().as_secs_f64(),
        modules,
    };
    Ok((out, record))
}

/// The codes GPTQ rounds onto.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Codebook {
    /// INT4: stored nibbles `0..=15` on a group's minmax grid, with or without zero points (as
    /// the round-to-nearest INT4 quantizer, `int4.rs`).
    Int4 { zero_point: bool },
    /// INT8, symmetric: codes `[-128, 127]` (stored as their `i8` bits), scale `absmax / 127`
    /// rounded up to the scale dtype (as the round-to-nearest INT8 quantizer).
    Int8,
}

/// Scale of an all-zero INT8 group (any positive value maps zeros to zero).
const INT8_ZERO_SCALE: f32 = 1.0;

impl Codebook {
    /// The grid of a group (or row) of weights.
    fn grid(self, values: &[f32], scale_dtype: Dtype) -> Grid {
        match self {
            Codebook::Int4 { zero_point } => minmax_grid(values, zero_point, 1.0, scale_dtype),
            Codebook::Int8 => {
                let absmax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = if absmax == 0.0 {
                    INT8_ZERO_SCALE
                } else {
                    let s = round_scale_up(absmax / 127.0, scale_dtype);
                    if s > 0.0 {
                        s
                    } else {
                        round_scale_up(f32::MIN_POSITIVE, scale_dtype)
                    }
                };
                Grid { scale, zero: 0 }
            }
        }
    }

    /// The stored code of `w`, nearest on `grid`.
    fn code(self, grid: Grid, w: f32) -> u8 {
        let inv = 1.0 / grid.scale;
        match self {
            Codebook::Int4 { .. } => grid.code(w, inv),
            Codebook::Int8 => (w * inv).round_ties_even().clamp(-128.0, 127.0) as i8 as u8,
        }
    }

    /// The weight a stored code stands for.
    fn value(self, grid: Grid, code: u8) -> f32 {
        match self {
            Codebook::Int4 { .. } => grid.value(code),
            Codebook::Int8 => f32::from(code as i8) * grid.scale,
        }
    }
}

/// The codes GPTQ quantizes onto, and the column order.
pub struct Quantizer {
    pub group: usize,
    pub codebook: Codebook,
    pub scale_dtype: Dtype,
    /// Process columns by decreasing Hessian diagonal, grids fixed up front.
    pub actorder: bool,
}

/// What GPTQ needs of a Hessian, computed once for every weight that reads the same inputs.
pub struct Factorised {
    /// Inputs never active: their weights cannot matter, and they would make `H` singular.
    is_dead: Vec<bool>,
    /// `perm[i]` = the original column processed i-th.
    perm: Vec<usize>,
    /// The upper Cholesky factor of the damped `H⁻¹`, in processing order.
    u: Mat<f64>,
}

impl Factorised {
    /// Inputs never active in the calibration data.
    pub fn dead(&self) -> usize {
        self.is_dead.iter().filter(|&&d| d).count()
    }
}

impl Quantizer {
    /// The column order and the factor of the Hessian `h` (`cols x cols`, row-major).
    pub fn factorise(&self, h: &[f32], cols: usize) -> std::result::Result<Factorised, String> {
        let is_dead: Vec<bool> = (0..cols).map(|i| h[i * cols + i] == 0.0).collect();
        let mut perm: Vec<usize> = (0..cols).collect();
        if self.actorder {
            perm.sort_by(|&a, &b| h[b * cols + b].total_cmp(&h[a * cols + a]));
        }
        // H in processing order, a dead input's diagonal set to 1.
        let hp = |i: usize, j: usize| -> f64 {
            if i == j && is_dead[perm[i]] {
                1.0
            } else {
                f64::from(h[perm[i] * cols + perm[j]])
            }
        };
        let mean_diag = (0..cols).map(|i| hp(i, i)).sum::<f64>() / cols as f64;
        let u = upper_inverse_cholesky(cols, hp, DAMP * mean_diag)?;
        Ok(Factorised { is_dead, perm, u })
    }

    /// GPTQ on one `[rows, cols]` weight `w` (row-major) with its inputs' factorised Hessian:
    /// the codes and grids, and the loss.
    pub fn gptq(
        &self,
        w: &[f32],
        rows: usize,
        cols: usize,
        f: &Factorised,
    ) -> std::result::Result<(FixedCodes, f64), String> {
        let group = self.group;
        let groups = cols / group;
        let Factorised { is_dead, perm, u } = f;
        // Column-major working copy in processing order: column i is contiguous.
        let mut wc = vec![0f32; rows * cols];
        for (i, &c) in perm.iter().enumerate() {
            if !is_dead[c] {
                for r in 0..rows {
                    wc[i * rows + r] = w[r * cols + c];
                }
            }
        }
        let mut codes = vec![0u8; rows * cols];
        let mut grids = vec![
            Grid {
                scale: 1.0,
                zero: 8
            };
            rows * groups
        ];
        let mut loss = 0f64;
        let mut column = vec![0f32; rows];
        let mut values = vec![0f32; group];
        if self.actorder {
            // Every grid from the original weights (dead inputs zeroed), before any update.
            for r in 0..rows {
                for g in 0..groups {
                    for (k, v) in values.iter_mut().enumerate() {
                        let c = g * group + k;
                        *v = if is_dead[c] { 0.0 } else { w[r * cols + c] };
                    }
                    grids[r * groups + g] = self.codebook.grid(&values, self.scale_dtype);
                }
            }
        }
        for b0 in (0..cols).step_by(BLOCK) {
            let b1 = (b0 + BLOCK).min(cols);
            // Errors of this block's columns, scaled by 1 / U_ii: [b1 - b0][rows].
            let mut errs = vec![0f32; (b1 - b0) * rows];
            for i in b0..b1 {
                // Without reordering, a group's grid is fixed when GPTQ reaches its first
                // column, from the weights as updated so far.
                if !self.actorder && i % group == 0 {
                    let g = i / group;
                    for r in 0..rows {
                        for (k, v) in values.iter_mut().enumerate() {
                            *v = wc[(i + k) * rows + r];
                        }
                        grids[r * groups + g] = self.codebook.grid(&values, self.scale_dtype);
                    }
                }
                let g = perm[i] / group;
                let d = u[(i, i)] as f32;
                column.copy_from_slice(&wc[i * rows..(i + 1) * rows]);
                let e = &mut errs[(i - b0) * rows..(i - b0 + 1) * rows];
                for r in 0..rows {
                    let grid = grids[r * groups + g];
                    let code = self.codebook.code(grid, column[r]);
                    codes[r * cols + perm[i]] = code;
                    let q = self.codebook.value(grid, code);
                    let err = (column[r] - q) / d;
                    loss += f64::from(err) * f64::from(err);
                    e[r] = err;
                }
                // Within the block: W[:, j] -= err * U[i, j] for the columns after i.
                for j in i + 1..b1 {
                    let uij = u[(i, j)] as f32;
                    if uij != 0.0 {
                        for (wv, &ev) in wc[j * rows..(j + 1) * rows].iter_mut().zip(e.iter()) {
                            *wv -= ev * uij;
                        }
                    }
                }
            }
            // The block's errors onto every later column at once: W[:, b1..] -= E U[b0..b1, b1..].
            if b1 < cols {
                let rest = cols - b1;
                let e = Tensor::from_vec(errs, (b1 - b0, rows), &Device::Cpu)
                    .map_err(|e| e.to_string())?;
                let ub: Vec<f32> = (b0..b1)
                    .flat_map(|i| (b1..cols).map(move |j| (i, j)))
                    .map(|(i, j)| u[(i, j)] as f32)
                    .collect();
                let ub = Tensor::from_vec(ub, (b1 - b0, rest), &Device::Cpu)
                    .map_err(|e| e.to_string())?;
                // [rest, rows] = Ubᵀ E
                let update = ub
                    .t()
                    .and_then(|t| t.matmul(&e))
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(|e| e.to_string())?;
                for (wv, uv) in wc[b1 * rows..].iter_mut().zip(&update) {
                    *wv -= uv;
                }
            }
        }
        let codes = Codes::Memory(codes);
        Ok((FixedCodes { codes, grids }, loss / 2.0))
    }
}

/// The upper Cholesky factor `U` of `(H + damp I)⁻¹` (`UᵀU = H⁻¹`, `h(i, j)` the `n x n`
/// matrix `H`). Retries with ten times the damping (twice) when `H` is not positive definite
/// in floating point.
///
/// Without forming `H⁻¹`: with `P` the exchange matrix (reversed order) and `P H P = L Lᵀ`,
/// `H⁻¹ = P L⁻ᵀ L⁻¹ P`, so `U = P L⁻¹ P` (upper triangular, positive diagonal: the unique
/// factor). One Cholesky and one triangular solve (about `5/6 n³` flops) instead of a Cholesky,
/// an inverse and a second Cholesky (about `5/3 n³`), and two `n x n` matrices at a time.
fn upper_inverse_cholesky(
    n: usize,
    h: impl Fn(usize, usize) -> f64,
    damp: f64,
) -> std::result::Result<Mat<f64>, String> {
    let mut damp = damp.max(1e-8);
    for _ in 0..3 {
        let reversed = Mat::<f64>::from_fn(n, n, |i, j| {
            h(n - 1 - i, n - 1 - j) + if i == j { damp } else { 0.0 }
        });
        // faer's blocked, multithreaded Cholesky and triangular inverse (O(n³), the cost that
        // dominates GPTQ on wide layers).
        let factor = reversed.llt(Side::Lower);
        drop(reversed);
        if let Ok(llt) = factor {
            let mut u = Mat::<f64>::zeros(n, n);
            faer::linalg::triangular_inverse::invert_lower_triangular(
                u.as_mut(),
                llt.L(),
                Par::rayon(0),
            );
            drop(llt);
            // L⁻¹ -> P L⁻¹ P: element (i, j) moves to (n-1-i, n-1-j), in place.
            for j in 0..n {
                for i in 0..n {
                    let (a, b) = ((i, j), (n - 1 - i, n - 1 - j));
                    if (j, i) < (b.1, b.0) {
                        let t = u[a];
                        u[a] = u[b];
                        u[b] = t;
                    }
                }
            }
            if (0..n).all(|i| u[(i, i)].is_finite() && u[(i, i)] > 0.0) {
                return Ok(u);
            }
        }
        damp *= 10.0;
    }
    Err(
        "the calibration inputs' Hessian is not positive definite even with damping; give more or \
         more varied calibration text (OPTION_CALIB_DATA, OPTION_CALIB_SIZE)"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `U` is upper triangular with `Uᵀ U (H + damp I) = I`.
    #[test]
    fn upper_inverse_cholesky_factors_the_inverse() {
        let n = 37;
        let a = Mat::<f64>::from_fn(n, n, |i, j| ((i * 31 + j * 17) % 13) as f64 - 6.0);
        let h = &a * a.transpose() + Mat::<f64>::identity(n, n);
        let damp = 0.5;
        let u = upper_inverse_cholesky(n, |i, j| h[(i, j)], damp).unwrap();
        for i in 0..n {
            assert!(u[(i, i)] > 0.0);
            for j in 0..i {
                assert_eq!(u[(i, j)], 0.0, "({i}, {j}) below the diagonal");
            }
        }
        let hd = Mat::<f64>::from_fn(n, n, |i, j| h[(i, j)] + if i == j { damp } else { 0.0 });
        let product = u.transpose() * &u * &hd;
        for i in 0..n {
            for j in 0..n {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!(
                    (product[(i, j)] - want).abs() < 1e-9,
                    "({i}, {j}): {}",
                    product[(i, j)]
                );
            }
        }
    }

    /// Random-ish weights and correlated inputs: GPTQ's output error is below round-to-nearest's
    /// on the inputs it saw, and its codes are valid grid codes.
    #[test]
    fn gptq_beats_round_to_nearest_on_its_inputs() {
        let (rows, cols, n) = (16, 64, 256);
        let mut state = 12345u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 10_000) as f32 / 5_000.0 - 1.0
        };
        let w: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
        // Inputs with strongly correlated neighbouring columns.
        let mut x = vec![0f32; n * cols];
        for t in 0..n {
            let mut prev = next();
            for c in 0..cols {
                prev = 0.8 * prev + 0.6 * next();
                x[t * cols + c] = prev * if c % 7 == 0 { 4.0 } else { 1.0 };
            }
        }
        let xt = Tensor::from_slice(&x, (n, cols), &Device::Cpu).unwrap();
        let h: Vec<f32> = xt
            .t()
            .unwrap()
            .matmul(&xt)
            .unwrap()
            .affine(2.0 / n as f64, 0.0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let out_err = |deq: &dyn Fn(usize, usize) -> f32| -> f64 {
            let mut total = 0f64;
            for t in 0..n {
                for r in 0..rows {
                    let mut e = 0f32;
                    for c in 0..cols {
                        e += x[t * cols + c] * (w[r * cols + c] - deq(r, c));
                    }
                    total += f64::from(e * e);
                }
            }
            total
        };
        // INT4 groups of 32 with zero points; INT8 per channel.
        for (codebook, group) in [
            (Codebook::Int4 { zero_point: true }, 32),
            (Codebook::Int8, cols),
        ] {
            let groups = cols / group;
            let rtn = out_err(&|r, c| {
                let start = r * cols + (c / group) * group;
                let grid = codebook.grid(&w[start..start + group], Dtype::F32);
                codebook.value(grid, codebook.code(grid, w[r * cols + c]))
            });
            for actorder in [false, true] {
                let q = Quantizer {
                    group,
                    codebook,
                    scale_dtype: Dtype::F32,
                    actorder,
                };
                let f = q.factorise(&h, cols).unwrap();
                assert_eq!(f.dead(), 0);
                let (fixed, _) = q.gptq(&w, rows, cols, &f).unwrap();
                let codes = fixed.codes.load().unwrap();
                if codebook != Codebook::Int8 {
                    assert!(codes.iter().all(|&c| c <= 15));
                }
                let gptq = out_err(&|r, c| {
                    codebook.value(fixed.grids[r * groups + c / group], codes[r * cols + c])
                });
                assert!(
                    gptq < 0.8 * rtn,
                    "GPTQ {codebook:?} (actorder {actorder}) output error {gptq} vs \
                     round-to-nearest {rtn}"
                );
            }
        }
    }
}
