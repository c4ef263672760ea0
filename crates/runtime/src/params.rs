//! The hyper-parameters the forward pass needs beyond [`ModelConfig`]'s shape fields.

use crate::error::{Result, RuntimeError};
use crate::rope::RopeScaling;
use serde_json::Value;
use temper_core::config::{Family, ModelConfig};

/// Everything the forward pass reads from `config.json`.
#[derive(Debug, Clone)]
pub struct ModelParams {
    pub family: Family,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    /// The longest sequence the model was trained for (`max_position_embeddings`).
    pub max_positions: usize,
    /// The config field `max_positions` comes from (`max_position_embeddings`, or
    /// `sliding_window` when that is smaller), for error messages.
    pub max_positions_field: &'static str,
    pub tie_word_embeddings: bool,
}

impl ModelParams {
    /// Reads the forward-pass fields, refusing families and options the runtime does not run.
    pub fn from_config(cfg: &ModelConfig) -> Result<Self> {
        if cfg.family == Family::Unknown {
            return Err(RuntimeError::config(
                &cfg.path,
                "model_type",
                format!(
                    "`{}` ({}) is not a family this runtime can run; it runs {}",
                    cfg.model_type,
                    cfg.architecture,
                    Family::SUPPORTED
                ),
            ));
        }
        let act = cfg
            .raw
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("silu");
        if act != "silu" {
            return Err(RuntimeError::config(
                &cfg.path,
                "hidden_act",
                format!("`{act}` is not supported; Llama-family models use `silu`"),
            ));
        }
        let rms_norm_eps = number(cfg, "rms_norm_eps")?.unwrap_or(1e-6);
        let rope_theta = number(cfg, "rope_theta")?.unwrap_or(10_000.0) as f32;
        let mut max_positions = number(cfg, "max_position_embeddings")?.unwrap_or(2048.0) as usize;
        // Sliding-window attention (Mistral v0.1's `sliding_window`; Qwen2's when
        // `use_sliding_window` is true) only differs from full attention past the window, so the
        // runtime stays exact by never going past it.
        let windowed = match cfg.family {
            Family::Qwen2 => {
                cfg.raw.get("use_sliding_window").and_then(Value::as_bool) == Some(true)
            }
            _ => true,
        };
        let mut max_positions_field = "max_position_embeddings";
        if let Some(window) = number(cfg, "sliding_window")?.filter(|_| windowed) {
            if (window as usize) < max_positions {
                max_positions = window as usize;
                max_positions_field = "sliding_window";
            }
        }
        let rope_scaling = RopeScaling::from_config(cfg)?;
        Ok(ModelParams {
            family: cfg.family,
            hidden_size: cfg.hidden_size,
            intermediate_size: cfg.intermediate_size,
            num_layers: cfg.num_hidden_layers,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
            vocab_size: cfg.vocab_size,
            rms_norm_eps,
            rope_theta,
            rope_scaling,
            max_positions,
            max_positions_field,
            tie_word_embeddings: cfg.tie_word_embeddings,
        })
    }

    /// Output rows of the fused q/k/v projection.
    pub fn qkv_rows(&self) -> usize {
        (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
    }
}

/// A positive finite number field, if present.
fn number(cfg: &ModelConfig, field: &str) -> Result<Option<f64>> {
    match cfg.raw.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x)),
            _ => Err(RuntimeError::config(
                &cfg.path,
                field,
                format!("{v} must be a positive number"),
            )),
        },
    }
}
