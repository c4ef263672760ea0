//! Whole-model quantization and sharding wall time beside copying the same files.
//!
//! Both run on the imported SmolLM2-135M (bf16, ~270 MB), with a warm page cache,
//! writing into a fresh directory on the same filesystem. The job includes everything
//! `optimize` does: planning, quantizing, error measurement, side files, SHA-256 of
//! inputs and outputs, fsync and the final rename.

use criterion::{criterion_group, criterion_main, Criterion};
use temper_kernels::Isa;
use temper_pipeline::progress::Cancel;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        std::fs::copy(e.path(), &dest).unwrap();
        std::fs::File::open(&dest).unwrap().sync_all().unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let model = temper_benches::smollm2();
    let scratch = tempfile::tempdir_in(temper_benches::workspace().join(".cache")).unwrap();
    let out = scratch.path().join("out");
    let mut g = c.benchmark_group("smollm2_135m_bf16");
    g.sample_size(10);
    g.bench_function("copy_files_baseline", |b| b.iter(|| copy_dir(&model, &out)));
    let device = temper_cuda::Device::Cpu(Isa::detect());
    for (name, env) in [
        // The quality evaluation (a separate, model-running step) is left out, as in the
        // figures of BENCHMARKS.md.
        (
            "quantize_fp8_dynamic",
            vec![("OPTION_QUANTIZE", "fp8"), ("OPTION_EVAL", "false")],
        ),
        (
            "quantize_int8_w8a16",
            vec![("OPTION_QUANTIZE", "int8"), ("OPTION_EVAL", "false")],
        ),
    ] {
        let spec = temper_benches::quantize_job(&model, &out, &env);
        g.bench_function(name, |b| {
            b.iter(|| {
                let cancel = Cancel::new();
                let mut sink = |_e: temper_pipeline::progress::Event| {};
                temper_pipeline::run_job(&spec, &device, &mut sink, &cancel).unwrap()
            })
        });
    }
    // Sharding for 3 GPUs (SmolLM2's 9 heads), alone and after FP8 quantization in one job,
    // beside the same two passes run as two jobs (quantize, then shard its output).
    use temper_core::spec::Technique::{Quantization, Sharding};
    let tp: &[(&str, &str)] = &[
        ("OPTION_TENSOR_PARALLEL_DEGREE", "3"),
        ("OPTION_EVAL", "false"),
    ];
    let fp8: &[(&str, &str)] = &[("OPTION_QUANTIZE", "fp8"), ("OPTION_EVAL", "false")];
    let run = |spec: &temper_core::spec::JobSpec| {
        let cancel = Cancel::new();
        let mut sink = |_e: temper_pipeline::progress::Event| {};
        temper_pipeline::run_job(spec, &device, &mut sink, &cancel).unwrap()
    };
    let shard = temper_benches::job(&model, &out, &[(Sharding, tp)]);
    g.bench_function("shard_tp3", |b| b.iter(|| run(&shard)));
    let both = temper_benches::job(&model, &out, &[(Quantization, fp8), (Sharding, tp)]);
    g.bench_function("quantize_fp8_then_shard_tp3_one_job", |b| {
        b.iter(|| run(&both))
    });
    let mid = scratch.path().join("mid");
    let first = temper_benches::job(&model, &mid, &[(Quantization, fp8)]);
    let second = temper_benches::job(&mid, &out, &[(Sharding, tp)]);
    g.bench_function("quantize_fp8_then_shard_tp3_two_jobs", |b| {
        b.iter(|| {
            run(&first);
            run(&second)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
