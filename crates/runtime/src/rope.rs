//! Rotary position embeddings: the cos/sin tables, with Llama-3 and linear scaling.
//!
//! Layout is Hugging Face's "rotate half": dimension `i` pairs with `i + head_dim/2`
//! (candle-nn's `rope`, not the interleaved `rope_i`).

use crate::error::{Result, RuntimeError};
use candle_core::{Device, Tensor};
use serde_json::Value;
use temper_core::config::ModelConfig;

/// `rope_scaling` from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f32,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_positions: f32,
    },
}

impl RopeScaling {
    pub fn from_config(cfg: &ModelConfig) -> Result<Self> {
        let Some(Value::Object(s)) = cfg.raw.get("rope_scaling") else {
            return match cfg.raw.get("rope_scaling") {
                None | Some(Value::Null) => Ok(RopeScaling::None),
                Some(v) => Err(RuntimeError::config(
                    &cfg.path,
                    "rope_scaling",
                    format!("{v} must be an object or null"),
                )),
            };
        };
        let kind = s
            .get("rope_type")
            .or_else(|| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let num = |key: &str| -> Result<f32> {
            s.get(key)
                .and_then(Value::as_f64)
                .filter(|x| x.is_finite() && *x > 0.0)
                .map(|x| x as f32)
                .ok_or_else(|| {
                    RuntimeError::config(
                        &cfg.path,
                        format!("rope_scaling.{key}"),
                        format!("a positive number is required for rope_type `{kind}`"),
                    )
                })
        };
        match kind {
            "default" => Ok(RopeScaling::None),
            "linear" => Ok(RopeScaling::Linear {
                factor: num("factor")?,
            }),
            "llama3" => {
                let (low, high) = (num("low_freq_factor")?, num("high_freq_factor")?);
                if high <= low {
                    return Err(RuntimeError::config(
                        &cfg.path,
                        "rope_scaling.high_freq_factor",
                        format!("{high} must be larger than low_freq_factor ({low}) for llama3 scaling"),
                    ));
                }
                Ok(RopeScaling::Llama3 {
                    factor: num("factor")?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_positions: num("original_max_position_embeddings")?,
                })
            }
            other => Err(RuntimeError::config(
                &cfg.path,
                "rope_scaling.rope_type",
                format!("`{other}` is not supported; the runtime runs default, linear and llama3 rope scaling"),
            )),
        }
    }
}

/// Inverse frequencies `1 / theta^(2i/d)`, scaled as the config asks (computed like
/// transformers' `_compute_llama3_parameters`).
pub fn inverse_frequencies(head_dim: usize, theta: f32, scaling: &RopeScaling) -> Vec<f32> {
    let base: Vec<f32> = (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
        .collect();
    match *scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_positions,
        } => {
            let low_freq_wavelen = original_max_positions / low_freq_factor;
            let high_freq_wavelen = original_max_positions / high_freq_factor;
            base.into_iter()
                .map(|freq| {
                    let wavelen = 2.0 * std::f32::consts::PI / freq;
                    if wavelen < high_freq_wavelen {
                        freq
                    } else if wavelen > low_freq_wavelen {
                        freq / factor
                    } else {
                        let smooth = (original_max_positions / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * freq / factor + smooth * freq
                    }
                })
                .collect()
        }
    }
}

/// cos and sin tables, `[positions, head_dim/2]` each.
#[derive(Debug, Clone)]
pub struct RopeTables {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl RopeTables {
    pub fn new(
        head_dim: usize,
        theta: f32,
        scaling: &RopeScaling,
        positions: usize,
    ) -> Result<Self> {
        let inv = inverse_frequencies(head_dim, theta, scaling);
        let half = inv.len();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for &f in &inv {
                // f32 product as transformers computes it (positions and frequencies in f32).
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(RopeTables {
            cos: Tensor::from_vec(cos, (positions, half), &Device::Cpu)?,
            sin: Tensor::from_vec(sin, (positions, half), &Device::Cpu)?,
        })
    }
}
