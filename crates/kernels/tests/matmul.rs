//! Products of `temper_kernels::matmul`: every weight kind x activation mode x ISA against the
//! scalar reference (float paths within a summation-order tolerance, INT8 x INT8 bit for bit),
//! the reference against an f64 dot of independently dequantized weights, odd shapes, groups,
//! extreme codes, non-finite activations, validation, and `Matrix::row`.

mod common;

use common::Rng;
use temper_kernels::matmul::{
    matmul, Activations, Matrix, Scratch, Weights, FP8_NAN_CODE_VALUE, INT8_PER_TOKEN_MAX_COLS,
};
use temper_kernels::{bf16, f16, fp8_e4m3_to_f32, Isa, KernelError};

/// `(rows, cols, groups)`: cols not a multiple of 16/32/64, groups whose size is not a multiple of
/// the vector width, several `KC` (256-column) blocks, rows not a multiple of any tile or chunk.
const SHAPES: &[(usize, usize, &[usize])] = &[
    (5, 1, &[1]),
    (13, 77, &[77, 11, 7]),
    (29, 96, &[96, 32]),
    (50, 320, &[320, 64, 32]),
    (37, 384, &[384, 128]),
    (150, 600, &[600, 120, 24]),
    (61, 1031, &[1031]),
];

const MS: &[usize] = &[1, 2, 3, 4, 5, 7, 16, 17, 40];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    F32,
    F16,
    Bf16,
    Int8,
    Fp8,
    Int4,
}

const KINDS: [Kind; 6] = [
    Kind::F32,
    Kind::F16,
    Kind::Bf16,
    Kind::Int8,
    Kind::Fp8,
    Kind::Int4,
];

/// Whether `kind` can hold a `cols`-column matrix with groups of `group` (INT4 packs two codes
/// per byte, so rows and groups must start on a byte).
fn fits(kind: Kind, cols: usize, group: usize) -> bool {
    kind != Kind::Int4 || (cols.is_multiple_of(2) && group.is_multiple_of(2))
}

/// Test-side value of an FP8 weight code (NaN codes read as ±480, as documented).
fn fp8_value(c: u8) -> f32 {
    if c & 0x7F == 0x7F {
        if c & 0x80 != 0 {
            -FP8_NAN_CODE_VALUE
        } else {
            FP8_NAN_CODE_VALUE
        }
    } else {
        fp8_e4m3_to_f32(c)
    }
}

/// Weights of `kind` with special rows: row 0 extreme (-128 / 0xFE = -448), row 1 the other
/// extreme (127 / 0x7E = 448), row 2 all zeros, row 3 every FP8 code in turn (all 256 when
/// `cols >= 256`), the rest random; scales vary per row and group, some negative.
fn make_weights(kind: Kind, rows: usize, cols: usize, group: usize, seed: u64) -> Weights {
    let mut rng = Rng::new(seed);
    let n = rows * cols;
    let scales: Vec<f32> = (0..rows * (cols / group))
        .map(|i| {
            let s = 0.001 * (1.0 + rng.uniform() * 9.0);
            if i % 7 == 3 {
                -s
            } else {
                s
            }
        })
        .collect();
    match kind {
        Kind::F32 | Kind::F16 | Kind::Bf16 => {
            let v: Vec<f32> = (0..n)
                .map(|i| {
                    let r = i / cols;
                    match r {
                        2 => 0.0,
                        0 => -3.0e4,
                        _ => rng.normal() * (1.0 + (r % 5) as f32),
                    }
                })
                .collect();
            match kind {
                Kind::F32 => Weights::F32(v),
                Kind::F16 => Weights::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
                _ => Weights::Bf16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
            }
        }
        Kind::Int8 => {
            let codes = (0..n)
                .map(|i| match i / cols {
                    0 => i8::MIN,
                    1 => i8::MAX,
                    2 => 0,
                    3 => (i % cols) as u8 as i8,
                    _ => rng.next_u32() as i8,
                })
                .collect();
            Weights::Int8 {
                codes,
                scales,
                group,
            }
        }
        Kind::Fp8 => {
            let codes = (0..n)
                .map(|i| match i / cols {
                    0 => 0xFE,
                    1 => 0x7E,
                    2 => 0,
                    3 => (i % cols) as u8,
                    // Random codes, NaN codes included now and then.
                    _ => rng.next_u32() as u8,
                })
                .collect();
            Weights::Fp8 {
                codes,
                scales,
                group,
            }
        }
        Kind::Int4 => {
            // Row 0: every code 0 with zero point 15 (the most negative value, -15); row 1:
            // every code 15 with zero point 0; row 2: codes equal to their zero point (all
            // zeros); row 3: the codes in turn; the rest random.
            let groups = cols / group;
            let zeros: Vec<u8> = (0..rows * groups)
                .map(|i| match i / groups {
                    0 => 15,
                    1 | 2 => 0,
                    _ => (rng.next_u32() % 16) as u8,
                })
                .collect();
            let code = |i: usize, rng: &mut Rng| -> u8 {
                match i / cols {
                    0 | 2 => 0,
                    1 => 15,
                    3 => (i % 16) as u8,
                    _ => (rng.next_u32() % 16) as u8,
                }
            };
            let packed = (0..n / 2)
                .map(|b| code(2 * b, &mut rng) | (code(2 * b + 1, &mut rng) << 4))
                .collect();
            Weights::Int4 {
                packed,
                scales,
                zeros,
                group,
            }
        }
    }
}

/// Activations: random rows, row 1 zeros (when `m > 1`), row 2 large values.
fn make_x(m: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..m * cols)
        .map(|i| match i / cols {
            1 => 0.0,
            2 => rng.normal() * 1.0e3,
            _ => rng.normal(),
        })
        .collect()
}

/// Independent dequantization: `(value, scale)` of element `(r, j)`.
fn parts(w: &Weights, cols: usize, r: usize, j: usize) -> (f32, f32) {
    let i = r * cols + j;
    match w {
        Weights::F32(v) => (v[i], 1.0),
        Weights::F16(v) => (v[i].to_f32(), 1.0),
        Weights::Bf16(v) => (v[i].to_f32(), 1.0),
        Weights::Int8 {
            codes,
            scales,
            group,
        } => (f32::from(codes[i]), scales[r * (cols / group) + j / group]),
        Weights::Fp8 {
            codes,
            scales,
            group,
        } => (fp8_value(codes[i]), scales[r * (cols / group) + j / group]),
        Weights::Int4 {
            packed,
            scales,
            zeros,
            group,
        } => {
            let code = (packed[i / 2] >> (4 * (i % 2))) & 0x0F;
            let g = r * (cols / group) + j / group;
            (f32::from(code) - f32::from(zeros[g]), scales[g])
        }
    }
}

/// `sum_j |x[t, j] * w[r, j]|` in f64, for tolerances.
fn abs_dot(w: &Weights, x: &[f32], cols: usize, t: usize, r: usize) -> f64 {
    (0..cols)
        .map(|j| {
            let (v, s) = parts(w, cols, r, j);
            (f64::from(x[t * cols + j]) * f64::from(v) * f64::from(s)).abs()
        })
        .sum()
}

fn run(isa: Isa, w: &Matrix, x: &[f32], m: usize, act: Activations) -> Vec<f32> {
    let mut y = vec![f32::NAN; m * w.rows()];
    matmul(isa, w, x, m, &mut y, act, &mut Scratch::default()).expect("valid product");
    y
}

/// Float paths: every ISA within `1e-5 * sum |x w|` of the scalar reference.
fn check_close(label: &str, w: &Matrix, x: &[f32], m: usize, y: &[f32], reference: &[f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    for t in 0..m {
        for r in 0..rows {
            let (a, b) = (y[t * rows + r], reference[t * rows + r]);
            let tol = 1e-5 * abs_dot(w.weights(), x, cols, t, r) + 1e-30;
            assert!(
                (f64::from(a) - f64::from(b)).abs() <= tol,
                "{label}: y[{t},{r}] = {a} vs reference {b} (tolerance {tol})"
            );
        }
    }
}

#[test]
fn every_kind_isa_and_shape_matches_the_reference() {
    let mut seed = 1;
    for &(rows, cols, groups) in SHAPES {
        for kind in KINDS {
            let kind_groups: &[usize] = match kind {
                Kind::Int8 | Kind::Fp8 | Kind::Int4 => groups,
                _ => &groups[..1],
            };
            for &group in kind_groups.iter().filter(|&&g| fits(kind, cols, g)) {
                seed += 1;
                let w = Matrix::new(rows, cols, make_weights(kind, rows, cols, group, seed))
                    .expect("valid matrix");
                for &m in MS {
                    let x = make_x(m, cols, seed * 31 + m as u64);
                    let reference = run(Isa::Scalar, &w, &x, m, Activations::F32);
                    for isa in Isa::available() {
                        let label = format!("{kind:?} {rows}x{cols} group {group} m {m} {isa}");
                        let y = run(isa, &w, &x, m, Activations::F32);
                        check_close(&label, &w, &x, m, &y, &reference);
                    }
                }
            }
        }
    }
}

#[test]
fn int8_per_token_is_bit_identical_across_isas_and_to_an_independent_reference() {
    let mut seed = 100;
    for &(rows, cols, _) in SHAPES {
        seed += 1;
        let weights = make_weights(Kind::Int8, rows, cols, cols, seed);
        let w = Matrix::new(rows, cols, weights.clone()).unwrap();
        let Weights::Int8 { codes, scales, .. } = &weights else {
            unreachable!()
        };
        for &m in MS {
            let mut x = make_x(m, cols, seed + m as u64);
            if m > 3 {
                // A row whose absmax sits on a rounding tie of the quantizer.
                for (j, v) in x[3 * cols..4 * cols].iter_mut().enumerate() {
                    *v = (j % 255) as f32 - 127.0 + 0.5;
                }
            }
            // Independent reference: s = absmax / 127, codes by multiplying with 1 / s.
            let mut expected = vec![0.0f32; m * rows];
            for t in 0..m {
                let xt = &x[t * cols..(t + 1) * cols];
                let s = xt.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
                let xq: Vec<i32> = xt
                    .iter()
                    .map(|&v| {
                        if s == 0.0 {
                            0
                        } else {
                            (v * (1.0 / s)).round_ties_even().clamp(-127.0, 127.0) as i32
                        }
                    })
                    .collect();
                for r in 0..rows {
                    let dot: i32 = (0..cols)
                        .map(|j| xq[j] * i32::from(codes[r * cols + j]))
                        .sum();
                    expected[t * rows + r] = (s * scales[r]) * dot as f32;
                }
            }
            for isa in Isa::available() {
                let y = run(isa, &w, &x, m, Activations::Int8PerToken);
                for (i, (a, b)) in y.iter().zip(&expected).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{isa} {rows}x{cols} m {m} at {i}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn reference_equals_f64_dot_of_dequantized_weights() {
    let mut seed = 200;
    for &(rows, cols, groups) in SHAPES {
        for kind in KINDS {
            for &group in groups.iter().filter(|&&g| fits(kind, cols, g)) {
                seed += 1;
                let weights = make_weights(kind, rows, cols, group, seed);
                let w = Matrix::new(rows, cols, weights.clone()).unwrap();
                let m = 3;
                let x = make_x(m, cols, seed);
                let y = run(Isa::Scalar, &w, &x, m, Activations::F32);
                // W4A16: INT4 products take the activations rounded to bf16 (documented).
                let xe: Vec<f32> = if kind == Kind::Int4 {
                    x.iter()
                        .map(|&v| half::bf16::from_f32(v).to_f32())
                        .collect()
                } else {
                    x.clone()
                };
                for t in 0..m {
                    for r in 0..rows {
                        let exact: f64 = (0..cols)
                            .map(|j| {
                                let (v, s) = parts(&weights, cols, r, j);
                                f64::from(xe[t * cols + j]) * f64::from(v) * f64::from(s)
                            })
                            .sum();
                        // f32 summation of a group, one scale multiply, one add per group.
                        let eps = f64::from(f32::EPSILON) / 2.0;
                        let tol =
                            (cols + 4) as f64 * eps * abs_dot(&weights, &x, cols, t, r) + 1e-37;
                        let got = f64::from(y[t * rows + r]);
                        assert!(
                            (got - exact).abs() <= tol,
                            "{kind:?} {rows}x{cols}/{group}: {got} vs {exact} (tol {tol})"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn row_is_the_exact_dequantized_row() {
    for kind in KINDS {
        for (cols, group) in [(300, 300), (300, 60), (77, 11), (1, 1), (96, 32), (64, 2)] {
            if !fits(kind, cols, group) {
                continue;
            }
            let rows = 6;
            let weights = make_weights(kind, rows, cols, group, 7);
            let w = Matrix::new(rows, cols, weights.clone()).unwrap();
            let mut out = vec![0.0f32; cols];
            for r in 0..rows {
                w.row(r, &mut out);
                for (j, &o) in out.iter().enumerate() {
                    let (v, s) = parts(&weights, cols, r, j);
                    let expected = match kind {
                        Kind::Int8 | Kind::Fp8 | Kind::Int4 => v * s,
                        _ => v,
                    };
                    assert_eq!(o.to_bits(), expected.to_bits(), "{kind:?} row {r} col {j}");
                }
            }
        }
    }
}

#[test]
fn all_fp8_codes_in_one_row() {
    let cols = 256;
    let codes: Vec<u8> = (0..=255).collect();
    let w = Matrix::new(
        1,
        cols,
        Weights::Fp8 {
            codes: codes.clone(),
            scales: vec![0.5],
            group: cols,
        },
    )
    .unwrap();
    let mut row = vec![0.0; cols];
    w.row(0, &mut row);
    for (c, &v) in codes.iter().zip(&row) {
        assert_eq!(v.to_bits(), (fp8_value(*c) * 0.5).to_bits(), "code {c:#x}");
    }
    assert_eq!(row[0x7F], 240.0);
    assert_eq!(row[0xFF], -240.0);
    assert_eq!(row[0x7E], 224.0);
    assert_eq!(row[0x01], 0.5 * 2f32.powi(-9));
    // One-hot activations pick each code out exactly, on every ISA and path.
    for m in [1, 17] {
        for k in [0x01, 0x07, 0x08, 0x7E, 0x7F, 0x80, 0x81, 0xFE, 0xFF, 0x3C] {
            let mut x = vec![0.0f32; m * cols];
            for t in 0..m {
                x[t * cols + k] = 1.0;
            }
            for isa in Isa::available() {
                let y = run(isa, &w, &x, m, Activations::F32);
                for &v in &y {
                    // `==`: a sum starting from +0 turns the -0 of code 0x80 into +0.
                    assert_eq!(v, row[k], "{isa} m {m} code {k:#x}");
                }
            }
        }
    }
}

#[test]
fn non_finite_and_zero_activation_rows() {
    let (rows, cols, m) = (40, 100, 5);
    for kind in KINDS {
        let w = Matrix::new(rows, cols, make_weights(kind, rows, cols, cols, 9)).unwrap();
        let mut x = make_x(m, cols, 3);
        x[7] = f32::NAN; // row 0
        x[cols..2 * cols].fill(0.0); // row 1
        x[3 * cols + 5] = f32::INFINITY; // row 3
        let acts: &[Activations] = if kind == Kind::Int8 {
            &[Activations::F32, Activations::Int8PerToken]
        } else {
            &[Activations::F32]
        };
        for &act in acts {
            for isa in Isa::available() {
                for mm in [1, m] {
                    let y = run(isa, &w, &x[..mm * cols], mm, act);
                    assert!(
                        y[..rows].iter().all(|v| v.is_nan()),
                        "{kind:?} {act:?} {isa}"
                    );
                    if mm == 1 {
                        continue;
                    }
                    assert!(y[rows..2 * rows].iter().all(|&v| v == 0.0));
                    assert!(y[2 * rows..3 * rows].iter().all(|v| v.is_finite()));
                    // Row 2 of the weights is zero: Inf * 0 is NaN; others are ±Inf or NaN.
                    assert!(y[3 * rows..4 * rows].iter().all(|v| !v.is_finite()));
                    if act == Activations::Int8PerToken {
                        assert!(y[3 * rows..4 * rows].iter().all(|v| v.is_nan()));
                    }
                    assert!(y[4 * rows..].iter().all(|v| v.is_finite()));
                }
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_threads_or_scratch_history() {
    let (rows, cols) = (333, 700);
    let w = Matrix::new(rows, cols, make_weights(Kind::Fp8, rows, cols, 140, 5)).unwrap();
    let mut scratch = Scratch::default();
    for isa in Isa::available() {
        for &m in &[1usize, 3, 40, 5, 2] {
            let x = make_x(m, cols, m as u64);
            let base = run(isa, &w, &x, m, Activations::F32);
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut y = vec![0.0f32; m * rows];
                pool.install(|| {
                    matmul(isa, &w, &x, m, &mut y, Activations::F32, &mut scratch).unwrap()
                });
                assert_eq!(
                    y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    base.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{isa} m {m} threads {threads}"
                );
            }
        }
    }
}

#[test]
fn empty_and_degenerate_shapes() {
    let w = Matrix::new(0, 5, Weights::F32(vec![])).unwrap();
    let mut y = vec![];
    matmul(
        Isa::detect(),
        &w,
        &[1.0; 10],
        2,
        &mut y,
        Activations::F32,
        &mut Scratch::default(),
    )
    .unwrap();
    let w = Matrix::new(3, 0, Weights::F32(vec![])).unwrap();
    w.row(2, &mut []);
    let mut y = vec![f32::NAN; 6];
    matmul(
        Isa::detect(),
        &w,
        &[],
        2,
        &mut y,
        Activations::F32,
        &mut Scratch::default(),
    )
    .unwrap();
    assert_eq!(y, vec![0.0; 6]);
    let w = Matrix::new(3, 4, Weights::F32(vec![1.0; 12])).unwrap();
    let mut y = vec![];
    matmul(
        Isa::detect(),
        &w,
        &[],
        0,
        &mut y,
        Activations::F32,
        &mut Scratch::default(),
    )
    .unwrap();
}

fn shape_err<T: std::fmt::Debug>(r: Result<T, KernelError>) -> String {
    match r {
        Err(KernelError::Shape { detail }) => detail,
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn matrix_new_refuses_bad_lengths_groups_and_scales() {
    let d = shape_err(Matrix::new(2, 3, Weights::F32(vec![0.0; 5])));
    assert!(d.contains("expected 2x3 = 6"), "{d}");
    shape_err(Matrix::new(2, 3, Weights::Bf16(vec![bf16::ZERO; 7])));
    shape_err(Matrix::new(usize::MAX, 2, Weights::F16(vec![])));
    let int8 = |codes: usize, scales: usize, group: usize| Weights::Int8 {
        codes: vec![0; codes],
        scales: vec![1.0; scales],
        group,
    };
    let fp8 = |codes: usize, scales: usize, group: usize| Weights::Fp8 {
        codes: vec![0; codes],
        scales: vec![1.0; scales],
        group,
    };
    assert!(Matrix::new(2, 6, int8(12, 4, 3)).is_ok());
    assert!(Matrix::new(2, 6, fp8(12, 2, 6)).is_ok());
    shape_err(Matrix::new(2, 6, int8(11, 4, 3)));
    let d = shape_err(Matrix::new(2, 6, int8(12, 3, 3)));
    assert!(d.contains("scales"), "{d}");
    let d = shape_err(Matrix::new(2, 6, int8(12, 0, 0)));
    assert!(d.contains("group 0"), "{d}");
    let d = shape_err(Matrix::new(2, 6, fp8(12, 4, 4)));
    assert!(d.contains("divide"), "{d}");
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let w = Weights::Fp8 {
            codes: vec![0; 12],
            scales: vec![1.0, 1.0, bad, 1.0],
            group: 3,
        };
        let d = shape_err(Matrix::new(2, 6, w));
        assert!(d.contains("row 1, group 0"), "{d}");
    }
}

#[test]
fn matmul_refuses_bad_lengths_and_unsupported_int8_per_token() {
    let mut s = Scratch::default();
    let w = Matrix::new(2, 4, Weights::F32(vec![1.0; 8])).unwrap();
    let mut y = vec![0.0; 2];
    shape_err(matmul(
        Isa::detect(),
        &w,
        &[0.0; 5],
        1,
        &mut y,
        Activations::F32,
        &mut s,
    ));
    shape_err(matmul(
        Isa::detect(),
        &w,
        &[0.0; 4],
        1,
        &mut [0.0; 3],
        Activations::F32,
        &mut s,
    ));
    let d = shape_err(matmul(
        Isa::detect(),
        &w,
        &[0.0; 4],
        1,
        &mut y,
        Activations::Int8PerToken,
        &mut s,
    ));
    assert!(d.contains("INT8"), "{d}");
    let grouped = Matrix::new(
        2,
        4,
        Weights::Int8 {
            codes: vec![1; 8],
            scales: vec![1.0; 4],
            group: 2,
        },
    )
    .unwrap();
    let d = shape_err(matmul(
        Isa::detect(),
        &grouped,
        &[0.0; 4],
        1,
        &mut y,
        Activations::Int8PerToken,
        &mut s,
    ));
    assert!(d.contains("per-channel"), "{d}");
    let cols = INT8_PER_TOKEN_MAX_COLS + 1;
    let wide = Matrix::new(
        1,
        cols,
        Weights::Int8 {
            codes: vec![1; cols],
            scales: vec![1.0],
            group: cols,
        },
    )
    .unwrap();
    let x = vec![1.0; cols];
    shape_err(matmul(
        Isa::detect(),
        &wide,
        &x,
        1,
        &mut [0.0],
        Activations::Int8PerToken,
        &mut s,
    ));
}

#[test]
fn weight_bytes_counts_codes_and_scales() {
    let w = Matrix::new(
        4,
        8,
        Weights::Fp8 {
            codes: vec![0; 32],
            scales: vec![1.0; 8],
            group: 4,
        },
    )
    .unwrap();
    assert_eq!(w.weight_bytes(), 32 + 8 * 4);
    let w = Matrix::new(4, 8, Weights::Bf16(vec![bf16::ZERO; 32])).unwrap();
    assert_eq!(w.weight_bytes(), 64);
    assert_eq!((w.rows(), w.cols()), (4, 8));
}

#[test]
fn int4_matrices_are_validated_and_counted() {
    let int4 = |cols: usize, group: usize, zero: u8| Weights::Int4 {
        packed: vec![0x21; 2 * cols / 2],
        scales: vec![1.0; 2 * (cols / group)],
        zeros: vec![zero; 2 * (cols / group)],
        group,
    };
    let w = Matrix::new(2, 64, int4(64, 32, 8)).unwrap();
    // Codes, scales (f32) and one zero point byte per group.
    assert_eq!(w.weight_bytes(), 64 + 4 * 4 + 4);
    assert!(shape_err(Matrix::new(2, 64, int4(64, 32, 16))).contains("zero point"));
    let odd = Weights::Int4 {
        packed: vec![0; 3],
        scales: vec![1.0; 2],
        zeros: vec![0; 2],
        group: 3,
    };
    assert!(shape_err(Matrix::new(2, 3, odd)).contains("even"));
    let short = Weights::Int4 {
        packed: vec![0; 10],
        scales: vec![1.0; 4],
        zeros: vec![0; 4],
        group: 32,
    };
    assert!(shape_err(Matrix::new(2, 64, short)).contains("elements"));
    // Byte 0x21: element 0 is the low nibble (1), element 1 the high nibble (2).
    let mut row = vec![0.0f32; 64];
    w.row(0, &mut row);
    assert_eq!(&row[..2], &[1.0 - 8.0, 2.0 - 8.0]);
}
