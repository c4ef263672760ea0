//! Training EAGLE-3 draft heads on CPU with candle's autograd.
//!
//! - [`vocab`]: the reduced draft vocabulary (`d2t`/`t2d`) chosen from token frequencies;
//! - [`features`]: the target's residual streams and soft labels for a training sample;
//! - [`draft`]: the head as trainable candle variables and its training-time-test forward;
//! - [`adamw`]: the optimiser, with state that a checkpoint can save;
//! - [`train`]: the loop (deterministic, resumable, bounded in time) and held-out acceptance;
//! - [`export`]: the head in the `LlamaForCausalLMEagle3` layout vLLM and SGLang load, which
//!   `temper_runtime::speculative` runs.

pub mod adamw;
pub mod draft;
pub mod error;
pub mod export;
pub mod features;
pub mod regenerate;
pub mod train;
pub mod vocab;

pub use error::{EagleError, Result};
