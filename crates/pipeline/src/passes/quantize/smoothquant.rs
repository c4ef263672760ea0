//! SmoothQuant (Xiao et al. 2022) for INT8 W8A8: per-token INT8 activations lose the most on
//! the few input channels with outliers, so each channel `j` is divided by
//! `s_j = max|x_j|^α / max|w_j|^(1-α)` (folded into the RMSNorm before q/k/v and gate/up) and the
//! weights' column `j` multiplied by it, moving part of the range from activations to weights,
//! which are quantized per channel. The artifact is an ordinary W8A8 (`int-quantized`)
//! checkpoint.
//!
//! The largest |input| per channel comes from the calibration windows run through the source
//! model one layer at a time (`capture`); the weights' from the layer's Linears.

use super::capture::{sampling, CalibrationData};
use super::rewrite::{Rewrite, Rewrites};
use crate::progress::{Cancel, Sink};
use crate::samples::SampleWindows;
use crate::{Error, Result};
use serde::Serialize;
use std::path::Path;
use temper_runtime::layer::Projection;

/// What SmoothQuant did, for the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct SmoothQuantRecord {
    #[serde(flatten)]
    pub data: CalibrationData,
    pub alpha: f32,
    pub seconds: f64,
    pub mappings: Vec<MappingRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MappingRecord {
    pub layer: usize,
    pub producer: String,
    pub consumers: Vec<String>,
    /// The largest channel's |input| maximum over the mean of the channels' maxima, before
    /// and after smoothing: how far outliers stretch the per-token INT8 range past what most
    /// channels need.
    pub input_outlier_ratio_before: f32,
    pub input_outlier_ratio_after: f32,
    pub smallest_scale: f32,
    pub largest_scale: f32,
}

/// The smoothing of every layer's norm -> q/k/v and norm -> gate/up mappings.
pub fn search(
    model_dir: &Path,
    samples: &SampleWindows,
    alpha: f32,
    sink: Sink,
    cancel: &Cancel,
) -> Result<(Rewrites, SmoothQuantRecord)> {
    let started = std::time::Instant::now();
    // Only the per-channel maxima are needed: keep one row.
    let (one_row, _) = sampling(samples, 1);
    let mut rewrites = Rewrites::new();
    let mut mappings = Vec::new();
    super::capture::for_each_layer(model_dir, samples, one_row, sink, cancel, |i, layer, _| {
        let prefix = format!("model.layers.{i}");
        for (producer, consumer) in [
            (format!("{prefix}.input_layernorm.weight"), &layer.qkv),
            (
                format!("{prefix}.post_attention_layernorm.weight"),
                &layer.gate_up,
            ),
        ] {
            let (record, found) = smooth(i, producer, consumer, alpha)?;
            rewrites.extend(found);
            mappings.push(record);
        }
        Ok(())
    })?;
    let record = SmoothQuantRecord {
        data: CalibrationData::of(samples),
        alpha,
        seconds: started.elapsed().as_secs_f64(),
        mappings,
    };
    Ok((rewrites, record))
}

fn smooth(
    layer: usize,
    producer: String,
    consumer: &Projection,
    alpha: f32,
) -> Result<(MappingRecord, Vec<(String, Rewrite)>)> {
    let recorded = consumer.recorded_inputs().ok_or_else(|| {
        Error::Plan(format!(
            "SmoothQuant: no inputs were recorded for {}",
            consumer.modules.join(", ")
        ))
    })?;
    let cols = consumer.parts[0].cols();
    // The largest |w| per input column, a block of rows at a time.
    let rows = super::capture::projection_rows(consumer);
    let mut w_max = vec![0f32; cols];
    for b0 in (0..rows).step_by(1024) {
        let block = super::capture::weight_rows(consumer, b0, (b0 + 1024).min(rows));
        for row in block.chunks_exact(cols) {
            for (m, &v) in w_max.iter_mut().zip(row) {
                *m = m.max(v.abs());
            }
        }
    }
    let s = scales(&recorded.abs_max, &w_max, alpha);
    let before = outlier_ratio(recorded.abs_max.iter().copied());
    let after = outlier_ratio(recorded.abs_max.iter().zip(&s).map(|(&v, &sc)| v / sc));
    let (lo, hi) = s
        .iter()
        .fold((f32::INFINITY, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let mut rewrites: Vec<(String, Rewrite)> = consumer
        .modules
        .iter()
        .map(|m| {
            (
                format!("{m}.weight"),
                Rewrite {
                    col_mul: Some(s.clone()),
                    ..Default::default()
                },
            )
        })
        .collect();
    rewrites.extend(super::rewrite::divide_producer(&producer, s));
    Ok((
        MappingRecord {
            layer,
            producer,
            consumers: consumer.modules.clone(),
            input_outlier_ratio_before: before,
            input_outlier_ratio_after: after,
            smallest_scale: lo,
            largest_scale: hi,
        },
        rewrites,
    ))
}

/// `max / mean` of per-channel maxima (1 when all are equal, 0 for none).
fn outlier_ratio(maxima: impl Iterator<Item = f32>) -> f32 {
    let (mut max, mut sum, mut n) = (0f32, 0f64, 0usize);
    for v in maxima {
        max = max.max(v);
        sum += f64::from(v);
        n += 1;
    }
    if sum > 0.0 {
        (f64::from(max) / (sum / n as f64)) as f32
    } else {
        0.0
    }
}

/// `s_j = max|x_j|^α / max|w_j|^(1-α)`, floored at 1e-5; 1 for a channel that is never active
/// or whose weights are all zero (nothing to balance).
fn scales(x_max: &[f32], w_max: &[f32], alpha: f32) -> Vec<f32> {
    x_max
        .iter()
        .zip(w_max)
        .map(|(&x, &w)| {
            if x > 0.0 && w > 0.0 {
                (x.powf(alpha) / w.powf(1.0 - alpha)).max(1e-5)
            } else {
                1.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_balance_activation_and_weight_ranges() {
        // alpha 0.5: after smoothing, x/s and w*s have the same maximum per channel.
        let x = [100.0f32, 1.0, 0.0, 4.0];
        let w = [0.01f32, 1.0, 1.0, 0.0];
        let s = scales(&x, &w, 0.5);
        for j in [0, 1] {
            assert!((x[j] / s[j] - w[j] * s[j]).abs() < 1e-5 * x[j]);
        }
        assert_eq!(&s[2..], &[1.0, 1.0]);
        // alpha 1: every active channel's input range becomes 1.
        let s1 = scales(&x, &w, 1.0);
        assert!((x[0] / s1[0] - 1.0).abs() < 1e-6);
    }
}
