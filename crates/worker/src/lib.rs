//! temper-worker: what a `temper-worker` process does for one job of the job API. The
//! server (which never links this crate, nor the model runtime behind it) starts one per
//! job with the job's directory; the two talk through the files of `temper_jobdir::files`.
//!
//! - [`run`]: read the planned job spec, fetch the model, run the passes, upload, report;
//! - [`objects`]: S3 transfers through `object_store`;
//! - `recommend`: an inference-recommendations job (projected `Default`, load-tested
//!   `Advanced`).

pub mod objects;
mod recommend;
pub mod run;

pub use run::{run, WorkerArgs};
