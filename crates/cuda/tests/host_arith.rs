//! The kernels' per-element arithmetic (`kernels/quant.cuh`, compiled for the host by nvcc)
//! against the Rust scalar references, bit for bit, on the edge cases the CPU kernels are
//! tested on. Runs with `--features cuda` on any machine: no GPU is involved.
#![cfg(feature = "cuda")]

mod common;

use common::{fp8_edge_inputs, reference_fp8, Bits};
use half::{bf16, f16};
use temper_cuda::host;
use temper_kernels::{fp8_e4m3_to_f32, Isa, ScaleDtype, Src};

fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn fp8_decode_all_256_codes() {
    let codes: Vec<u8> = (0..=255).collect();
    let got = host::fp8_to_f32(&codes);
    for (c, g) in codes.iter().zip(&got) {
        let want = fp8_e4m3_to_f32(*c);
        assert!(
            g.to_bits() == want.to_bits(),
            "code {c:#04x}: {g} vs {want}"
        );
    }
}

#[test]
fn fp8_encode_edge_cases_and_random_bits() {
    let inputs = fp8_edge_inputs();
    let got = host::f32_to_fp8(&inputs);
    let want = reference_fp8(&inputs);
    for ((x, g), w) in inputs.iter().zip(&got).zip(&want) {
        assert_eq!(g, w, "x = {x:e} ({:#010x})", x.to_bits());
    }
}

#[test]
fn int8_codes_ties_saturation_and_nan() {
    let mut ys = vec![
        0.5,
        1.5,
        2.5,
        -0.5,
        -2.5,
        126.5,
        127.5,
        -127.5,
        -128.5,
        1e9,
        -1e9,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        0.0,
        -0.0,
        4194303.5,
        1e-30,
    ];
    let mut bits = Bits(11);
    ys.extend((0..200_000).map(|_| bits.uniform(200.0)));
    ys.extend((0..200_000).map(|_| f32::from_bits(bits.next() as u32)));
    let got = host::int8_code(&ys);
    // The reference: scaling by exactly 1.0 leaves the value as it is.
    let mut want = vec![0i8; ys.len()];
    temper_kernels::quantize_int8(Isa::Scalar, Src::F32(&ys), 1.0, &mut want);
    for ((y, g), w) in ys.iter().zip(&got).zip(&want) {
        assert_eq!(g, w, "y = {y:e}");
    }
}

fn scale_inputs() -> Vec<f32> {
    let mut v = vec![
        0.0,
        1e-45,
        1e-38,
        f32::MIN_POSITIVE,
        5.96e-8,
        6.1e-5,
        6.103_515_6e-5,
        65504.0,
        65519.0,
        65520.0,
        1e6,
        3.0e38,
        1.0 / 3.0,
        0.1,
    ];
    let mut bits = Bits(3);
    for _ in 0..200_000 {
        // Positive finite floats across the whole exponent range.
        let b = (bits.next() as u32) & 0x7FFF_FFFF;
        if b < 0x7F80_0000 {
            v.push(f32::from_bits(b));
        }
    }
    v
}

#[test]
fn scale_rounding_and_policy_match_for_every_dtype() {
    let s = scale_inputs();
    for d in [ScaleDtype::F32, ScaleDtype::F16, ScaleDtype::Bf16] {
        let got = host::round_scale_up(&s, d);
        for (x, g) in s.iter().zip(&got) {
            let w = temper_kernels::round_scale_up(*x, d);
            assert!(
                same_bits(*g, w),
                "round_scale_up({x:e}, {d:?}): {g:e} vs {w:e}"
            );
        }
        for qmax in [127.0, 448.0] {
            let got = host::scale_for(&s, qmax, d);
            for (x, g) in s.iter().zip(&got) {
                let w = temper_kernels::scale_for(*x, qmax, d);
                assert!(
                    same_bits(*g, w),
                    "scale_for({x:e}, {qmax}, {d:?}): {g:e} vs {w:e}"
                );
            }
        }
    }
}

#[test]
fn widening_of_every_f16_and_bf16_pattern() {
    let h: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let b: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
    for (x, g) in h.iter().zip(host::load(Src::F16(&h))) {
        assert!(same_bits(g, x.to_f32()), "f16 {:#06x}", x.to_bits());
    }
    for (x, g) in b.iter().zip(host::load(Src::Bf16(&b))) {
        assert!(same_bits(g, x.to_f32()), "bf16 {:#06x}", x.to_bits());
    }
}

/// A weight with a zero row, a row of ties and wide-ranging magnitudes.
pub fn weight(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut bits = Bits(seed);
    let mut w: Vec<f32> = (0..rows * cols)
        .map(|i| bits.uniform(1.0) * 10f32.powi((i % 7) as i32 - 3))
        .collect();
    w[..cols].fill(0.0);
    for (j, x) in w[cols..2 * cols].iter_mut().enumerate() {
        *x = (j as f32 - 64.0) * 0.5;
    }
    w
}

#[test]
fn whole_row_quantizer_matches_the_cpu_path() {
    let (rows, cols) = (6, 256);
    let w32 = weight(rows, cols, 5);
    let w16: Vec<f16> = w32.iter().map(|&x| f16::from_f32(x)).collect();
    let wb: Vec<bf16> = w32.iter().map(|&x| bf16::from_f32(x)).collect();
    for src in [Src::F32(&w32), Src::F16(&w16), Src::Bf16(&wb)] {
        for (fp8, group) in [(true, cols), (false, cols), (false, 64), (true, 32)] {
            for d in [ScaleDtype::F32, ScaleDtype::Bf16, ScaleDtype::F16] {
                let (codes, scales) = host::quantize_rows(src, cols, group, fp8, d).unwrap();
                let qmax = if fp8 { 448.0 } else { 127.0 };
                let policy = |a: f32| temper_kernels::scale_for(a, qmax, d);
                let mut want_scales = vec![0f32; rows * cols / group];
                let mut want = vec![0u8; rows * cols];
                if fp8 {
                    temper_kernels::quantize_fp8_rows(
                        Isa::detect(),
                        src,
                        cols,
                        group,
                        &policy,
                        &mut want,
                        &mut want_scales,
                    )
                    .unwrap();
                } else {
                    let mut w8 = vec![0i8; rows * cols];
                    temper_kernels::quantize_int8_rows(
                        Isa::detect(),
                        src,
                        cols,
                        group,
                        &policy,
                        &mut w8,
                        &mut want_scales,
                    )
                    .unwrap();
                    want = w8.iter().map(|&c| c as u8).collect();
                }
                let case = format!("{src:?} fp8={fp8} group={group} {d:?}")
                    .chars()
                    .take(120)
                    .collect::<String>();
                assert_eq!(scales, want_scales, "{case}");
                assert_eq!(codes, want, "{case}");
            }
        }
    }
    let mut bad = w32.clone();
    bad[3 * cols + 17] = f32::NAN;
    let e = host::quantize_rows(Src::F32(&bad), cols, cols, true, ScaleDtype::F32).unwrap_err();
    assert_eq!(e, 3 * cols + 17);
}
