//! temper-options: a job's typed options and its target.
//!
//! - [`job`]: the ordered passes of a job with their typed options, and job-wide settings,
//!   parsed once from the LMI `OPTION_*` maps of a [`temper_core::spec::JobSpec`]; the CLI
//!   maps its flags onto the same names, so there is one parser and one set of defaults for
//!   the CLI, the job API (at Create) and the worker;
//! - [`quantize`], [`shard`]: each pass's options;
//! - [`target`]: the deployment target every pass asks (degree, FP8, memory fit).

pub mod compile;
mod env;
mod error;
pub mod job;
pub mod quantize;
pub mod shard;
pub mod speculative;
pub mod target;

pub use compile::CompileOptions;
pub use error::{Error, Result};
pub use job::{CommonOptions, JobOptions, PassOptions, SampleOptions};
pub use quantize::QuantizeOptions;
pub use shard::ShardOptions;
pub use speculative::SpeculativeOptions;
pub use target::{ModelShape, Target};
