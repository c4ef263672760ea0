//! Temporary microbenchmark (min-of-N, in-cache), not part of the deliverable.
use std::time::Instant;
use temper_kernels::*;

fn time(name: &str, bytes: usize, mut f: impl FnMut()) {
    let mut best = f64::MAX;
    for _ in 0..200 {
        let t = Instant::now();
        for _ in 0..50 {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / 50.0);
    }
    println!(
        "{name:40} {:8.2} GB/s  {:6.3} ns/elem",
        bytes as f64 / best / 1e9,
        best * 1e9 / (bytes as f64 / 4.0)
    );
}

fn main() {
    let n = 16 * 4096;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 0.01)
        .collect();
    let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    let mut qi = vec![0i8; n];
    let mut qu = vec![0u8; n];
    let mut out = vec![0f32; n];
    for isa in Isa::available() {
        let nm = isa.name();
        time(&format!("{nm} stats f32"), n * 4, || {
            std::hint::black_box(row_stats(isa, Src::F32(&x)));
        });
        time(&format!("{nm} stats bf16"), n * 2, || {
            std::hint::black_box(row_stats(isa, Src::Bf16(&xb)));
        });
        time(&format!("{nm} q int8 f32"), n * 4, || {
            quantize_int8(isa, Src::F32(&x), 0.5, &mut qi)
        });
        time(&format!("{nm} q fp8 f32"), n * 4, || {
            quantize_fp8(isa, Src::F32(&x), 0.5, &mut qu)
        });
        time(&format!("{nm} q int8 bf16"), n * 2, || {
            quantize_int8(isa, Src::Bf16(&xb), 0.5, &mut qi)
        });
        time(&format!("{nm} q fp8 bf16"), n * 2, || {
            quantize_fp8(isa, Src::Bf16(&xb), 0.5, &mut qu)
        });
        time(&format!("{nm} dq int8"), n, || {
            dequantize_int8(isa, &qi, 0.5, &mut out)
        });
        time(&format!("{nm} dq fp8"), n, || {
            dequantize_fp8(isa, &qu, 0.5, &mut out)
        });
    }
}
