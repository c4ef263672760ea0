//! The roofline projection ([`project`]) and its fit to a host measurement ([`Fit`]).

use serde::Serialize;

/// What one token of the model costs, from the artifact as stored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ModelCost {
    /// Weight bytes one decode step reads (every Linear and the LM head).
    pub weight_bytes: f64,
    /// Multiply-adds per token (about the number of weights).
    pub macs_per_token: f64,
    /// KV-cache bytes per position of one sequence, all layers, keys and values, as the
    /// serving engine stores them.
    pub kv_bytes_per_position: f64,
}

/// A device's roofline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Device {
    /// Memory bandwidth, bytes per second.
    pub bandwidth: f64,
    /// Dense multiply-adds per second at the precision the model's products run in.
    pub macs_per_second: f64,
    /// Memory per device, bytes.
    pub memory: f64,
}

/// A request's shape.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Workload {
    pub prompt_tokens: f64,
    pub output_tokens: f64,
}

/// Decode steps measured on this host: `(sequences, seconds per step)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostMeasurement {
    pub host: Device,
    pub steps: Vec<(usize, f64)>,
    /// The context each measured sequence had (positions in its KV cache).
    pub context: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("no decode steps were measured, so there is nothing to fit the projection to")]
    NoMeasurement,
    #[error("the host's roofline ({bandwidth} bytes/s, {macs} multiply-adds/s) must be positive")]
    BadHost { bandwidth: f64, macs: f64 },
    #[error("measured step {index} ({sequences} sequences, {seconds} s) is not a positive time")]
    BadStep {
        index: usize,
        sequences: usize,
        seconds: f64,
    },
}

/// The fraction of its roofline the runtime reached on this host.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fit {
    /// Median over the measured steps of (roofline time / measured time), at most 1.
    pub efficiency: f64,
}

/// Seconds for one step of `rows` token rows of `sequences` sequences with `context`
/// positions each, on `ranks` devices, at the roofline.
fn roofline_step(
    model: &ModelCost,
    device: &Device,
    ranks: f64,
    rows: f64,
    sequences: f64,
    context: f64,
) -> f64 {
    let bytes = (model.weight_bytes + sequences * context * model.kv_bytes_per_position) / ranks;
    let macs = rows * model.macs_per_token / ranks;
    (bytes / device.bandwidth).max(macs / device.macs_per_second)
}

impl Fit {
    /// Fits the efficiency to `measured` decode steps of `model`.
    pub fn new(model: &ModelCost, measured: &HostMeasurement) -> Result<Fit, FitError> {
        if measured.steps.is_empty() {
            return Err(FitError::NoMeasurement);
        }
        let host = &measured.host;
        if !(host.bandwidth > 0.0 && host.macs_per_second > 0.0) {
            return Err(FitError::BadHost {
                bandwidth: host.bandwidth,
                macs: host.macs_per_second,
            });
        }
        let mut ratios = Vec::with_capacity(measured.steps.len());
        for (index, &(sequences, seconds)) in measured.steps.iter().enumerate() {
            if !(seconds > 0.0 && seconds.is_finite()) || sequences == 0 {
                return Err(FitError::BadStep {
                    index,
                    sequences,
                    seconds,
                });
            }
            let b = sequences as f64;
            let ideal = roofline_step(model, &measured.host, 1.0, b, b, measured.context);
            ratios.push((ideal / seconds).min(1.0));
        }
        ratios.sort_by(f64::total_cmp);
        let mid = ratios.len() / 2;
        let efficiency = if ratios.len() % 2 == 1 {
            ratios[mid]
        } else {
            (ratios[mid - 1] + ratios[mid]) / 2.0
        };
        Ok(Fit { efficiency })
    }
}

/// What an instance is projected to do with a given batch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Projection {
    /// Concurrent sequences (the continuous batch) the projection is for.
    pub batch: usize,
    /// Seconds per decode step of the whole batch.
    pub step_seconds: f64,
    /// Seconds to prefill one prompt alone.
    pub prefill_seconds: f64,
    /// One request from arrival to its last token with the batch full.
    pub latency_seconds: f64,
    /// Requests completed per minute with the batch full.
    pub invocations_per_minute: f64,
    /// Bytes used per device: the weights' share plus the batch's KV caches.
    pub memory_per_device: f64,
}

/// Projects `batch` concurrent requests of `work` on `ranks` devices of `device`, or `None`
/// when the weights and that many KV caches do not fit the devices' memory (90% of it: the
/// engines' default utilisation).
pub fn project(
    model: &ModelCost,
    fit: &Fit,
    device: &Device,
    ranks: u32,
    batch: usize,
    work: &Workload,
) -> Option<Projection> {
    let t = f64::from(ranks.max(1));
    let b = batch.max(1) as f64;
    let context = work.prompt_tokens + work.output_tokens;
    let memory_per_device = (model.weight_bytes + b * context * model.kv_bytes_per_position) / t;
    if memory_per_device > 0.9 * device.memory {
        return None;
    }
    // Sequences are, on average, half way through their output.
    let mean_context = work.prompt_tokens + work.output_tokens / 2.0;
    let step_seconds = roofline_step(model, device, t, b, b, mean_context) / fit.efficiency;
    let prefill_seconds = roofline_step(
        model,
        device,
        t,
        work.prompt_tokens,
        1.0,
        work.prompt_tokens,
    ) / fit.efficiency;
    // The first token comes with the prefill; each further one takes a decode step. In a
    // full batch each new request's prefill shares steps with the others' decodes: count it
    // once for the request, and spread the decode steps over the batch.
    let decode_steps = (work.output_tokens - 1.0).max(0.0);
    let latency_seconds = prefill_seconds + decode_steps * step_seconds;
    let per_request_busy = decode_steps * step_seconds / b + prefill_seconds;
    let invocations_per_minute = 60.0 / per_request_busy;
    Some(Projection {
        batch: batch.max(1),
        step_seconds,
        prefill_seconds,
        latency_seconds,
        invocations_per_minute,
        memory_per_device,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: f64 = 1e9;

    fn model() -> ModelCost {
        // A 7B model in INT8: 7 GB of weights, 7 G multiply-adds per token, 0.5 MB of KV per
        // position (32 layers x 2 x 4096 x 2 bytes).
        ModelCost {
            weight_bytes: 7.0 * GB,
            macs_per_token: 7.0 * GB,
            kv_bytes_per_position: 32.0 * 2.0 * 4096.0 * 2.0,
        }
    }

    fn gpu() -> Device {
        Device {
            bandwidth: 600.0 * GB,
            macs_per_second: 62.5e12,
            memory: 22.0 * (1u64 << 30) as f64,
        }
    }

    #[test]
    fn the_fit_is_the_median_fraction_of_the_host_roofline() {
        let host = Device {
            bandwidth: 20.0 * GB,
            macs_per_second: 100e9,
            memory: 24.0 * GB,
        };
        let m = model();
        // Decode at batch 1 is bandwidth-bound: 7 GB / 20 GB/s = 0.35 s (+ KV); measured at
        // twice that, the runtime reaches half its roofline.
        let ideal = roofline_step(&m, &host, 1.0, 1.0, 1.0, 64.0);
        let measured = HostMeasurement {
            host,
            steps: vec![(1, 2.0 * ideal), (1, 2.2 * ideal), (1, 1.8 * ideal)],
            context: 64.0,
        };
        let fit = Fit::new(&m, &measured).unwrap();
        assert!((fit.efficiency - 0.5).abs() < 1e-9, "{fit:?}");
        assert_eq!(
            Fit::new(
                &m,
                &HostMeasurement {
                    steps: vec![],
                    ..measured.clone()
                }
            ),
            Err(FitError::NoMeasurement)
        );
        let bad = HostMeasurement {
            steps: vec![(4, 0.0)],
            ..measured
        };
        assert!(matches!(Fit::new(&m, &bad), Err(FitError::BadStep { .. })));
    }

    #[test]
    fn batching_raises_throughput_until_compute_bound_and_memory_caps_the_batch() {
        let (m, d) = (model(), gpu());
        let fit = Fit { efficiency: 1.0 };
        let work = Workload {
            prompt_tokens: 512.0,
            output_tokens: 256.0,
        };
        let one = project(&m, &fit, &d, 1, 1, &work).unwrap();
        // Bandwidth-bound decode: 7 GB at 600 GB/s, about 11.7 ms a step.
        assert!((one.step_seconds - 7.0 / 600.0).abs() < 0.001, "{one:?}");
        let eight = project(&m, &fit, &d, 1, 8, &work).unwrap();
        assert!(eight.invocations_per_minute > 5.0 * one.invocations_per_minute);
        assert!(eight.latency_seconds > one.latency_seconds);
        // 22 GiB * 0.9 holds 7 GB of weights and about 25 sequences of 768 positions.
        assert!(project(&m, &fit, &d, 1, 24, &work).is_some());
        assert!(project(&m, &fit, &d, 1, 64, &work).is_none());
        // Four devices split the weights and the work.
        let four = project(&m, &fit, &d, 4, 8, &work).unwrap();
        assert!(four.step_seconds < eight.step_seconds / 3.0);
        assert!((four.memory_per_device - eight.memory_per_device / 4.0).abs() < 1.0);
        // A less efficient runtime is proportionally slower.
        let half = project(&m, &Fit { efficiency: 0.5 }, &d, 1, 8, &work).unwrap();
        assert!((half.step_seconds - 2.0 * eight.step_seconds).abs() < 1e-9);
    }

    #[test]
    fn prefill_is_compute_bound_for_long_prompts() {
        let (m, d) = (model(), gpu());
        let fit = Fit { efficiency: 1.0 };
        let work = Workload {
            prompt_tokens: 4096.0,
            output_tokens: 1.0,
        };
        let p = project(&m, &fit, &d, 1, 1, &work).unwrap();
        // 4096 x 7 G multiply-adds at 62.5 T/s: about 0.46 s, far above the 11.7 ms read.
        assert!(
            (p.prefill_seconds - 4096.0 * 7e9 / 62.5e12).abs() < 0.01,
            "{p:?}"
        );
    }
}
