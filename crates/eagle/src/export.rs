//! Writing a trained head in the layout vLLM and SGLang load for EAGLE-3
//! (`LlamaForCausalLMEagle3`): `config.json` and `model.safetensors` with `fc`, `midlayer.*`,
//! `norm`, `lm_head` (f32), `d2t` (I64) and `t2d` (BOOL); no embedding (the target's is used).
//! The directory is staged and renamed into place, so a reader never sees half a head.

use crate::draft::DraftModel;
use crate::error::{EagleError, Result};
use crate::vocab::DraftVocab;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};
use std::path::Path;
use temper_runtime::ModelParams;

/// The head's `config.json`: the target's Llama shape with one layer and the draft vocabulary.
pub fn head_config(target: &ModelParams, target_raw: &Value, vocab: &DraftVocab) -> Value {
    let mut cfg = json!({
        "architectures": ["LlamaForCausalLMEagle3"],
        "model_type": "llama",
        "num_hidden_layers": 1,
        "hidden_size": target.hidden_size,
        "intermediate_size": target.intermediate_size,
        "num_attention_heads": target.num_heads,
        "num_key_value_heads": target.num_kv_heads,
        "head_dim": target.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": target.rms_norm_eps,
        "rope_theta": target.rope_theta,
        "max_position_embeddings": target.max_positions,
        "vocab_size": target.vocab_size,
        "draft_vocab_size": vocab.size(),
        "target_hidden_size": target.hidden_size,
        "tie_word_embeddings": false,
        "torch_dtype": "float32",
    });
    // The head runs at the target's positions with the target's rotary scaling.
    if let Some(scaling) = target_raw.get("rope_scaling") {
        cfg["rope_scaling"] = scaling.clone();
    }
    for key in ["bos_token_id", "eos_token_id"] {
        if let Some(v) = target_raw.get(key) {
            cfg[key] = v.clone();
        }
    }
    cfg
}

/// Writes the head into `dir` (which must not exist yet, or is replaced when `overwrite`).
pub fn write_head(
    dir: &Path,
    config: &Value,
    model: &DraftModel,
    vocab: &DraftVocab,
) -> Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "speculative".into());
    let stage = parent.join(format!(".{name}.partial"));
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(|e| EagleError::io(&stage, e))?;
    }
    std::fs::create_dir_all(&stage).map_err(|e| EagleError::io(&stage, e))?;
    let cfg_path = stage.join("config.json");
    let text = serde_json::to_string_pretty(config).expect("a JSON value serializes");
    std::fs::write(&cfg_path, text + "\n").map_err(|e| EagleError::io(&cfg_path, e))?;

    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, var) in &model.vars {
        let t = var.as_tensor();
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        buffers.push((
            name.clone(),
            Dtype::F32,
            t.dims().to_vec(),
            bytemuck::cast_slice(&values).to_vec(),
        ));
    }
    let d2t = vocab.d2t();
    buffers.push((
        "d2t".into(),
        Dtype::I64,
        vec![d2t.len()],
        bytemuck::cast_slice(&d2t).to_vec(),
    ));
    let t2d: Vec<u8> = vocab.t2d().iter().map(|&b| u8::from(b)).collect();
    buffers.push(("t2d".into(), Dtype::BOOL, vec![t2d.len()], t2d));
    let views: Vec<(String, TensorView)> = buffers
        .iter()
        .map(|(n, dt, shape, bytes)| {
            TensorView::new(*dt, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| EagleError::Input(format!("tensor {n}: {e}")))
        })
        .collect::<Result<_>>()?;
    let st_path = stage.join("model.safetensors");
    safetensors::serialize_to_file(views, None, &st_path)
        .map_err(|e| EagleError::Input(format!("{}: {e}", st_path.display())))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| EagleError::io(dir, e))?;
    }
    std::fs::rename(&stage, dir).map_err(|e| EagleError::io(dir, e))?;
    Ok(())
}
