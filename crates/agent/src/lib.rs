//! temper-agent: runs jobs as worker processes, for the server's own supervisor and for
//! worker agents that claim jobs from a shared PostgreSQL (`temper-worker --join`). It
//! does not link the model runtime: the worker process does.
//!
//! - [`launch`]: starting one job's worker in its job directory;
//! - [`ending`]: how a job ends, from what its worker left (one rule for both runners);
//! - [`capacity`]: the instance types an agent runs (given, or from its GPUs);
//! - [`agent`]: the agent's loop: claim, lease, report, settle.

pub mod agent;
pub mod capacity;
pub mod ending;
pub mod launch;
