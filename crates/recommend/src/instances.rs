//! Default recommendations: for each candidate instance, the configuration temper would
//! deploy (tensor-parallel degree, the precision the products run in, batch size) and what
//! the roofline projects it to do, fitted to this host ([`crate::Fit`]).

use crate::projection::{project, Device, Fit, ModelCost, Projection, Workload};
use serde::Serialize;
use temper_catalog::roofline::Precision;
use temper_catalog::Instance;

/// How the artifact's products run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Compute {
    /// Weights of any format with 16-bit activations (original models and weight-only
    /// quantization: INT8/INT4 W*A16).
    Sixteen,
    /// FP8 weights and activations: native on FP8 GPUs, weight-only (16-bit products)
    /// elsewhere, as engines run FP8 checkpoints there.
    Fp8,
    /// INT8 weights and activations (W8A8).
    Int8,
}

/// The model's shape, for the tensor-parallel degrees it can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Heads {
    pub attention: u32,
    pub key_value: u32,
}

/// One candidate instance's recommendation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceRecommendation {
    pub instance: &'static str,
    pub tensor_parallel_degree: u32,
    pub precision: Precision,
    /// The continuous batch (LMI's `OPTION_MAX_ROLLING_BATCH_SIZE`).
    pub batch: usize,
    pub projection: Projection,
    /// Share of the devices' memory the weights and KV caches take, percent.
    pub memory_utilization: f64,
}

/// Why an instance gets no recommendation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unsuitable {
    #[error(
        "{0}: its accelerator's bandwidth and peaks are not verified, so nothing is projected"
    )]
    NoFigures(&'static str),
    #[error("{instance}: no verified {precision:?} peak for its accelerator")]
    NoPeak {
        instance: &'static str,
        precision: Precision,
    },
    #[error(
        "{instance}: the model does not fit: {weights_gib:.1} GiB of weights over at most \
         {devices} devices of {memory_gib:.1} GiB (with a sequence's KV cache and 10% headroom)"
    )]
    DoesNotFit {
        instance: &'static str,
        weights_gib: f64,
        devices: u32,
        memory_gib: f64,
    },
    #[error(
        "{instance}: even one request takes {latency_ms:.0} ms, over the {limit_ms:.0} ms limit"
    )]
    TooSlow {
        instance: &'static str,
        latency_ms: f64,
        limit_ms: f64,
    },
}

/// How slow a request may get in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum LatencyLimit {
    /// As slow as the most throughput makes it.
    None,
    /// At most this many seconds from arrival to last token.
    Seconds(f64),
    /// At most this many times the latency of a request served alone.
    TimesAlone(f64),
}

/// Batch sizes tried, largest last.
const BATCHES: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// The recommendation for `instance`: the smallest tensor-parallel degree (dividing the
/// heads and the device count) at which the model fits, and the batch with the most
/// invocations per minute whose latency stays within `latency_limit`.
pub fn recommend(
    instance: &'static Instance,
    model: &ModelCost,
    heads: Heads,
    compute: Compute,
    fit: &Fit,
    work: &Workload,
    latency_limit: LatencyLimit,
) -> Result<InstanceRecommendation, Unsuitable> {
    let roofline = instance
        .roofline()
        .ok_or(Unsuitable::NoFigures(instance.name))?;
    let precision = match compute {
        Compute::Sixteen => Precision::Bf16,
        Compute::Fp8 if instance.accelerator.native_fp8() => Precision::Fp8,
        Compute::Fp8 => Precision::Bf16,
        Compute::Int8 => Precision::Int8,
    };
    let macs = roofline
        .macs_per_second(precision)
        .ok_or(Unsuitable::NoPeak {
            instance: instance.name,
            precision,
        })?;
    let memory = instance
        .memory_per_rank_bytes()
        .ok_or(Unsuitable::NoFigures(instance.name))? as f64;
    // Neuron ranks are NeuronCores, each with half a chip's bandwidth and compute.
    let per_rank = if instance.accelerator.is_neuron() {
        f64::from(instance.devices) / f64::from(instance.neuron_cores.max(1))
    } else {
        1.0
    };
    let device = Device {
        bandwidth: roofline.bandwidth * per_rank,
        macs_per_second: macs * per_rank,
        memory,
    };
    let ranks_available = instance.default_tensor_parallel_degree().max(1);
    let degrees = (0..=ranks_available.ilog2())
        .map(|p| 1u32 << p)
        .filter(|&t| {
            heads.attention.is_multiple_of(t)
                && (heads.key_value.is_multiple_of(t) || t.is_multiple_of(heads.key_value))
        });
    for t in degrees {
        let fits: Vec<Projection> = BATCHES
            .iter()
            .filter_map(|&b| project(model, fit, &device, t, b, work))
            .collect();
        if fits.is_empty() {
            continue;
        }
        let limit = match latency_limit {
            LatencyLimit::None => None,
            LatencyLimit::Seconds(s) => Some(s),
            LatencyLimit::TimesAlone(k) => Some(k * fits[0].latency_seconds),
        };
        let within = |p: &&Projection| limit.is_none_or(|l| p.latency_seconds <= l);
        let Some(best) = fits.iter().filter(within).max_by(|a, b| {
            a.invocations_per_minute
                .total_cmp(&b.invocations_per_minute)
        }) else {
            return Err(Unsuitable::TooSlow {
                instance: instance.name,
                latency_ms: fits[0].latency_seconds * 1000.0,
                limit_ms: limit.unwrap_or(0.0) * 1000.0,
            });
        };
        return Ok(InstanceRecommendation {
            instance: instance.name,
            tensor_parallel_degree: t,
            precision,
            batch: best.batch,
            projection: *best,
            memory_utilization: 100.0 * best.memory_per_device / memory,
        });
    }
    Err(Unsuitable::DoesNotFit {
        instance: instance.name,
        weights_gib: model.weight_bytes / (1u64 << 30) as f64,
        devices: ranks_available,
        memory_gib: memory / (1u64 << 30) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama8b_int8() -> ModelCost {
        ModelCost {
            weight_bytes: 8.0e9,
            macs_per_token: 8.0e9,
            kv_bytes_per_position: 32.0 * 2.0 * 1024.0 * 2.0,
        }
    }

    const HEADS: Heads = Heads {
        attention: 32,
        key_value: 8,
    };

    fn work() -> Workload {
        Workload {
            prompt_tokens: 512.0,
            output_tokens: 256.0,
        }
    }

    fn rec(
        name: &str,
        compute: Compute,
        limit: LatencyLimit,
    ) -> Result<InstanceRecommendation, Unsuitable> {
        recommend(
            Instance::lookup(name).unwrap(),
            &llama8b_int8(),
            HEADS,
            compute,
            &Fit { efficiency: 0.7 },
            &work(),
            limit,
        )
    }

    #[test]
    fn bigger_instances_serve_more_and_fp8_runs_natively_only_where_it_can() {
        let g5 = rec("ml.g5.xlarge", Compute::Sixteen, LatencyLimit::None);
        // The A10G's tensor peak is unknown here: said, not guessed.
        assert!(matches!(g5, Err(Unsuitable::NoPeak { .. })), "{g5:?}");
        let l4 = rec("ml.g6.xlarge", Compute::Fp8, LatencyLimit::None).unwrap();
        assert_eq!(
            (l4.tensor_parallel_degree, l4.precision),
            (1, Precision::Fp8)
        );
        let l40s = rec("ml.g6e.xlarge", Compute::Fp8, LatencyLimit::None).unwrap();
        assert!(l40s.projection.invocations_per_minute > l4.projection.invocations_per_minute);
        let a100 = rec("ml.p4d.24xlarge", Compute::Fp8, LatencyLimit::None).unwrap();
        assert_eq!(a100.precision, Precision::Bf16);
        assert!(a100.memory_utilization <= 90.0 + 1e-9);
    }

    #[test]
    fn a_latency_limit_picks_a_smaller_batch_or_refuses() {
        let free = rec("ml.g6.xlarge", Compute::Int8, LatencyLimit::None).unwrap();
        let limited = rec(
            "ml.g6.xlarge",
            Compute::Int8,
            LatencyLimit::Seconds(free.projection.latency_seconds / 2.0),
        );
        match limited {
            Ok(r) => assert!(
                r.batch < free.batch
                    && r.projection.latency_seconds <= free.projection.latency_seconds / 2.0
            ),
            Err(e) => assert!(matches!(e, Unsuitable::TooSlow { .. }), "{e}"),
        }
        let impossible =
            rec("ml.g6.xlarge", Compute::Int8, LatencyLimit::Seconds(0.001)).unwrap_err();
        assert!(
            impossible.to_string().contains("over the 1 ms limit"),
            "{impossible}"
        );
        // Relative limits: as slow as alone keeps one request in flight; twice as slow
        // allows a batch whose requests take at most twice as long.
        let alone = rec("ml.g6.xlarge", Compute::Int8, LatencyLimit::TimesAlone(1.0)).unwrap();
        assert_eq!(alone.batch, 1);
        let twice = rec("ml.g6.xlarge", Compute::Int8, LatencyLimit::TimesAlone(2.0)).unwrap();
        assert!(twice.batch > 1 && twice.batch <= free.batch, "{twice:?}");
        assert!(twice.projection.latency_seconds <= 2.0 * alone.projection.latency_seconds + 1e-12);
    }

    #[test]
    fn a_model_too_big_for_one_device_is_split_or_refused() {
        let big = ModelCost {
            weight_bytes: 70.0e9,
            macs_per_token: 70.0e9,
            kv_bytes_per_position: 80.0 * 2.0 * 1024.0 * 2.0,
        };
        let r = |name| {
            recommend(
                Instance::lookup(name).unwrap(),
                &big,
                Heads {
                    attention: 64,
                    key_value: 8,
                },
                Compute::Int8,
                &Fit { efficiency: 0.7 },
                &work(),
                LatencyLimit::None,
            )
        };
        let p4d = r("ml.p4d.24xlarge").unwrap();
        assert!(p4d.tensor_parallel_degree >= 2, "{p4d:?}");
        let e = r("ml.g6.xlarge").unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
    }
}
