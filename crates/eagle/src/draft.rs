//! The EAGLE-3 head as trainable candle variables, and its training-time-test forward
//! (EAGLE.md section 3.4): the head is unrolled for K steps, each step reading its own previous
//! output, and attends to the real context plus its own earlier steps at the same position,
//! exactly as it will at inference.
//!
//! Every op here is one candle differentiates (basic ops only: RMSNorm, RoPE, SiLU and
//! softmax are written out rather than taken from candle-nn's fused kernels, which have no
//! backward pass).

use crate::error::{EagleError, Result};
use crate::features::SampleFeatures;
use candle_core::{DType, Device, Tensor, Var, D};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use temper_runtime::ModelParams;

/// The head's shape (the target's, with a draft vocabulary).
#[derive(Debug, Clone, PartialEq)]
pub struct DraftShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub draft_vocab: usize,
    pub rms_eps: f64,
    pub rope_theta: f32,
}

impl DraftShape {
    pub fn for_target(p: &ModelParams, draft_vocab: usize) -> Self {
        DraftShape {
            hidden: p.hidden_size,
            intermediate: p.intermediate_size,
            heads: p.num_heads,
            kv_heads: p.num_kv_heads,
            head_dim: p.head_dim,
            draft_vocab,
            rms_eps: p.rms_norm_eps,
            rope_theta: p.rope_theta,
        }
    }

    /// Every tensor of the head (vLLM names) and its shape.
    pub fn tensors(&self) -> Vec<(&'static str, Vec<usize>)> {
        let (h, f, d) = (self.hidden, self.intermediate, self.head_dim);
        vec![
            ("fc.weight", vec![h, 3 * h]),
            ("midlayer.input_layernorm.weight", vec![h]),
            ("midlayer.hidden_norm.weight", vec![h]),
            ("midlayer.post_attention_layernorm.weight", vec![h]),
            (
                "midlayer.self_attn.q_proj.weight",
                vec![self.heads * d, 2 * h],
            ),
            (
                "midlayer.self_attn.k_proj.weight",
                vec![self.kv_heads * d, 2 * h],
            ),
            (
                "midlayer.self_attn.v_proj.weight",
                vec![self.kv_heads * d, 2 * h],
            ),
            ("midlayer.self_attn.o_proj.weight", vec![h, self.heads * d]),
            ("midlayer.mlp.gate_proj.weight", vec![f, h]),
            ("midlayer.mlp.up_proj.weight", vec![f, h]),
            ("midlayer.mlp.down_proj.weight", vec![h, f]),
            ("norm.weight", vec![h]),
            ("lm_head.weight", vec![self.draft_vocab, h]),
        ]
    }
}

/// The trainable head.
pub struct DraftModel {
    pub shape: DraftShape,
    pub vars: BTreeMap<String, Var>,
}

/// What one sample's training-time test gives.
pub struct StepLosses {
    /// `sum_k 0.8^k loss_k`, the quantity trained.
    pub total: Tensor,
    /// Per step: mean soft cross-entropy over its masked positions.
    pub per_step: Vec<f32>,
    /// Per step: positions whose head argmax is the target's choice, given every earlier step
    /// was too (the chain acceptance the head would reach on this sample), and positions
    /// counted.
    pub accepted: Vec<usize>,
    pub counted: Vec<usize>,
}

impl DraftModel {
    /// Norms at 1, Linears uniform in `±1/sqrt(fan_in)` (PyTorch's default), the LM head from
    /// the target's `lm_head_rows` (`[Vd, H]`, the draft vocabulary's rows), all from `seed`.
    pub fn init(shape: DraftShape, lm_head_rows: Tensor, seed: u64) -> Result<Self> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut vars = BTreeMap::new();
        for (name, dims) in shape.tensors() {
            let t = if name.ends_with("norm.weight") {
                Tensor::ones(dims.as_slice(), DType::F32, &Device::Cpu)?
            } else if name == "lm_head.weight" {
                if lm_head_rows.dims() != dims.as_slice() {
                    return Err(EagleError::Input(format!(
                        "lm_head rows {:?}, expected {dims:?}",
                        lm_head_rows.dims()
                    )));
                }
                lm_head_rows.clone()
            } else {
                let bound = 1.0 / (dims[1] as f32).sqrt();
                let n = dims.iter().product::<usize>();
                let v: Vec<f32> = (0..n)
                    .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * bound)
                    .collect();
                Tensor::from_vec(v, dims.as_slice(), &Device::Cpu)?
            };
            vars.insert(name.to_string(), Var::from_tensor(&t)?);
        }
        Ok(DraftModel { shape, vars })
    }

    /// A head with the given tensors (a checkpoint), checked against `shape`.
    pub fn from_tensors(shape: DraftShape, tensors: &BTreeMap<String, Tensor>) -> Result<Self> {
        let mut vars = BTreeMap::new();
        for (name, dims) in shape.tensors() {
            let t = tensors
                .get(name)
                .ok_or_else(|| EagleError::Input(format!("the checkpoint has no tensor {name}")))?;
            if t.dims() != dims.as_slice() {
                return Err(EagleError::Input(format!(
                    "checkpoint tensor {name} is {:?}, expected {dims:?}",
                    t.dims()
                )));
            }
            vars.insert(
                name.to_string(),
                Var::from_tensor(&t.to_dtype(DType::F32)?)?,
            );
        }
        Ok(DraftModel { shape, vars })
    }

    fn w(&self, name: &str) -> &Tensor {
        self.vars[name].as_tensor()
    }

    fn linear(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        Ok(x.matmul(&self.w(name).t()?)?)
    }

    fn rms_norm(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        let inv = (x.sqr()?.mean_keepdim(D::Minus1)? + self.shape.rms_eps)?
            .sqrt()?
            .recip()?;
        Ok(x.broadcast_mul(&inv)?.broadcast_mul(self.w(name))?)
    }

    /// Rotary embedding of `x` (`[heads, R, d]`) at `positions` (Hugging Face rotate-half).
    fn rope(&self, x: &Tensor, positions: &[usize]) -> Result<Tensor> {
        let d = self.shape.head_dim;
        let half = d / 2;
        let mut cos = Vec::with_capacity(positions.len() * d);
        let mut sin = Vec::with_capacity(positions.len() * d);
        let inv: Vec<f32> = (0..half)
            .map(|i| 1.0 / self.shape.rope_theta.powf((2 * i) as f32 / d as f32))
            .collect();
        for &p in positions {
            // Dimension i and i + d/2 share a frequency.
            for _ in 0..2 {
                for f in &inv {
                    let a = p as f32 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        let cos = Tensor::from_vec(cos, (positions.len(), d), &Device::Cpu)?;
        let sin = Tensor::from_vec(sin, (positions.len(), d), &Device::Cpu)?;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
    }

    /// The training-time test over one sample with `k` steps.
    pub fn ttt(
        &self,
        f: &SampleFeatures,
        tokens: &[u32],
        loss_mask: &[bool],
        k: usize,
    ) -> Result<StepLosses> {
        let s = &self.shape;
        let t_len = tokens.len();
        if t_len < 3 {
            return Err(EagleError::Input(format!(
                "a training sample of {t_len} tokens is too short"
            )));
        }
        // Row r pairs the features of position r with token r + 1.
        let rows = t_len - 1;
        let (nh, nkv, d) = (s.heads, s.kv_heads, s.head_dim);
        let group = nh / nkv;
        let scale = 1.0 / (d as f64).sqrt();
        let causal: Vec<f32> = (0..rows)
            .flat_map(|i| (0..rows).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        let causal = Tensor::from_vec(causal, (rows, rows), &Device::Cpu)?;
        let g = f.streams.narrow(0, 0, rows)?;
        let mut h = self.linear(&g, "fc.weight")?;
        let mut k0v0: Option<(Tensor, Tensor)> = None;
        let mut extra: Vec<(Tensor, Tensor)> = Vec::new();
        let mut total: Option<Tensor> = None;
        let mut per_step = Vec::with_capacity(k);
        let mut accepted = vec![0usize; k];
        let mut counted = vec![0usize; k];
        // Whether every earlier step's argmax matched at row r.
        let mut alive = vec![true; rows];
        for step in 0..k {
            let at = |r: usize| (r + 1 + step).min(t_len - 1) as u32;
            let idx = Tensor::new((0..rows).map(at).collect::<Vec<_>>(), &Device::Cpu)?;
            let e = f.embeddings.index_select(&idx, 0)?;
            let positions: Vec<usize> = (0..rows).map(|r| r + step).collect();
            let x = Tensor::cat(
                &[
                    &self.rms_norm(&e, "midlayer.input_layernorm.weight")?,
                    &self.rms_norm(&h, "midlayer.hidden_norm.weight")?,
                ],
                1,
            )?;
            let heads = |w: &str, n: usize| -> Result<Tensor> {
                Ok(self
                    .linear(&x, w)?
                    .reshape((rows, n, d))?
                    .transpose(0, 1)?
                    .contiguous()?)
            };
            let q = self.rope(&heads("midlayer.self_attn.q_proj.weight", nh)?, &positions)?;
            let kk = self.rope(&heads("midlayer.self_attn.k_proj.weight", nkv)?, &positions)?;
            let v = heads("midlayer.self_attn.v_proj.weight", nkv)?;
            if step == 0 {
                k0v0 = Some((kk.clone(), v.clone()));
            } else {
                extra.push((kk, v));
            }
            let (k0, v0) = k0v0.as_ref().expect("set at step 0");
            // Query heads sharing a kv head are consecutive: [kv, group, R, d].
            let qg = q.reshape((nkv, group, rows, d))?;
            let scores0 = qg
                .reshape((nkv, group * rows, d))?
                .matmul(&k0.t()?)?
                .reshape((nkv, group, rows, rows))?
                .affine(scale, 0.0)?
                .broadcast_add(&causal)?;
            let mut parts = vec![scores0];
            for (kj, _) in &extra {
                let s_j = qg
                    .broadcast_mul(&kj.unsqueeze(1)?)?
                    .sum_keepdim(D::Minus1)?
                    .affine(scale, 0.0)?;
                parts.push(s_j);
            }
            let probs = softmax_last(&Tensor::cat(&parts, D::Minus1)?)?;
            let p0 = probs.narrow(D::Minus1, 0, rows)?;
            let mut out = p0
                .reshape((nkv, group * rows, rows))?
                .matmul(v0)?
                .reshape((nkv, group, rows, d))?;
            for (j, (_, vj)) in extra.iter().enumerate() {
                let pj = probs.narrow(D::Minus1, rows + j, 1)?;
                out = (out + pj.broadcast_mul(&vj.unsqueeze(1)?)?)?;
            }
            let attn = out
                .reshape((nh, rows, d))?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((rows, nh * d))?;
            let h1 = (&h + self.linear(&attn, "midlayer.self_attn.o_proj.weight")?)?;
            let n = self.rms_norm(&h1, "midlayer.post_attention_layernorm.weight")?;
            let gate = self.linear(&n, "midlayer.mlp.gate_proj.weight")?;
            let up = self.linear(&n, "midlayer.mlp.up_proj.weight")?;
            let act = (silu(&gate)? * up)?;
            let out = (h1 + self.linear(&act, "midlayer.mlp.down_proj.weight")?)?;
            let logits = self.linear(&self.rms_norm(&out, "norm.weight")?, "lm_head.weight")?;

            // Row r at this step predicts token r + step + 2, whose target distribution is the
            // target's logits at position r + step + 1.
            let mut mask = vec![0f32; rows];
            let mut label_rows = Vec::with_capacity(rows);
            for (r, m) in mask.iter_mut().enumerate() {
                let src = r + step + 1;
                let predicted = r + step + 2;
                label_rows.push(src.min(t_len - 1) as u32);
                if predicted < t_len && loss_mask[predicted] && f.target_choice[src].is_some() {
                    *m = 1.0;
                }
            }
            let count = mask.iter().filter(|&&m| m > 0.0).count();
            let labels = f
                .draft_logits
                .index_select(&Tensor::new(label_rows.as_slice(), &Device::Cpu)?, 0)?;
            let p = softmax_last(&labels)?;
            let logp = log_softmax_last(&logits)?;
            let ce = (p * &logp)?.sum(D::Minus1)?.neg()?; // [R]
            let mask_t = Tensor::from_vec(mask.clone(), rows, &Device::Cpu)?;
            let loss = ((ce * &mask_t)?.sum_all()? / count.max(1) as f64)?;
            per_step.push(loss.to_scalar::<f32>()?);
            let weighted = loss.affine(0.8f64.powi(step as i32), 0.0)?;
            total = Some(match total {
                None => weighted,
                Some(t) => (t + weighted)?,
            });
            // Chain acceptance: the head's argmax equals the target's choice.
            let guess = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            for r in 0..rows {
                let src = r + step + 1;
                if mask[r] == 0.0 {
                    continue;
                }
                counted[step] += 1;
                let hit = alive[r] && f.target_choice[src] == Some(guess[r]);
                if hit {
                    accepted[step] += 1;
                }
                alive[r] = hit;
            }
            h = out;
        }
        Ok(StepLosses {
            total: total.expect("k >= 1"),
            per_step,
            accepted,
            counted,
        })
    }
}

fn silu(x: &Tensor) -> Result<Tensor> {
    Ok((x / (x.neg()?.exp()? + 1.0)?)?)
}

fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

fn log_softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&log_z)?)
}
