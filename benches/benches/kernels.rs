//! Single-core throughput of the temper-kernels quantizers, in GB/s of *input*.
//!
//! Everything runs inside a 1-thread rayon pool so the figures are per core and comparable with
//! the memory-read baseline and with candle's Q8_0 quantizer (which is single-threaded on x86:
//! `BlockQ8_0::from_float` is a plain loop and candle's quantized module uses no rayon; it runs
//! inside the same pool anyway).

use std::hint::black_box;
use std::time::Duration;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::bf16;
use rayon::ThreadPool;
use temper_kernels::{
    dequantize_fp8, dequantize_int8, quantize_fp8_blocks, quantize_fp8_rows, quantize_int8_rows,
    Isa, Src,
};

const ROWS: usize = 4096;
const COLS: usize = 4096;
/// Memory baseline buffer: 256 MiB, far beyond any cache.
const BASELINE_BYTES: usize = 256 << 20;

fn one_thread_pool() -> ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("cannot build a 1-thread rayon pool")
}

/// Deterministic, roughly normal weights, varying per row like real layers.
fn weights() -> Vec<f32> {
    temper_benches::synthetic_weights(ROWS, COLS, 0x2545_F491_4F6C_DD1D, 0.01)
}

fn memory_baseline(c: &mut Criterion, pool: &ThreadPool) {
    let buf: Vec<u64> = (0..BASELINE_BYTES / 8).map(|i| i as u64).collect();
    let mut g = c.benchmark_group("memory_read");
    g.throughput(Throughput::Bytes(BASELINE_BYTES as u64));
    g.bench_function("sum_u64_256MiB", |b| {
        pool.install(|| {
            b.iter(|| {
                black_box(&buf)
                    .iter()
                    .fold(0u64, |acc, &x| acc.wrapping_add(x))
            })
        })
    });
    g.finish();
}

fn quantize_rows(c: &mut Criterion, pool: &ThreadPool, f32s: &[f32], bf16s: &[bf16]) {
    let mut codes_i8 = vec![0i8; ROWS * COLS];
    let mut codes_u8 = vec![0u8; ROWS * COLS];
    let mut scales = vec![0.0f32; ROWS];
    let mut g = c.benchmark_group("quantize_per_channel_4096x4096");
    for src in [Src::F32(f32s), Src::Bf16(bf16s)] {
        let dtype = if matches!(src, Src::F32(_)) {
            "f32"
        } else {
            "bf16"
        };
        g.throughput(Throughput::Bytes((src.len() * src.bytes_per_elem()) as u64));
        for isa in Isa::available() {
            g.bench_function(BenchmarkId::new(format!("int8/{dtype}"), isa.name()), |b| {
                pool.install(|| {
                    b.iter(|| {
                        quantize_int8_rows(
                            isa,
                            src,
                            COLS,
                            COLS,
                            &temper_benches::int8_scale,
                            &mut codes_i8,
                            &mut scales,
                        )
                        .expect("finite input")
                    })
                })
            });
            g.bench_function(BenchmarkId::new(format!("fp8/{dtype}"), isa.name()), |b| {
                pool.install(|| {
                    b.iter(|| {
                        quantize_fp8_rows(
                            isa,
                            src,
                            COLS,
                            COLS,
                            &temper_benches::fp8_scale,
                            &mut codes_u8,
                            &mut scales,
                        )
                        .expect("finite input")
                    })
                })
            });
        }
    }
    // Per-group INT8 (group 128) and FP8_BLOCK (128x128 tiles) on bf16, with the detected ISA.
    let isa = Isa::detect();
    let mut group_scales = vec![0.0f32; ROWS * (COLS / 128)];
    g.throughput(Throughput::Bytes((bf16s.len() * 2) as u64));
    g.bench_function(BenchmarkId::new("int8_group128/bf16", isa.name()), |b| {
        pool.install(|| {
            b.iter(|| {
                let src = Src::Bf16(bf16s);
                let (codes, scales) = (&mut codes_i8, &mut group_scales);
                quantize_int8_rows(
                    isa,
                    src,
                    COLS,
                    128,
                    &temper_benches::int8_scale,
                    codes,
                    scales,
                )
                .expect("finite input")
            })
        })
    });
    let mut block_scales = vec![0.0f32; (ROWS / 128) * (COLS / 128)];
    g.bench_function(BenchmarkId::new("fp8_block128/bf16", isa.name()), |b| {
        pool.install(|| {
            b.iter(|| {
                let src = Src::Bf16(bf16s);
                let (codes, scales) = (&mut codes_u8, &mut block_scales);
                quantize_fp8_blocks(
                    isa,
                    src,
                    ROWS,
                    COLS,
                    (128, 128),
                    &temper_benches::fp8_scale,
                    codes,
                    scales,
                )
                .expect("finite input")
            })
        })
    });
    g.finish();
}

/// The same per-channel kernels on a 64x4096 slice that stays in L2, to show their compute
/// ceiling apart from DRAM bandwidth (SIMD ISAs only).
fn quantize_in_cache(c: &mut Criterion, pool: &ThreadPool, f32s: &[f32], bf16s: &[bf16]) {
    const HOT_ROWS: usize = 64;
    let n = HOT_ROWS * COLS;
    let mut codes_i8 = vec![0i8; n];
    let mut codes_u8 = vec![0u8; n];
    let mut scales = vec![0.0f32; HOT_ROWS];
    let mut g = c.benchmark_group("quantize_per_channel_64x4096_in_cache");
    for src in [Src::F32(&f32s[..n]), Src::Bf16(&bf16s[..n])] {
        let dtype = if matches!(src, Src::F32(_)) {
            "f32"
        } else {
            "bf16"
        };
        g.throughput(Throughput::Bytes((n * src.bytes_per_elem()) as u64));
        for isa in Isa::available().into_iter().filter(|&i| i != Isa::Scalar) {
            g.bench_function(BenchmarkId::new(format!("int8/{dtype}"), isa.name()), |b| {
                pool.install(|| {
                    b.iter(|| {
                        let (codes, scales) = (&mut codes_i8, &mut scales);
                        quantize_int8_rows(
                            isa,
                            src,
                            COLS,
                            COLS,
                            &temper_benches::int8_scale,
                            codes,
                            scales,
                        )
                        .expect("finite input")
                    })
                })
            });
            g.bench_function(BenchmarkId::new(format!("fp8/{dtype}"), isa.name()), |b| {
                pool.install(|| {
                    b.iter(|| {
                        let (codes, scales) = (&mut codes_u8, &mut scales);
                        quantize_fp8_rows(
                            isa,
                            src,
                            COLS,
                            COLS,
                            &temper_benches::fp8_scale,
                            codes,
                            scales,
                        )
                        .expect("finite input")
                    })
                })
            });
        }
    }
    g.finish();
}

fn candle_q8_0(c: &mut Criterion, pool: &ThreadPool, f32s: &[f32]) {
    let tensor =
        Tensor::from_slice(f32s, (ROWS, COLS), &Device::Cpu).expect("cannot build candle tensor");
    let mut g = c.benchmark_group("quantize_per_channel_4096x4096");
    g.throughput(Throughput::Bytes((f32s.len() * 4) as u64));
    g.bench_function(BenchmarkId::new("candle_q8_0/f32", "candle"), |b| {
        pool.install(|| {
            b.iter(|| QTensor::quantize(black_box(&tensor), GgmlDType::Q8_0).expect("quantize"))
        })
    });
    g.finish();
}

fn dequantize(c: &mut Criterion, pool: &ThreadPool) {
    let codes_u8: Vec<u8> = (0..ROWS * COLS).map(|i| (i * 7 % 251) as u8).collect();
    let codes_i8: Vec<i8> = codes_u8.iter().map(|&b| b as i8).collect();
    let mut out = vec![0.0f32; ROWS * COLS];
    let mut g = c.benchmark_group("dequantize_4096x4096");
    g.throughput(Throughput::Bytes((ROWS * COLS) as u64));
    for isa in Isa::available() {
        g.bench_function(BenchmarkId::new("int8", isa.name()), |b| {
            pool.install(|| b.iter(|| dequantize_int8(isa, black_box(&codes_i8), 0.01, &mut out)))
        });
        g.bench_function(BenchmarkId::new("fp8", isa.name()), |b| {
            pool.install(|| b.iter(|| dequantize_fp8(isa, black_box(&codes_u8), 0.01, &mut out)))
        });
    }
    g.finish();
}

fn kernels(c: &mut Criterion) {
    eprintln!(
        "temper-kernels: detected ISA = {}; available = {:?}",
        Isa::detect().name(),
        Isa::available()
            .iter()
            .map(|i| i.name())
            .collect::<Vec<_>>()
    );
    let pool = one_thread_pool();
    memory_baseline(c, &pool);
    let f32s = weights();
    let bf16s: Vec<bf16> = f32s.iter().map(|&x| bf16::from_f32(x)).collect();
    quantize_rows(c, &pool, &f32s, &bf16s);
    quantize_in_cache(c, &pool, &f32s, &bf16s);
    candle_q8_0(c, &pool, &f32s);
    dequantize(c, &pool);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = kernels
}
criterion_main!(benches);
