//! AdamW (decoupled weight decay) whose moments a checkpoint can save and restore.
//!
//! candle-nn's `AdamW` keeps its moments private, so a job resumed from a checkpoint would
//! restart them from zero and take a different path than the uninterrupted run; this one
//! exposes them. The update is PyTorch's `torch.optim.AdamW`.

use crate::error::{EagleError, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    /// EAGLE's reference training: betas (0.9, 0.95), no weight decay.
    fn default() -> Self {
        AdamWParams {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

pub struct AdamW {
    pub params: AdamWParams,
    /// Updates taken so far.
    pub step: u64,
    /// First and second moment of every variable, by name.
    pub moments: BTreeMap<String, (Tensor, Tensor)>,
}

impl AdamW {
    pub fn new(params: AdamWParams, vars: &BTreeMap<String, Var>) -> Result<Self> {
        let mut moments = BTreeMap::new();
        for (name, v) in vars {
            moments.insert(name.clone(), (v.zeros_like()?, v.zeros_like()?));
        }
        Ok(AdamW {
            params,
            step: 0,
            moments,
        })
    }

    /// Scales every gradient so that their global L2 norm is at most `max_norm`; returns the
    /// norm before clipping.
    pub fn clip_grad_norm(
        grads: &mut GradStore,
        vars: &BTreeMap<String, Var>,
        max_norm: f64,
    ) -> Result<f64> {
        let mut sq = 0f64;
        for v in vars.values() {
            if let Some(g) = grads.get(v.as_tensor()) {
                sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
            }
        }
        let norm = sq.sqrt();
        if norm > max_norm && norm.is_finite() {
            let factor = max_norm / norm;
            for v in vars.values() {
                if let Some(g) = grads.get(v.as_tensor()) {
                    let scaled = g.affine(factor, 0.0)?;
                    grads.insert(v.as_tensor(), scaled);
                }
            }
        }
        Ok(norm)
    }

    /// One update with learning rate `lr`.
    pub fn update(
        &mut self,
        vars: &BTreeMap<String, Var>,
        grads: &GradStore,
        lr: f64,
    ) -> Result<()> {
        self.step += 1;
        let p = self.params;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - p.beta1.powi(t), 1.0 - p.beta2.powi(t));
        for (name, var) in vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let (m, v) = self
                .moments
                .get_mut(name)
                .ok_or_else(|| EagleError::Input(format!("no optimiser state for {name}")))?;
            *m = ((&*m * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            *v = ((&*v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let m_hat = (&*m / c1)?;
            let v_hat = (&*v / c2)?;
            let decayed = (var.as_tensor() * (1.0 - lr * p.weight_decay))?;
            let step = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
            var.set(&(decayed - (step * lr)?)?)?;
        }
        Ok(())
    }
}
