//! temper-jobdir: what temper-server and temper-worker share without the server linking
//! the worker (and with it the model runtime):
//!
//! - [`files`]: the files of a job's directory through which they talk (the planned job
//!   spec the worker runs, its log, progress, pid and result);
//! - [`access`]: which local paths a job may touch (the server's roots), checked by the
//!   server at Create and again by the worker before it starts;
//! - [`recommendation`]: what an inference-recommendations job's worker runs and reports.

pub mod access;
pub mod files;
pub mod recommendation;
