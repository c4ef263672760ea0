//! AWQ (activation-aware weight quantization, Lin et al. 2023) for INT4 W4A16: per input
//! channel scales `s` searched on calibration activations, so that quantizing `W diag(s)`
//! and feeding it `diag(1/s) x` loses less than quantizing `W` itself. `1/s` is folded into
//! what produces the input (the RMSNorm weight before q/k/v and gate/up, `up_proj`'s rows
//! before `down_proj`, `v_proj`'s rows before `o_proj` when heads are not grouped), so the
//! served model needs nothing new: the artifact is an ordinary pack-quantized checkpoint.
//!
//! The search, per mapping, as in llm-compressor's `AWQModifier` (duo scaling): with `x̄` the
//! mean |input| per channel and `w̄` the mean over rows of |w| / (the largest |w| of its group),
//! try `s = x̄^α / (w̄^(1-α) + 1e-4)`, normalised by `sqrt(max s * min s)`, for `α` on a grid of
//! 20, and keep the one whose quantized outputs `x Q(W diag(s))ᵀ diag(1/s)` are closest (mean
//! squared error) to `x Wᵀ` on sampled calibration rows. Unlike llm-compressor the loss is on the
//! Linear outputs, not on the whole attention block or MLP, and `s = 1` (round-to-nearest) is
//! kept when no `α` beats it, so AWQ never loses to round-to-nearest on its own loss.
//!
//! Layer by layer: the calibration windows go through the source model one layer at a time
//! (`run_layers`), each layer's Linears keep a sample of their input rows, the layer's mappings
//! are searched, and only the scales (one float per channel) and clip ratios (one per group)
//! are kept. The searches widen the weights to f32 [`ROW_BLOCK`] rows at a time and measure
//! the output error as `x (W - Q(W))ᵀ` directly (no reference outputs kept), so memory is one
//! layer in its stored dtype, the windows' hidden states, the sampled rows and a block.

use super::capture::{sampling, CalibrationData};
use super::int4::{clip_ratios, fake_quantize_group, minmax_grid};
use super::rewrite::{Rewrite, Rewrites};
use crate::progress::{Cancel, Sink};
use crate::samples::SampleWindows;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use safetensors::Dtype;
use serde::Serialize;
use std::path::Path;
use temper_format::Scheme;
use temper_runtime::layer::{Layer, Projection};
use temper_runtime::ModelParams;

/// Points of the `α` grid (`α = i / GRID`).
pub const GRID: usize = 20;
/// Input rows sampled per Linear for the search's loss.
const SEARCH_ROWS: usize = 1024;

/// Input rows used by the clip search (the first ones of the sample).
const CLIP_ROWS: usize = 256;

/// Weight rows widened to f32 at a time by the searches (a 11008-column block is 22 MB).
const ROW_BLOCK: usize = 512;

/// What the search found, for the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct AwqRecord {
    #[serde(flatten)]
    pub data: CalibrationData,
    pub grid: usize,
    pub rows_per_search: usize,
    pub seconds: f64,
    /// Mappings whose scales beat round-to-nearest (the others keep `s = 1`).
    pub mappings_scaled: usize,
    pub mappings: Vec<MappingRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MappingRecord {
    pub layer: usize,
    /// What `1/s` is folded into.
    pub producer: String,
    /// The Linears reading the smoothed input.
    pub consumers: Vec<String>,
    /// The chosen `α`; `None` keeps round-to-nearest.
    pub alpha: Option<f32>,
    /// Output mean squared error on the sampled rows: round-to-nearest, and with the scales.
    pub mse_round_to_nearest: f64,
    pub mse_awq: f64,
}

/// Searches AWQ scales for every layer of the model in `model_dir` on the calibration windows.
pub fn search(
    model_dir: &Path,
    samples: &SampleWindows,
    scheme: Scheme,
    scale_dtype: Dtype,
    sink: Sink,
    cancel: &Cancel,
) -> Result<(Rewrites, AwqRecord)> {
    let Scheme::W4A16 { zero_point, .. } = scheme else {
        return Err(Error::Plan(format!(
            "AWQ writes INT4 W4A16, not {}",
            scheme.label()
        )));
    };
    let started = std::time::Instant::now();
    let (stride, rows_per_search) = sampling(samples, SEARCH_ROWS);
    let mut rewrites = Rewrites::new();
    let mut mappings = Vec::new();
    super::capture::for_each_layer(model_dir, samples, stride, sink, cancel, |i, layer, p| {
        let searcher = Searcher {
            scheme,
            zero_point,
            scale_dtype,
            params: p.clone(),
        };
        for (record, found) in searcher.layer(i, layer, p.num_heads == p.num_kv_heads)? {
            for (name, rewrite) in found {
                rewrites.entry(name).or_default().merge(rewrite);
            }
            mappings.extend(record);
        }
        Ok(())
    })?;
    let record = AwqRecord {
        data: CalibrationData::of(samples),
        grid: GRID,
        rows_per_search,
        seconds: started.elapsed().as_secs_f64(),
        mappings_scaled: mappings.iter().filter(|m| m.alpha.is_some()).count(),
        mappings,
    };
    Ok((rewrites, record))
}

struct Searcher {
    scheme: Scheme,
    zero_point: bool,
    scale_dtype: Dtype,
    params: ModelParams,
}

type Found = (Option<MappingRecord>, Vec<(String, Rewrite)>);

impl Searcher {
    /// The layer's mappings: norm -> q/k/v, norm -> gate/up, up -> down, and v -> o when every
    /// query head has its own value head (with grouped heads one v row feeds several o
    /// columns, which then could not take different scales).
    fn layer(&self, i: usize, layer: &Layer, v_to_o: bool) -> Result<Vec<Found>> {
        let prefix = format!("model.layers.{i}");
        let mut found = vec![
            self.mapping(
                i,
                Some(format!("{prefix}.input_layernorm.weight")),
                &layer.qkv,
            )?,
            self.mapping(
                i,
                Some(format!("{prefix}.post_attention_layernorm.weight")),
                &layer.gate_up,
            )?,
            self.mapping(i, Some(format!("{prefix}.mlp.up_proj.weight")), &layer.down)?,
        ];
        // Without v -> o, o_proj still gets its clip ratios.
        let producer = v_to_o.then(|| format!("{prefix}.self_attn.v_proj.weight"));
        found.push(self.mapping(i, producer, &layer.o)?);
        Ok(found)
    }

    /// The scales of one mapping (none without a `producer` to fold them into) and the clip
    /// ratios of its consumers.
    fn mapping(
        &self,
        layer: usize,
        producer: Option<String>,
        consumer: &Projection,
    ) -> Result<Found> {
        let recorded = consumer.recorded_inputs().ok_or_else(|| {
            Error::Plan(format!(
                "AWQ: no inputs were recorded for {}",
                consumer.modules.join(", ")
            ))
        })?;
        let cols = consumer.parts[0].cols();
        let group = match self.scheme.fit_columns(cols) {
            Scheme::W4A16 { group, .. } if cols.is_multiple_of(group) => group,
            _ => {
                return Err(Error::Plan(format!(
                    "AWQ: {} has {cols} input columns, which no INT4 group size divides",
                    consumer.modules.join(", ")
                )))
            }
        };
        let x = &recorded.rows;
        let n = x.len() / cols;
        let search = Search {
            consumer,
            cols,
            group,
            zero_point: self.zero_point,
            scale_dtype: self.scale_dtype,
            x: Tensor::from_slice(x, (n, cols), &Device::Cpu)?,
        };
        let identity = vec![1f32; cols];
        let mse_rtn = search.loss(&identity)?;
        let x_mean = recorded.abs_mean();
        let w_mean = search.group_normalised_mean();
        let mut best: Option<(f32, Vec<f32>, f64)> = None;
        let steps = if producer.is_some() { GRID } else { 0 };
        for step in 0..steps {
            let alpha = step as f32 / GRID as f32;
            let s = duo_scales(&x_mean, &w_mean, alpha);
            let loss = search.loss(&s)?;
            if loss.is_finite() && best.as_ref().is_none_or(|b| loss < b.2) {
                best = Some((alpha, s, loss));
            }
        }
        let (alpha, scales, mse_awq) = match best {
            Some((a, s, l)) if l < mse_rtn => (Some(a), Some(s), l),
            _ => (None, None, mse_rtn),
        };
        let mut rewrites = Vec::new();
        // Clip ratios per module, on the (scaled) weights and the inputs they will see.
        let s_or_one = scales.clone().unwrap_or(identity);
        let mut offset = 0;
        for (module, lin) in consumer
            .modules
            .iter()
            .zip(super::capture::module_rows(consumer, &self.params))
        {
            let clip = search.clip_ratios(offset, offset + lin, &s_or_one)?;
            offset += lin;
            rewrites.push((
                format!("{module}.weight"),
                Rewrite {
                    col_mul: scales.clone(),
                    row_div: None,
                    clip: Some(clip),
                    fixed: None,
                },
            ));
        }
        if let (Some(s), Some(producer)) = (scales, &producer) {
            rewrites.extend(super::rewrite::divide_producer(producer, s));
        }
        let record = producer.map(|producer| MappingRecord {
            layer,
            producer,
            consumers: consumer.modules.clone(),
            alpha,
            mse_round_to_nearest: mse_rtn,
            mse_awq,
        });
        Ok((record, rewrites))
    }
}

/// One mapping's search state: the consumer (its weights in their stored format) and the
/// sampled inputs.
struct Search<'a> {
    consumer: &'a Projection,
    cols: usize,
    group: usize,
    zero_point: bool,
    scale_dtype: Dtype,
    x: Tensor,
}

impl Search<'_> {
    /// Blocks of at most [`ROW_BLOCK`] rows `(r0, r1)` covering rows `r0..r1`.
    fn blocks(r0: usize, r1: usize) -> impl Iterator<Item = (usize, usize)> {
        (r0..r1)
            .step_by(ROW_BLOCK)
            .map(move |b| (b, (b + ROW_BLOCK).min(r1)))
    }

    /// Per row and group of `w diag(s)` (`w` rows `r0..r1` of the consumer): the clip ratio
    /// (1.0, 0.95, ...) whose quantization error, seen through the sampled inputs
    /// `x diag(1/s)` of that group, is smallest.
    fn clip_ratios(&self, r0: usize, r1: usize, s: &[f32]) -> Result<Vec<f32>> {
        let (cols, group) = (self.cols, self.group);
        let groups = cols / group;
        let n = self.x.dim(0)?.min(CLIP_ROWS);
        let inv: Vec<f32> = s.iter().map(|v| 1.0 / v).collect();
        let x = self.x.narrow(0, 0, n)?.broadcast_mul(&Tensor::from_slice(
            &inv,
            (1, cols),
            &Device::Cpu,
        )?)?;
        let xg: Vec<Tensor> = (0..groups)
            .map(|g| x.narrow(1, g * group, group))
            .collect::<candle_core::Result<_>>()?;
        let mut best = vec![(f32::INFINITY, 1.0f32); (r1 - r0) * groups];
        for (b0, b1) in Self::blocks(r0, r1) {
            let mut scaled = super::capture::weight_rows(self.consumer, b0, b1);
            scaled.par_chunks_mut(cols).for_each(|row| {
                row.iter_mut().zip(s).for_each(|(a, b)| *a *= b);
            });
            let rows = b1 - b0;
            for (g, xg) in xg.iter().enumerate() {
                for clip in clip_ratios() {
                    // Quantization error of every row's group g at this clip ratio.
                    let mut err = vec![0f32; rows * group];
                    err.par_chunks_mut(group)
                        .zip(scaled.par_chunks(cols))
                        .for_each(|(e, row)| {
                            let values = &row[g * group..(g + 1) * group];
                            let grid = minmax_grid(values, self.zero_point, clip, self.scale_dtype);
                            fake_quantize_group(values, grid, e);
                            e.iter_mut().zip(values).for_each(|(q, v)| *q = v - *q);
                        });
                    let e = Tensor::from_vec(err, (rows, group), &Device::Cpu)?;
                    let out = xg.matmul(&e.t()?)?; // [n, rows]
                    let per_row = out.sqr()?.sum(0)?.to_vec1::<f32>()?;
                    for (r, &v) in per_row.iter().enumerate() {
                        let slot = &mut best[(b0 - r0 + r) * groups + g];
                        if v < slot.0 {
                            *slot = (v, clip);
                        }
                    }
                }
            }
        }
        Ok(best.into_iter().map(|(_, c)| c).collect())
    }

    /// Mean squared error of the outputs with `W diag(s)` quantized and `diag(1/s)` applied:
    /// `mean (x (W - Q)ᵀ)²`, a block of rows at a time.
    fn loss(&self, s: &[f32]) -> Result<f64> {
        let (cols, group) = (self.cols, self.group);
        let rows = super::capture::projection_rows(self.consumer);
        let mut total = 0f64;
        for (b0, b1) in Self::blocks(0, rows) {
            let mut w = super::capture::weight_rows(self.consumer, b0, b1);
            w.par_chunks_mut(cols).for_each_init(
                || (vec![0f32; group], vec![0f32; group]),
                |(scaled, q), row| {
                    for g in 0..cols / group {
                        let span = g * group..(g + 1) * group;
                        for ((v, &w), &sc) in scaled
                            .iter_mut()
                            .zip(&row[span.clone()])
                            .zip(&s[span.clone()])
                        {
                            *v = w * sc;
                        }
                        let grid = minmax_grid(scaled, self.zero_point, 1.0, self.scale_dtype);
                        fake_quantize_group(scaled, grid, q);
                        // The error of each weight: w - q / s.
                        for ((w, &qv), &sc) in
                            row[span.clone()].iter_mut().zip(q.iter()).zip(&s[span])
                        {
                            *w -= qv / sc;
                        }
                    }
                },
            );
            let e = Tensor::from_vec(w, (b1 - b0, cols), &Device::Cpu)?;
            let out = self.x.matmul(&e.t()?)?;
            total += f64::from(out.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
        let n = self.x.dim(0)?;
        Ok(total / (n * rows).max(1) as f64)
    }

    /// Mean over rows of `|w| / max |w| of its group` per column.
    fn group_normalised_mean(&self) -> Vec<f32> {
        let rows = super::capture::projection_rows(self.consumer);
        let mut sum = vec![0f64; self.cols];
        for (b0, b1) in Self::blocks(0, rows) {
            let w = super::capture::weight_rows(self.consumer, b0, b1);
            add_group_normalised(&w, self.cols, self.group, &mut sum);
        }
        sum.iter()
            .map(|&s| (s / rows.max(1) as f64) as f32)
            .collect()
    }
}

/// Adds `|w| / max |w| of its group` of every row of `w` to `sum` per column.
fn add_group_normalised(w: &[f32], cols: usize, group: usize, sum: &mut [f64]) {
    for row in w.chunks_exact(cols) {
        for (g, part) in row.chunks_exact(group).enumerate() {
            let max = part.iter().fold(0f32, |m, v| m.max(v.abs()));
            if max > 0.0 {
                for (j, v) in part.iter().enumerate() {
                    sum[g * group + j] += f64::from(v.abs() / max);
                }
            }
        }
    }
}

/// `s = x̄^α / (w̄^(1-α) + 1e-4)` (floored at 1e-4), divided by `sqrt(max s * min s)`.
fn duo_scales(x_mean: &[f32], w_mean: &[f32], alpha: f32) -> Vec<f32> {
    let mut s: Vec<f32> = x_mean
        .iter()
        .zip(w_mean)
        .map(|(&x, &w)| (x.max(1e-8).powf(alpha) / (w.powf(1.0 - alpha) + 1e-4)).max(1e-4))
        .collect();
    let (lo, hi) = s
        .iter()
        .fold((f32::INFINITY, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let norm = (lo * hi).sqrt();
    if norm.is_finite() && norm > 0.0 {
        s.iter_mut().for_each(|v| *v /= norm);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duo_scales_are_normalised_and_follow_activations() {
        let x = [0.1f32, 1.0, 10.0, 1.0];
        let w = [0.5f32; 4];
        let s = duo_scales(&x, &w, 0.5);
        let (lo, hi) = s
            .iter()
            .fold((f32::MAX, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(((lo * hi).sqrt() - 1.0).abs() < 1e-5);
        assert!(s[2] > s[1] && s[1] > s[0]);
        // α = 0: activations do not matter.
        let s0 = duo_scales(&x, &w, 0.0);
        assert!(s0.iter().all(|&v| (v - s0[0]).abs() < 1e-6));
    }

    #[test]
    fn group_mean_is_relative_to_the_group_maximum() {
        let w = [1.0f32, -2.0, 4.0, 4.0, 0.0, 0.0, 0.0, 0.0];
        let mut sum = vec![0f64; 4];
        add_group_normalised(&w, 4, 2, &mut sum);
        assert_eq!(sum, vec![0.5, 1.0, 1.0, 1.0]);
    }
}
