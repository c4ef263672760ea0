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

    /// One step of several sequences at once (continuous batching): the rows of `x`
    /// (`[n, hidden]`) are consecutive segments, `lens[i]` tokens continuing the sequence
    /// cached in `caches[i]` (one for a decode step, a prompt or a chunk of one for a
    /// prefill); `step.cos`/`step.sin` hold each row's rotary angles and `step.mask` is
    /// unused. The products run once over all rows; attention runs per sequence.
    pub fn forward_segments_reduced(
        &self,
        x: &Tensor,
        caches: &[&KvCache],
        lens: &[usize],
        step: &Step,
        reduce: &mut dyn FnMut(Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        self.forward_kv(x, Kv::Segments { caches, lens }, step, reduce)
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
    /// The rows are consecutive segments: `lens[i]` positions continuing the sequence cached
    /// in `caches[i]`.
    Segments {
        caches: &'a [&'a KvCache],
        lens: &'a [usize],
    },
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
    let out = match kv {
        Kv::Sequence(Some(cache)) => {
            let (keys, values) = cache.append(step.index, &k.squeeze(0)?, &v.squeeze(0)?)?;
            attend(&q, &keys, &values, p, step.mask, true)?
        }
        Kv::Sequence(None) => attend(&q, &k.squeeze(0)?, &v.squeeze(0)?, p, step.mask, false)?,
        Kv::Segments { caches, lens } => attend_segments(&q, &k, &v, caches, lens, p, step.index)?,
    };
    o_proj.forward(&out)
}

/// Attention of the roped queries `q` (`[1, heads, new, d]`) over `keys`, `values`
/// (`[kv_heads, total, d]`, the new positions last) with the additive `mask`; without one,
/// new position `i` sees everything up to itself. `cached`: the keys come from a KV cache (so
/// a few new positions take the plain loops). Returns `[new, num_heads * d]`.
fn attend(
    q: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    p: &ModelParams,
    mask: Option<&Tensor>,
    cached: bool,
) -> Result<Tensor> {
    let (nh, nkv, d) = (p.num_heads, p.num_kv_heads, p.head_dim);
    let new = q.dim(2)?;
    if cached && new <= FEW_POSITIONS {
        // [1, heads, new, d] -> rows of [heads * d], one per new position.
        let rows = if new == 1 {
            q.clone()
        } else {
            q.squeeze(0)?.transpose(0, 1)?.contiguous()?
        };
        return crate::attention::attend_few(&rows, keys, values, nh, mask);
    }
    let total = keys.dim(1)?;

    // Grouped-query attention without copying keys: query heads sharing a kv head are
    // consecutive, so [heads, new, d] regroups as [kv_heads, group * new, d].
    let group = nh / nkv;
    let q = q.squeeze(0)?.reshape((nkv, group * new, d))?;
    let scores = (q.matmul(&keys.t()?)? * (1.0 / (d as f64).sqrt()))?;
    let scores = match mask {
        Some(mask) => scores
            .reshape((nkv, group, new, total))?
            .broadcast_add(mask)?
            .reshape((nkv, group * new, total))?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let out = probs.matmul(values)?; // [kv_heads, group * new, d]
    Ok(out
        .reshape((nh, new, d))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((new, nh * d))?)
}

/// Attention of rows that belong to different sequences: `q`, `k`, `v` are `[1, heads, n,
/// d]` (roped), the rows of sequence `i` being the next `lens[i]` positions of `caches[i]`
/// (in order), whose keys and values it appends there. Returns `[n, num_heads * d]`.
fn attend_segments(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    caches: &[&KvCache],
    lens: &[usize],
    p: &ModelParams,
    layer: usize,
) -> Result<Tensor> {
    let (q, k, v) = (q.squeeze(0)?, k.squeeze(0)?, v.squeeze(0)?);
    if caches.len() != lens.len() || lens.iter().sum::<usize>() != q.dim(1)? {
        return Err(crate::error::RuntimeError::Input(format!(
            "{} rows for {} sequences of {lens:?} tokens",
            q.dim(1)?,
            caches.len()
        )));
    }
    let mut outs = Vec::with_capacity(caches.len());
    let mut at = 0;
    for (c, &n) in caches.iter().zip(lens) {
        let part = |t: &Tensor| -> Result<Tensor> { Ok(t.narrow(1, at, n)?.contiguous()?) };
        let past = c.len();
        let (keys, values) = c.append(layer, &part(&k)?, &part(&v)?)?;
        // Few positions attend causally in the plain loops; a prompt needs the mask.
        let mask = (n > FEW_POSITIONS)
            .then(|| crate::model::causal_mask(past, n))
            .transpose()?;
        outs.push(attend(
            &part(&q)?.unsqueeze(0)?,
            &keys,
            &values,
            p,
            mask.as_ref(),
            true,
        )?);
        at += n;
    }
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
