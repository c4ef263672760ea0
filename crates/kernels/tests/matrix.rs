//! Matrix-level helpers: scale placement, partial tiles, error reporting, and agreement with
//! the element-level reference for every ISA and dtype.

mod common;

use std::sync::Mutex;

use common::{dtype_name, Owned, Rng};
use temper_kernels::{
    f32_to_fp8_e4m3, quantize_fp8, quantize_fp8_blocks, quantize_fp8_rows, quantize_int8,
    quantize_int8_rows, row_stats, tensor_stats, Isa, KernelError, Src,
};

fn int8_policy(absmax: f32) -> f32 {
    if absmax == 0.0 {
        1.0
    } else {
        absmax / 127.0
    }
}

fn fp8_policy(absmax: f32) -> f32 {
    if absmax == 0.0 {
        1.0
    } else {
        absmax / 448.0
    }
}

fn random_matrix(seed: u64, rows: usize, cols: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..rows * cols)
        .map(|i| rng.normal() * (1.0 + (i / cols) as f32))
        .collect()
}

/// Per-group reference built from the element-level scalar kernels.
fn reference_groups(src: Src, cols: usize, group: usize, fp8: bool) -> (Vec<u8>, Vec<f32>) {
    let mut codes = vec![0u8; src.len()];
    let mut scales = Vec::new();
    for start in (0..src.len()).step_by(group) {
        let seg = src.slice(start..start + group);
        let absmax = row_stats(Isa::Scalar, seg).absmax;
        let out = &mut codes[start..start + group];
        if fp8 {
            let scale = fp8_policy(absmax);
            quantize_fp8(Isa::Scalar, seg, 1.0 / scale, out);
            scales.push(scale);
        } else {
            let scale = int8_policy(absmax);
            let mut q = vec![0i8; group];
            quantize_int8(Isa::Scalar, seg, 1.0 / scale, &mut q);
            out.iter_mut().zip(q).for_each(|(o, c)| *o = c as u8);
            scales.push(scale);
        }
    }
    debug_assert_eq!(scales.len() * group, cols * (src.len() / cols));
    (codes, scales)
}

#[test]
fn rows_match_reference_for_every_isa_and_dtype() {
    // 150 x 1024 spans several rayon tasks; 3 x 48 is a tiny one.
    for (rows, cols, groups) in [(150, 1024, vec![1024, 128, 32]), (3, 48, vec![48, 16, 1])] {
        let owned = Owned::new(&random_matrix(7, rows, cols));
        for src in owned.srcs() {
            for &group in &groups {
                let (want_i8, want_si8) = reference_groups(src, cols, group, false);
                let (want_f8, want_sf8) = reference_groups(src, cols, group, true);
                for isa in Isa::available() {
                    let ctx = format!("{} {rows}x{cols}/{group} {}", dtype_name(&src), isa.name());
                    let mut codes = vec![0i8; rows * cols];
                    let mut scales = vec![0.0f32; rows * cols / group];
                    quantize_int8_rows(
                        isa,
                        src,
                        cols,
                        group,
                        &int8_policy,
                        &mut codes,
                        &mut scales,
                    )
                    .unwrap();
                    let codes_u8: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
                    assert!(codes_u8 == want_i8, "{ctx}: int8 codes");
                    assert_eq!(scales, want_si8, "{ctx}: int8 scales");

                    let mut codes = vec![0u8; rows * cols];
                    quantize_fp8_rows(isa, src, cols, group, &fp8_policy, &mut codes, &mut scales)
                        .unwrap();
                    assert!(codes == want_f8, "{ctx}: fp8 codes");
                    assert_eq!(scales, want_sf8, "{ctx}: fp8 scales");
                }
            }
        }
    }
}

#[test]
fn group_scales_land_in_their_slots() {
    let (rows, cols, group) = (4, 12, 4);
    let groups = cols / group;
    // Group (r, g) holds small values and one spike of height r * groups + g + 1.
    let mut x = vec![0.25f32; rows * cols];
    for r in 0..rows {
        for g in 0..groups {
            x[r * cols + g * group + (r + g) % group] = -((r * groups + g + 1) as f32);
        }
    }
    for isa in Isa::available() {
        let mut codes = vec![0i8; rows * cols];
        let mut scales = vec![0.0f32; rows * groups];
        let identity = |a: f32| a;
        quantize_int8_rows(
            isa,
            Src::F32(&x),
            cols,
            group,
            &identity,
            &mut codes,
            &mut scales,
        )
        .unwrap();
        let want: Vec<f32> = (1..=rows * groups).map(|k| k as f32).collect();
        assert_eq!(scales, want, "{}", isa.name());
        for r in 0..rows {
            for g in 0..groups {
                // The spike is exactly -1 * scale, so its code is -1; 0.25/scale rounds to 0.
                let spike = r * cols + g * group + (r + g) % group;
                assert_eq!(codes[spike], -1, "{} spike ({r},{g})", isa.name());
            }
        }
    }
}

#[test]
fn zero_row_passes_zero_absmax_to_policy() {
    let cols = 40;
    let mut x = random_matrix(3, 5, cols);
    x[2 * cols..3 * cols]
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| {
            *v = if i % 2 == 0 { 0.0 } else { -0.0 };
        });
    for isa in Isa::available() {
        let seen = Mutex::new(Vec::new());
        let policy = |a: f32| {
            seen.lock().unwrap().push(a);
            if a == 0.0 {
                42.0
            } else {
                a / 448.0
            }
        };
        let mut codes = vec![0xAAu8; 5 * cols];
        let mut scales = vec![0.0f32; 5];
        quantize_fp8_rows(
            isa,
            Src::F32(&x),
            cols,
            cols,
            &policy,
            &mut codes,
            &mut scales,
        )
        .unwrap();
        assert_eq!(scales[2], 42.0);
        assert!(seen.lock().unwrap().iter().any(|&a| a.to_bits() == 0));
        let zero_row = &codes[2 * cols..3 * cols];
        assert!(zero_row
            .iter()
            .enumerate()
            .all(|(i, &c)| c == if i % 2 == 0 { 0 } else { 0x80 }));
    }
}

#[test]
fn non_finite_reports_first_row_and_column() {
    let (rows, cols) = (200, 1000); // several rayon tasks
    let mut x = random_matrix(9, rows, cols);
    x[199 * cols + 3] = f32::NAN; // a later rayon task (65 rows each)
    x[130 * cols + 999] = f32::INFINITY; // earlier row, later column: this one is first
    x[130 * cols + 998] = 5.0;
    x[196 * cols] = f32::NEG_INFINITY;
    let owned = Owned::new(&x);
    for src in owned.srcs() {
        for isa in Isa::available() {
            let mut codes = vec![0i8; rows * cols];
            let mut scales = vec![0.0f32; rows * cols / 100];
            let err =
                quantize_int8_rows(isa, src, cols, 100, &int8_policy, &mut codes, &mut scales)
                    .unwrap_err();
            assert_eq!(
                err,
                KernelError::NonFinite {
                    row: 130,
                    col: 999,
                    value: f32::INFINITY
                },
                "{} {}",
                dtype_name(&src),
                isa.name()
            );
            let err = tensor_stats(isa, src, cols).unwrap_err();
            assert!(
                matches!(
                    err,
                    KernelError::NonFinite {
                        row: 130,
                        col: 999,
                        ..
                    }
                ),
                "{err}"
            );
            let mut codes = vec![0u8; rows * cols];
            let mut scales = vec![0.0f32; 2 * 8];
            let err = quantize_fp8_blocks(
                isa,
                src,
                rows,
                cols,
                (128, 128),
                &fp8_policy,
                &mut codes,
                &mut scales,
            )
            .unwrap_err();
            assert!(
                matches!(
                    err,
                    KernelError::NonFinite {
                        row: 130,
                        col: 999,
                        ..
                    }
                ),
                "{err}"
            );
        }
    }
    let msg = KernelError::NonFinite {
        row: 1,
        col: 2,
        value: f32::NAN,
    }
    .to_string();
    assert_eq!(msg, "non-finite value NaN at row 1, column 2");
}

#[test]
fn blocks_report_earliest_row_across_tiles() {
    // Tile (0, 0) meets an Inf in row 1 before tile (0, 2) is scanned, but row 0 comes first.
    let (rows, cols) = (4, 9);
    let mut x = vec![1.0f32; rows * cols];
    x[cols + 1] = f32::INFINITY;
    x[7] = f32::NAN;
    for isa in Isa::available() {
        let mut codes = vec![0u8; rows * cols];
        let mut scales = vec![0.0f32; 2 * 3];
        let err = quantize_fp8_blocks(
            isa,
            Src::F32(&x),
            rows,
            cols,
            (2, 3),
            &fp8_policy,
            &mut codes,
            &mut scales,
        )
        .unwrap_err();
        assert!(
            matches!(err, KernelError::NonFinite { row: 0, col: 7, .. }),
            "{err}"
        );
    }
}

#[test]
fn blocks_with_partial_edge_tiles() {
    let whole = usize::MAX; // one tile for the whole tensor (per-tensor scale)
    for (rows, cols, br, bc) in [
        (5, 7, 2, 3),
        (130, 300, 128, 128),
        (1, 1, 128, 128),
        (9, 5, whole, whole),
    ] {
        let owned = Owned::new(&random_matrix(21, rows, cols));
        let (tr, tc) = (rows.div_ceil(br), cols.div_ceil(bc));
        for src in owned.srcs() {
            // Reference: tile absmax by plain iteration, then the scalar encoder.
            let mut want_scales = vec![0.0f32; tr * tc];
            for i in 0..tr {
                for j in 0..tc {
                    let mut m = 0.0f32;
                    for r in i * br..((i + 1) * br).min(rows) {
                        for c in j * bc..((j + 1) * bc).min(cols) {
                            m = m.max(src.get(r * cols + c).abs());
                        }
                    }
                    want_scales[i * tc + j] = fp8_policy(m);
                }
            }
            let want_codes: Vec<u8> = (0..rows * cols)
                .map(|k| {
                    let s = want_scales[(k / cols / br) * tc + (k % cols) / bc];
                    f32_to_fp8_e4m3(src.get(k) * (1.0 / s))
                })
                .collect();
            for isa in Isa::available() {
                let ctx = format!(
                    "{} {rows}x{cols} {br}x{bc} {}",
                    dtype_name(&src),
                    isa.name()
                );
                let mut codes = vec![0u8; rows * cols];
                let mut scales = vec![0.0f32; tr * tc];
                quantize_fp8_blocks(
                    isa,
                    src,
                    rows,
                    cols,
                    (br, bc),
                    &fp8_policy,
                    &mut codes,
                    &mut scales,
                )
                .unwrap();
                assert_eq!(scales, want_scales, "{ctx}: scales");
                assert!(codes == want_codes, "{ctx}: codes");
            }
        }
    }
}

#[test]
fn tensor_stats_is_the_global_absmax() {
    let (rows, cols) = (300, 500);
    let mut x = random_matrix(5, rows, cols);
    x[211 * cols + 17] = -12345.5;
    let owned = Owned::new(&x);
    for src in owned.srcs() {
        let want = row_stats(Isa::Scalar, src).absmax;
        for isa in Isa::available() {
            assert_eq!(
                tensor_stats(isa, src, cols).unwrap(),
                want,
                "{}",
                isa.name()
            );
        }
    }
    assert_eq!(tensor_stats(Isa::detect(), Src::F32(&[]), 0).unwrap(), 0.0);
}

#[test]
fn shape_errors() {
    let x = vec![1.0f32; 24];
    let src = Src::F32(&x);
    let isa = Isa::detect();
    let mut codes = vec![0i8; 24];
    let mut scales = vec![0.0f32; 6];
    let p = &int8_policy;
    let is_shape = |r: Result<(), KernelError>| matches!(r, Err(KernelError::Shape { .. }));
    assert!(is_shape(quantize_int8_rows(
        isa,
        src,
        8,
        3,
        p,
        &mut codes,
        &mut scales
    )));
    assert!(is_shape(quantize_int8_rows(
        isa,
        src,
        8,
        0,
        p,
        &mut codes,
        &mut scales
    )));
    assert!(is_shape(quantize_int8_rows(
        isa,
        src,
        5,
        5,
        p,
        &mut codes,
        &mut scales
    )));
    assert!(is_shape(quantize_int8_rows(
        isa,
        src,
        8,
        4,
        p,
        &mut codes[..23],
        &mut scales
    )));
    assert!(is_shape(quantize_int8_rows(
        isa,
        src,
        8,
        4,
        p,
        &mut codes,
        &mut scales[..5]
    )));
    assert!(quantize_int8_rows(isa, src, 8, 4, p, &mut codes, &mut scales).is_ok());
    assert!(quantize_int8_rows(isa, Src::F32(&[]), 0, 0, p, &mut [], &mut []).is_ok());

    let mut codes = vec![0u8; 24];
    let fp = &fp8_policy;
    let blocks = |codes: &mut [u8], scales: &mut [f32], block| {
        quantize_fp8_blocks(isa, src, 4, 6, block, fp, codes, scales)
    };
    assert!(is_shape(blocks(&mut codes, &mut scales, (0, 4))));
    assert!(is_shape(blocks(&mut codes, &mut scales[..3], (2, 4))));
    assert!(blocks(&mut codes, &mut scales[..4], (2, 4)).is_ok());
    assert!(matches!(
        tensor_stats(isa, src, 5),
        Err(KernelError::Shape { .. })
    ));
    assert!(matches!(
        tensor_stats(isa, src, 0),
        Err(KernelError::Shape { .. })
    ));
}
