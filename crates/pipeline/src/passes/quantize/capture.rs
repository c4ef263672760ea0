//! Calibration for the calibrated INT4 methods (AWQ, GPTQ): the calibration windows go through
//! the source model one layer at a time (`run_layers`), every Linear keeping a sample of its
//! input rows, and each layer is handed over once all windows went through it. Memory is one
//! layer, the windows' hidden states and the sampled rows.

use crate::progress::{Cancel, Event, Sink};
use crate::samples::SampleWindows;
use crate::{Error, Result};
use serde::Serialize;
use std::path::Path;
use temper_runtime::layer::Layer;
use temper_runtime::layerwise::run_layers;
use temper_runtime::{LayerSource, LoadOptions, ModelParams};

/// Which calibration text a search ran on, for the manifest (flattened into each record).
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationData {
    pub source: String,
    pub windows: usize,
    pub window_len: usize,
}

impl CalibrationData {
    pub fn of(samples: &SampleWindows) -> Self {
        CalibrationData {
            source: samples.source.clone(),
            windows: samples.calibration.len(),
            window_len: samples.window_len,
        }
    }
}

/// The row stride that keeps about `rows` of the calibration tokens, and how many it keeps.
pub fn sampling(samples: &SampleWindows, rows: usize) -> (usize, usize) {
    let tokens: usize = samples.calibration.iter().map(Vec::len).sum();
    let stride = tokens.div_ceil(rows.max(1)).max(1);
    (stride, tokens.div_ceil(stride))
}

/// Calls `each(index, layer)` for every layer of the model in `model_dir`, its Linears having
/// recorded every `stride`-th input row of the calibration windows. Returns the model's
/// parameters. The first error of `each` stops the pass (at the next layer) and is returned.
pub fn for_each_layer(
    model_dir: &Path,
    samples: &SampleWindows,
    stride: usize,
    sink: Sink,
    cancel: &Cancel,
    mut each: impl FnMut(usize, &Layer, &ModelParams) -> Result<()>,
) -> Result<ModelParams> {
    let source = LayerSource::open(
        model_dir,
        &LoadOptions {
            record_inputs: Some(stride.max(1)),
            ..Default::default()
        },
    )?;
    let params = source.params().clone();
    let failure: std::cell::RefCell<Option<Error>> = Default::default();
    let ran = run_layers(
        &source,
        &samples.calibration,
        |i, layer| {
            if failure.borrow().is_none() {
                *failure.borrow_mut() = each(i, layer, &params).err();
            }
        },
        |done, total| {
            sink(Event::Progress {
                unit: "layers",
                done,
                total,
            });
            failure.borrow().is_none() && !cancel.is_cancelled()
        },
    );
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    ran.map_err(|e| match e {
        temper_runtime::RuntimeError::Stopped if cancel.is_cancelled() => Error::Cancelled,
        other => other.into(),
    })?;
    Ok(params)
}

/// Rows `r0..r1` of a projection's weights in f32, row-major, its parts' rows one after
/// another (a fused projection's modules in order). The calibrated searches widen a block of
/// rows at a time, so they never hold a whole projection in f32.
pub fn weight_rows(p: &temper_runtime::layer::Projection, r0: usize, r1: usize) -> Vec<f32> {
    let cols = p.parts[0].cols();
    let mut out = vec![0f32; (r1 - r0) * cols];
    let mut base = 0;
    for lin in &p.parts {
        let (lo, hi) = (r0.max(base), r1.min(base + lin.rows()));
        for r in lo..hi {
            let at = (r - r0) * cols;
            lin.matrix().row(r - base, &mut out[at..at + cols]);
        }
        base += lin.rows();
    }
    out
}

/// All output rows of a projection (its parts together).
pub fn projection_rows(p: &temper_runtime::layer::Projection) -> usize {
    p.parts.iter().map(|l| l.rows()).sum()
}

/// Output rows of each module of a projection, in module order (a fused projection holds
/// q/k/v or gate/up one after another).
pub fn module_rows(p: &temper_runtime::layer::Projection, params: &ModelParams) -> Vec<usize> {
    if p.parts.len() == p.modules.len() {
        return p.parts.iter().map(|l| l.rows()).collect();
    }
    p.modules
        .iter()
        .map(|m| match m.rsplit('.').next().unwrap_or_default() {
            "q_proj" => params.num_heads * params.head_dim,
            "k_proj" | "v_proj" => params.num_kv_heads * params.head_dim,
            "gate_proj" | "up_proj" => params.intermediate_size,
            _ => params.hidden_size,
        })
        .collect()
}
