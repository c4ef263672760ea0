//! Every SIMD version must be bit-identical to the scalar reference, for every dtype, length,
//! alignment and special value.

mod common;

use common::{dtype_name, Owned, Rng, LENGTHS};
use temper_kernels::{
    dequantize_fp8, dequantize_int8, fp8_e4m3_to_f32, quantize_fp8, quantize_int8, row_stats, Isa,
    Src,
};

/// ISAs under test (everything but the reference).
fn simd_isas() -> Vec<Isa> {
    Isa::available()
        .into_iter()
        .filter(|&i| i != Isa::Scalar)
        .collect()
}

fn first_diff<T: PartialEq>(a: &[T], b: &[T]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Compares stats and both quantizers of `isa` with the reference on `src`.
fn compare(ctx: &str, isa: Isa, src: Src, inv_scales: &[f32]) {
    let (want, got) = (row_stats(Isa::Scalar, src), row_stats(isa, src));
    assert_eq!(
        want.first_non_finite, got.first_non_finite,
        "{ctx}: first_non_finite"
    );
    assert_eq!(
        want.absmax.to_bits(),
        got.absmax.to_bits(),
        "{ctx}: absmax {} vs {}",
        want.absmax,
        got.absmax
    );
    let n = src.len();
    for &inv in inv_scales {
        let (mut a, mut b) = (vec![0i8; n], vec![1i8; n]);
        quantize_int8(Isa::Scalar, src, inv, &mut a);
        quantize_int8(isa, src, inv, &mut b);
        if let Some(i) = first_diff(&a, &b) {
            panic!(
                "{ctx}: int8 inv={inv:e} at {i}: x={:e} want {} got {}",
                src.get(i),
                a[i],
                b[i]
            );
        }
        let (mut a, mut b) = (vec![0u8; n], vec![1u8; n]);
        quantize_fp8(Isa::Scalar, src, inv, &mut a);
        quantize_fp8(isa, src, inv, &mut b);
        if let Some(i) = first_diff(&a, &b) {
            panic!(
                "{ctx}: fp8 inv={inv:e} at {i}: x={:e} want {:#04x} got {:#04x}",
                src.get(i),
                a[i],
                b[i]
            );
        }
    }
}

/// Runs `compare` for every SIMD ISA, dtype, length in [`LENGTHS`], at offset 0 and at an odd
/// offset (unaligned loads), on the values `gen(len)`.
fn check(name: &str, gen: impl Fn(usize) -> Vec<f32>, inv_scales: &[f32]) {
    let isas = simd_isas();
    for len in LENGTHS {
        for offset in [0, 3] {
            let mut values = vec![1.0f32; offset];
            values.extend(gen(len));
            let owned = Owned::new(&values);
            for src in owned.srcs() {
                let src = src.slice(offset..offset + len);
                for &isa in &isas {
                    let ctx = format!(
                        "{name} {} len={len} off={offset} {}",
                        dtype_name(&src),
                        isa.name()
                    );
                    compare(&ctx, isa, src, inv_scales);
                }
            }
        }
    }
}

fn normal_data(seed: u64, scale: f32) -> impl Fn(usize) -> Vec<f32> {
    move |len| {
        let mut rng = Rng::new(seed + len as u64);
        (0..len).map(|_| rng.normal() * scale).collect()
    }
}

#[test]
fn detection_is_cached_and_consistent() {
    let best = Isa::detect();
    assert_eq!(best, Isa::detect());
    let all = Isa::available();
    assert_eq!(all.first(), Some(&Isa::Scalar));
    assert_eq!(all.last(), Some(&best));
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vl") {
        assert_eq!(best, Isa::Avx512);
    }
    println!("detected ISA: {}", best.name());
}

#[test]
fn random_normal_data() {
    for (seed, scale) in [(1, 1e-6f32), (2, 1e-3), (3, 1.0), (4, 30.0), (5, 1e4)] {
        let invs = [1.0, 0.37, 127.0 / (4.0 * scale), 448.0 / (4.0 * scale), 3.0];
        check(
            &format!("normal*{scale:e}"),
            normal_data(seed, scale),
            &invs,
        );
    }
}

#[test]
fn zeros_and_negative_zeros() {
    let gen = |len| {
        (0..len)
            .map(|i| if i % 3 == 1 { -0.0 } else { 0.0 })
            .collect()
    };
    check("zeros", gen, &[1.0, 1e30, 0.5]);
}

#[test]
fn f32_subnormals() {
    let gen = |len| {
        let mut rng = Rng::new(77 + len as u64);
        (0..len)
            .map(|_| f32::from_bits(rng.next_u32() & 0x807F_FFFF))
            .collect()
    };
    let p = |e: i32| 2f32.powi(e);
    // 2^120 moves f32 subnormals into the FP8 subnormal range; 2^140 up to saturation.
    let invs = [
        1.0,
        p(100) * p(20),
        p(100) * p(26),
        p(100) * p(40),
        p(100) * p(46),
    ];
    check("f32-subnormal", gen, &invs);
}

#[test]
fn half_precision_subnormals() {
    // f16 subnormals are below 2^-14 ~ 6.1e-5.
    let gen = |len| {
        let mut rng = Rng::new(99 + len as u64);
        (0..len).map(|_| (rng.uniform() - 0.5) * 1.2e-4).collect()
    };
    let p = |e: i32| 2f32.powi(e);
    check("f16-subnormal", gen, &[1.0, p(10), p(16), p(20), p(30)]);
}

#[test]
fn nan_and_inf_mid_row_and_tail() {
    type Placer = fn(&mut [f32]);
    let placements: [(&str, Placer); 5] = [
        ("nan-mid+inf-tail", |v| {
            let n = v.len();
            v[n / 2] = f32::NAN;
            v[n - 1] = f32::NEG_INFINITY;
        }),
        ("inf-tail", |v| {
            let n = v.len();
            v[n - 1] = f32::INFINITY;
        }),
        ("neg-nan-first", |v| v[0] = -f32::NAN),
        ("nan-payloads", |v| {
            let n = v.len();
            let nans = [
                0x7F80_0001u32,
                0xFFFF_FFFF,
                0x7FBF_FFFF,
                0xFFC0_0001,
                0x7FFF_0000,
            ];
            for (k, bits) in nans.into_iter().enumerate() {
                v[(k * 37) % n] = f32::from_bits(bits);
            }
        }),
        ("inf-then-nan", |v| {
            let n = v.len();
            v[n / 3] = f32::INFINITY;
            v[(2 * n) / 3] = f32::NAN;
        }),
    ];
    for (name, place) in placements {
        let gen = move |len| {
            let mut v = normal_data(11, 2.0)(len);
            if len > 0 {
                place(&mut v);
            }
            v
        };
        check(name, gen, &[1.0, 50.0, 1e-3]);
    }
}

/// Midpoints between adjacent FP8 codes, the codes themselves, and their f32 neighbours.
fn fp8_tie_values() -> Vec<f32> {
    let mut v = Vec::new();
    for c in 0u8..0x7E {
        let (a, b) = (fp8_e4m3_to_f32(c), fp8_e4m3_to_f32(c + 1));
        let mid = (a + b) / 2.0; // exact: both are short dyadic rationals
        for x in [a, mid, mid.next_down(), mid.next_up()] {
            v.extend([x, -x]);
        }
    }
    v.extend([
        448.0,
        456.0,
        464.0,
        464.0f32.next_up(),
        480.0,
        1e6,
        f32::MAX,
    ]);
    v.extend([-448.0, -464.0, -480.0, -1e6, f32::MIN]);
    v
}

#[test]
fn fp8_ties_and_saturation() {
    let ties = fp8_tie_values();
    let gen = |len| ties.iter().cycle().take(len).copied().collect();
    // Power-of-two inv_scales keep products exact, so the ties survive scaling (halved values).
    check("fp8-ties", gen, &[1.0]);
    let halved: Vec<f32> = ties.iter().map(|x| x * 2.0).collect();
    let gen = |len| halved.iter().cycle().take(len).copied().collect();
    check("fp8-ties-scaled", gen, &[0.5, 1e30]);
}

#[test]
fn int8_ties_and_saturation() {
    let mut vals = Vec::new();
    for k in -140..140 {
        let mid = k as f32 + 0.5;
        vals.extend([mid, mid.next_down(), mid.next_up(), k as f32]);
    }
    vals.extend([
        1e30,
        -1e30,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ]);
    let gen = |len| vals.iter().cycle().take(len).copied().collect();
    check("int8-ties", gen, &[1.0, 0.5, 2.0, 1e38]);
}

/// Every code of a dtype, rotated so each one also lands in tail lanes; equal to `table`.
fn check_dequant<Q: Copy>(
    name: &str,
    codes: &[Q],
    table: impl Fn(Q) -> f32,
    run: impl Fn(Isa, &[Q], f32, &mut [f32]),
) {
    for isa in Isa::available() {
        for scale in [1.0f32, 0.5, 3.7e-3, 1e-30, 1e30] {
            for len in LENGTHS.into_iter().chain([256, 257, 300]) {
                for rot in [0, 5, 100] {
                    let q: Vec<Q> = codes.iter().cycle().skip(rot).take(len).copied().collect();
                    let mut out = vec![1.0f32; len];
                    run(isa, &q, scale, &mut out);
                    for (i, (&c, &o)) in q.iter().zip(&out).enumerate() {
                        let want = table(c) * scale;
                        assert_eq!(
                            want.to_bits(),
                            o.to_bits(),
                            "{name} {} scale={scale:e} len={len} at {i}: want {want:e} got {o:e}",
                            isa.name()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn dequantize_fp8_matches_table_for_every_code() {
    let codes: Vec<u8> = (0..=255).collect();
    check_dequant("fp8", &codes, fp8_e4m3_to_f32, dequantize_fp8);
}

#[test]
fn dequantize_int8_matches_cast_for_every_code() {
    let codes: Vec<i8> = (-128..=127).collect();
    check_dequant("int8", &codes, f32::from, dequantize_int8);
}

#[test]
fn dequantize_random_codes_match_reference() {
    let mut rng = Rng::new(5);
    for isa in simd_isas() {
        for len in LENGTHS {
            let q8: Vec<u8> = (0..len).map(|_| rng.next_u32() as u8).collect();
            let qi: Vec<i8> = q8.iter().map(|&b| b as i8).collect();
            let (mut a, mut b) = (vec![0.0f32; len], vec![0.0f32; len]);
            dequantize_fp8(Isa::Scalar, &q8, 0.125, &mut a);
            dequantize_fp8(isa, &q8, 0.125, &mut b);
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
            dequantize_int8(Isa::Scalar, &qi, 0.3, &mut a);
            dequantize_int8(isa, &qi, 0.3, &mut b);
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }
}

#[test]
fn reference_semantics_spot_checks() {
    for isa in Isa::available() {
        let x = [
            0.5f32,
            1.5,
            2.5,
            -0.5,
            -1.5,
            127.5,
            -128.5,
            1e9,
            -1e9,
            f32::NAN,
            -0.0,
        ];
        let mut q = [0i8; 11];
        quantize_int8(isa, Src::F32(&x), 1.0, &mut q);
        assert_eq!(
            q,
            [0, 2, 2, 0, -2, 127, -128, 127, -128, 0, 0],
            "{}",
            isa.name()
        );

        let x = [
            448.0f32,
            464.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            -0.0,
        ];
        let mut q = [0u8; 7];
        quantize_fp8(isa, Src::F32(&x), 1.0, &mut q);
        assert_eq!(
            q,
            [0x7E, 0x7E, 0x7E, 0xFE, 0x7F, 0xFF, 0x80],
            "{}",
            isa.name()
        );

        let x = [1.0f32, -3.0, f32::INFINITY, 2.0, f32::NAN];
        let s = row_stats(isa, Src::F32(&x));
        assert_eq!(
            (s.absmax, s.first_non_finite),
            (3.0, Some(2)),
            "{}",
            isa.name()
        );
        let s = row_stats(isa, Src::F32(&x[..2]));
        assert_eq!(
            (s.absmax, s.first_non_finite),
            (3.0, None),
            "{}",
            isa.name()
        );
    }
}

#[test]
#[should_panic(expected = "lengths differ")]
fn mismatched_lengths_panic() {
    let mut out = [0i8; 3];
    quantize_int8(Isa::detect(), Src::F32(&[1.0, 2.0]), 1.0, &mut out);
}
