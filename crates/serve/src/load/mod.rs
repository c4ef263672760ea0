//! A load generator for model servers: SageMaker Inference Recommender's traffic patterns
//! (`PHASES`, `STAIRS`: closed-loop users, each sending its next request when the previous one
//! is answered) and a fixed-concurrency mode for benchmarks, with the stopping conditions of a
//! recommendation job (`MaxInvocations`, latency thresholds, flattened invocations).
//!
//! Every request's start, latency and status is recorded, and the offered load actually
//! delivered (user-seconds) is compared with what the pattern asks for, so a report says how
//! faithfully the pattern was played.

pub mod pattern;
pub mod report;
pub mod run;

pub use pattern::{Pattern, PatternError, Phase, Stairs};
pub use report::{LoadReport, Percentiles, Window};
pub use run::{run, Payload, StopConditions, StopReason};
