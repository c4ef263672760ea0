//! The kernels on a real GPU against the CPU kernels. Each test opens CUDA device 0 and,
//! where it cannot (no `cuda` feature, no driver, no GPU), prints that it did not run and
//! passes: the host build of the same arithmetic (host_arith.rs) is what runs everywhere.

mod common;

use common::Bits;
use half::bf16;
use temper_cuda::{Gpu, QuantLayout};
use temper_kernels::matmul::{matmul, Activations, Matrix, Scratch, Weights};
use temper_kernels::{Isa, ScaleDtype, Src};

fn gpu(test: &str) -> Option<Gpu> {
    match Gpu::open(0) {
        Ok(g) => Some(g),
        Err(why) => {
            eprintln!("{test}: NOT RUN on a GPU: {why}");
            None
        }
    }
}

fn weight(rows: usize, cols: usize) -> Vec<f32> {
    let mut bits = Bits(9);
    let mut w: Vec<f32> = (0..rows * cols)
        .map(|i| bits.uniform(1.0) * 10f32.powi((i % 5) as i32 - 2))
        .collect();
    w[..cols].fill(0.0);
    w
}

#[test]
fn quantizers_equal_the_cpu_bit_for_bit() {
    let Some(gpu) = gpu("quantizers_equal_the_cpu_bit_for_bit") else {
        return;
    };
    let (rows, cols) = (300, 512);
    let w = weight(rows, cols);
    let wb: Vec<bf16> = w.iter().map(|&x| bf16::from_f32(x)).collect();
    for src in [Src::F32(&w), Src::Bf16(&wb)] {
        for (fp8, layout) in [
            (true, QuantLayout::Rows { group: cols }),
            (false, QuantLayout::Rows { group: cols }),
            (false, QuantLayout::Rows { group: 128 }),
            (
                true,
                QuantLayout::Blocks {
                    rows: 128,
                    cols: 128,
                },
            ),
            (true, QuantLayout::Tensor),
        ] {
            let d = ScaleDtype::Bf16;
            let got = gpu.quantize(src, rows, cols, fp8, layout, d).unwrap();
            let qmax = if fp8 { 448.0 } else { 127.0 };
            let policy = |a: f32| temper_kernels::scale_for(a, qmax, d);
            let (mut codes, mut scales) = (vec![0u8; rows * cols], Vec::new());
            match layout {
                QuantLayout::Rows { group } if fp8 => {
                    scales.resize(rows * cols / group, 0.0);
                    temper_kernels::quantize_fp8_rows(
                        Isa::detect(),
                        src,
                        cols,
                        group,
                        &policy,
                        &mut codes,
                        &mut scales,
                    )
                    .unwrap()
                }
                QuantLayout::Rows { group } => {
                    scales.resize(rows * cols / group, 0.0);
                    let mut c8 = vec![0i8; rows * cols];
                    temper_kernels::quantize_int8_rows(
                        Isa::detect(),
                        src,
                        cols,
                        group,
                        &policy,
                        &mut c8,
                        &mut scales,
                    )
                    .unwrap();
                    codes = c8.iter().map(|&c| c as u8).collect();
                }
                QuantLayout::Blocks { rows: br, cols: bc } => {
                    scales.resize(rows.div_ceil(br) * cols.div_ceil(bc), 0.0);
                    temper_kernels::quantize_fp8_blocks(
                        Isa::detect(),
                        src,
                        rows,
                        cols,
                        (br, bc),
                        &policy,
                        &mut codes,
                        &mut scales,
                    )
                    .unwrap()
                }
                QuantLayout::Tensor => {
                    scales.resize(1, 0.0);
                    temper_kernels::quantize_fp8_blocks(
                        Isa::detect(),
                        src,
                        rows,
                        cols,
                        (rows, cols),
                        &policy,
                        &mut codes,
                        &mut scales,
                    )
                    .unwrap()
                }
            }
            assert_eq!(got.scales, scales, "{layout:?} fp8={fp8}");
            assert_eq!(got.codes, codes, "{layout:?} fp8={fp8}");
        }
    }
    let mut bad = w.clone();
    bad[7 * cols + 3] = f32::INFINITY;
    let e = gpu
        .quantize(
            Src::F32(&bad),
            rows,
            cols,
            true,
            QuantLayout::Tensor,
            ScaleDtype::F32,
        )
        .unwrap_err();
    assert!(e.to_string().contains("row 7, column 3"), "{e}");
}

#[test]
fn weight_only_products_match_the_cpu() {
    let Some(gpu) = gpu("weight_only_products_match_the_cpu") else {
        return;
    };
    let (rows, cols) = (384, 1024);
    let w = weight(rows, cols);
    for (fp8, group) in [(false, cols), (false, 128), (true, cols)] {
        let q = gpu
            .quantize(
                Src::F32(&w),
                rows,
                cols,
                fp8,
                QuantLayout::Rows { group },
                ScaleDtype::F32,
            )
            .unwrap();
        let on_gpu = gpu
            .upload_matrix(&q.codes, &q.scales, fp8, rows, cols, group)
            .unwrap();
        let weights = if fp8 {
            Weights::Fp8 {
                codes: q.codes.clone(),
                scales: q.scales.clone(),
                group,
            }
        } else {
            Weights::Int8 {
                codes: q.codes.iter().map(|&c| c as i8).collect(),
                scales: q.scales.clone(),
                group,
            }
        };
        let cpu = Matrix::new(rows, cols, weights).unwrap();
        for m in [1, 3, 8, 9, 100] {
            let mut bits = Bits(m as u64);
            let x: Vec<f32> = (0..m * cols).map(|_| bits.uniform(1.0)).collect();
            let got = gpu.weight_only_matmul(&on_gpu, &x, m).unwrap();
            let mut want = vec![0f32; m * rows];
            matmul(
                Isa::Scalar,
                &cpu,
                &x,
                m,
                &mut want,
                Activations::F32,
                &mut Scratch::default(),
            )
            .unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // Summation order differs (f32 over 1,024 terms).
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "m={m} [{i}] {g} vs {w}"
                );
            }
        }
    }
}
