//! EAGLE-3 speculative decoding on SmolLM2-135M-Instruct (bf16, as stored), batch 1:
//!
//! - `verify_cost`: the target's pass over N new tokens after 200 cached ones, T(N), against
//!   N = 1 (a plain decode step) in the same run: what a verify round costs;
//! - `draft_step`: one step of an EAGLE-3 head (8192-token draft vocabulary) on one row;
//! - `decode_64`: 64 greedy tokens after a chat prompt, plain against speculative with the
//!   head in `.cache/bench-artifacts/eagle-smollm2/speculative` (written by
//!   `examples/eagle_smollm2.rs`; the group is skipped without it), chain of 2, 3 and 4;
//! - `train_step`: one training-time-test step (K = 4, Vd = 8192) forward and backward on a
//!   256-token sample, against the target's own forward of the same tokens (the features
//!   every step needs).
//!
//! Needs the imported model (`scripts/quickstart.sh` or `scripts/test.sh`).

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use temper_eagle::draft::{DraftModel, DraftShape};
use temper_eagle::features::sample_features;
use temper_eagle::vocab::DraftVocab;
use temper_runtime::generate::{generate, GenerateOptions};
use temper_runtime::speculative::{
    default_aux_layers, generate_speculative, DraftHead, EagleDrafter, TreeShape,
};
use temper_runtime::{LoadOptions, Logits, Model, NewTokens};
use temper_text::sampling::SamplingParams;

const CONTEXT: usize = 200;

fn tokens(n: usize) -> Vec<u32> {
    (0..n).map(|i| (i * 7919 % 40000) as u32 + 100).collect()
}

fn bench(c: &mut Criterion) {
    let dir = temper_benches::smollm2();
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let ctx = tokens(CONTEXT + 16);

    let mut g = c.benchmark_group("verify_cost");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    let mut cache = model.new_cache(CONTEXT + 16).unwrap();
    model
        .forward(&ctx[..CONTEXT], &mut cache, Logits::Last)
        .unwrap();
    for n in [1usize, 2, 3, 4, 6, 8] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("target_N{n}"), |b| {
            b.iter(|| {
                cache.truncate(CONTEXT);
                black_box(
                    model
                        .forward(&ctx[CONTEXT..CONTEXT + n], &mut cache, Logits::All)
                        .unwrap(),
                );
            })
        });
    }
    g.finish();

    let vd = 8192;
    let counts: Vec<u64> = (0..model.params().vocab_size as u64)
        .map(|i| 1000 - i % 1000)
        .collect();
    let vocab = DraftVocab::from_counts(&counts, vd).unwrap();
    let h = model.params().hidden_size;
    let rows = Tensor::randn(0f32, 0.05, (vd, h), &Device::Cpu).unwrap();
    let draft = DraftModel::init(DraftShape::for_target(model.params(), vd), rows, 1).unwrap();
    let head_dir = tempfile::tempdir().unwrap();
    let raw = serde_json::json!({});
    temper_eagle::export::write_head(
        head_dir.path(),
        &temper_eagle::export::head_config(model.params(), &raw, &vocab),
        &draft,
        &vocab,
    )
    .unwrap();
    let head = DraftHead::load(head_dir.path(), model.params()).unwrap();
    let mut g = c.benchmark_group("draft_step");
    g.sample_size(30);
    let mut dcache = head.new_cache(CONTEXT + 2).unwrap();
    let zeros = Tensor::zeros((CONTEXT, h), DType::F32, &Device::Cpu).unwrap();
    head.step(
        model.head(),
        &zeros,
        &ctx[..CONTEXT],
        &mut dcache,
        NewTokens::Causal,
    )
    .unwrap();
    let one = zeros.narrow(0, 0, 1).unwrap();
    g.bench_function("head_one_row_vd8192", |b| {
        b.iter(|| {
            dcache.truncate(CONTEXT);
            let out = head
                .step(
                    model.head(),
                    &one,
                    &ctx[..1],
                    &mut dcache,
                    NewTokens::Causal,
                )
                .unwrap();
            black_box(head.logits(&out).unwrap());
        })
    });
    g.finish();

    let trained =
        temper_benches::workspace().join(".cache/bench-artifacts/eagle-smollm2/speculative");
    if trained.join("config.json").is_file() {
        let head = DraftHead::load(&trained, model.params()).unwrap();
        let tokenizer =
            temper_text::tokenizer::load_tokenizer(&dir.join("tokenizer.json")).unwrap();
        let template = temper_text::chat::ChatTemplate::from_model_dir(&dir)
            .unwrap()
            .unwrap();
        let text = template
            .render(
                &[temper_text::chat::Message::new(
                    "user",
                    "Explain in a few sentences why the sky is blue.",
                )],
                true,
            )
            .unwrap();
        let prompt = tokenizer
            .encode(text.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        let opts = GenerateOptions {
            max_new_tokens: 64,
            sampling: SamplingParams::greedy(),
            stop_strings: vec![],
            eos_token_ids: vec![],
        };
        let mut g = c.benchmark_group("decode_64");
        g.sample_size(10).throughput(Throughput::Elements(64));
        g.bench_function("plain", |b| {
            b.iter(|| black_box(generate(&model, &tokenizer, &prompt, &opts, &mut |_| {}).unwrap()))
        });
        for k in [2usize, 3, 4] {
            g.bench_function(format!("speculative_chain{k}"), |b| {
                b.iter(|| {
                    let mut d =
                        EagleDrafter::new(&model, &head, TreeShape::chain(k), prompt.len() + 80)
                            .unwrap();
                    black_box(
                        generate_speculative(
                            &model,
                            &mut d,
                            &tokenizer,
                            &prompt,
                            &opts,
                            &mut |_| {},
                        )
                        .unwrap(),
                    )
                })
            });
        }
        g.finish();
    } else {
        eprintln!(
            "decode_64 skipped: no trained head at {} (run examples/eagle_smollm2.rs)",
            trained.display()
        );
    }

    let mut g = c.benchmark_group("train_step");
    g.sample_size(10).throughput(Throughput::Elements(256));
    let sample = tokens(256);
    let mask: Vec<bool> = (0..256).map(|i| i > 40 && i < 255).collect();
    let aux = default_aux_layers(model.params().num_layers);
    g.bench_function("target_features_256", |b| {
        b.iter(|| black_box(sample_features(&model, &aux, &vocab, &sample).unwrap()))
    });
    let f = sample_features(&model, &aux, &vocab, &sample).unwrap();
    g.bench_function("ttt_k4_forward_backward_256", |b| {
        b.iter(|| {
            let l = draft.ttt(&f, &sample, &mask, 4).unwrap();
            black_box(l.total.backward().unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
