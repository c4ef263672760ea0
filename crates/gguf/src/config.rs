//! The model hyper-parameters in GGUF metadata, checked against the tensors, and the
//! `config.json` / `generation_config.json` Hugging Face loaders read.

use crate::error::{Error, Result};
use crate::names::{head_dim_for, required_block_tensors};
use crate::reader::Meta;
use candle_core::quantized::gguf_file::TensorInfo;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// GGUF architectures this importer converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
}

impl Arch {
    pub const SUPPORTED: &'static str =
        "`llama` (Llama 2/3.x, SmolLM, TinyLlama and Mistral-style files) and `qwen2`";

    pub fn from_meta(meta: &Meta<'_>) -> Result<Self> {
        match meta.str("general.architecture")? {
            "llama" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            other => Err(Error::UnsupportedArchitecture {
                path: meta.path().to_path_buf(),
                architecture: other.to_string(),
                supported: Arch::SUPPORTED,
            }),
        }
    }

    /// The prefix of this architecture's metadata keys (`llama.block_count`, ...).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    /// llama.cpp reorders q/k rows only for architectures it runs with interleaved
    /// ("normal") rotary pairs; Qwen2 runs in the half-split (NeoX) layout HF uses.
    pub fn permutes_qk(self) -> bool {
        self == Arch::Llama
    }
}

/// Everything `config.json` needs, read from metadata and checked against the tensors.
#[derive(Debug, Clone)]
pub struct ModelParams {
    pub arch: Arch,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Whether `head_dim` must be written (given in metadata, or not hidden / heads).
    pub explicit_head_dim: bool,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Value>,
    pub context_length: usize,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

type Tensors = HashMap<String, TensorInfo>;

impl ModelParams {
    pub fn read(arch: Arch, meta: &Meta<'_>, tensors: &Tensors) -> Result<Self> {
        let key = |k: &str| format!("{}.{k}", arch.gguf_name());
        let hidden_size = meta.usize(&key("embedding_length"))?;
        let num_layers = meta.usize(&key("block_count"))?;
        let num_heads = meta.usize(&key("attention.head_count"))?;
        let num_kv_heads = meta
            .opt_usize(&key("attention.head_count_kv"))?
            .unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
            return Err(Error::metadata(
                meta.path(),
                &key("attention.head_count_kv"),
                format!("{num_kv_heads} must be positive and divide the head count {num_heads}"),
            ));
        }
        let shape = |name: &str| tensor_shape(meta, tensors, name);
        let embed = shape("token_embd.weight")?;
        check_dims(
            meta,
            "token_embd.weight",
            &embed,
            &[None, Some(hidden_size)],
            &key("embedding_length"),
        )?;
        check_layers(meta, tensors, num_layers)?;
        let (head_dim, key_length) = check_heads(meta, tensors, &key, num_heads, num_kv_heads)?;
        let intermediate_size = meta.usize(&key("feed_forward_length"))?;
        check_dims(
            meta,
            "blk.0.ffn_up.weight",
            &shape("blk.0.ffn_up.weight")?,
            &[Some(intermediate_size), Some(hidden_size)],
            &key("feed_forward_length"),
        )?;
        Ok(ModelParams {
            arch,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            explicit_head_dim: key_length.is_some() || head_dim * num_heads != hidden_size,
            rms_norm_eps: meta
                .opt_f64(&key("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-6),
            rope_theta: meta.opt_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            rope_scaling: rope_scaling(meta, &key)?,
            context_length: meta.usize(&key("context_length"))?,
            vocab_size: embed[0],
            tie_word_embeddings: !tensors.contains_key("output.weight"),
            attention_bias: tensors.contains_key("blk.0.attn_q.bias"),
            bos_token_id: token_id(meta, "tokenizer.ggml.bos_token_id")?,
            eos_token_id: token_id(meta, "tokenizer.ggml.eos_token_id")?,
            pad_token_id: token_id(meta, "tokenizer.ggml.padding_token_id")?,
        })
    }

    /// The Hugging Face `config.json`.
    pub fn config_json(&self, torch_dtype: &str) -> Value {
        let mut c = Map::new();
        c.insert("architectures".into(), json!([self.arch.hf_class()]));
        c.insert("model_type".into(), json!(self.arch.gguf_name()));
        c.insert("hidden_size".into(), json!(self.hidden_size));
        c.insert("intermediate_size".into(), json!(self.intermediate_size));
        c.insert("num_hidden_layers".into(), json!(self.num_layers));
        c.insert("num_attention_heads".into(), json!(self.num_heads));
        c.insert("num_key_value_heads".into(), json!(self.num_kv_heads));
        if self.explicit_head_dim {
            c.insert("head_dim".into(), json!(self.head_dim));
        }
        c.insert("hidden_act".into(), json!("silu"));
        c.insert("max_position_embeddings".into(), json!(self.context_length));
        c.insert("rms_norm_eps".into(), json!(self.rms_norm_eps));
        c.insert("rope_theta".into(), json!(self.rope_theta));
        c.insert(
            "rope_scaling".into(),
            self.rope_scaling.clone().unwrap_or(Value::Null),
        );
        c.insert("vocab_size".into(), json!(self.vocab_size));
        c.insert(
            "tie_word_embeddings".into(),
            json!(self.tie_word_embeddings),
        );
        c.insert("attention_bias".into(), json!(self.attention_bias));
        if self.arch == Arch::Llama {
            c.insert("mlp_bias".into(), json!(false));
        } else {
            // Qwen2 configs carry their sliding-window settings; GGUF files of Qwen2
            // run full attention, which is what `use_sliding_window: false` says.
            c.insert("use_sliding_window".into(), json!(false));
            c.insert("sliding_window".into(), json!(self.context_length));
            c.insert("max_window_layers".into(), json!(self.num_layers));
        }
        c.insert("attention_dropout".into(), json!(0.0));
        c.insert("initializer_range".into(), json!(0.02));
        c.insert("use_cache".into(), json!(true));
        c.insert("torch_dtype".into(), json!(torch_dtype));
        insert_ids(&mut c, self);
        Value::Object(c)
    }

    /// `generation_config.json`: the ids `generate` needs to start and stop.
    pub fn generation_config_json(&self) -> Value {
        let mut c = Map::new();
        insert_ids(&mut c, self);
        if let Some(pad) = self.pad_token_id {
            c.insert("pad_token_id".into(), json!(pad));
        }
        Value::Object(c)
    }
}

fn insert_ids(c: &mut Map<String, Value>, p: &ModelParams) {
    if let Some(bos) = p.bos_token_id {
        c.insert("bos_token_id".into(), json!(bos));
    }
    if let Some(eos) = p.eos_token_id {
        c.insert("eos_token_id".into(), json!(eos));
    }
}

fn token_id(meta: &Meta<'_>, key: &str) -> Result<Option<u32>> {
    match meta.opt_u64(key)? {
        None => Ok(None),
        Some(id) => u32::try_from(id).map(Some).map_err(|_| {
            Error::metadata(meta.path(), key, format!("token id {id} is out of range"))
        }),
    }
}

fn tensor_shape(meta: &Meta<'_>, tensors: &Tensors, name: &str) -> Result<Vec<usize>> {
    tensors
        .get(name)
        .map(|t| t.shape.dims().to_vec())
        .ok_or_else(|| {
            Error::tensor(
                meta.path(),
                name,
                "is missing; every model of this architecture has it",
            )
        })
}

/// Checks a tensor's shape (`None` = any size) against the metadata key that sets it.
fn check_dims(
    meta: &Meta<'_>,
    tensor: &str,
    dims: &[usize],
    expect: &[Option<usize>],
    key: &str,
) -> Result<()> {
    let ok = dims.len() == expect.len()
        && dims
            .iter()
            .zip(expect)
            .all(|(d, e)| e.is_none_or(|e| e == *d));
    if ok {
        return Ok(());
    }
    let want: Vec<String> = expect
        .iter()
        .map(|e| e.map_or("*".to_string(), |v| v.to_string()))
        .collect();
    Err(Error::tensor(
        meta.path(),
        tensor,
        format!(
            "has shape {dims:?}, but metadata `{key}` implies [{}]",
            want.join(", ")
        ),
    ))
}

/// The head size the q and k tensors imply, checked against the head counts and
/// `attention.key_length`; also returns that key when present.
fn check_heads(
    meta: &Meta<'_>,
    tensors: &Tensors,
    key: &dyn Fn(&str) -> String,
    num_heads: usize,
    num_kv_heads: usize,
) -> Result<(usize, Option<usize>)> {
    let (q_name, k_name) = ("blk.0.attn_q.weight", "blk.0.attn_k.weight");
    let q = tensor_shape(meta, tensors, q_name)?;
    let k = tensor_shape(meta, tensors, k_name)?;
    let head_dim = head_dim_from(meta, &q, num_heads, &key("attention.head_count"), q_name)?;
    let kv_head_dim = head_dim_from(
        meta,
        &k,
        num_kv_heads,
        &key("attention.head_count_kv"),
        k_name,
    )?;
    if kv_head_dim != head_dim {
        return Err(Error::tensor(
            meta.path(),
            k_name,
            format!("gives a head size of {kv_head_dim} but the queries have {head_dim}"),
        ));
    }
    let key_length = meta.opt_usize(&key("attention.key_length"))?;
    if let Some(len) = key_length.filter(|&l| l != head_dim) {
        return Err(Error::metadata(
            meta.path(),
            &key("attention.key_length"),
            format!("is {len} but {q_name} has {head_dim} rows per head"),
        ));
    }
    Ok((head_dim, key_length))
}

fn head_dim_from(
    meta: &Meta<'_>,
    dims: &[usize],
    heads: usize,
    key: &str,
    tensor: &str,
) -> Result<usize> {
    dims.first().and_then(|&rows| head_dim_for(rows, heads)).ok_or_else(|| {
        Error::tensor(
            meta.path(),
            tensor,
            format!("has shape {dims:?}: its rows do not split into `{key}` = {heads} heads of even size"),
        )
    })
}

/// Every layer below `block_count` must be complete, and no tensor may lie beyond it.
fn check_layers(meta: &Meta<'_>, tensors: &Tensors, num_layers: usize) -> Result<()> {
    for layer in 0..num_layers {
        for name in required_block_tensors(layer) {
            if !tensors.contains_key(&name) {
                return Err(Error::tensor(
                    meta.path(),
                    &name,
                    format!("is missing (the metadata says there are {num_layers} layers)"),
                ));
            }
        }
    }
    let beyond = tensors.keys().find(|n| {
        n.strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i >= num_layers)
    });
    match beyond {
        Some(name) => Err(Error::tensor(
            meta.path(),
            name,
            format!("belongs to a layer beyond the {num_layers} the metadata declares"),
        )),
        None => Ok(()),
    }
}

/// `rope_scaling` from GGUF's `rope.scaling.*` keys (linear and YaRN; Llama 3's
/// scheme travels as a tensor instead, see `rope.rs`).
fn rope_scaling(meta: &Meta<'_>, key: &dyn Fn(&str) -> String) -> Result<Option<Value>> {
    let type_key = key("rope.scaling.type");
    let factor_key = key("rope.scaling.factor");
    let legacy_linear = meta.opt_f64(&key("rope.scale_linear"))?;
    let kind = match meta.opt_str(&type_key)? {
        Some(kind) => kind,
        None if legacy_linear.is_some() => "linear",
        None => "none",
    };
    let factor = match meta.opt_f64(&factor_key)?.or(legacy_linear) {
        Some(f) => f,
        None if kind == "none" => return Ok(None),
        None => {
            return Err(Error::metadata(
                meta.path(),
                &factor_key,
                "is missing but a rope scaling type is set",
            ))
        }
    };
    match kind {
        "none" => Ok(None),
        "linear" if factor == 1.0 => Ok(None),
        "linear" => Ok(Some(json!({"type": "linear", "rope_type": "linear", "factor": factor}))),
        "yarn" => {
            let orig_key = key("rope.scaling.original_context_length");
            let original = meta.u64(&orig_key)?;
            Ok(Some(json!({
                "type": "yarn", "rope_type": "yarn", "factor": factor,
                "original_max_position_embeddings": original,
            })))
        }
        other => Err(Error::metadata(
            meta.path(),
            &type_key,
            format!("rope scaling `{other}` has no Hugging Face equivalent this importer knows (known: none, linear, yarn)"),
        )),
    }
}
