//! Shared test helpers: a deterministic RNG and owned sources in all three dtypes.
#![allow(dead_code)]

use temper_kernels::{bf16, f16, Src};

/// Lengths that cover empty, sub-vector, exact-vector and ragged tails for 8/16/32-lane code.
pub const LENGTHS: [usize; 16] = [
    0, 1, 2, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129, 1000, 4099,
];

/// xorshift64* — deterministic and dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = (self.uniform() as f64).max(1e-12);
        let u2 = self.uniform() as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The same values stored as f32, f16 and bf16 (the halves rounded from the f32 values).
pub struct Owned {
    pub f32: Vec<f32>,
    pub f16: Vec<f16>,
    pub bf16: Vec<bf16>,
}

impl Owned {
    pub fn new(values: &[f32]) -> Self {
        Owned {
            f32: values.to_vec(),
            f16: values.iter().map(|&x| f16::from_f32(x)).collect(),
            bf16: values.iter().map(|&x| bf16::from_f32(x)).collect(),
        }
    }

    pub fn srcs(&self) -> [Src<'_>; 3] {
        [
            Src::F32(&self.f32),
            Src::F16(&self.f16),
            Src::Bf16(&self.bf16),
        ]
    }
}

pub fn dtype_name(src: &Src) -> &'static str {
    match src {
        Src::F32(_) => "f32",
        Src::F16(_) => "f16",
        Src::Bf16(_) => "bf16",
    }
}
