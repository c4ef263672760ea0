//! A Llama-family causal language model (Llama, Mistral, Qwen2) loaded straight from a Hugging
//! Face directory or a compressed-tensors artifact, with the weights in their stored format.

use crate::cache::KvCache;
use crate::error::{Result, RuntimeError};
use crate::layer::{Layer, Projection, Step};
use crate::linear::{self, ActQuant, Linear};
use crate::load::{self, LoadedLinear};
use crate::params::ModelParams;
use crate::speculative::tree::TokenTree;
use candle_core::{Device, Tensor};
use std::path::Path;
use temper_core::checkpoint::Checkpoint;
use temper_format::quant_config::{LinearScheme, QuantConfig};
use temper_kernels::matmul::Matrix;

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Keep activations in f32 even where the checkpoint asks for INT8/FP8 activations: what an
    /// engine does on GPUs without native FP8 (A10G, A100) for FP8 checkpoints.
    pub weight_only: bool,
    /// Widen every weight (quantized or bf16/f16) to f32 at load: a plain-arithmetic twin used
    /// to check the quantized kernels, and the f32 model of the benchmarks.
    pub dequantize: bool,
    /// Record the largest |input| of every Linear (static FP8 calibration).
    pub observe_inputs: bool,
    /// Record every n-th input row of every Linear and its column magnitudes (AWQ's search).
    pub record_inputs: Option<usize>,
}

/// How the new tokens of a forward pass relate to each other.
#[derive(Debug, Clone, Copy)]
pub enum NewTokens<'a> {
    /// A continuation of the sequence: token `i` at position `past + i`, seeing everything
    /// before it.
    Causal,
    /// A draft tree being verified: node `i` at position `past + depth(i)`, seeing the
    /// committed context and its own ancestors.
    Tree(&'a TokenTree),
    /// Any positions and additive mask `[n, past + n]` (the draft head's own trees).
    Explicit {
        positions: &'a [usize],
        mask: &'a Tensor,
    },
}

impl NewTokens<'_> {
    /// Rotary tables `[n, head_dim/2]` of the new positions and the additive mask
    /// `[n, past + n]` (none where every new token sees everything before it).
    pub(crate) fn tables(
        &self,
        tokens: &[u32],
        cache: &KvCache,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (past, new) = (cache.len(), tokens.len());
        let by_position = |positions: &[usize]| -> Result<(Tensor, Tensor)> {
            if let Some(&p) = positions.iter().find(|&&p| p >= cache.capacity()) {
                return Err(RuntimeError::Input(format!(
                    "position {p} is past the KV cache's {} positions",
                    cache.capacity()
                )));
            }
            let ids: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
            let ids = Tensor::new(ids, &Device::Cpu)?;
            Ok((
                cache.rope.cos.index_select(&ids, 0)?,
                cache.rope.sin.index_select(&ids, 0)?,
            ))
        };
        Ok(match self {
            NewTokens::Causal => (
                cache.rope.cos.narrow(0, past, new)?,
                cache.rope.sin.narrow(0, past, new)?,
                (new > 1).then(|| causal_mask(past, new)).transpose()?,
            ),
            NewTokens::Tree(tree) => {
                tree.validate()?;
                if tree.tokens != tokens {
                    return Err(RuntimeError::Input(
                        "the tree's tokens differ from the tokens to run".into(),
                    ));
                }
                let positions: Vec<usize> = tree.depths().iter().map(|d| past + d).collect();
                let (cos, sin) = by_position(&positions)?;
                (cos, sin, (new > 1).then(|| tree.mask(past)).transpose()?)
            }
            NewTokens::Explicit { positions, mask } => {
                if positions.len() != new || mask.dims() != [new, past + new] {
                    return Err(RuntimeError::Input(format!(
                        "{new} new tokens with {} positions and a mask of {:?} (expected [{new}, {}])",
                        positions.len(),
                        mask.dims(),
                        past + new
                    )));
                }
                let (cos, sin) = by_position(positions)?;
                // Kept even for one token: a draft node must not see its siblings' entries.
                (cos, sin, Some((*mask).clone()))
            }
        })
    }
}

/// What [`Model::forward_with`] returns.
pub struct Forward {
    pub logits: Tensor,
    /// The captured residual streams, in the order asked.
    pub captured: Vec<Tensor>,
}

/// Which positions to compute logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last new position (generation).
    Last,
    /// Every new position (evaluation).
    All,
}

pub struct Model {
    params: ModelParams,
    layers: Vec<Layer>,
    head: Head,
    /// A short description of the weight formats, e.g. "fp8 (per-token fp8 activations)".
    format: String,
}

impl Model {
    /// Loads the model in `dir` (config.json + safetensors).
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Model> {
        let source = LayerSource::open(dir, opts)?;
        let layers = (0..source.params.num_layers)
            .map(|i| source.layer(i))
            .collect::<Result<Vec<_>>>()?;
        let head = source.head()?;
        Ok(Model {
            format: describe_format(&layers),
            params: source.params,
            layers,
            head,
        })
    }

    pub fn params(&self) -> &ModelParams {
        &self.params
    }

    /// e.g. `"int8 per-channel, int8 per-token activations"`.
    pub fn format(&self) -> &str {
        &self.format
    }

    /// Weight bytes one decode step streams (every Linear and the LM head).
    pub fn weight_bytes_per_token(&self) -> usize {
        self.projections()
            .flat_map(|p| p.parts.iter())
            .map(|l| l.matrix().weight_bytes())
            .sum()
    }

    /// Weights one decode step multiplies (every Linear and the LM head): its multiply-adds
    /// per token.
    pub fn weights_per_token(&self) -> usize {
        self.projections()
            .flat_map(|p| p.parts.iter())
            .map(|l| l.rows() * l.cols())
            .sum()
    }

    /// A fresh KV cache for sequences of up to `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> Result<KvCache> {
        KvCache::new(&self.params, capacity)
    }

    /// Runs `tokens` after what `cache` already holds and returns logits `[n, vocab]`, `n` being
    /// 1 for [`Logits::Last`] and `tokens.len()` for [`Logits::All`].
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, want: Logits) -> Result<Tensor> {
        Ok(self
            .forward_with(tokens, cache, NewTokens::Causal, &[], want)?
            .logits)
    }

    /// [`Model::forward`] with the new tokens laid out as `layout` says, also returning the
    /// residual stream entering each decoder layer in `capture` (`[n, hidden]` each, for every
    /// new position; index `num_layers` is the stream after the last layer, before the final
    /// norm). EAGLE-3 draft heads read three such layers.
    pub fn forward_with(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        layout: NewTokens,
        capture: &[usize],
        want: Logits,
    ) -> Result<Forward> {
        crate::pool::in_pool(|| self.forward_here(tokens, cache, layout, capture, want))
    }

    fn forward_here(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        layout: NewTokens,
        capture: &[usize],
        want: Logits,
    ) -> Result<Forward> {
        let new = tokens.len();
        let past = cache.len();
        if new == 0 {
            return Err(RuntimeError::Input("no tokens to run".into()));
        }
        if let Some(&bad) = capture.iter().find(|&&l| l > self.params.num_layers) {
            return Err(RuntimeError::Input(format!(
                "cannot capture the input of layer {bad}: the model has {} layers",
                self.params.num_layers
            )));
        }
        // A tree's positions stop at past + depth, but its slots take past + n.
        if past + new > cache.capacity() {
            return Err(RuntimeError::ContextOverflow {
                needed: past + new,
                limit: cache.capacity(),
                advice: format!(
                    "this KV cache holds {} positions (the model accepts at most {}, its {}); \
                     shorten the prompt or ask for fewer new tokens",
                    cache.capacity(),
                    self.params.max_positions,
                    self.params.max_positions_field
                ),
            });
        }
        let (cos, sin, mask) = layout.tables(tokens, cache)?;
        let mut x = self.head.embed(tokens)?;
        let mut captured = Vec::with_capacity(capture.len());
        let keep = |index: usize, x: &Tensor, captured: &mut Vec<(usize, Tensor)>| {
            for (slot, _) in capture.iter().enumerate().filter(|(_, &l)| l == index) {
                captured.push((slot, x.clone()));
            }
        };
        for (index, layer) in self.layers.iter().enumerate() {
            keep(index, &x, &mut captured);
            let step = Step {
                params: &self.params,
                index,
                cos: &cos,
                sin: &sin,
                mask: mask.as_ref(),
            };
            x = layer.forward(&x, Some(cache), &step)?;
        }
        keep(self.layers.len(), &x, &mut captured);
        cache.advance(new);
        captured.sort_by_key(|(slot, _)| *slot);
        let x = match want {
            Logits::Last => x.narrow(0, new - 1, 1)?,
            Logits::All => x,
        };
        Ok(Forward {
            logits: self.head.logits(&x, self.params.rms_norm_eps)?,
            captured: captured.into_iter().map(|(_, t)| t).collect(),
        })
    }

    /// One decode step of several sequences (continuous batching): `tokens[i]` is the next
    /// token of the sequence cached in `caches[i]`. Returns logits `[n, vocab]`, row `i` for
    /// sequence `i`, the same as [`Model::forward`] of each alone up to summation order (and
    /// exactly so for per-token activation scales; per-tensor dynamic FP8 takes one scale over
    /// the whole batch, as engines do).
    pub fn forward_rows(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        self.forward_segments(tokens, &vec![1; tokens.len()], caches)
    }

    /// One step of several sequences whose new tokens differ in number: `tokens` holds
    /// consecutive segments, `lens[i]` tokens continuing `caches[i]` (one for a decode step,
    /// a prompt or a chunk of one for a prefill). Products run once over every token;
    /// attention per sequence. Returns the logits of each segment's last token, `[n, vocab]`.
    pub fn forward_segments(
        &self,
        tokens: &[u32],
        lens: &[usize],
        caches: &mut [&mut KvCache],
    ) -> Result<Tensor> {
        if lens.iter().sum::<usize>() != tokens.len() {
            return Err(RuntimeError::Input(format!(
                "{} tokens for segments of {lens:?}",
                tokens.len()
            )));
        }
        let views: Vec<&KvCache> = caches.iter().map(|c| &**c).collect();
        let logits = crate::pool::in_pool(|| -> Result<Tensor> {
            let (cos, sin) = crate::cache::segment_tables(&views, lens)?;
            let mut x = self.head.embed(tokens)?;
            for (index, layer) in self.layers.iter().enumerate() {
                let step = Step {
                    params: &self.params,
                    index,
                    cos: &cos,
                    sin: &sin,
                    mask: None,
                };
                x = layer.forward_segments_reduced(&x, &views, lens, &step, &mut |t| Ok(t))?;
            }
            self.head
                .logits(&last_of_segments(&x, lens)?, self.params.rms_norm_eps)
        })?;
        for (c, &n) in caches.iter_mut().zip(lens) {
            c.advance(n);
        }
        Ok(logits)
    }

    /// The embedding, final norm and LM head.
    pub fn head(&self) -> &Head {
        &self.head
    }

    fn projections(&self) -> impl Iterator<Item = &Projection> {
        self.layers
            .iter()
            .flat_map(|l| l.projections())
            .chain(std::iter::once(&self.head.lm_head))
    }
}

/// The embedding, final norm and LM head: what runs before and after the layers.
pub struct Head {
    /// `None` when tied to the LM head.
    embed: Option<Matrix>,
    norm: Tensor,
    lm_head: Projection,
}

/// A checkpoint from which layers are loaded one at a time, so a pass over many sequences can
/// hold one layer in memory instead of the whole model (evaluation and calibration of models
/// larger than memory).
pub struct LayerSource {
    ckpt: Checkpoint,
    params: ModelParams,
    quant: Option<QuantConfig>,
    opts: LoadOptions,
}

impl LayerSource {
    pub fn open(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let ckpt = Checkpoint::open(dir)?;
        let params = ModelParams::from_config(&ckpt.config)?;
        let quant = QuantConfig::from_config(&ckpt.config)?;
        Ok(LayerSource {
            ckpt,
            params,
            quant,
            opts: opts.clone(),
        })
    }

    pub fn params(&self) -> &ModelParams {
        &self.params
    }

    /// A short description of the weight and activation formats (of the first layer).
    pub fn format(&self) -> Result<String> {
        Ok(describe_format(&[self.layer(0)?]))
    }

    fn scheme(&self, module: &str) -> LinearScheme {
        self.quant
            .as_ref()
            .map_or(LinearScheme::DENSE, |q| q.scheme_for(module))
    }

    fn linear(&self, name: String, rows: usize, cols: usize) -> Result<(String, LoadedLinear)> {
        let l = load::load_linear(&self.ckpt, &name, rows, cols, self.scheme(&name))?;
        Ok((name, l))
    }

    /// Decoder layer `i`, copied out of the checkpoint (whose pages are then released).
    pub fn layer(&self, i: usize) -> Result<Layer> {
        let p = &self.params;
        let (h, f, d) = (p.hidden_size, p.intermediate_size, p.head_dim);
        let (nh, nkv) = (p.num_heads, p.num_kv_heads);
        let at = |m: &str| format!("model.layers.{i}.self_attn.{m}");
        let mlp = |m: &str| format!("model.layers.{i}.mlp.{m}");
        let qkv = vec![
            self.linear(at("q_proj"), nh * d, h)?,
            self.linear(at("k_proj"), nkv * d, h)?,
            self.linear(at("v_proj"), nkv * d, h)?,
        ];
        let o = vec![self.linear(at("o_proj"), h, nh * d)?];
        let gate_up = vec![
            self.linear(mlp("gate_proj"), f, h)?,
            self.linear(mlp("up_proj"), f, h)?,
        ];
        let down = vec![self.linear(mlp("down_proj"), h, f)?];
        let layer = Layer {
            input_norm: norm(
                &self.ckpt,
                &format!("model.layers.{i}.input_layernorm.weight"),
                h,
            )?,
            post_attention_norm: norm(
                &self.ckpt,
                &format!("model.layers.{i}.post_attention_layernorm.weight"),
                h,
            )?,
            qkv: projection(qkv, &self.opts)?,
            o: projection(o, &self.opts)?,
            gate_up: projection(gate_up, &self.opts)?,
            down: projection(down, &self.opts)?,
        };
        let prefix = format!("model.layers.{i}.");
        for e in self
            .ckpt
            .tensors()
            .iter()
            .filter(|e| e.name.starts_with(&prefix))
        {
            self.ckpt.release(e);
        }
        Ok(layer)
    }

    /// The embedding, final norm and LM head.
    pub fn head(&self) -> Result<Head> {
        let p = &self.params;
        let embed_name = "model.embed_tokens.weight";
        let embed = load::dense_matrix(&self.ckpt, embed_name, p.vocab_size, p.hidden_size)?;
        let (embed, lm_head) = if p.tie_word_embeddings {
            // The tied table serves as both; as the head it honours the load options
            // (widened by `dequantize`, observed by `observe_inputs`) like any Linear.
            let tied = LoadedLinear {
                matrix: embed,
                bias: None,
                act: ActQuant::None,
            };
            (
                None,
                projection(vec![("lm_head".into(), tied)], &self.opts)?,
            )
        } else {
            let l = self.linear("lm_head".into(), p.vocab_size, p.hidden_size)?;
            (Some(embed), projection(vec![l], &self.opts)?)
        };
        let head = Head {
            embed,
            norm: norm(&self.ckpt, "model.norm.weight", p.hidden_size)?,
            lm_head,
        };
        // The copies are loaded: hand the mapped pages back (as `layer` does), or they stay
        // resident beside them (a 7B model's embedding and LM head: another 0.5 GB).
        for e in self
            .ckpt
            .tensors()
            .iter()
            .filter(|e| !e.name.starts_with("model.layers."))
        {
            self.ckpt.release(e);
        }
        Ok(head)
    }
}

impl Head {
    /// The LM head (observed during calibration like any Linear).
    pub fn lm_head(&self) -> &Projection {
        &self.lm_head
    }

    fn embedding_matrix(&self) -> &Matrix {
        match &self.embed {
            Some(m) => m,
            None => self.lm_head.parts[0].matrix(),
        }
    }

    /// Hidden states `[tokens, hidden]` of `tokens`.
    pub fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        let table = self.embedding_matrix();
        let h = table.cols();
        let mut x = vec![0f32; tokens.len() * h];
        for (&t, row) in tokens.iter().zip(x.chunks_exact_mut(h)) {
            if t as usize >= table.rows() {
                return Err(RuntimeError::Input(format!(
                    "token id {t} is outside the vocabulary of {} tokens",
                    table.rows()
                )));
            }
            table.row(t as usize, row);
        }
        Ok(Tensor::from_vec(x, (tokens.len(), h), &Device::Cpu)?)
    }

    /// Final norm then LM head: logits `[n, vocab]` of hidden states `[n, hidden]`.
    pub fn logits(&self, x: &Tensor, eps: f64) -> Result<Tensor> {
        let x = candle_nn::ops::rms_norm(x, &self.norm, eps as f32)?;
        self.lm_head.forward(&x)
    }
}

pub(crate) fn norm(ckpt: &Checkpoint, name: &str, size: usize) -> Result<Tensor> {
    let w = load::float_tensor(ckpt, name, &[size])?;
    Ok(Tensor::from_vec(w, size, &Device::Cpu)?)
}

/// Wraps loaded Linears (fusing those that share a format) as one projection.
pub(crate) fn projection(
    parts: Vec<(String, LoadedLinear)>,
    opts: &LoadOptions,
) -> Result<Projection> {
    let mut modules = Vec::with_capacity(parts.len());
    let mut linears = Vec::with_capacity(parts.len());
    for (name, l) in parts {
        let act = if opts.weight_only || opts.dequantize {
            ActQuant::None
        } else {
            l.act
        };
        let mut lin = Linear::new(l.matrix, l.bias, act)?;
        if opts.dequantize {
            lin = linear::dequantized(&lin)?;
        }
        lin.observe_inputs(opts.observe_inputs);
        modules.push(name);
        linears.push(lin);
    }
    let mut parts = linear::fuse(linears);
    if opts.observe_inputs {
        parts.iter_mut().for_each(|p| p.observe_inputs(true));
    }
    // Fused parts share one input: the first records it.
    if let Some(first) = parts.first_mut() {
        first.record_inputs(opts.record_inputs);
    }
    Ok(Projection { parts, modules })
}

/// The last row of each consecutive segment of `lens[i]` rows of `x`.
pub(crate) fn last_of_segments(x: &Tensor, lens: &[usize]) -> Result<Tensor> {
    if lens.iter().all(|&n| n == 1) {
        return Ok(x.clone());
    }
    let mut ends = Vec::with_capacity(lens.len());
    let mut at = 0u32;
    for &n in lens {
        at += n as u32;
        ends.push(at - 1);
    }
    let ids = Tensor::new(ends, x.device())?;
    Ok(x.index_select(&ids, 0)?)
}

/// `0` where query `i` (at position `past + i`) may see key `j`, `-inf` after it.
pub(crate) fn causal_mask(past: usize, new: usize) -> Result<Tensor> {
    let total = past + new;
    let mask: Vec<f32> = (0..new)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j <= past + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (new, total), &Device::Cpu)?)
}

fn describe_format(layers: &[Layer]) -> String {
    let Some(first) = layers.first() else {
        return "no layers".into();
    };
    let lin = &first.gate_up.parts[0];
    let weights = match lin.matrix().weights() {
        temper_kernels::matmul::Weights::F32(_) => "f32".to_string(),
        temper_kernels::matmul::Weights::F16(_) => "f16".to_string(),
        temper_kernels::matmul::Weights::Bf16(_) => "bf16".to_string(),
        temper_kernels::matmul::Weights::Int8 { group, .. } => {
            format!("int8 {}", group_name(*group, lin.cols()))
        }
        temper_kernels::matmul::Weights::Fp8 { group, .. } => {
            format!("fp8 e4m3 {}", group_name(*group, lin.cols()))
        }
        temper_kernels::matmul::Weights::Int4 { group, zeros, .. } => {
            let zero_points = if zeros.iter().all(|&z| z == 8) {
                "symmetric"
            } else {
                "zero points"
            };
            format!("int4 {} {zero_points}", group_name(*group, lin.cols()))
        }
    };
    let int4 = matches!(
        lin.matrix().weights(),
        temper_kernels::matmul::Weights::Int4 { .. }
    );
    let acts = match lin.act() {
        // W4A16: the kernels round the activations to bf16 for INT4 products.
        ActQuant::None if int4 => "bf16 activations",
        ActQuant::None => "f32 activations",
        ActQuant::Int8PerToken => "int8 per-token activations",
        ActQuant::Fp8PerGroup { group } if group == lin.cols() => "fp8 per-token activations",
        ActQuant::Fp8PerGroup { .. } => "fp8 per-group activations",
        ActQuant::Fp8PerTensor => "fp8 per-tensor dynamic activations",
        ActQuant::Fp8Static { .. } => "fp8 static activations",
    };
    format!("{weights}, {acts}")
}

fn group_name(group: usize, cols: usize) -> String {
    if group == cols {
        "per channel".into()
    } else {
        format!("group {group}")
    }
}
