//! temper-cuda: the device a binary runs on ([`Device`]: a CPU instruction set or a CUDA
//! GPU), chosen once in the binaries, and temper's CUDA kernels.
//!
//! The kernels live as CUDA C++ in the repository's `kernels/` folder; with the `cuda`
//! feature, `build.rs` compiles them with nvcc into PTX and cubins for sm_80/86/89/90, which
//! [`Gpu`] loads through cudarc's dynamic loading (the binary starts, and runs on the CPU,
//! where no CUDA is installed). What the GPU computes:
//!
//! - quantizers ([`Gpu::quantize`]): FP8 E4M3 per channel, per tensor and in 128x128 blocks,
//!   INT8 per channel and per group, with the scale policy of [`temper_kernels::scale_for`];
//!   codes and scales equal the CPU path's bit for bit (the per-element arithmetic is one
//!   header, `kernels/quant.cuh`, that the tests also compile for the host and run against
//!   the Rust scalar references: see [`host`]);
//! - weight-only products for the runtime ([`Gpu::weight_only_matmul`]): INT8 or FP8 weights
//!   with per-row (group) scales, dequantization fused, f32 activations and output.
//!
//! Without the feature, or with no driver or GPU at run time, opening a GPU is a typed
//! [`CudaError`], never a panic; [`Device::resolve`] turns `auto` into the CPU then.

mod device;
mod error;
#[cfg(feature = "cuda")]
pub mod host;
#[cfg(feature = "cuda")]
mod imp;
mod quant;

pub use device::{Device, DeviceRequest, Gpu, GpuInfo};
pub use error::CudaError;
pub use quant::{QuantLayout, Quantized};

/// Whether this build carries the CUDA kernels (the `cuda` feature).
pub const BUILT_WITH_CUDA: bool = cfg!(feature = "cuda");

/// The GPU architectures this build carries cubins for; others JIT-compile the PTX
/// (compute_80) when the driver allows it.
pub const CUBIN_ARCHS: &[u32] = &[80, 86, 89, 90];
