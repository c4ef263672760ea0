//! The passes a job chains, each behind the small [`Pass`] trait: a pass reads the
//! checkpoint the previous one wrote (the source, for the first) and writes its own
//! checkpoint (weights and `config.json`) into a directory, returning its section of the
//! manifest. Passes never import each other; they meet only through checkpoints on disk.
//!
//! Every pass is planned, with all its cheap checks, before the first one runs
//! (`crate::job::plan_job`).

pub mod compile;
pub mod quantize;
pub mod shard;
pub mod speculative;

use crate::progress::{Cancel, Sink};
use crate::Result;
use std::path::Path;
use temper_core::manifest::PassRecord;
use temper_cuda::Device;

/// What a running pass may use.
pub struct PassContext<'a> {
    /// Where the arithmetic runs, chosen once by the binary.
    pub device: &'a Device,
    pub sink: Sink<'a>,
    pub cancel: &'a Cancel,
}

/// What a pass wrote.
pub struct PassOutput {
    /// Files written into the output directory (weights, index, config.json).
    pub files: Vec<String>,
    /// The pass's section of `manifest.json`.
    pub record: PassRecord,
    /// The summary a person reads (`optimize` prints it, the job API returns it).
    pub summary: serde_json::Value,
}

/// One step of a job.
pub trait Pass {
    fn name(&self) -> &'static str;
    /// Reads the checkpoint in `input` and writes this pass's checkpoint into `out` (an
    /// existing, empty directory).
    fn run(&mut self, input: &Path, out: &Path, ctx: &mut PassContext) -> Result<PassOutput>;
}
