//! `e^x` for softmax weights, written so the compiler vectorizes a loop over it.
//!
//! The standard library's `f32::exp` is a libm call per element (about 4 ns here);
//! over a 150k vocabulary that is most of the time of a sampling step. This version
//! is plain arithmetic (Cephes' `expf` polynomial, round-to-nearest by the 1.5·2^23
//! trick instead of `floor`, which needs SSE4.1) and is within 2 ulp of `f32::exp`.

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n * LN2_HI` is exact for the `n` that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding and subtracting this rounds an f32 of magnitude < 2^22 to an integer.
const ROUND: f32 = 12_582_912.0;

/// `e^x` for `x <= 0`: 0 below -87 (where f32 `e^x` becomes subnormal) and for -inf.
#[inline(always)]
pub(super) fn exp_nonpositive(x: f32) -> f32 {
    let clamped = if x > -87.0 { x } else { -87.0 };
    // `shifted`'s low mantissa bits hold round(x·log2 e) as an integer: no float-to-int
    // conversion (Rust's saturating `as` keeps the loop from vectorizing).
    let shifted = clamped * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // 2^n through the exponent bits; n is in [-126, 0].
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    if x < -87.0 {
        0.0
    } else {
        er * scale
    }
}

#[cfg(test)]
mod tests {
    use super::exp_nonpositive;

    #[test]
    fn close_to_f64_exp() {
        let mut worst = 0.0f64;
        let mut x = 0.0f32;
        while x > -87.0 {
            let want = f64::from(x).exp();
            let got = f64::from(exp_nonpositive(x));
            worst = worst.max(((got - want) / want).abs());
            x -= 0.000_37;
        }
        assert!(worst < 3e-7, "relative error {worst:e}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    }
}
