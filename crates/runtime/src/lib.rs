//! The model runtime: a Llama-family forward pass (Llama, Mistral, Qwen2) on candle whose
//! Linear layers run temper's own kernels on weights kept in their stored format (f32, f16,
//! bf16, INT8, FP8), with a KV cache, generation and evaluation.
//!
//! It loads original Hugging Face directories and compressed-tensors artifacts directly; see
//! [`quant_config`] for the quantization configs it runs and refuses.

pub(crate) mod attention;
pub mod cache;
pub mod error;
pub mod eval;
pub mod generate;
pub mod layer;
pub mod layerwise;
pub mod linear;
pub mod load;
pub mod model;
pub mod params;
pub mod pool;
pub use temper_format::quant_config;
pub mod rope;
pub mod speculative;
pub mod tp;

pub use cache::KvCache;
pub use error::{Result, RuntimeError};
pub use model::{Forward, Head, LayerSource, LoadOptions, Logits, Model, NewTokens};
pub use params::ModelParams;
