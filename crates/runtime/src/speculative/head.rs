//! An EAGLE-3 draft head (`LlamaForCausalLMEagle3`, the layout vLLM and SGLang load) run on
//! temper's kernels: one decoder layer over the target's fused hidden states and its own
//! predictions, and an LM head over a reduced draft vocabulary.
//!
//! ```text
//! h   = fc · [r_a ; r_b ; r_c]                    target residual streams, 3H -> H (no bias)
//! x   = [input_layernorm(E[tok]) ; hidden_norm(h)]  2H, embedding first
//! h1  = h + o_proj(attn(q/k/v_proj(x)))           q/k/v read 2H
//! out = h1 + mlp(post_attention_layernorm(h1))    carried to the next draft step (pre-norm)
//! logits = lm_head · norm(out)                    draft vocabulary; target id = i + d2t[i]
//! ```

use crate::cache::KvCache;
use crate::error::{Result, RuntimeError};
use crate::layer::{attention, Projection, Step};
use crate::linear::{ActQuant, Linear};
use crate::load::{self, LoadedLinear};
use crate::model::{projection, Head, LoadOptions, NewTokens};
use crate::params::ModelParams;
use candle_core::{Device, Tensor};
use safetensors::Dtype;
use serde_json::Value;
use std::path::{Path, PathBuf};
use temper_core::checkpoint::Checkpoint;

/// The default layers whose input residual stream the head fuses: `(2, L/2, L-3)`, as vLLM,
/// SGLang and the EAGLE reference pick them when a checkpoint names none. Written in the
/// "input of decoder layer i" convention (Hugging Face `hidden_states[i]`).
pub fn default_aux_layers(target_layers: usize) -> [usize; 3] {
    [2, target_layers / 2, target_layers.saturating_sub(3)]
}

/// The draft head's shape, from its `config.json`.
#[derive(Debug, Clone)]
pub struct DraftConfig {
    pub path: PathBuf,
    pub params: ModelParams,
    pub draft_vocab_size: usize,
    /// Hidden size of the target's residual stream (fc reads three of them).
    pub target_hidden_size: usize,
    /// `eagle_config.eagle_aux_hidden_state_layer_ids` when the config names them (read in
    /// vLLM's convention, the input of each decoder layer).
    pub aux_layer_ids: Option<Vec<usize>>,
}

impl DraftConfig {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let cfg = temper_core::config::ModelConfig::load(&path)?;
        if cfg.architecture != "LlamaForCausalLMEagle3" {
            return Err(RuntimeError::config(
                &path,
                "architectures",
                format!(
                    "`{}` is not an EAGLE-3 head; temper runs `LlamaForCausalLMEagle3` heads",
                    cfg.architecture
                ),
            ));
        }
        if cfg.num_hidden_layers != 1 {
            return Err(RuntimeError::config(
                &path,
                "num_hidden_layers",
                format!("{} (an EAGLE-3 head has one layer)", cfg.num_hidden_layers),
            ));
        }
        let field = |name: &str| cfg.raw.get(name).and_then(Value::as_u64);
        let draft_vocab_size = field("draft_vocab_size").unwrap_or(cfg.vocab_size as u64) as usize;
        if draft_vocab_size == 0 || draft_vocab_size > cfg.vocab_size {
            return Err(RuntimeError::config(
                &path,
                "draft_vocab_size",
                format!(
                    "{draft_vocab_size} must be between 1 and vocab_size ({})",
                    cfg.vocab_size
                ),
            ));
        }
        let target_hidden_size =
            field("target_hidden_size").unwrap_or(cfg.hidden_size as u64) as usize;
        let aux_layer_ids = match cfg
            .raw
            .get("eagle_config")
            .and_then(|e| e.get("eagle_aux_hidden_state_layer_ids"))
        {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_array()
                    .filter(|a| a.len() == 3)
                    .and_then(|a| {
                        a.iter()
                            .map(|x| x.as_u64().map(|x| x as usize))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(|| {
                        RuntimeError::config(
                            &path,
                            "eagle_config.eagle_aux_hidden_state_layer_ids",
                            format!("{v} must be three layer indices"),
                        )
                    })?,
            ),
        };
        Ok(DraftConfig {
            aux_layer_ids,
            params: ModelParams::from_config(&cfg)?,
            draft_vocab_size,
            target_hidden_size,
            path,
        })
    }
}

/// A loaded draft head.
pub struct DraftHead {
    config: DraftConfig,
    fc: Linear,
    input_norm: Tensor,
    hidden_norm: Tensor,
    post_attention_norm: Tensor,
    norm: Tensor,
    qkv: Projection,
    o: Projection,
    gate_up: Projection,
    down: Projection,
    lm_head: Linear,
    /// Target id of every draft id.
    draft_to_target: Vec<u32>,
}

impl DraftHead {
    /// Loads the head in `dir` (config.json + model.safetensors) for a target of `target`'s
    /// shape, checking that the two fit together.
    pub fn load(dir: &Path, target: &ModelParams) -> Result<Self> {
        let config = DraftConfig::load(dir)?;
        let ckpt = Checkpoint::open(dir)?;
        let p = &config.params;
        let (h, f, d) = (p.hidden_size, p.intermediate_size, p.head_dim);
        let (nh, nkv, vd) = (p.num_heads, p.num_kv_heads, config.draft_vocab_size);
        let mismatch = |field: &str, head: usize, target: usize| {
            RuntimeError::config(
                &config.path,
                field,
                format!("{head} does not match the target model's {target}; this head was trained for another model"),
            )
        };
        if p.vocab_size != target.vocab_size {
            return Err(mismatch("vocab_size", p.vocab_size, target.vocab_size));
        }
        if config.target_hidden_size != target.hidden_size {
            return Err(mismatch(
                "target_hidden_size",
                config.target_hidden_size,
                target.hidden_size,
            ));
        }
        if h != target.hidden_size {
            // The head adds the target's token embeddings to its own stream.
            return Err(mismatch("hidden_size", h, target.hidden_size));
        }
        let linear = |name: &str, rows: usize, cols: usize| -> Result<(String, LoadedLinear)> {
            Ok((
                name.to_string(),
                LoadedLinear {
                    matrix: load::dense_matrix(&ckpt, name, rows, cols)?,
                    bias: None,
                    act: ActQuant::None,
                },
            ))
        };
        let one = |name: &str, rows: usize, cols: usize| -> Result<Linear> {
            let (_, l) = linear(name, rows, cols)?;
            Linear::new(l.matrix, None, ActQuant::None)
        };
        let norm = |name: &str| -> Result<Tensor> {
            let w = load::float_tensor(&ckpt, name, &[h])?;
            Ok(Tensor::from_vec(w, h, &Device::Cpu)?)
        };
        let opts = LoadOptions::default();
        let at = |m: &str| format!("midlayer.self_attn.{m}");
        let mlp = |m: &str| format!("midlayer.mlp.{m}");
        let head = DraftHead {
            fc: one("fc.weight", h, 3 * config.target_hidden_size)?,
            input_norm: norm("midlayer.input_layernorm.weight")?,
            hidden_norm: norm("midlayer.hidden_norm.weight")?,
            post_attention_norm: norm("midlayer.post_attention_layernorm.weight")?,
            norm: norm("norm.weight")?,
            qkv: projection(
                vec![
                    linear(&format!("{}.weight", at("q_proj")), nh * d, 2 * h)?,
                    linear(&format!("{}.weight", at("k_proj")), nkv * d, 2 * h)?,
                    linear(&format!("{}.weight", at("v_proj")), nkv * d, 2 * h)?,
                ],
                &opts,
            )?,
            o: projection(
                vec![linear(&format!("{}.weight", at("o_proj")), h, nh * d)?],
                &opts,
            )?,
            gate_up: projection(
                vec![
                    linear(&format!("{}.weight", mlp("gate_proj")), f, h)?,
                    linear(&format!("{}.weight", mlp("up_proj")), f, h)?,
                ],
                &opts,
            )?,
            down: projection(
                vec![linear(&format!("{}.weight", mlp("down_proj")), h, f)?],
                &opts,
            )?,
            lm_head: one("lm_head.weight", vd, h)?,
            draft_to_target: draft_to_target(&ckpt, vd, p.vocab_size)?,
            config,
        };
        Ok(head)
    }

    pub fn config(&self) -> &DraftConfig {
        &self.config
    }

    pub fn draft_vocab_size(&self) -> usize {
        self.config.draft_vocab_size
    }

    /// Target layers whose input residual stream the head reads.
    pub fn aux_layers(&self, target_layers: usize) -> Vec<usize> {
        self.config
            .aux_layer_ids
            .clone()
            .unwrap_or_else(|| default_aux_layers(target_layers).to_vec())
    }

    /// Target id of draft id `i`.
    pub fn target_id(&self, i: usize) -> u32 {
        self.draft_to_target[i]
    }

    /// A KV cache for the head's one layer.
    pub fn new_cache(&self, capacity: usize) -> Result<KvCache> {
        KvCache::new(&self.config.params, capacity)
    }

    /// `fc` over the fused target residual streams: `[n, 3H]` -> `[n, H]`.
    pub fn fuse(&self, streams: &[Tensor]) -> Result<Tensor> {
        if streams.len() != 3 {
            return Err(RuntimeError::Input(format!(
                "an EAGLE-3 head fuses three residual streams, got {}",
                streams.len()
            )));
        }
        let g = Tensor::cat(streams, 1)?.contiguous()?;
        self.fc.forward(&g)
    }

    /// One step of the head on `n` rows: `h` (`[n, H]`, from [`DraftHead::fuse`] or an earlier
    /// step's output) and the tokens whose embeddings it reads, laid out in `cache` as
    /// `layout` says. Returns the pre-norm output `[n, H]` (what the next step reads).
    pub fn step(
        &self,
        target: &Head,
        h: &Tensor,
        tokens: &[u32],
        cache: &mut KvCache,
        layout: NewTokens,
    ) -> Result<Tensor> {
        crate::pool::in_pool(|| self.step_here(target, h, tokens, cache, layout))
    }

    fn step_here(
        &self,
        target: &Head,
        h: &Tensor,
        tokens: &[u32],
        cache: &mut KvCache,
        layout: NewTokens,
    ) -> Result<Tensor> {
        let p = &self.config.params;
        let eps = p.rms_norm_eps as f32;
        let (cos, sin, mask) = layout.tables(tokens, cache)?;
        let e = target.embed(tokens)?;
        let a = candle_nn::ops::rms_norm(&e, &self.input_norm, eps)?;
        let b = candle_nn::ops::rms_norm(h, &self.hidden_norm, eps)?;
        let x = Tensor::cat(&[&a, &b], 1)?.contiguous()?;
        let step = Step {
            params: p,
            index: 0,
            cos: &cos,
            sin: &sin,
            mask: mask.as_ref(),
        };
        let attn = attention(&self.qkv, &self.o, &x, Some(cache), &step)?;
        cache.advance(tokens.len());
        let h1 = (h + attn)?;
        let n = candle_nn::ops::rms_norm(&h1, &self.post_attention_norm, eps)?;
        let f = p.intermediate_size;
        let gate_up = self.gate_up.forward(&n)?;
        let act = (gate_up.narrow(1, 0, f)?.silu()? * gate_up.narrow(1, f, f)?)?;
        Ok((h1 + self.down.forward(&act)?)?)
    }

    /// Draft-vocabulary logits `[n, draft_vocab]` of step outputs `[n, H]`.
    pub fn logits(&self, out: &Tensor) -> Result<Tensor> {
        let x = candle_nn::ops::rms_norm(out, &self.norm, self.config.params.rms_norm_eps as f32)?;
        self.lm_head.forward(&x)
    }
}

/// `d2t` (I64 `[draft_vocab]`, target id = i + d2t[i]) as target ids, checked: in range,
/// distinct, and agreeing with `t2d` (BOOL `[vocab]`) when present.
fn draft_to_target(ckpt: &Checkpoint, vd: usize, vocab: usize) -> Result<Vec<u32>> {
    let file = ckpt.dir.join("model.safetensors");
    let bad = |name: &str, why: String| RuntimeError::tensor(&file, name, why);
    let d2t = ckpt.get("d2t").ok_or_else(|| {
        bad(
            "d2t",
            "is missing (an EAGLE-3 head maps draft ids with it)".into(),
        )
    })?;
    if d2t.dtype != Dtype::I64 || d2t.shape != [vd] {
        return Err(bad(
            "d2t",
            format!(
                "is {:?} {:?}, expected I64 [{vd}] (draft_vocab_size)",
                d2t.dtype, d2t.shape
            ),
        ));
    }
    let offsets: Vec<i64> = bytemuck::pod_collect_to_vec(ckpt.bytes(d2t));
    let mut seen = vec![false; vocab];
    let mut ids = Vec::with_capacity(vd);
    for (i, off) in offsets.iter().enumerate() {
        let id = i as i64 + off;
        if id < 0 || id as usize >= vocab || seen[id as usize] {
            return Err(bad(
                "d2t",
                format!("draft id {i} maps to target id {id}, outside the vocabulary of {vocab} or taken twice"),
            ));
        }
        seen[id as usize] = true;
        ids.push(id as u32);
    }
    if let Some(t2d) = ckpt.get("t2d") {
        let bytes = ckpt.bytes(t2d);
        if t2d.dtype != Dtype::BOOL || bytes.len() != vocab {
            return Err(bad(
                "t2d",
                format!(
                    "is {:?} {:?}, expected BOOL [{vocab}]",
                    t2d.dtype, t2d.shape
                ),
            ));
        }
        if let Some(v) = (0..vocab).find(|&v| (bytes[v] != 0) != seen[v]) {
            return Err(bad("t2d", format!("disagrees with d2t at target id {v}")));
        }
    }
    Ok(ids)
}
