//! Continuous batching's gain on SmolLM2-135M-Instruct INT8 (W8A16): one decode step of `B`
//! sequences together ([`Model::forward_rows`], what `temper-serve` runs) against the same
//! `B` sequences stepped one at a time, in tokens/s (criterion's "elem/s": `B` per step).
//! Every sequence has 64 tokens of context; each step overwrites the same cache position.
//!
//! Needs the imported model (`scripts/quickstart.sh` or `scripts/test.sh`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use temper_benches::{artifact, smollm2, tokens};
use temper_runtime::{KvCache, LoadOptions, Logits, Model};

const CONTEXT: usize = 64;
const BATCHES: [usize; 3] = [1, 4, 16];

fn bench(c: &mut Criterion) {
    let source = smollm2();
    let int8 = artifact(&source, "int8-w8a16", &[("OPTION_QUANTIZE", "int8")]);
    let model = Model::load(&int8, &LoadOptions::default()).expect("model");
    let prompt = tokens(&source, CONTEXT + 1);
    for batch in BATCHES {
        let mut caches: Vec<KvCache> = (0..batch)
            .map(|_| {
                let mut cache = model.new_cache(CONTEXT + 1).expect("cache");
                model
                    .forward(&prompt[..CONTEXT], &mut cache, Logits::Last)
                    .expect("prefill");
                cache
            })
            .collect();
        let next = vec![prompt[CONTEXT]; batch];
        let mut g = c.benchmark_group(format!("smollm2_int8_decode_{batch}_sequences"));
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function("one_at_a_time", |b| {
            b.iter(|| {
                for cache in caches.iter_mut() {
                    black_box(
                        model
                            .forward(&next[..1], cache, Logits::Last)
                            .expect("step"),
                    );
                    cache.truncate(CONTEXT);
                }
            })
        });
        g.bench_function("batched", |b| {
            b.iter(|| {
                let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
                let logits = model
                    .forward_rows(black_box(&next), &mut refs)
                    .expect("step");
                for cache in caches.iter_mut() {
                    cache.truncate(CONTEXT);
                }
                logits
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
