//! The scale policy every quantizer shares (CPU and CUDA): a group's scale is its largest
//! magnitude over the largest code, rounded *up* to what the scale's storage dtype holds, so
//! the largest weight never exceeds the largest code after division.

use half::{bf16, f16};

/// How scales are stored in the artifact (the checkpoint's 16-bit dtype, or f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleDtype {
    F32,
    F16,
    Bf16,
}

/// Scale of an all-zero group: any positive value decodes its zero codes to exactly 0.
pub const ZERO_GROUP_SCALE: f32 = 1.0;

/// `scale` rounded up to the next value `dtype` stores (unchanged for f32).
pub fn round_scale_up(scale: f32, dtype: ScaleDtype) -> f32 {
    match dtype {
        ScaleDtype::F16 => {
            let mut h = f16::from_f32(scale);
            if h.to_f32() < scale {
                h = f16::from_bits(h.to_bits() + 1);
            }
            h.to_f32()
        }
        ScaleDtype::Bf16 => {
            let mut h = bf16::from_f32(scale);
            if h.to_f32() < scale {
                h = bf16::from_bits(h.to_bits() + 1);
            }
            h.to_f32()
        }
        ScaleDtype::F32 => scale,
    }
}

/// The scale of a group whose largest finite magnitude is `absmax`: `absmax / qmax` rounded
/// up to `dtype`; [`ZERO_GROUP_SCALE`] for an all-zero group; the smallest positive value of
/// `dtype` where the quotient underflows it.
pub fn scale_for(absmax: f32, qmax: f32, dtype: ScaleDtype) -> f32 {
    if absmax == 0.0 {
        return ZERO_GROUP_SCALE;
    }
    let s = round_scale_up(absmax / qmax, dtype);
    if s > 0.0 {
        s
    } else {
        round_scale_up(f32::MIN_POSITIVE, dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_never_down() {
        for &x in &[1e-3f32, 0.1, 1.0 / 3.0, 448.0 / 7.0, 65504.0, 1e-7] {
            for d in [ScaleDtype::F16, ScaleDtype::Bf16] {
                let r = round_scale_up(x, d);
                assert!(r >= x, "{x} {d:?} -> {r}");
            }
        }
        assert_eq!(round_scale_up(0.1, ScaleDtype::F32), 0.1);
        // 1 + 2^-9 is a tie in bf16 that rounds down to 1.0 (even); up is the next code.
        assert_eq!(
            round_scale_up(1.0 + 2f32.powi(-9), ScaleDtype::Bf16),
            1.0078125
        );
        // 1/3 rounds to the bf16 above it already, and stays there.
        assert_eq!(round_scale_up(1.0 / 3.0, ScaleDtype::Bf16), 171.0 / 512.0);
    }

    #[test]
    fn zero_and_underflow() {
        assert_eq!(scale_for(0.0, 127.0, ScaleDtype::F16), ZERO_GROUP_SCALE);
        let tiny = scale_for(1e-30, 448.0, ScaleDtype::F16);
        assert_eq!(tiny, f16::from_bits(1).to_f32());
    }
}
