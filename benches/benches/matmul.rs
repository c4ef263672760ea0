//! The runtime's linear layers (`temper_kernels::matmul`), with the detected ISA and rayon's
//! global pool (all cores), every measurement made from a worker of that pool, as the runtime
//! calls them (`temper_runtime::pool::in_pool`).
//!
//! - `decode_<n>x<k>`: `m = 1`, in GB/s of weights streamed (`Matrix::weight_bytes`), beside two
//!   read-bandwidth baselines over a buffer of as many bytes as the INT8 weights (summing u64,
//!   once over the pool like the product, once on one thread) and candle's Q8_0 `QMatMul` on the
//!   same shape (its own GB/s are of its Q8_0 blocks, 34 bytes per 32 weights).
//!   Shapes: 4096x4096 and SmolLM2-135M's q/o (576->576), k/v (576->192), gate/up (576->1536),
//!   down (1536->576), and the tied bf16 lm_head (49152x576).
//! - `prefill_<n>x<k>_m<m>`: `m = 64, 256`, in GFLOP/s (criterion's "elem/s" are flops), beside
//!   candle's f32 `x.matmul(&w.t())`.

use std::hint::black_box;
use std::time::Duration;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use half::bf16;
use rayon::prelude::*;
use temper_benches::{fp8_scale, int8_scale, synthetic_weights};
use temper_kernels::matmul::{matmul, Activations, Matrix, Scratch, Weights};
use temper_kernels::{quantize_fp8_rows, quantize_int8_rows, Isa, Src};
use temper_runtime::pool::in_pool;

/// Deterministic, roughly normal values, scale varying per row.
fn values(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    synthetic_weights(
        rows,
        cols,
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        0.02,
    )
}

/// Per-channel INT8 weights quantized by the crate's own quantizer.
fn int8_matrix(w: &[f32], rows: usize, cols: usize) -> Matrix {
    let mut codes = vec![0i8; rows * cols];
    let mut scales = vec![0.0f32; rows];
    let isa = Isa::detect();
    quantize_int8_rows(
        isa,
        Src::F32(w),
        cols,
        cols,
        &int8_scale,
        &mut codes,
        &mut scales,
    )
    .expect("finite weights");
    let group = cols;
    Matrix::new(
        rows,
        cols,
        Weights::Int8 {
            codes,
            scales,
            group,
        },
    )
    .expect("valid matrix")
}

/// INT4 weights with a zero point and scale per 64 columns (asymmetric minmax, as the
/// pipeline's round-to-nearest INT4 writes them; group 64 as SmolLM2's 576-column layers get).
fn int4_matrix(w: &[f32], rows: usize, cols: usize) -> Matrix {
    const GROUP: usize = 64;
    let mut nibbles = vec![0u8; rows * cols];
    let (mut scales, mut zeros) = (Vec::new(), Vec::new());
    for (row, out) in w.chunks_exact(cols).zip(nibbles.chunks_exact_mut(cols)) {
        for (part, codes) in row.chunks_exact(GROUP).zip(out.chunks_exact_mut(GROUP)) {
            let lo = part.iter().fold(0f32, |m, &v| m.min(v));
            let hi = part.iter().fold(0f32, |m, &v| m.max(v));
            let scale = ((hi - lo) / 15.0).max(f32::MIN_POSITIVE);
            let zero = (-lo / scale).round().clamp(0.0, 15.0);
            for (c, &v) in codes.iter_mut().zip(part) {
                *c = (v / scale + zero).round().clamp(0.0, 15.0) as u8;
            }
            scales.push(scale);
            zeros.push(zero as u8);
        }
    }
    let packed = nibbles
        .chunks_exact(2)
        .map(|p| p[0] | (p[1] << 4))
        .collect();
    Matrix::new(
        rows,
        cols,
        Weights::Int4 {
            packed,
            scales,
            zeros,
            group: GROUP,
        },
    )
    .expect("valid matrix")
}

/// Per-channel FP8 E4M3 weights.
fn fp8_matrix(w: &[f32], rows: usize, cols: usize) -> Matrix {
    let mut codes = vec![0u8; rows * cols];
    let mut scales = vec![0.0f32; rows];
    let isa = Isa::detect();
    quantize_fp8_rows(
        isa,
        Src::F32(w),
        cols,
        cols,
        &fp8_scale,
        &mut codes,
        &mut scales,
    )
    .expect("finite weights");
    let group = cols;
    Matrix::new(
        rows,
        cols,
        Weights::Fp8 {
            codes,
            scales,
            group,
        },
    )
    .expect("valid matrix")
}

fn bf16_matrix(w: &[f32], rows: usize, cols: usize) -> Matrix {
    let v = w.iter().map(|&x| bf16::from_f32(x)).collect();
    Matrix::new(rows, cols, Weights::Bf16(v)).expect("valid matrix")
}

fn bench_product(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    w: &Matrix,
    x: &[f32],
    m: usize,
    act: Activations,
    throughput: Throughput,
) {
    let isa = Isa::detect();
    let mut y = vec![0.0f32; m * w.rows()];
    let mut scratch = Scratch::default();
    g.throughput(throughput);
    g.bench_function(BenchmarkId::new(name, isa.name()), |b| {
        in_pool(|| {
            b.iter(|| matmul(isa, w, black_box(x), m, &mut y, act, &mut scratch).expect("product"))
        })
    });
}

/// Sum of a u64 buffer over the global pool, split like the products' matrix-vector chunks:
/// about 8 pieces per thread of at least 16 KiB, and on the calling thread below 64 KiB.
fn read_parallel(buf: &[u64]) -> u64 {
    let sum = |c: &[u64]| c.iter().fold(0u64, |a, &x| a.wrapping_add(x));
    if buf.len() * 8 < 64 << 10 {
        return sum(buf);
    }
    let piece = buf
        .len()
        .div_ceil(8 * rayon::current_num_threads())
        .max(2048);
    buf.par_chunks(piece)
        .map(sum)
        .reduce(|| 0, u64::wrapping_add)
}

fn read_serial(buf: &[u64]) -> u64 {
    buf.iter().fold(0u64, |a, &x| a.wrapping_add(x))
}

struct Shape {
    name: &'static str,
    rows: usize,
    cols: usize,
    /// Only bf16 (the tied lm_head), no quantized variants.
    bf16_only: bool,
}

fn decode(c: &mut Criterion) {
    let shapes = [
        Shape {
            name: "4096x4096",
            rows: 4096,
            cols: 4096,
            bf16_only: false,
        },
        Shape {
            name: "q_o_576x576",
            rows: 576,
            cols: 576,
            bf16_only: false,
        },
        Shape {
            name: "k_v_192x576",
            rows: 192,
            cols: 576,
            bf16_only: false,
        },
        Shape {
            name: "gate_up_1536x576",
            rows: 1536,
            cols: 576,
            bf16_only: false,
        },
        Shape {
            name: "down_576x1536",
            rows: 576,
            cols: 1536,
            bf16_only: false,
        },
        Shape {
            name: "lm_head_49152x576",
            rows: 49152,
            cols: 576,
            bf16_only: true,
        },
    ];
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("1-thread pool");
    for s in shapes {
        let (rows, cols) = (s.rows, s.cols);
        let wf = values(rows, cols, 1);
        let x = values(1, cols, 2);
        let mut g = c.benchmark_group(format!("decode_{}", s.name));
        let int8 = int8_matrix(&wf, rows, cols);
        let baseline_bytes = if s.bf16_only {
            rows * cols * 2
        } else {
            int8.weight_bytes()
        };
        let buf: Vec<u64> = (0..baseline_bytes / 8).map(|i| i as u64).collect();
        g.throughput(Throughput::Bytes((buf.len() * 8) as u64));
        g.bench_function("read_bandwidth/pool", |b| {
            b.iter(|| read_parallel(black_box(&buf)))
        });
        g.bench_function("read_bandwidth/1_thread", |b| {
            one_thread.install(|| b.iter(|| read_serial(black_box(&buf))))
        });
        drop(buf);
        let bf16w = bf16_matrix(&wf, rows, cols);
        let bytes = |w: &Matrix| Throughput::Bytes(w.weight_bytes() as u64);
        bench_product(
            &mut g,
            "bf16",
            &bf16w,
            &x,
            1,
            Activations::F32,
            bytes(&bf16w),
        );
        drop(bf16w);
        if !s.bf16_only {
            bench_product(&mut g, "int8", &int8, &x, 1, Activations::F32, bytes(&int8));
            let w8a8 = Activations::Int8PerToken;
            bench_product(&mut g, "w8a8_int8", &int8, &x, 1, w8a8, bytes(&int8));
            let fp8 = fp8_matrix(&wf, rows, cols);
            bench_product(&mut g, "fp8", &fp8, &x, 1, Activations::F32, bytes(&fp8));
            drop(fp8);
            let int4 = int4_matrix(&wf, rows, cols);
            bench_product(
                &mut g,
                "int4_g64",
                &int4,
                &x,
                1,
                Activations::F32,
                bytes(&int4),
            );
            drop(int4);
            let f32w = Matrix::new(rows, cols, Weights::F32(wf.clone())).expect("valid");
            bench_product(&mut g, "f32", &f32w, &x, 1, Activations::F32, bytes(&f32w));
            drop(f32w);
            candle_q8_0(&mut g, &wf, &x, rows, cols);
        }
        g.finish();
    }
}

/// Every projection of SmolLM2-135M's 30 layers in order (fused q/k/v 960x576, o 576x576,
/// fused gate/up 3072x576, down 576x1536), as one decode step streams them: ~106 MB of INT8
/// weights, over three times the L3 cache, so this reads DRAM where the single-shape groups above
/// may be served from cache. Beside a read of as many bytes over the pool.
fn decode_stream(c: &mut Criterion) {
    const LAYERS: usize = 30;
    let shapes = [(960, 576), (576, 576), (3072, 576), (576, 1536)];
    let isa = Isa::detect();
    let mut g = c.benchmark_group("decode_smollm2_30_layers");
    let build = |quant: fn(&[f32], usize, usize) -> Matrix| -> Vec<Matrix> {
        (0..LAYERS)
            .flat_map(|l| {
                shapes
                    .iter()
                    .enumerate()
                    .map(move |(i, &(r, k))| (l * 4 + i, r, k))
            })
            .map(|(seed, r, k)| quant(&values(r, k, 100 + seed as u64), r, k))
            .collect()
    };
    let run_all =
        |g: &mut BenchmarkGroup<'_, WallTime>, name: &str, ms: &[Matrix], act: Activations| {
            let bytes: usize = ms.iter().map(Matrix::weight_bytes).sum();
            let xs: Vec<Vec<f32>> = shapes.iter().map(|&(_, k)| values(1, k, 7)).collect();
            let mut y = vec![0.0f32; 3072];
            let mut scratch = Scratch::default();
            g.throughput(Throughput::Bytes(bytes as u64));
            g.bench_function(BenchmarkId::new(name, isa.name()), |b| {
                in_pool(|| {
                    b.iter(|| {
                        for (i, w) in ms.iter().enumerate() {
                            let x = &xs[i % 4];
                            matmul(
                                isa,
                                w,
                                black_box(x),
                                1,
                                &mut y[..w.rows()],
                                act,
                                &mut scratch,
                            )
                            .expect("product");
                        }
                    })
                })
            });
            bytes
        };
    let int8 = build(int8_matrix);
    let bytes = run_all(&mut g, "int8", &int8, Activations::F32);
    run_all(&mut g, "w8a8_int8", &int8, Activations::Int8PerToken);
    drop(int8);
    let fp8 = build(fp8_matrix);
    run_all(&mut g, "fp8", &fp8, Activations::F32);
    drop(fp8);
    let int4 = build(int4_matrix);
    run_all(&mut g, "int4_g64", &int4, Activations::F32);
    drop(int4);
    let buf: Vec<u64> = (0..bytes / 8).map(|i| i as u64).collect();
    g.throughput(Throughput::Bytes((buf.len() * 8) as u64));
    g.bench_function("read_bandwidth/pool", |b| {
        in_pool(|| b.iter(|| read_parallel(black_box(&buf))))
    });
    g.finish();
}

/// candle's Q8_0 quantized matrix-vector product on the same weights (its own threads).
fn candle_q8_0(
    g: &mut BenchmarkGroup<'_, WallTime>,
    wf: &[f32],
    x: &[f32],
    rows: usize,
    cols: usize,
) {
    let dev = Device::Cpu;
    let wt = Tensor::from_slice(wf, (rows, cols), &dev).expect("tensor");
    let q = QTensor::quantize(&wt, GgmlDType::Q8_0).expect("quantize");
    let q8_bytes = rows * cols / 32 * 34;
    let mm = QMatMul::from_qtensor(q).expect("qmatmul");
    let xt = Tensor::from_slice(x, (1, cols), &dev).expect("tensor");
    g.throughput(Throughput::Bytes(q8_bytes as u64));
    g.bench_function("candle_q8_0_qmatmul", |b| {
        in_pool(|| b.iter(|| mm.forward(black_box(&xt)).expect("forward")))
    });
}

fn prefill(c: &mut Criterion) {
    for (rows, cols) in [(1536, 576), (4096, 4096)] {
        let wf = values(rows, cols, 3);
        let int8 = int8_matrix(&wf, rows, cols);
        let fp8 = fp8_matrix(&wf, rows, cols);
        let bf16w = bf16_matrix(&wf, rows, cols);
        let dev = Device::Cpu;
        let wt = Tensor::from_slice(&wf, (rows, cols), &dev).expect("tensor");
        for m in [64, 256] {
            let x = values(m, cols, 4);
            let mut g = c.benchmark_group(format!("prefill_{rows}x{cols}_m{m}"));
            g.sampling_mode(SamplingMode::Flat);
            let flops = Throughput::Elements((2 * m * rows * cols) as u64);
            bench_product(
                &mut g,
                "int8",
                &int8,
                &x,
                m,
                Activations::F32,
                flops.clone(),
            );
            bench_product(
                &mut g,
                "w8a8_int8",
                &int8,
                &x,
                m,
                Activations::Int8PerToken,
                flops.clone(),
            );
            bench_product(&mut g, "fp8", &fp8, &x, m, Activations::F32, flops.clone());
            bench_product(
                &mut g,
                "bf16",
                &bf16w,
                &x,
                m,
                Activations::F32,
                flops.clone(),
            );
            let xt = Tensor::from_slice(&x, (m, cols), &dev).expect("tensor");
            g.throughput(flops);
            g.bench_function("candle_f32_matmul", |b| {
                in_pool(|| b.iter(|| black_box(&xt).matmul(&wt.t().expect("t")).expect("matmul")))
            });
            g.finish();
        }
    }
}

fn matmul_benches(c: &mut Criterion) {
    eprintln!(
        "temper-kernels matmul: ISA {}, rayon threads {}",
        Isa::detect().name(),
        rayon::current_num_threads()
    );
    decode(c);
    decode_stream(c);
    prefill(c);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1000));
    targets = matmul_benches
}
criterion_main!(benches);
