//! Run-time instruction-set selection.

use std::fmt;
use std::sync::OnceLock;

/// An instruction set the kernels are written for, ordered from least to most capable.
///
/// - `Avx2` needs AVX2 + FMA + F16C.
/// - `Avx512` needs AVX-512 F + BW + VL, plus everything `Avx2` needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

/// Cached result of feature detection: `is_x86_feature_detected!` is cheap but not free, and the
/// answer never changes while the process runs.
static DETECTED: OnceLock<Isa> = OnceLock::new();

/// Cached `avx512vnni` detection (only consulted when [`Isa::Avx512`] is usable).
static VNNI: OnceLock<bool> = OnceLock::new();

/// Cached `avx512bf16` detection (only consulted when [`Isa::Avx512`] is usable).
static BF16: OnceLock<bool> = OnceLock::new();

impl Isa {
    /// The best ISA this CPU supports, detected once and cached.
    pub fn detect() -> Isa {
        *DETECTED.get_or_init(detect_uncached)
    }

    /// Every ISA this CPU can run (for tests and benches), from `Scalar` up.
    pub fn available() -> Vec<Isa> {
        let best = Isa::detect();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&isa| isa <= best)
            .collect()
    }

    /// Lower-case name: `"scalar"`, `"avx2"`, `"avx512"`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// `self`, or the best supported ISA below it when this CPU cannot run `self`.
    ///
    /// Falling back instead of failing is harmless because every version gives identical results.
    pub(crate) fn usable(self) -> Usable {
        Usable(self.min(Isa::detect()))
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An ISA this CPU is known to support.
///
/// Only [`Isa::usable`] builds one, so holding a `Usable` is the proof the dispatch code relies on
/// when it calls `#[target_feature]` functions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Usable(Isa);

impl Usable {
    pub(crate) fn isa(self) -> Isa {
        self.0
    }

    /// Whether this is [`Isa::Avx512`] on a CPU that also has AVX-512 VNNI (`vpdpbusd`), detected
    /// once and cached. `Isa` itself stays as is: VNNI only changes the speed of the INT8 dot
    /// products, never a result.
    pub(crate) fn avx512_vnni(self) -> bool {
        self.0 == Isa::Avx512 && *VNNI.get_or_init(detect_vnni)
    }

    /// Whether this is [`Isa::Avx512`] on a CPU that also has AVX-512 BF16 (`vdpbf16ps`). Like
    /// VNNI it only changes speed: the INT4 products it serves take bf16-rounded activations
    /// on every ISA.
    pub(crate) fn avx512_bf16(self) -> bool {
        self.0 == Isa::Avx512 && *BF16.get_or_init(detect_bf16)
    }
}

#[cfg(target_arch = "x86_64")]
fn detect_bf16() -> bool {
    is_x86_feature_detected!("avx512bf16")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_bf16() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn detect_vnni() -> bool {
    is_x86_feature_detected!("avx512vnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_vnni() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn detect_uncached() -> Isa {
    let avx2 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    let avx512 = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl");
    match (avx2, avx512) {
        (true, true) => Isa::Avx512,
        (true, false) => Isa::Avx2,
        _ => Isa::Scalar,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_uncached() -> Isa {
    Isa::Scalar
}
