//! The scalar FP8 E4M3 ("fn") conversions against hand-computed values and a brute-force
//! nearest-even search.

mod common;

use common::Rng;
use temper_kernels::{f32_to_fp8_e4m3, fp8_e4m3_to_f32};

/// `(-1)^s 2^(e-7) (1 + m/8)`, or `(-1)^s 2^-6 m/8` when `e = 0`; `None` for the NaN codes.
fn formula(code: u8) -> Option<f64> {
    let (s, e, m) = (code >> 7, i32::from((code >> 3) & 0xF), f64::from(code & 7));
    if e == 15 && m == 7.0 {
        return None;
    }
    let mag = if e == 0 {
        2f64.powi(-6) * m / 8.0
    } else {
        2f64.powi(e - 7) * (1.0 + m / 8.0)
    };
    Some(if s == 1 { -mag } else { mag })
}

/// Independent reference: the nearest finite code by exhaustive search, ties to the even code,
/// saturating beyond 448; NaN keeps its sign.
fn brute_force(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    if x.is_nan() {
        return sign | 0x7F;
    }
    let a = f64::from(x.abs());
    if a > 448.0 {
        return sign | 0x7E;
    }
    let mut best = 0u8;
    let mut best_err = f64::INFINITY;
    for c in 0u8..=0x7E {
        let err = (formula(c).unwrap_or(f64::NAN) - a).abs();
        if err < best_err || (err == best_err && c % 2 == 0) {
            best = c;
            best_err = err;
        }
    }
    sign | best
}

#[test]
fn known_values() {
    let cases: [(f32, u8); 15] = [
        (448.0, 0x7E),
        (464.0, 0x7E),
        (2f32.powi(-9), 0x01),
        (2f32.powi(-10), 0x00),
        (3.0 * 2f32.powi(-10), 0x02),
        (-0.0, 0x80),
        (0.0, 0x00),
        (1.0, 0x38),
        (1.0625, 0x38),
        (1.1875, 0x3A),
        (-1.0, 0xB8),
        (2f32.powi(-6), 0x08),
        (7.5 * 2f32.powi(-9), 0x08),
        (f32::INFINITY, 0x7E),
        (f32::NEG_INFINITY, 0xFE),
    ];
    for (x, code) in cases {
        assert_eq!(f32_to_fp8_e4m3(x), code, "{x:e}");
    }
    assert_eq!(f32_to_fp8_e4m3(f32::NAN), 0x7F);
    assert_eq!(f32_to_fp8_e4m3(-f32::NAN), 0xFF);
    assert_eq!(f32_to_fp8_e4m3(f32::from_bits(0x7F80_0001)), 0x7F); // signalling NaN
    assert_eq!(f32_to_fp8_e4m3(1e-45), 0x00);
    assert_eq!(f32_to_fp8_e4m3(-1e-45), 0x80);
}

#[test]
fn decode_matches_formula_for_every_code() {
    for code in 0..=255u8 {
        let v = fp8_e4m3_to_f32(code);
        match formula(code) {
            Some(want) => {
                assert_eq!(f64::from(v), want, "code {code:#04x}");
                assert_eq!(v.is_sign_negative(), code >= 0x80, "sign of {code:#04x}");
            }
            None => assert!(v.is_nan(), "code {code:#04x} must be NaN"),
        }
    }
    assert_eq!(fp8_e4m3_to_f32(0x7E), 448.0);
    assert_eq!(fp8_e4m3_to_f32(0x01), 2f32.powi(-9));
    assert_eq!(fp8_e4m3_to_f32(0x80).to_bits(), 0x8000_0000);
}

#[test]
fn decode_then_encode_round_trips() {
    for code in (0..=255u8).filter(|c| c & 0x7F != 0x7F) {
        assert_eq!(f32_to_fp8_e4m3(fp8_e4m3_to_f32(code)), code, "{code:#04x}");
    }
}

#[test]
fn encode_matches_brute_force_on_midpoints() {
    for c in 0u8..0x7E {
        let (a, b) = (fp8_e4m3_to_f32(c), fp8_e4m3_to_f32(c + 1));
        let mid = (a + b) / 2.0;
        for x in [mid, mid.next_down(), mid.next_up(), -mid] {
            assert_eq!(
                f32_to_fp8_e4m3(x),
                brute_force(x),
                "{x:e} between {c:#04x}+1"
            );
        }
        // A tie goes to whichever neighbour has an even code.
        let even = if c % 2 == 0 { c } else { c + 1 };
        assert_eq!(f32_to_fp8_e4m3(mid), even, "tie {mid:e}");
    }
}

#[test]
fn encode_matches_brute_force_on_random_values() {
    let mut rng = Rng::new(3);
    for _ in 0..200_000 {
        // Exponents 2^-14 .. 2^10 cover underflow, subnormals, normals and saturation.
        let e = rng.below(25) as i32 - 14;
        let x = (1.0 + rng.uniform()) * 2f32.powi(e);
        let x = if rng.next_u32() & 1 == 1 { -x } else { x };
        assert_eq!(f32_to_fp8_e4m3(x), brute_force(x), "{x:e}");
    }
}
