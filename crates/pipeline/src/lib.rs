//! temper-pipeline: turning a [`temper_core::spec::JobSpec`] into an artifact.
//!
//! - [`passes`]: the passes a job chains (quantize, shard), each planned before any runs;
//!   their options are parsed once by temper-options;
//! - [`samples`]: sample text windows, static FP8 calibration and the quality evaluation;
//! - [`artifact`]: config, serving.properties, side files, digests;
//! - [`job`]: the whole job, staged and renamed into place.

pub mod artifact;
mod error;
pub mod job;
pub mod passes;
pub mod progress;
pub mod samples;

pub use error::{Error, Result};
pub use job::{plan_job, run_job, JobOutcome, JobPlan};
