//! End-to-end generation speed on SmolLM2-135M-Instruct: one decode step (one new token after a
//! 32-token context, logits of the last position) and a 128-token prefill, in tokens/s
//! (criterion's "elem/s"), for the runtime on every format and for candle-transformers' `llama`
//! in f32 on the same prompt tokens as the baseline.
//!
//! - `temper/f32`: the bf16 checkpoint widened to f32 at load (the same arithmetic as candle's
//!   f32 model); `temper/bf16`: the checkpoint as stored; `temper/int8_w8a16`,
//!   `temper/int8_w8a8`, `temper/fp8_dynamic`: artifacts this bench writes with the job pipeline
//!   into `.cache/bench-artifacts` the first time (evaluation off).
//! - Every decode step overwrites the same cache position, so the context stays 32 tokens.
//!
//! Needs the imported model (`scripts/quickstart.sh` or `scripts/test.sh`).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama as reference;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;
use temper_core::spec::{JobSpec, Location, Optimization, Stopping, Technique};
use temper_kernels::Isa;
use temper_pipeline::progress::Cancel;
use temper_runtime::{LoadOptions, Logits, Model};

const CONTEXT: usize = 32;
const PREFILL: usize = 128;

/// Writes (once) the artifact of `env`'s quantization of `model` under `.cache/bench-artifacts`.
fn artifact(model: &Path, name: &str, env: &[(&str, &str)]) -> PathBuf {
    let out = temper_benches::workspace()
        .join(".cache/bench-artifacts")
        .join(name);
    if out.join("manifest.json").is_file() {
        return out;
    }
    let mut options: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    options.insert("OPTION_EVAL".into(), "false".into());
    let spec = JobSpec {
        name: format!("bench-{name}"),
        source: Location::Local(model.to_path_buf()),
        output: Location::Local(out.clone()),
        instance_type: "ml.g6.12xlarge".into(),
        optimizations: vec![Optimization::new(Technique::Quantization, options)],
        environment: BTreeMap::new(),
        stopping: Stopping::default(),
        kms_key_id: None,
        role_arn: None,
        tags: vec![],
        overwrite: true,
    };
    let mut sink = |_e: temper_pipeline::progress::Event| {};
    temper_pipeline::run_job(&spec, Isa::detect(), &mut sink, &Cancel::new())
        .unwrap_or_else(|e| panic!("writing the {name} artifact: {e}"));
    out
}

/// `n` prompt tokens: the tokenizer's ids of a fixed English text, repeated as needed.
fn tokens(model: &Path, n: usize) -> Vec<u32> {
    let tok = tokenizers::Tokenizer::from_file(model.join("tokenizer.json")).expect("tokenizer");
    let text = "The capital of France is Paris. It lies on the Seine, and its museums, \
                cafes and bridges draw visitors from every part of the world each year. ";
    let ids = tok.encode(text, false).expect("encode").get_ids().to_vec();
    ids.iter().copied().cycle().take(n).collect()
}

fn temper(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    dir: &Path,
    opts: LoadOptions,
    prompt: &[u32],
    decode: bool,
) {
    let model =
        Model::load(dir, &opts).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
    let mut cache = model.new_cache(PREFILL + 1).expect("cache");
    if decode {
        model
            .forward(&prompt[..CONTEXT], &mut cache, Logits::Last)
            .expect("prefill");
        g.bench_function(name, |b| {
            b.iter(|| {
                let logits = model
                    .forward(
                        black_box(&prompt[CONTEXT..CONTEXT + 1]),
                        &mut cache,
                        Logits::Last,
                    )
                    .expect("step");
                cache.truncate(CONTEXT);
                logits
            })
        });
    } else {
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

fn candle(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    dir: &Path,
    prompt: &[u32],
    decode: bool,
) {
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
    if decode {
        let mut warm = fresh();
        let ctx = Tensor::new(&prompt[..CONTEXT], &device)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        model.forward(&ctx, 0, &mut warm).expect("prefill");
        let next = Tensor::new(&prompt[CONTEXT..CONTEXT + 1], &device)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        g.bench_function("candle_transformers_llama/f32", |b| {
            b.iter(|| {
                // A clone shares the cached tensors; the step appends to the clone only.
                let mut cache = warm.clone();
                model
                    .forward(black_box(&next), CONTEXT, &mut cache)
                    .expect("step")
            })
        });
    } else {
        let x = Tensor::new(&prompt[..PREFILL], &device)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
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

fn bench(c: &mut Criterion) {
    let source = temper_benches::smollm2();
    let int8 = artifact(&source, "int8-w8a16", &[("OPTION_QUANTIZE", "int8")]);
    let w8a8 = artifact(
        &source,
        "int8-w8a8",
        &[("OPTION_QUANTIZE", "int8"), ("OPTION_INT8_SCHEME", "W8A8")],
    );
    let fp8 = artifact(&source, "fp8-dynamic", &[("OPTION_QUANTIZE", "fp8")]);
    let prompt = tokens(&source, PREFILL + 1);
    eprintln!(
        "decode_model: ISA {}, rayon threads {}",
        Isa::detect().name(),
        rayon::current_num_threads()
    );
    let f32_opts = LoadOptions {
        dequantize: true,
        ..Default::default()
    };
    for (group, decode, tokens) in [
        ("smollm2_decode_step_ctx32", true, 1),
        ("smollm2_prefill_128", false, PREFILL),
    ] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(tokens as u64));
        candle(&mut g, &source, &prompt, decode);
        temper(
            &mut g,
            "temper/f32",
            &source,
            f32_opts.clone(),
            &prompt,
            decode,
        );
        temper(
            &mut g,
            "temper/bf16",
            &source,
            LoadOptions::default(),
            &prompt,
            decode,
        );
        temper(
            &mut g,
            "temper/int8_w8a16",
            &int8,
            LoadOptions::default(),
            &prompt,
            decode,
        );
        temper(
            &mut g,
            "temper/int8_w8a8",
            &w8a8,
            LoadOptions::default(),
            &prompt,
            decode,
        );
        temper(
            &mut g,
            "temper/fp8_dynamic",
            &fp8,
            LoadOptions::default(),
            &prompt,
            decode,
        );
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
