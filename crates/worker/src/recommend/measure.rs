//! A `Default` job's measurement of this host: the runtime's decode steps of 1, 4 and 16
//! sequences, the host's memory bandwidth and its compute (from a prefill), fitted to the
//! roofline of `temper-recommend`; and the model's cost as the serving engines would store
//! it on the instances projected to.

use std::path::Path;
use std::time::Instant;
use temper_recommend::host::{bandwidth, median};
use temper_recommend::{Compute, Device, Fit, Heads, HostMeasurement, ModelCost};
use temper_runtime::{KvCache, LoadOptions, Logits, Model};

/// Positions each measured sequence holds when its decode step is timed.
pub const CONTEXT: usize = 64;
/// Prompt tokens of the prefill that measures the host's compute.
const PREFILL: usize = 128;
/// Sequences of the measured decode steps.
const BATCHES: [usize; 3] = [1, 4, 16];

/// What was measured here, and the model as it would be served elsewhere.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measured {
    pub host: HostMeasurement,
    pub fit: Fit,
    /// The model as engines on the instances store it (16-bit KV cache).
    pub cost: ModelCost,
    pub heads: Heads,
    pub compute: Compute,
}

/// This host's memory, from `/proc/meminfo` (24 GiB when it cannot be read).
pub fn host_memory() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb * 1024.0)
        .unwrap_or(24.0 * (1u64 << 30) as f64)
}

/// How the artifact's products run and how many bytes a weight takes, from its
/// `quantization_config` (compressed-tensors): FP8 and INT8 W8A8 run in 8 bits where the
/// instance can, everything else in 16; INT4 weights take half a byte, INT8/FP8 one, dense
/// 16-bit two.
pub fn scheme_of(config: &serde_json::Value) -> (Compute, f64) {
    let Some(q) = config.get("quantization_config") else {
        return (Compute::Sixteen, 2.0);
    };
    let bits = q
        .get("config_groups")
        .and_then(|g| g.as_object())
        .and_then(|g| g.values().next())
        .and_then(|g| g.pointer("/weights/num_bits"))
        .and_then(|b| b.as_f64())
        .unwrap_or(8.0);
    let compute = match q.get("format").and_then(|f| f.as_str()) {
        Some("float-quantized") => Compute::Fp8,
        Some("int-quantized") => Compute::Int8,
        _ => Compute::Sixteen,
    };
    (compute, bits / 8.0)
}

fn random_tokens(n: usize, vocab: usize) -> Vec<u32> {
    // Timing does not depend on which tokens run; spread them over the vocabulary.
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

fn step_seconds(model: &Model, caches: &mut [KvCache], next: u32) -> temper_runtime::Result<f64> {
    let tokens = vec![next; caches.len()];
    let mut runs = Vec::new();
    for _ in 0..9 {
        let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
        let t = Instant::now();
        if refs.len() == 1 {
            model.forward(&tokens, refs[0], Logits::Last)?;
        } else {
            model.forward_rows(&tokens, &mut refs)?;
        }
        runs.push(t.elapsed().as_secs_f64());
        caches.iter_mut().for_each(|c| c.truncate(CONTEXT));
    }
    Ok(median(runs))
}

/// Measures the model in `dir` on this host. An artifact split for tensor parallelism is
/// refused: the recommendation chooses the degree per instance, from the unsplit model.
pub fn measure(dir: &Path) -> Result<Measured, String> {
    if temper_runtime::tp::is_sharded(dir) {
        return Err(format!(
            "{} is split for tensor parallelism; a Default recommendation measures the unsplit \
             model and chooses the degree per instance: name the optimization job before \
             sharding (or one without OPTION_TENSOR_PARALLEL_DEGREE)",
            dir.display()
        ));
    }
    let config: serde_json::Value = std::fs::read(dir.join("config.json"))
        .map_err(|e| format!("reading {}/config.json: {e}", dir.display()))
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| format!("{}/config.json: {e}", dir.display()))
        })?;
    let model = Model::load(dir, &LoadOptions::default())
        .map_err(|e| format!("loading the model {}: {e}", dir.display()))?;
    let p = model.params().clone();
    let err = |e: temper_runtime::RuntimeError| format!("running the model: {e}");
    let prompt = random_tokens(PREFILL + 1, p.vocab_size);
    let macs = model.weights_per_token() as f64;
    let kv_position = (2 * p.num_layers * p.num_kv_heads * p.head_dim) as f64;
    // The host's own cost: its weights as the runtime holds them, its f32 KV cache.
    let host_cost = ModelCost {
        weight_bytes: model.weight_bytes_per_token() as f64,
        macs_per_token: macs,
        kv_bytes_per_position: kv_position * 4.0,
    };
    let mut cache = model.new_cache(PREFILL + 1).map_err(err)?;
    let mut prefills = Vec::new();
    for _ in 0..3 {
        cache.clear();
        let t = Instant::now();
        model
            .forward(&prompt[..PREFILL], &mut cache, Logits::Last)
            .map_err(err)?;
        prefills.push(t.elapsed().as_secs_f64());
    }
    let host = Device {
        // 512 MiB: far beyond any cache.
        bandwidth: bandwidth(1 << 29),
        macs_per_second: PREFILL as f64 * macs / median(prefills),
        memory: host_memory(),
    };
    let mut steps = Vec::new();
    for b in BATCHES {
        let mut caches = Vec::with_capacity(b);
        for _ in 0..b {
            let mut c = model.new_cache(CONTEXT + 1).map_err(err)?;
            model
                .forward(&prompt[..CONTEXT], &mut c, Logits::Last)
                .map_err(err)?;
            caches.push(c);
        }
        steps.push((
            b,
            step_seconds(&model, &mut caches, prompt[CONTEXT]).map_err(err)?,
        ));
    }
    let host = HostMeasurement {
        host,
        steps,
        context: CONTEXT as f64,
    };
    let fit = Fit::new(&host_cost, &host).map_err(|e| e.to_string())?;
    let (compute, bytes_per_weight) = scheme_of(&config);
    Ok(Measured {
        host,
        fit,
        cost: ModelCost {
            weight_bytes: macs * bytes_per_weight,
            macs_per_token: macs,
            kv_bytes_per_position: kv_position * 2.0,
        },
        heads: Heads {
            attention: p.num_heads as u32,
            key_value: p.num_kv_heads as u32,
        },
        compute,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemes_are_read_from_the_quantization_config() {
        assert_eq!(scheme_of(&json!({})), (Compute::Sixteen, 2.0));
        let group = |bits: u32, format: &str| {
            json!({"quantization_config": {"format": format,
                "config_groups": {"group_0": {"weights": {"num_bits": bits}}}}})
        };
        assert_eq!(scheme_of(&group(8, "float-quantized")), (Compute::Fp8, 1.0));
        assert_eq!(scheme_of(&group(8, "int-quantized")), (Compute::Int8, 1.0));
        assert_eq!(
            scheme_of(&group(4, "pack-quantized")),
            (Compute::Sixteen, 0.5)
        );
    }
}
