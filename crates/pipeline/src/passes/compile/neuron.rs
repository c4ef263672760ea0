//! Compilation for Neuron (inf2, trn1): the settings LMI's Neuron image (transformers-neuronx)
//! compiles with, checked against the instance's NeuronCores and memory, written beside the
//! unchanged checkpoint as its serving configuration. The NEFF build needs neuronx-cc (AWS's
//! Neuron pip repository only, no PyPI wheel): it runs when the image loads the model; the
//! job reports whether the compiler exists on its host.

use super::{on_path, plan_error, CompilePass};
use crate::passes::PassContext;
use crate::progress::Event;
use crate::Result;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use temper_core::config::ModelConfig;
use temper_core::IoContext;
use temper_format::Scheme;
use temper_options::compile::CompileOptions;
use temper_options::Target;

/// transformers-neuronx's context when OPTION_N_POSITIONS is unset (LMI 0.30): the model's,
/// at most this.
const DEFAULT_N_POSITIONS_CAP: u64 = 4096;
const GIB: f64 = (1u64 << 30) as f64;

fn n_positions(options: &CompileOptions, config: &ModelConfig) -> u64 {
    let ctx = config
        .raw
        .get("max_position_embeddings")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_N_POSITIONS_CAP);
    options
        .neuron
        .n_positions
        .map(u64::from)
        .unwrap_or(ctx.min(DEFAULT_N_POSITIONS_CAP))
}

/// Bytes each NeuronCore holds: its share of the weights in the compile dtype, and the KV
/// cache of `n_positions` tokens for every sequence of the batch.
fn per_core_bytes(
    options: &CompileOptions,
    config: &ModelConfig,
    params: u64,
    degree: u64,
) -> (u64, u64) {
    let b = options.neuron.dtype.bytes();
    let weights = params * b / degree;
    let batch = u64::from(options.neuron.max_rolling_batch_size.unwrap_or(1));
    let kv = 2
        * config.num_hidden_layers as u64
        * config.num_key_value_heads as u64
        * config.head_dim as u64
        * n_positions(options, config)
        * batch
        * b
        / degree;
    (weights, kv)
}

pub(super) fn check(
    config: &ModelConfig,
    options: &CompileOptions,
    target: &Target,
    scheme: Option<Scheme>,
    params: u64,
) -> Result<()> {
    if let Some(s) = scheme {
        return Err(plan_error(format!(
            "Neuron's engines do not load {} (compressed-tensors) checkpoints: compile the \
             unquantized model (Neuron quantizes at load with OPTION_QUANTIZE=static_int8 in its \
             serving options), or target a GPU instance",
            s.label()
        )));
    }
    let degree = u64::from(target.tensor_parallel_degree);
    let (weights, kv) = per_core_bytes(options, config, params, degree);
    let Some(core) = target.instance.memory_per_rank_bytes() else {
        return Ok(());
    };
    // Leave a tenth of each core's memory for activations and the runtime.
    if (weights + kv) as f64 > core as f64 * 0.9 {
        return Err(plan_error(format!(
            "{:.1} GiB of {} weights and {:.1} GiB of KV cache ({} positions) per NeuronCore \
             exceed 90% of its {:.0} GiB at tensor-parallel degree {degree} on {}: use more \
             NeuronCores (OPTION_TENSOR_PARALLEL_DEGREE), fewer OPTION_N_POSITIONS or a larger \
             instance",
            weights as f64 / GIB,
            options.neuron.dtype.name(),
            kv as f64 / GIB,
            n_positions(options, config),
            core as f64 / GIB,
            target.instance.name
        )));
    }
    Ok(())
}

/// Copies a file (never a hard link: the artifact must not share its bytes with the
/// source); Linux's copy_file_range lets filesystems that can share extents do so safely.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to).at(from)?;
    Ok(())
}

pub(super) fn write(
    pass: &CompilePass,
    input: &Path,
    out: &Path,
    ctx: &mut PassContext,
) -> Result<(Vec<String>, Value, BTreeMap<String, String>)> {
    (ctx.sink)(Event::Phase("compile"));
    let config = ModelConfig::load(&input.join("config.json"))?;
    let mut files = Vec::new();
    for e in std::fs::read_dir(input).at(input)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let weights = name.ends_with(".safetensors") || name == "model.safetensors.index.json";
        if weights || name == "config.json" {
            ctx.cancel.check()?;
            copy_file(&e.path(), &out.join(&name))?;
            files.push(name);
        }
    }
    files.sort();
    let o = &pass.options.neuron;
    let positions = n_positions(&pass.options, &config);
    let compiler = match on_path("neuronx-cc") {
        Some(p) => format!(
            "neuronx-cc found at {}; temper does not drive it: the NEFFs are compiled when the \
             LMI Neuron image loads this directory with these settings",
            p.display()
        ),
        None => "not built here: neuronx-cc is not on this host's PATH (it comes from AWS's \
                 Neuron pip repository, not PyPI); the LMI Neuron image compiles the NEFFs when \
                 it loads this directory with these settings (minutes to an hour, by model size)"
            .to_string(),
    };
    let params: u64 = {
        let ck = temper_core::checkpoint::Checkpoint::open(input)?;
        ck.tensors().iter().map(|t| t.numel() as u64).sum()
    };
    let degree = pass.degree as u64;
    let (weights, kv) = per_core_bytes(&pass.options, &config, params, degree);
    let mut props = BTreeMap::new();
    props.insert(
        "option.tensor_parallel_degree".into(),
        pass.degree.to_string(),
    );
    props.insert("option.n_positions".into(), positions.to_string());
    props.insert("option.dtype".into(), o.dtype.name().to_string());
    props.insert("option.rolling_batch".into(), "auto".into());
    if let Some(level) = o.optimize_level {
        props.insert("option.neuron_optimize_level".into(), level.to_string());
    }
    if let Some(b) = o.max_rolling_batch_size {
        props.insert("option.max_rolling_batch_size".into(), b.to_string());
    }
    let settings = json!({
        "engine": "Neuron (transformers-neuronx through LMI)",
        "instance_type": pass.instance.name,
        "neuron_cores": pass.instance.neuron_cores,
        "tensor_parallel_degree": pass.degree,
        "n_positions": positions,
        "dtype": o.dtype.name(),
        "neuron_optimize_level": o.optimize_level,
        "per_core_gib": {"weights": weights as f64 / GIB, "kv_cache": kv as f64 / GIB,
                         "available": pass.instance.memory_per_rank_bytes().map(|b| b as f64 / GIB)},
        "neff": compiler,
    });
    let path = out.join("neuron-compile.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&settings).expect("json") + "\n",
    )
    .at(&path)?;
    files.push("neuron-compile.json".into());
    Ok((files, settings, props))
}
