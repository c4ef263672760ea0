//! Why a GPU could not be used.

/// An error opening or running on a CUDA device. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error(
        "this build of temper has no CUDA support: rebuild with `--features cuda` (nvcc from \
         PyPI is enough: scripts/cuda-toolchain.sh), or use --device cpu"
    )]
    NotBuilt,
    #[error(
        "no CUDA driver (libcuda.so) could be loaded on this host: install the NVIDIA driver \
         (580 or newer for these CUDA 13 kernels) or use --device cpu"
    )]
    NoDriver,
    #[error("CUDA device {ordinal} does not exist: this host has {count} CUDA device(s){hint}")]
    NoDevice {
        ordinal: usize,
        count: usize,
        hint: &'static str,
    },
    #[error("the CUDA driver failed {what}: {detail}")]
    Driver { what: String, detail: String },
    #[error(
        "{device} (sm_{cc}) has no native FP8 matrix instructions (sm_89 and newer do): serve \
         FP8 weights weight-only on it (dequantized to 16 bits), or use INT8"
    )]
    NoNativeFp8 { device: String, cc: u32 },
    #[error("non-finite value {value} at row {row}, column {col}")]
    NonFinite { row: usize, col: usize, value: f32 },
    #[error("bad shape for the CUDA kernel: {0}")]
    Shape(String),
    #[error("bad --device value {value:?}: expected {expected}")]
    BadDevice {
        value: String,
        expected: &'static str,
    },
}
