//! The files around the weights: `config.json` with its `quantization_config`,
//! `serving.properties` for the LMI containers, the tokenizer and other files copied
//! through, and digests for the manifest.

use crate::job::JobPlan;
use crate::Result;
use std::collections::BTreeMap;
use std::path::Path;
use temper_core::checkpoint::Checkpoint;
use temper_core::hash::sha256_file_unless;
use temper_core::manifest::FileDigest;
use temper_core::IoContext;

/// Files of the source directory that are never copied: the weights (rewritten), the
/// config (rewritten), and what a previous optimization left there.
fn is_rewritten(name: &str) -> bool {
    name == "config.json"
        || name.ends_with(".safetensors")
        || name == "model.safetensors.index.json"
        || name == "manifest.json"
        || name == "serving.properties"
        || name.starts_with('.')
        // Other weight formats would be stale and large next to the quantized weights.
        || [".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".onnx"].iter().any(|ext| name.ends_with(ext))
}

/// Tokenizer files, generation config and the like: what is copied unchanged.
pub fn side_file_names(source: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(source)
        .at(source)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !is_rewritten(n))
        .collect();
    names.sort();
    Ok(names)
}

/// Copies the side files into `dest`.
pub fn copy_side_files(source: &Path, dest: &Path, names: &[String]) -> Result<()> {
    for name in names {
        let path = source.join(name);
        std::fs::copy(&path, dest.join(name)).at(&path)?;
    }
    Ok(())
}

/// `serving.properties` with the LMI options this artifact needs; `OPTION_X` entries the
/// job carried for the serving engine become `option.x`.
pub fn write_serving_properties(plan: &JobPlan, dest: &Path) -> Result<()> {
    let mut props = BTreeMap::new();
    if let Some(c) = &plan.compile {
        let engine = match c.engine {
            crate::passes::compile::Engine::TensorRtLlm => "an LMI TensorRT-LLM container",
            crate::passes::compile::Engine::Neuron => "an LMI Neuron (neuronx) container",
        };
        let mut text = format!(
            "# Written by temper {} for {}: load this directory with {engine}.\nengine=Python\n",
            temper_core::TOOL_VERSION,
            plan.target.instance.name
        );
        let mut all = c.properties.clone();
        for (k, v) in &plan.options.passthrough {
            let key = format!(
                "option.{}",
                k.trim_start_matches("OPTION_").to_ascii_lowercase()
            );
            all.entry(key).or_insert_with(|| v.clone());
        }
        for (k, v) in all {
            text.push_str(&format!("{k}={v}\n"));
        }
        let path = dest.join("serving.properties");
        std::fs::write(&path, text).at(&path)?;
        return Ok(());
    }
    if plan.quantize.is_some() {
        props.insert(
            "option.quantize".to_string(),
            "compressed-tensors".to_string(),
        );
    }
    props.insert(
        "option.tensor_parallel_degree".to_string(),
        plan.target.tensor_parallel_degree.to_string(),
    );
    if plan.shard.is_some() {
        // vLLM reads the per-rank files only with this load format; LMI passes
        // option.load_format through to vLLM's engine arguments.
        props.insert(
            "option.load_format".to_string(),
            crate::passes::shard::LOAD_FORMAT.to_string(),
        );
    }
    if let Some(depth) = plan.speculative.as_ref().and_then(|s| s.chosen_depth) {
        // vLLM's --speculative-config: the EAGLE-3 head in speculative/, drafting the chain
        // length the job measured as fastest.
        props.insert(
            "option.speculative_config".to_string(),
            crate::passes::speculative::speculative_config(depth).to_string(),
        );
    }
    props.insert("option.rolling_batch".to_string(), "vllm".to_string());
    for (k, v) in &plan.options.passthrough {
        let key = format!(
            "option.{}",
            k.trim_start_matches("OPTION_").to_ascii_lowercase()
        );
        props.entry(key).or_insert_with(|| v.clone());
    }
    let mut text = format!(
        "# Written by temper {} for {}: load this directory with an LMI (vLLM) container.\nengine=Python\n",
        temper_core::TOOL_VERSION,
        plan.target.instance.name
    );
    for (k, v) in props {
        text.push_str(&format!("{k}={v}\n"));
    }
    let path = dest.join("serving.properties");
    std::fs::write(&path, text).at(&path)?;
    Ok(())
}

/// Digests of files, named relative to `dir`; `Ok(None)` once `stop` says so.
pub fn digests(
    dir: &Path,
    names: &[String],
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Option<Vec<FileDigest>>> {
    use rayon::prelude::*;
    names
        .par_iter()
        .map(|name| {
            Ok(
                sha256_file_unless(&dir.join(name), stop)?.map(|(sha256, bytes)| FileDigest {
                    path: name.clone(),
                    bytes,
                    sha256,
                }),
            )
        })
        .collect::<Result<Option<Vec<_>>>>()
}

/// The source files a job read: config, weights, index, and the copied side files.
pub fn input_names(source: &Checkpoint, copied: &[String]) -> Vec<String> {
    let dir = &source.dir;
    let mut names = vec!["config.json".to_string()];
    if dir.join("model.safetensors.index.json").is_file() {
        names.push("model.safetensors.index.json".into());
    }
    names.extend(
        source
            .weight_files()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned()),
    );
    names.extend(copied.iter().cloned());
    names
}
