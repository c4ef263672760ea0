//! temper-format: the artifact formats temper writes and reads, in one place, so the
//! writer (the passes) and the reader (the runtime) cannot drift apart.
//!
//! - [`scheme`]: the compressed-tensors schemes temper writes, the tensors each writes per
//!   Linear, and the `quantization_config` that describes them;
//! - [`quant_config`]: reading a `quantization_config` back into per-Linear formats (ours,
//!   and the other configs the runtime runs);
//! - [`pack`]: compressed-tensors' 8-bit `pack-quantized` word layout;
//! - [`sharded`]: vLLM's pre-sharded tensor-parallel layout (`load_format=sharded_state`).

mod error;
pub mod pack;
pub mod quant_config;
pub mod scheme;
pub mod sharded;

pub use error::{FormatError, Result};
pub use scheme::Scheme;
