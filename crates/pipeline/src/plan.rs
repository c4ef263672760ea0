//! Planning a quantization job: everything that can be checked before heavy work —
//! options, target, architecture, which tensors to quantize, shapes, vLLM's fused
//! layer rules, output layout and whether the result fits the target — so a job that
//! cannot succeed fails in seconds with the reason, not after an hour.

use crate::options::{QuantizeOptions, Scheme};
use crate::{Error, Result};
use safetensors::Dtype;
use temper_catalog::Instance;
use temper_core::checkpoint::{Checkpoint, TensorEntry};
use temper_core::manifest::FitRecord;
use temper_core::select::{
    classify, layer_index, mixed_fused_group, module_name, IgnoreList, Role,
};
use temper_core::writer::TensorSpec;
use temper_format::scheme::FP8_BLOCK;

/// What happens to one input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quantize,
    Copy,
}

/// A checked, ready-to-run quantization job.
pub struct QuantizePlan {
    pub checkpoint: Checkpoint,
    pub options: QuantizeOptions,
    pub instance: &'static Instance,
    /// One action per checkpoint tensor, in storage order.
    pub actions: Vec<Action>,
    /// Every tensor of the output, in the order it will be written.
    pub outputs: Vec<TensorSpec>,
    /// Modules written unquantized that vLLM must be told about (`ignore`).
    pub ignore: Vec<String>,
    pub scale_dtype: Dtype,
    pub tensor_parallel_degree: u32,
    pub fit: FitRecord,
    /// How the target runs the artifact.
    pub notes: Vec<String>,
    /// Static FP8: the largest |input| of each Linear module seen during calibration, filled
    /// by the job before the quantize pass runs.
    pub input_absmax: std::collections::BTreeMap<String, f32>,
}

impl QuantizePlan {
    pub fn new(
        checkpoint: Checkpoint,
        options: QuantizeOptions,
        instance: &'static Instance,
    ) -> Result<Self> {
        let config = &checkpoint.config;
        config.check_supported(options.allow_unknown_architecture)?;
        if let Some(method) = &config.quant_method {
            return Err(Error::Plan(format!(
                "{} already has a quantization_config (quant_method `{method}`); start from the unquantized \
                 model",
                config.path.display()
            )));
        }
        if instance.accelerator.is_neuron() {
            return Err(Error::Plan(format!(
                "{} is a Neuron instance: Neuron takes compiled models only (SageMaker's rule), and its \
                 engines do not load compressed-tensors checkpoints; use a GPU instance type for quantization",
                instance.name
            )));
        }
        check_layer_count(&checkpoint)?;
        let ignore_list = IgnoreList::parse(&options.ignore).map_err(|reason| Error::Option {
            option: crate::options::OPTION_FP8_IGNORE.into(),
            value: options.ignore.join(","),
            expected: format!("module names or re: patterns ({reason})"),
        })?;
        let (actions, ignored) = choose_actions(&checkpoint, &ignore_list, options.scheme)?;
        let scale_dtype = scale_dtype(&checkpoint, &actions);
        let outputs = output_specs(&checkpoint, &actions, options.scheme, scale_dtype);
        let mut ignore = vec!["lm_head".to_string()];
        ignore.extend(ignored.into_iter().filter(|m| m != "lm_head"));
        let mut tensor_parallel_degree = tensor_parallel_degree(
            instance,
            config.num_attention_heads,
            config.num_key_value_heads,
        );
        if options.scheme == Scheme::Fp8Block {
            tensor_parallel_degree =
                block_fp8_degree(&checkpoint, &actions, tensor_parallel_degree)?;
        }
        let weight_bytes: u64 = outputs.iter().map(TensorSpec::byte_len).sum();
        let fit = fit(instance, tensor_parallel_degree, weight_bytes);
        if fit.fits == Some(false) {
            return Err(Error::Plan(fit.explanation.clone()));
        }
        let notes = target_notes(
            instance,
            options.scheme,
            tensor_parallel_degree,
            config.num_attention_heads,
        );
        Ok(QuantizePlan {
            checkpoint,
            options,
            instance,
            actions,
            outputs,
            ignore,
            scale_dtype,
            tensor_parallel_degree,
            fit,
            notes,
            input_absmax: Default::default(),
        })
    }

    /// Number of tensors quantized.
    pub fn quantized_count(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| **a == Action::Quantize)
            .count()
    }
}

fn check_layer_count(checkpoint: &Checkpoint) -> Result<()> {
    let config = &checkpoint.config;
    let layers = checkpoint
        .tensors()
        .iter()
        .filter_map(|t| layer_index(&t.name))
        .max()
        .map(|m| m + 1);
    match layers {
        Some(n) if n != config.num_hidden_layers => Err(Error::Plan(format!(
            "{} says num_hidden_layers = {}, but the safetensors hold layers 0..{}: the config and the \
             weights do not belong together",
            config.path.display(),
            config.num_hidden_layers,
            n - 1
        ))),
        None => Err(Error::Plan(format!(
            "no tensor of {} belongs to a numbered decoder layer (names like model.layers.N.*); nothing to \
             quantize",
            checkpoint.dir.display()
        ))),
        _ => Ok(()),
    }
}

/// Decides per tensor, and returns the Linear modules left dense by the ignore list.
fn choose_actions(
    checkpoint: &Checkpoint,
    ignore: &IgnoreList,
    scheme: Scheme,
) -> Result<(Vec<Action>, Vec<String>)> {
    let mut actions = Vec::with_capacity(checkpoint.tensors().len());
    let mut ignored = Vec::new();
    let mut quantized = Vec::new();
    for t in checkpoint.tensors() {
        let linear = classify(t) == Role::Linear;
        let module = module_name(&t.name);
        if linear && ignore.matches(module) {
            ignored.push(module.to_string());
        }
        let action = if linear && !ignore.matches(module) {
            Action::Quantize
        } else {
            Action::Copy
        };
        if action == Action::Quantize {
            check_quantizable(checkpoint, t, scheme)?;
            quantized.push(module);
        }
        actions.push(action);
    }
    if quantized.is_empty() {
        return Err(Error::Plan(format!(
            "no Linear weight of {} is left to quantize (ignore list: {})",
            checkpoint.dir.display(),
            ignore.entries().join(", ")
        )));
    }
    let ignored_refs: Vec<&str> = ignored.iter().map(String::as_str).collect();
    if let Some((module, partners)) = mixed_fused_group(&quantized, &ignored_refs) {
        return Err(Error::Plan(format!(
            "the ignore list leaves `{module}` dense but quantizes `{partners}`: vLLM fuses these into one \
             layer and refuses mixed schemes; ignore all of them (e.g. re:.*self_attn\\.(q|k|v)_proj) or none"
        )));
    }
    Ok((actions, ignored))
}

fn check_quantizable(checkpoint: &Checkpoint, t: &TensorEntry, scheme: Scheme) -> Result<()> {
    let err = |reason: String| Error::Tensor {
        path: checkpoint.file_of(t).to_path_buf(),
        tensor: t.name.clone(),
        reason,
    };
    if !temper_core::dtype::is_float(t.dtype) {
        return Err(err(format!(
            "has dtype {}; only F32, F16 and BF16 weights can be quantized (is the model already quantized?)",
            t.dtype
        )));
    }
    if let Some(reason) = scheme.check_shape(t.shape[0], t.shape[1]) {
        return Err(err(format!("shape {:?}: {reason}", t.shape)));
    }
    Ok(())
}

/// Scales are stored in the dtype of the weights they scale (the model's dtype).
fn scale_dtype(checkpoint: &Checkpoint, actions: &[Action]) -> Dtype {
    checkpoint
        .tensors()
        .iter()
        .zip(actions)
        .find(|(_, a)| **a == Action::Quantize)
        .map(|(t, _)| t.dtype)
        .unwrap_or(Dtype::BF16)
}

fn output_specs(
    checkpoint: &Checkpoint,
    actions: &[Action],
    scheme: Scheme,
    scale_dtype: Dtype,
) -> Vec<TensorSpec> {
    let mut specs = Vec::new();
    for (t, action) in checkpoint.tensors().iter().zip(actions) {
        match action {
            Action::Copy => specs.push(TensorSpec::new(t.name.clone(), t.dtype, t.shape.clone())),
            Action::Quantize => specs.extend(scheme.output_tensors(
                module_name(&t.name),
                t.shape[0],
                t.shape[1],
                scale_dtype,
            )),
        }
    }
    specs
}

/// The largest degree up to the GPU count that vLLM accepts for this model: it must
/// divide the attention heads, and the kv heads must divide it or be divisible by it.
pub fn tensor_parallel_degree(instance: &Instance, heads: usize, kv_heads: usize) -> u32 {
    let max = instance.default_tensor_parallel_degree().max(1) as usize;
    (1..=max)
        .rev()
        .find(|&d| heads_allow(d, heads, kv_heads))
        .unwrap_or(1) as u32
}

fn heads_allow(d: usize, heads: usize, kv_heads: usize) -> bool {
    heads.is_multiple_of(d) && (kv_heads.is_multiple_of(d) || d.is_multiple_of(kv_heads))
}

/// Why vLLM's block-FP8 layers would refuse a tensor at degree `tp`, if they would.
///
/// vLLM (`validate_fp8_block_shape`) needs, per rank, the output size of every member of
/// a fused layer but the last (q and k of qkv, gate of gate/up) to be a multiple of the
/// 128-row block, and with tp > 1 every column-parallel output and every row-parallel
/// input (o_proj, down_proj) too.
fn block_fp8_problem(entry: &TensorEntry, tp: usize) -> Option<String> {
    let leaf = module_name(&entry.name).rsplit('.').next().unwrap_or("");
    let (rows, cols) = (entry.shape[0], entry.shape[1]);
    let (block_n, block_k) = FP8_BLOCK;
    let fused_not_last = matches!(leaf, "q_proj" | "k_proj" | "gate_proj");
    let column = fused_not_last || matches!(leaf, "v_proj" | "up_proj");
    let row = matches!(leaf, "o_proj" | "down_proj");
    let out_per_rank = rows / tp;
    let in_per_rank = cols / tp;
    if (fused_not_last || (tp > 1 && column)) && !out_per_rank.is_multiple_of(block_n) {
        return Some(format!(
            "{out_per_rank} output rows per rank are not a multiple of {block_n}"
        ));
    }
    if tp > 1 && row && !in_per_rank.is_multiple_of(block_k) {
        return Some(format!(
            "{in_per_rank} input columns per rank are not a multiple of {block_k}"
        ));
    }
    None
}

/// The largest degree up to `max` that both the heads and vLLM's block-FP8 shape rules
/// accept; an error naming the first offending tensor when not even 1 works.
fn block_fp8_degree(checkpoint: &Checkpoint, actions: &[Action], max: u32) -> Result<u32> {
    let config = &checkpoint.config;
    let quantized: Vec<&TensorEntry> = checkpoint
        .tensors()
        .iter()
        .zip(actions)
        .filter(|(_, a)| **a == Action::Quantize)
        .map(|(t, _)| t)
        .collect();
    let ok = |d: usize| quantized.iter().all(|t| block_fp8_problem(t, d).is_none());
    let heads = (config.num_attention_heads, config.num_key_value_heads);
    if let Some(d) = (1..=max as usize)
        .rev()
        .find(|&d| heads_allow(d, heads.0, heads.1) && ok(d))
    {
        return Ok(d as u32);
    }
    let Some((t, why)) = quantized
        .iter()
        .find_map(|t| block_fp8_problem(t, 1).map(|why| (t, why)))
    else {
        return Ok(1);
    };
    Err(Error::Tensor {
        path: checkpoint.file_of(t).to_path_buf(),
        tensor: t.name.clone(),
        reason: format!(
            "shape {:?}: vLLM loads FP8_BLOCK only when fused layers are 128x128-aligned, and would \
             refuse this one ({why}); use FP8_DYNAMIC (the default), which has no shape constraint",
            t.shape
        ),
    })
}

const GIB: f64 = (1u64 << 30) as f64;

/// Weights per rank must leave room for activations and the KV cache inside the 90% of
/// device memory vLLM uses by default (`gpu_memory_utilization`): at least 1 GiB or 10%.
fn fit(instance: &Instance, tp: u32, weight_bytes: u64) -> FitRecord {
    let per_rank = weight_bytes.div_ceil(tp as u64);
    let Some(device) = instance.memory_per_rank_bytes() else {
        return FitRecord {
            fits: None,
            tensor_parallel_degree: tp,
            weight_bytes,
            weight_bytes_per_device: per_rank,
            device_bytes: None,
            explanation: format!(
                "{} is listed by the API but its device memory is not confirmed here; check that {:.2} GiB \
                 of weights per device fit",
                instance.name,
                per_rank as f64 / GIB
            ),
        };
    };
    let usable = device as f64 * 0.9;
    let headroom = (device as f64 * 0.1).max(GIB);
    let fits = per_rank as f64 + headroom <= usable;
    let explanation = format!(
        "{:.2} GiB of weights per device (tensor-parallel degree {tp}) {} {:.1} GiB usable of {:.1} GiB on {} \
         with {:.1} GiB kept for activations and KV cache{}",
        per_rank as f64 / GIB,
        if fits { "fit in" } else { "do not fit in" },
        usable / GIB,
        device as f64 / GIB,
        instance.name,
        headroom / GIB,
        if fits { "" } else { "; choose an instance with more or larger accelerators" }
    );
    FitRecord {
        fits: Some(fits),
        tensor_parallel_degree: tp,
        weight_bytes,
        weight_bytes_per_device: per_rank,
        device_bytes: Some(device),
        explanation,
    }
}

fn target_notes(instance: &Instance, scheme: Scheme, tp: u32, heads: usize) -> Vec<String> {
    let acc = instance.accelerator;
    let mut notes = Vec::new();
    if scheme.is_fp8() {
        if acc.native_fp8() {
            notes.push(format!(
                "{} ({}) runs FP8 matmuls natively",
                acc.name(),
                acc.compute_label()
            ));
        } else {
            notes.push(format!(
                "{} ({}) has no native FP8 matmul: engines run this FP8 checkpoint weight-only (weights \
                 dequantized to 16-bit inside the matmul); memory savings remain, activation quantization \
                 does not apply",
                acc.name(),
                acc.compute_label()
            ));
        }
    }
    if tp < instance.default_tensor_parallel_degree() {
        notes.push(format!(
            "tensor-parallel degree {tp} instead of {}: the model's {heads} attention heads must divide by it",
            instance.default_tensor_parallel_degree()
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degree_respects_heads() {
        let g6_12 = Instance::lookup("ml.g6.12xlarge").unwrap();
        assert_eq!(tensor_parallel_degree(g6_12, 9, 3), 3);
        assert_eq!(tensor_parallel_degree(g6_12, 32, 8), 4);
        let p5 = Instance::lookup("ml.p5.48xlarge").unwrap();
        assert_eq!(tensor_parallel_degree(p5, 32, 8), 8);
        assert_eq!(tensor_parallel_degree(p5, 64, 8), 8);
        assert_eq!(tensor_parallel_degree(p5, 28, 4), 4);
    }

    #[test]
    fn fit_says_why() {
        let g5 = Instance::lookup("ml.g5.xlarge").unwrap();
        let ok = fit(g5, 1, 8 << 30);
        assert_eq!(ok.fits, Some(true), "{}", ok.explanation);
        let too_big = fit(g5, 1, 70 << 30);
        assert_eq!(too_big.fits, Some(false));
        assert!(
            too_big.explanation.contains("do not fit"),
            "{}",
            too_big.explanation
        );
        let g7 = Instance::lookup("ml.g7.2xlarge").unwrap();
        assert_eq!(fit(g7, 1, 1 << 30).fits, None);
    }
}
