//! How well the roofline projection (`temper-recommend`) predicts this host: fit it to the
//! decode step of one sequence, then compare what it predicts for 4 and 16 sequences with
//! what they take (SmolLM2-135M INT8, 64 positions of context). BENCHMARKS.md "Serving".
//!
//! The host's roofline: memory bandwidth from summing a 1 GiB buffer on every core, and
//! compute from a 128-token prefill (compute-bound), in multiply-adds per second.
//!
//!     cargo run --release -p temper-benches --bin projection_check

use std::time::Instant;
use temper_benches::{artifact, smollm2, tokens};
use temper_recommend::host::{bandwidth, median};
use temper_recommend::{Device, Fit, HostMeasurement, ModelCost};
use temper_runtime::{KvCache, LoadOptions, Logits, Model};

const CONTEXT: usize = 64;

fn step_seconds(model: &Model, caches: &mut [KvCache], next: u32) -> f64 {
    let tokens = vec![next; caches.len()];
    let runs: Vec<f64> = (0..15)
        .map(|_| {
            let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
            let t = Instant::now();
            if refs.len() == 1 {
                model.forward(&tokens, refs[0], Logits::Last).expect("step");
            } else {
                model.forward_rows(&tokens, &mut refs).expect("step");
            }
            let s = t.elapsed().as_secs_f64();
            caches.iter_mut().for_each(|c| c.truncate(CONTEXT));
            s
        })
        .collect();
    median(runs)
}

fn main() {
    let source = smollm2();
    let int8 = artifact(&source, "int8-w8a16", &[("OPTION_QUANTIZE", "int8")]);
    let model = Model::load(&int8, &LoadOptions::default()).expect("model");
    let p = model.params();
    let prompt = tokens(&source, 129);
    let weight_bytes = model.weight_bytes_per_token() as f64;
    // INT8 codes: one byte per weight, so as many multiply-adds per token as weight bytes
    // (less the f32 scales, negligible).
    let cost = ModelCost {
        weight_bytes,
        macs_per_token: weight_bytes,
        kv_bytes_per_position: (2 * p.num_layers * p.num_kv_heads * p.head_dim * 4) as f64,
    };
    let mut cache = model.new_cache(129).expect("cache");
    let prefill = median(
        (0..5)
            .map(|_| {
                cache.clear();
                let t = Instant::now();
                model
                    .forward(&prompt[..128], &mut cache, Logits::Last)
                    .expect("prefill");
                t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    let host = Device {
        bandwidth: bandwidth(1 << 30),
        macs_per_second: 128.0 * cost.macs_per_token / prefill,
        memory: 24e9,
    };
    let mut measured = Vec::new();
    for b in [1usize, 4, 16] {
        let mut caches: Vec<KvCache> = (0..b)
            .map(|_| {
                let mut c = model.new_cache(CONTEXT + 1).expect("cache");
                model
                    .forward(&prompt[..CONTEXT], &mut c, Logits::Last)
                    .expect("prefill");
                c
            })
            .collect();
        measured.push((b, step_seconds(&model, &mut caches, prompt[CONTEXT])));
    }
    let fit = Fit::new(
        &cost,
        &HostMeasurement {
            host,
            steps: measured[..1].to_vec(),
            context: CONTEXT as f64,
        },
    )
    .expect("fit");
    println!(
        "host: {:.1} GB/s read, {:.1} G multiply-adds/s (128-token prefill in {:.1} ms); \
         weights {:.0} MB per step",
        host.bandwidth / 1e9,
        host.macs_per_second / 1e9,
        prefill * 1e3,
        weight_bytes / 1e6
    );
    println!(
        "fitted on 1 sequence: efficiency {:.2} of the roofline",
        fit.efficiency
    );
    println!("| sequences | measured step | projected step | projected / measured |");
    println!("|---|---|---|---|");
    for &(b, seconds) in &measured {
        let work = temper_recommend::Workload {
            prompt_tokens: CONTEXT as f64,
            output_tokens: 0.0,
        };
        let projected = temper_recommend::project(&cost, &fit, &host, 1, b, &work)
            .expect("fits")
            .step_seconds;
        println!(
            "| {b} | {:.2} ms | {:.2} ms | {:.2} |",
            seconds * 1e3,
            projected * 1e3,
            projected / seconds
        );
    }
}
