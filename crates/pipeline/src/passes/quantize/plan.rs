//! Planning the quantize pass: everything that can be checked before heavy work —
//! architecture, which tensors to quantize, shapes, vLLM's fused layer rules (and, for
//! FP8_BLOCK, which tensor-parallel degree they allow) and the output layout — so a job
//! that cannot succeed fails in seconds with the reason, not after an hour.

use crate::{Error, Result};
use safetensors::Dtype;
use temper_core::checkpoint::{Checkpoint, TensorEntry};
use temper_core::select::{
    classify, layer_index, mixed_fused_group, module_name, IgnoreList, Role,
};
use temper_core::writer::TensorSpec;
use temper_format::scheme::FP8_BLOCK;
use temper_format::Scheme;
use temper_options::{CommonOptions, QuantizeOptions, Target};

/// What happens to one input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Quantized with this scheme: the job's, or for INT4 a smaller group where the job's
    /// group does not divide the tensor's input columns ([`Scheme::fit_columns`]).
    Quantize(Scheme),
    Copy,
}

/// A checked, ready-to-run quantize pass.
pub struct QuantizePlan {
    pub checkpoint: Checkpoint,
    pub options: QuantizeOptions,
    /// One action per checkpoint tensor, in storage order.
    pub actions: Vec<Action>,
    /// Every tensor of the output, in the order it will be written.
    pub outputs: Vec<TensorSpec>,
    /// Modules written unquantized that vLLM must be told about (`ignore`).
    pub ignore: Vec<String>,
    pub scale_dtype: Dtype,
    /// How the target runs the artifact's formats.
    pub notes: Vec<String>,
    /// Static FP8: the largest |input| of each Linear module seen during calibration, filled
    /// by the job before the quantize pass runs.
    pub input_absmax: std::collections::BTreeMap<String, f32>,
    /// AWQ, GPTQ, SmoothQuant: how tensors are rewritten before they are quantized or copied
    /// (filled by the job before the quantize pass runs; empty otherwise).
    pub rewrites: super::rewrite::Rewrites,
}

impl QuantizePlan {
    /// Plans quantizing `checkpoint`; FP8_BLOCK may lower the target's degree (when the user
    /// did not choose it) to one vLLM's block-FP8 layers accept.
    pub fn new(
        checkpoint: Checkpoint,
        options: QuantizeOptions,
        common: &CommonOptions,
        target: &mut Target,
    ) -> Result<Self> {
        let config = &checkpoint.config;
        config.check_supported(common.allow_unknown_architecture)?;
        if let Some(method) = &config.quant_method {
            return Err(Error::Plan(format!(
                "{} already has a quantization_config (quant_method `{method}`); start from the unquantized \
                 model",
                config.path.display()
            )));
        }
        check_layer_count(&checkpoint)?;
        let ignore_list = IgnoreList::parse(&options.ignore).map_err(|reason| Error::Option {
            option: temper_options::quantize::OPTION_FP8_IGNORE.into(),
            value: options.ignore.join(","),
            expected: format!("module names or re: patterns ({reason})"),
        })?;
        let (actions, ignored) = choose_actions(&checkpoint, &ignore_list, options.scheme)?;
        let mut notes = group_fallback_notes(&checkpoint, &actions, options.scheme);
        let scale_dtype = scale_dtype(&checkpoint, &actions);
        let outputs = output_specs(&checkpoint, &actions, scale_dtype);
        let mut ignore = vec!["lm_head".to_string()];
        ignore.extend(ignored.into_iter().filter(|m| m != "lm_head"));
        if options.scheme == Scheme::Fp8Block {
            check_block_fp8_degree(&checkpoint, &actions, target)?;
        }
        notes.extend(target_notes(target, options.scheme));
        Ok(QuantizePlan {
            checkpoint,
            options,
            actions,
            outputs,
            ignore,
            scale_dtype,
            notes,
            input_absmax: Default::default(),
            rewrites: Default::default(),
        })
    }

    /// Number of tensors quantized.
    pub fn quantized_count(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| matches!(a, Action::Quantize(_)))
            .count()
    }

    /// The `quantization_config` for `config.json`: the job's scheme for every Linear, and a
    /// group naming the modules quantized with another (a smaller INT4 group).
    pub fn quantization_config(&self) -> serde_json::Value {
        let main = self.options.scheme;
        let mut others: Vec<(Scheme, Vec<String>)> = Vec::new();
        for (t, action) in self.checkpoint.tensors().iter().zip(&self.actions) {
            if let Action::Quantize(s) = action {
                if *s != main {
                    let module = module_name(&t.name).to_string();
                    match others.iter_mut().find(|(o, _)| o == s) {
                        Some((_, modules)) => modules.push(module),
                        None => others.push((*s, vec![module])),
                    }
                }
            }
        }
        main.quantization_config_with(&self.ignore, &others)
    }
}

/// Says which modules an INT4 scheme quantizes with a smaller group than asked, and why.
fn group_fallback_notes(checkpoint: &Checkpoint, actions: &[Action], asked: Scheme) -> Vec<String> {
    let Scheme::W4A16 { group: wanted, .. } = asked else {
        return Vec::new();
    };
    // (input columns, group used) -> (module count, short names).
    let mut fallbacks: std::collections::BTreeMap<(usize, usize), (usize, Vec<String>)> =
        Default::default();
    for (t, action) in checkpoint.tensors().iter().zip(actions) {
        if let Action::Quantize(Scheme::W4A16 { group, .. }) = action {
            if *group != wanted {
                let short = module_name(&t.name).rsplit('.').next().unwrap_or_default();
                let entry = fallbacks.entry((t.shape[1], *group)).or_default();
                entry.0 += 1;
                if !entry.1.iter().any(|s| s == short) {
                    entry.1.push(short.to_string());
                }
            }
        }
    }
    fallbacks
        .into_iter()
        .map(|((cols, group), (n, names))| {
            format!(
                "{n} modules ({}) have {cols} input columns, not a multiple of the group size \
                 {wanted}: they use group {group}, written as their own quantization_config group \
                 (vLLM loads both); set the group size to {group} for one group everywhere",
                names.join(", ")
            )
        })
        .collect()
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
            Action::Quantize(scheme.fit_columns(t.shape.get(1).copied().unwrap_or(0)))
        } else {
            Action::Copy
        };
        if let Action::Quantize(scheme) = action {
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
        .find(|(_, a)| matches!(a, Action::Quantize(_)))
        .map(|(t, _)| t.dtype)
        .unwrap_or(Dtype::BF16)
}

fn output_specs(
    checkpoint: &Checkpoint,
    actions: &[Action],
    scale_dtype: Dtype,
) -> Vec<TensorSpec> {
    let mut specs = Vec::new();
    for (t, action) in checkpoint.tensors().iter().zip(actions) {
        match action {
            Action::Copy => specs.push(TensorSpec::new(t.name.clone(), t.dtype, t.shape.clone())),
            Action::Quantize(scheme) => specs.extend(scheme.output_tensors(
                module_name(&t.name),
                t.shape[0],
                t.shape[1],
                scale_dtype,
            )),
        }
    }
    specs
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

/// Holds the target's degree to vLLM's block-FP8 shape rules: lowered (when the user did
/// not choose it) to the largest degree the heads and the rules accept; an error naming the
/// first offending tensor when the chosen degree, or even 1, is refused.
fn check_block_fp8_degree(
    checkpoint: &Checkpoint,
    actions: &[Action],
    target: &mut Target,
) -> Result<()> {
    let quantized: Vec<&TensorEntry> = checkpoint
        .tensors()
        .iter()
        .zip(actions)
        .filter(|(_, a)| matches!(a, Action::Quantize(_)))
        .map(|(t, _)| t)
        .collect();
    let problem = |d: usize| {
        quantized
            .iter()
            .find_map(|t| block_fp8_problem(t, d).map(|why| (*t, why)))
    };
    let chosen = target.tensor_parallel_degree;
    let Some((t, why)) = problem(chosen as usize) else {
        return Ok(());
    };
    let requested = target.degree_origin == temper_options::target::DegreeOrigin::Requested;
    let shape = temper_options::ModelShape::of(&checkpoint.config);
    if !requested {
        if let Some(d) = (1..chosen)
            .rev()
            .find(|&d| shape.degree_problem(d).is_none() && problem(d as usize).is_none())
        {
            target.lower(
                d,
                &format!(
                    "vLLM's block-FP8 layers refuse `{}` at degree {chosen} ({why})",
                    t.name
                ),
            );
            return Ok(());
        }
    }
    let advice = if requested && chosen > 1 {
        "use a smaller OPTION_TENSOR_PARALLEL_DEGREE, or FP8_DYNAMIC (the default), which has no shape constraint"
    } else {
        "use OPTION_FP8_SCHEME=FP8_DYNAMIC (the default), which has no shape constraint"
    };
    Err(Error::Tensor {
        path: checkpoint.file_of(t).to_path_buf(),
        tensor: t.name.clone(),
        reason: format!(
            "shape {:?}: vLLM loads FP8_BLOCK only when fused layers are 128x128-aligned per rank, and \
             would refuse this one at tensor-parallel degree {chosen} ({why}); {advice}",
            t.shape
        ),
    })
}

fn target_notes(target: &Target, scheme: Scheme) -> Vec<String> {
    let acc = target.instance.accelerator;
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
    notes
}
