//! temper-pipeline: turning a [`temper_core::spec::JobSpec`] into an artifact.
//!
//! - [`options`]: LMI `OPTION_*` variables parsed once into typed options;
//! - [`plan`]: every check that can run before heavy work;
//! - [`quantize_tensor`] / [`quantize_pass`]: the streaming quantizer;
//! - [`samples`]: sample text windows, static FP8 calibration and the quality evaluation;
//! - [`artifact`]: config, serving.properties, side files, digests;
//! - [`job`]: the whole job, staged and renamed into place.

pub mod artifact;
mod error;
pub mod job;
pub mod options;
pub mod plan;
pub mod progress;
pub mod quantize_pass;
pub mod quantize_tensor;
pub mod samples;

pub use error::{Error, Result};
pub use job::{plan_job, run_job, JobOutcome};
