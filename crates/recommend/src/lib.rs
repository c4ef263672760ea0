//! Projecting a model's serving performance onto instances temper cannot run here.
//!
//! The model is a roofline: one decode step of `b` sequences on `t` tensor-parallel devices
//! takes the longer of reading each device's share of the weights (and of the sequences' KV
//! caches) at the device's memory bandwidth, and doing its share of the multiply-adds at the
//! device's peak; a prefill of `p` prompt tokens is the same with `p` rows. The model is
//! *fitted to what was measured here*: the host's own roofline predicts the decode steps
//! temper-serve measured on it, and the ratio (the fraction of its roofline the runtime
//! reaches, [`Fit::efficiency`]) is applied to the instance's roofline. Every figure this
//! crate returns is a projection and is labelled so by the caller; none is a measurement.
//!
//! What the model leaves out, on purpose and stated: communication between tensor-parallel
//! ranks (an all-reduce per layer; small next to the weights for decode on NVLink, not on
//! PCIe g5/g6 instances, so multi-GPU figures there are optimistic), kernel launch and
//! scheduler overheads beyond what the fitted efficiency absorbs, and attention's
//! quadratic term in long prompts.

pub mod host;
pub mod instances;
pub mod projection;

pub use instances::{recommend, Compute, Heads, InstanceRecommendation, LatencyLimit, Unsuitable};

pub use projection::{
    project, Device, Fit, FitError, HostMeasurement, ModelCost, Projection, Workload,
};
