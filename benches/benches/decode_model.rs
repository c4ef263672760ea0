//! End-to-end generation speed on SmolLM2-135M-Instruct: one decode step (one new token after a
//! 32- or 256-token context, logits of the last position) and a 128-token prefill, in tokens/s
//! (criterion's "elem/s"), for the runtime on every format and for candle-transformers' `llama`
//! in f32 on the same prompt tokens as the baseline.
//!
//! - `temper/f32`: the bf16 checkpoint widened to f32 at load (the same arithmetic as candle's
//!   f32 model); `temper/bf16`: the checkpoint as stored; `temper/int8_w8a16`,
//!   `temper/int8_w8a8`, `temper/fp8_dynamic`: artifacts this bench writes with the job pipeline
//!   into `.cache/bench-artifacts` the first time (evaluation off).
//! - Every decode step overwrites the same cache position, so the context stays the same.
//!
//! Needs the imported model (`scripts/quickstart.sh` or `scripts/test.sh`).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama as reference;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;
use temper_benches::{artifact, tokens};
use temper_kernels::Isa;
use temper_runtime::{LoadOptions, Logits, Model};

const CONTEXTS: [usize; 2] = [32, 256];
const PREFILL: usize = 128;

/// What one benchmark iteration runs.
#[derive(Clone, Copy)]
enum Work {
    /// One token after `context` cached ones.
    Decode { context: usize },
    /// `PREFILL` tokens into an empty cache.
    Prefill,
}

type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

fn temper(
    g: &mut Group<'_>,
    name: &str,
    dir: &Path,
    opts: LoadOptions,
    prompt: &[u32],
    work: Work,
) {
    let model =
        Model::load(dir, &opts).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
    let mut cache = model.new_cache(prompt.len()).expect("cache");
    match work {
        Work::Decode { context } => {
            model
                .forward(&prompt[..context], &mut cache, Logits::Last)
                .expect("prefill");
            let next = &prompt[context..context + 1];
            g.bench_function(name, |b| {
                b.iter(|| {
                    let logits = model
                        .forward(black_box(next), &mut cache, Logits::Last)
                        .expect("step");
                    cache.truncate(context);
                    logits
                })
            });
        }
        Work::Prefill => {
            g.bench_function(name, |b| {
                b.iter(|| {
                    cache.clear();
                    model
                        .forward(black_box(&prompt[..PREFILL]), &mut cache, Logits::Last)
                        .expect("prefill")
                })
            });
        }
    }
}

fn candle(g: &mut Group<'_>, dir: &Path, prompt: &[u32], work: Work) {
    let device = Device::Cpu;
    let config: reference::LlamaConfig =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config"))
            .expect("config.json");
    let config = config.into_config(false);
    let weights =
        candle_core::safetensors::load(dir.join("model.safetensors"), &device).expect("weights");
    let vb = VarBuilder::from_tensors(weights, DType::F32, &device);
    let model = reference::Llama::load(vb, &config).expect("candle llama");
    let fresh = || reference::Cache::new(true, DType::F32, &config, &device).expect("cache");
    let ids = |t: &[u32]| {
        Tensor::new(t, &device)
            .and_then(|t| t.unsqueeze(0))
            .expect("ids")
    };
    match work {
        Work::Decode { context } => {
            let mut warm = fresh();
            model
                .forward(&ids(&prompt[..context]), 0, &mut warm)
                .expect("prefill");
            let next = ids(&prompt[context..context + 1]);
            g.bench_function("candle_transformers_llama/f32", |b| {
                b.iter(|| {
                    // A clone shares the cached tensors; the step appends to the clone only.
                    let mut cache = warm.clone();
                    model
                        .forward(black_box(&next), context, &mut cache)
                        .expect("step")
                })
            });
        }
        Work::Prefill => {
            let x = ids(&prompt[..PREFILL]);
            g.bench_function("candle_transformers_llama/f32", |b| {
                b.iter(|| {
                    let mut cache = fresh();
                    model
                        .forward(black_box(&x), 0, &mut cache)
                        .expect("prefill")
                })
            });
        }
    }
}

fn bench(c: &mut Criterion) {
    let source = temper_benches::smollm2();
    let int8 = artifact(&source, "int8-w8a16", &[("OPTION_QUANTIZE", "int8")]);
    let w8a8 = artifact(
        &source,
        "int8-w8a8",
        &[("OPTION_QUANTIZE", "int8"), ("OPTION_INT8_SCHEME", "W8A8")],
    );
    let fp8 = artifact(&source, "fp8-dynamic", &[("OPTION_QUANTIZE", "fp8")]);
    let longest = CONTEXTS.iter().copied().max().unwrap_or(0).max(PREFILL);
    let prompt = tokens(&source, longest + 1);
    eprintln!(
        "decode_model: ISA {}, rayon threads {}",
        Isa::detect().name(),
        rayon::current_num_threads()
    );
    let f32_opts = LoadOptions {
        dequantize: true,
        ..Default::default()
    };
    let mut runs: Vec<(String, Work, usize)> = CONTEXTS
        .iter()
        .map(|&context| {
            let name = format!("smollm2_decode_step_ctx{context}");
            (name, Work::Decode { context }, 1)
        })
        .collect();
    runs.push((format!("smollm2_prefill_{PREFILL}"), Work::Prefill, PREFILL));
    let quantized = [
        ("temper/int8_w8a16", &int8),
        ("temper/int8_w8a8", &w8a8),
        ("temper/fp8_dynamic", &fp8),
    ];
    for (group, work, tokens) in runs {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(tokens as u64));
        candle(&mut g, &source, &prompt, work);
        temper(
            &mut g,
            "temper/f32",
            &source,
            f32_opts.clone(),
            &prompt,
            work,
        );
        let plain = LoadOptions::default();
        temper(&mut g, "temper/bf16", &source, plain.clone(), &prompt, work);
        for (name, dir) in quantized {
            temper(&mut g, name, dir, plain.clone(), &prompt, work);
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
