//! One Llama-family decoder layer: RMSNorm, grouped-query attention with rotary embeddings,
//! RMSNorm, SwiGLU MLP, each with a residual connection.

use crate::cache::KvCache;
use crate::error::Result;
use crate::linear::Linear;
use crate::params::ModelParams;
use candle_core::{Tensor, D};

/// A projection (possibly several fused ones) and the checkpoint modules it came from.
pub struct Projection {
    /// One Linear, or several when their formats could not be fused; outputs are concatenated.
    pub parts: Vec<Linear>,
    /// Module names in output order, e.g. `model.layers.0.self_attn.q_proj`.
    pub modules: Vec<String>,
}

impl Projection {
    /// Adds the largest |input| seen by this projection (when observing) under each of its
    /// module names: fused modules share one input.
    pub fn record_observed(&self, out: &mut std::collections::BTreeMap<String, f32>) {
        let seen = self
            .parts
            .iter()
            .filter_map(Linear::observed_absmax)
            .fold(None, |acc: Option<f32>, v| {
                Some(acc.map_or(v, |a| a.max(v)))
            });
        if let Some(v) = seen {
            for m in &self.modules {
                out.insert(m.clone(), v);
            }
        }
    }

    /// The inputs recorded while loaded with `LoadOptions::record_inputs` (fused modules
    /// share one input), if recording.
    pub fn recorded_inputs(&self) -> Option<crate::linear::RecordedInputs> {
        self.parts.first().and_then(Linear::recorded_inputs)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.parts.as_slice() {
            [one] => one.forward(x),
            parts => {
                let outs = parts
                    .iter()
                    .map(|p| p.forward(x))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::cat(&outs, D::Minus1)?)
            }
        }
    }
}

pub struct Layer {
    pub input_norm: Tensor,
    pub post_attention_norm: Tensor,
    /// q, k and v along the output dimension.
    pub qkv: Projection,
    pub o: Projection,
    /// gate and up along the output dimension.
    pub gate_up: Projection,
    pub down: Projection,
}

/// What the layer needs besides its input.
pub struct Step<'a> {
    pub params: &'a ModelParams,
    pub index: usize,
    /// Rotary tables for the new positions, `[new, head_dim/2]`.
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    /// Additive causal mask `[new, past + new]`, when more than one position is new.
    pub mask: Option<&'a Tensor>,
}

impl Layer {
    pub fn projections(&self) -> [&Projection; 4] {
        [&self.qkv, &self.o, &self.gate_up, &self.down]
    }

    /// `x`: `[new, hidden]`; returns the same shape. Without a cache the positions are the
    /// whole sequence (evaluation one layer at a time).
    pub fn forward(&self, x: &Tensor, cache: Option<&KvCache>, step: &Step) -> Result<Tensor> {
        self.forward_reduced(x, cache, step, &mut |t| Ok(t))
    }

    /// [`Layer::forward`] for one tensor-parallel rank: `reduce` sums the partial outputs of
    /// the row-parallel products (o_proj, down_proj) over the ranks before each residual add.
    pub fn forward_reduced(
        &self,
        x: &Tensor,
        cache: Option<&KvCache>,
        step: &Step,
        reduce: &mut dyn FnMut(Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        self.forward_kv(x, Kv::Sequence(cache), step, reduce)
    }

    /// One decode step of several sequences at once (continuous batching): row `i` of `x`
    /// (`[n, hidden]`) is the next token of the sequence cached in `caches[i]`, at position
    /// `caches[i].len()`; `step.cos`/`step.sin` hold row `i`'s rotary angles and `step.mask`
    /// is unused. The products run once over all rows; attention runs per sequence.
    pub fn forward_rows_reduced(
        &self,
        x: &Tensor,
        caches: &[&KvCache],
        step: &Step,
        reduce: &mut dyn FnMut(Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        self.forward_kv(x, Kv::Rows(caches), step, reduce)
    }

    fn forward_kv(
        &self,
        x: &Tensor,
        kv: Kv,
        step: &Step,
        reduce: &mut dyn FnMut(Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let eps = step.params.rms_norm_eps as f32;
        let h = candle_nn::ops::rms_norm(x, &self.input_norm, eps)?;
        let attn = reduce(attention_kv(&self.qkv, &self.o, &h, kv, step)?)?;
        let x = (x + attn)?;
        let h = candle_nn::ops::rms_norm(&x, &self.post_attention_norm, eps)?;
        let mlp = reduce(self.mlp(&h, step.params)?)?;
        Ok((x + mlp)?)
    }
}

/// Up to this many new positions attend in plain loops ([`crate::attention::attend_few`]);
/// more (a prefill) go through candle's batched matmul, which pays a fixed cost per call
/// that only many positions amortise.
const FEW_POSITIONS: usize = 16;

/// Grouped-query attention with rotary embeddings of `h` (`[new, in]`, already normed) through
/// the fused `qkv` and `o` projections, appending the new keys and values to `cache` (layer
/// `step.index`). Shared by the decoder layers and the EAGLE draft head's midlayer (whose
/// `h` is twice as wide).
pub(crate) fn attention(
    qkv_proj: &Projection,
    o_proj: &Projection,
    h: &Tensor,
    cache: Option<&KvCache>,
    step: &Step,
) -> Result<Tensor> {
    attention_kv(qkv_proj, o_proj, h, Kv::Sequence(cache), step)
}

/// Whose keys and values the new positions of a forward pass join.
#[derive(Clone, Copy)]
enum Kv<'a> {
    /// Positions of one sequence after what the cache holds (without a cache: the whole
    /// sequence).
    Sequence(Option<&'a KvCache>),
    /// Row `i` is the next position of the sequence cached in the `i`-th cache.
    Rows(&'a [&'a KvCache]),
}

fn attention_kv(
    qkv_proj: &Projection,
    o_proj: &Projection,
    h: &Tensor,
    kv: Kv,
    step: &Step,
) -> Result<Tensor> {
    let p = step.params;
    let (new, d) = (h.dim(0)?, p.head_dim);
    let (nh, nkv) = (p.num_heads, p.num_kv_heads);
    let qkv = qkv_proj.forward(h)?;
    // [new, heads * d] -> [1, heads, new, d], the layout candle-nn's rope takes.
    let heads = |start: usize, count: usize| -> Result<Tensor> {
        Ok(qkv
            .narrow(1, start * d, count * d)?
            .reshape((new, count, d))?
            .transpose(0, 1)?
            .contiguous()?
            .unsqueeze(0)?)
    };
    let q = candle_nn::rotary_emb::rope(&heads(0, nh)?, step.cos, step.sin)?;
    let k = candle_nn::rotary_emb::rope(&heads(nh, nkv)?, step.cos, step.sin)?;
    let v = heads(nh + nkv, nkv)?;
    let cache = match kv {
        Kv::Sequence(cache) => cache,
        Kv::Rows(caches) => {
            let out = attend_rows(&q, &k, &v, caches, nh, step.index)?;
            return o_proj.forward(&out);
        }
    };
    let (k, v) = match cache {
        Some(cache) => cache.append(step.index, &k.squeeze(0)?, &v.squeeze(0)?)?,
        None => (k.squeeze(0)?, v.squeeze(0)?),
    };
    if cache.is_some() && new <= FEW_POSITIONS {
        // [1, heads, new, d] -> rows of [heads * d], one per new position.
        let rows = if new == 1 {
            q.clone()
        } else {
            q.squeeze(0)?.transpose(0, 1)?.contiguous()?
        };
        let out = crate::attention::attend_few(&rows, &k, &v, nh, step.mask)?;
        return o_proj.forward(&out);
    }
    let total = k.dim(1)?;

    // Grouped-query attention without copying keys: query heads sharing a kv head are
    // consecutive, so [heads, new, d] regroups as [kv_heads, group * new, d].
    let group = nh / nkv;
    let q = q.squeeze(0)?.reshape((nkv, group * new, d))?;
    let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
    let scores = match step.mask {
        Some(mask) => scores
            .reshape((nkv, group, new, total))?
            .broadcast_add(mask)?
            .reshape((nkv, group * new, total))?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let out = probs.matmul(&v)?; // [kv_heads, group * new, d]
    let out = out
        .reshape((nh, new, d))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((new, nh * d))?;
    o_proj.forward(&out)
}

/// Attention of rows that belong to different sequences: `q`, `k`, `v` are `[1, heads, n, d]`
/// (roped), row `i` the next position of the sequence cached in `caches[i]`, whose new key and
/// value it appends there. Returns `[n, num_heads * d]`.
fn attend_rows(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    caches: &[&KvCache],
    nh: usize,
    layer: usize,
) -> Result<Tensor> {
    let (q, k, v) = (q.squeeze(0)?, k.squeeze(0)?, v.squeeze(0)?);
    if q.dim(1)? != caches.len() {
        return Err(crate::error::RuntimeError::Input(format!(
            "{} rows for {} sequences",
            q.dim(1)?,
            caches.len()
        )));
    }
    let row = |i: usize, c: &KvCache| -> Result<Tensor> {
        let ki = k.narrow(1, i, 1)?.contiguous()?;
        let vi = v.narrow(1, i, 1)?.contiguous()?;
        let (keys, values) = c.append(layer, &ki, &vi)?;
        // [heads, 1, d] -> one row of [heads * d].
        let qi = q.narrow(1, i, 1)?.contiguous()?.reshape((1, ()))?;
        crate::attention::attend_few(&qi, &keys, &values, nh, None)
    };
    let outs = caches
        .iter()
        .enumerate()
        .map(|(i, c)| row(i, c))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&outs, 0)?)
}

impl Layer {
    fn mlp(&self, h: &Tensor, p: &ModelParams) -> Result<Tensor> {
        let f = p.intermediate_size;
        let gate_up = self.gate_up.forward(h)?;
        let gate = gate_up.narrow(1, 0, f)?;
        let up = gate_up.narrow(1, f, f)?;
        let act = (gate.silu()? * up)?;
        self.down.forward(&act)
    }
}
