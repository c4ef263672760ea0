//! temper-core: the plain data types every other crate meets through.
//!
//! - [`checkpoint`]: memory-mapped Hugging Face checkpoints (single file or sharded).
//! - [`config`]: the `config.json` of Llama-family models.
//! - [`select`]: which tensors are Linear weights of decoder layers (by name and shape).
//! - [`spec`]: the job specification shared by the CLI, the worker and the job API.
//! - [`staging`]: write an artifact into a staging directory, then rename it into place.
//! - [`writer`]: stream tensors into size-limited safetensors shards with an index.
//! - [`manifest`]: the `manifest.json` every artifact carries.

pub mod checkpoint;
pub mod config;
pub mod dtype;
mod error;
pub use error::IoContext;
pub mod hash;
pub mod manifest;
pub mod select;
pub mod spec;
pub mod staging;
pub mod writer;

pub use error::{Error, Result};

/// The version written into manifests and reports.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");
