//! Inputs the kernel tests share: the edge cases the CPU kernels are tested on, and
//! reproducible pseudo-random values.
#![allow(dead_code)]

use temper_kernels::{f32_to_fp8_e4m3, fp8_e4m3_to_f32};

/// SplitMix64: reproducible bits with no dependency.
pub struct Bits(pub u64);

impl Bits {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in [-amp, amp).
    pub fn uniform(&mut self, amp: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
    }
}

/// Every FP8 value, the ties between neighbours and the floats beside each, subnormals,
/// saturation (448, the 464 tie, 480, huge), infinities, NaNs of both signs, signed zeros,
/// f32 subnormals, and a million random bit patterns.
pub fn fp8_edge_inputs() -> Vec<f32> {
    let mut v = Vec::new();
    for c in 0u8..=255 {
        let x = fp8_e4m3_to_f32(c);
        if x.is_nan() {
            continue;
        }
        v.extend([x, x.next_up(), x.next_down()]);
        let next = fp8_e4m3_to_f32(c.wrapping_add(1));
        if next.is_finite() && (c & 0x7F) < 0x7E {
            let mid = (x + next) / 2.0;
            v.extend([mid, mid.next_up(), mid.next_down()]);
        }
    }
    v.extend([
        448.0,
        464.0,
        464.0f32.next_down(),
        464.0f32.next_up(),
        480.0,
        1e30,
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        0.0,
        -0.0,
        f32::from_bits(1),
        f32::from_bits(0x8000_0001),
        f32::MIN_POSITIVE,
        2f32.powi(-10),
        3.0 * 2f32.powi(-10),
        2f32.powi(-6) - 2f32.powi(-10),
    ]);
    let mut bits = Bits(7);
    v.extend((0..1_000_000).map(|_| f32::from_bits(bits.next() as u32)));
    v
}

/// Sanity: the reference itself, so a broken input set shows here first.
pub fn reference_fp8(v: &[f32]) -> Vec<u8> {
    v.iter().map(|&x| f32_to_fp8_e4m3(x)).collect()
}
