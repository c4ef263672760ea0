//! Running a [`QuantizePlan`]: tensor by tensor in storage order, each tensor's rows in
//! parallel, every result written straight to its planned place in the output. Memory
//! stays near one tensor: the source pages of a finished tensor are handed back to the
//! kernel and its outputs are freed before the next one starts.

use super::plan::{Action, QuantizePlan};
use super::rewrite::Rewrite;
use super::tensor::{quantize_tensor, TensorError, TensorInput};
use crate::progress::{Cancel, Event, Sink};
use crate::{Error, Result};
use serde::Serialize;
use temper_core::dtype::FloatData;
use temper_core::writer::ShardedWriter;
use temper_cuda::Device;

/// What the quantize pass reports into the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeReport {
    pub scheme: String,
    pub format: &'static str,
    pub isa: &'static str,
    /// Where the codes were computed: `cpu (avx512)`, or the GPU (`cuda:0 (NVIDIA L4, sm_89,
    /// 22 GiB)`) for the round-to-nearest 8-bit schemes it runs; the error measurement and
    /// every calibrated or searched scheme run on the CPU.
    pub device: String,
    /// How codes are computed: `w * (1 / scale)` in f32 (llm-compressor divides in the
    /// model's dtype instead; codes can differ by one step near ties, both load identically).
    pub rounding: &'static str,
    pub tensors_quantized: usize,
    pub tensors_copied: usize,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub seconds: f64,
    /// Mean of the per-tensor relative RMS errors.
    pub mean_relative_rms_error: f64,
    pub worst_relative_rms_error: f64,
    pub worst_tensor: String,
    pub tensors: Vec<TensorError>,
}

/// Quantizes and copies every tensor of the plan into `writer`.
pub fn run_quantize(
    plan: &QuantizePlan,
    writer: &ShardedWriter,
    device: &Device,
    sink: Sink,
    cancel: &Cancel,
) -> Result<QuantizeReport> {
    let started = std::time::Instant::now();
    let checkpoint = &plan.checkpoint;
    sink(Event::Started {
        tensors: checkpoint.tensors().len(),
        bytes: checkpoint.total_tensor_bytes(),
    });
    let mut errors = Vec::new();
    for (entry, action) in checkpoint.tensors().iter().zip(&plan.actions) {
        cancel.check()?;
        let bytes = checkpoint.bytes(entry);
        let file = checkpoint.file_of(entry);
        let float = || {
            FloatData::from_bytes(entry.dtype, bytes).ok_or_else(|| Error::Tensor {
                path: file.to_path_buf(),
                tensor: entry.name.clone(),
                reason: format!("dtype {} cannot be quantized", entry.dtype),
            })
        };
        // AWQ's rewrite of this tensor, as f32 (one tensor at a time).
        let smoothed = match plan.rewrites.get(&entry.name) {
            Some(smooth) => Some(smooth_tensor(&float()?, &entry.shape, smooth)),
            None => None,
        };
        match action {
            Action::Copy => match &smoothed {
                Some(values) => writer.write(&entry.name, &to_dtype_bytes(values, entry.dtype))?,
                None => writer.write(&entry.name, bytes)?,
            },
            Action::Quantize(scheme) => {
                let data = match &smoothed {
                    Some(values) => FloatData::F32(std::borrow::Cow::Borrowed(values)),
                    None => float()?,
                };
                let input = TensorInput {
                    file,
                    name: &entry.name,
                    rows: entry.shape[0],
                    cols: entry.shape[1],
                    data: &data,
                    scale_dtype: plan.scale_dtype,
                    input_absmax: plan
                        .input_absmax
                        .get(temper_core::select::module_name(&entry.name))
                        .copied(),
                    clip: plan
                        .rewrites
                        .get(&entry.name)
                        .and_then(|s| s.clip.as_deref()),
                    fixed: plan
                        .rewrites
                        .get(&entry.name)
                        .and_then(|s| s.fixed.as_ref()),
                    mse_search: plan.options.mse_scale_search,
                    gpu: device.gpu(),
                };
                let q = quantize_tensor(device.isa(), *scheme, &input)?;
                for (name, out) in &q.outputs {
                    writer.write(name, out)?;
                }
                errors.push(q.error);
            }
        }
        checkpoint.release(entry);
        sink(Event::Tensor {
            name: &entry.name,
            bytes: entry.byte_len() as u64,
        });
    }
    Ok(report(
        plan,
        device,
        errors,
        started.elapsed().as_secs_f64(),
    ))
}

/// The tensor (`[rows, cols]`, or a 1-D norm weight as one row) with AWQ's rewrite applied in
/// f32: columns times `col_mul`, rows (elements of a 1-D weight) divided by `row_div`.
fn smooth_tensor(data: &FloatData, shape: &[usize], smooth: &Rewrite) -> Vec<f32> {
    let mut values = vec![0f32; data.len()];
    data.copy_to_f32(0, &mut values);
    let cols = if shape.len() == 2 { shape[1] } else { 1 };
    if let Some(mul) = &smooth.col_mul {
        for row in values.chunks_exact_mut(cols) {
            row.iter_mut().zip(mul).for_each(|(v, m)| *v *= m);
        }
    }
    if let Some(div) = &smooth.row_div {
        for (row, d) in values.chunks_exact_mut(cols).zip(div) {
            row.iter_mut().for_each(|v| *v /= d);
        }
    }
    values
}

/// `values` in a float `dtype`'s little-endian bytes (round to nearest even).
fn to_dtype_bytes(values: &[f32], dtype: safetensors::Dtype) -> Vec<u8> {
    match dtype {
        safetensors::Dtype::BF16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        safetensors::Dtype::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
    }
}

fn report(
    plan: &QuantizePlan,
    device: &Device,
    tensors: Vec<TensorError>,
    seconds: f64,
) -> QuantizeReport {
    let n = tensors.len().max(1) as f64;
    let worst = tensors
        .iter()
        .max_by(|a, b| a.relative_rms_error.total_cmp(&b.relative_rms_error));
    QuantizeReport {
        scheme: plan.options.scheme.label(),
        format: plan.options.scheme.format(),
        isa: device.isa().name(),
        device: device.to_string(),
        rounding: "codes = round_half_even(w * (1/scale)) in f32, with the scale rounded up to the scale dtype",
        tensors_quantized: plan.quantized_count(),
        tensors_copied: plan.actions.len() - plan.quantized_count(),
        input_bytes: plan.checkpoint.total_tensor_bytes(),
        output_bytes: plan.outputs.iter().map(|t| t.byte_len()).sum(),
        seconds,
        mean_relative_rms_error: tensors.iter().map(|t| t.relative_rms_error).sum::<f64>() / n,
        worst_relative_rms_error: worst.map(|t| t.relative_rms_error).unwrap_or(0.0),
        worst_tensor: worst.map(|t| t.name.clone()).unwrap_or_default(),
        tensors,
    }
}
