//! The device a binary runs on, chosen once (`--device`) and passed down, as candle does.

use crate::error::CudaError;
#[cfg(not(feature = "cuda"))]
use crate::quant::{QuantLayout, Quantized};
use std::fmt;
use std::str::FromStr;
use temper_kernels::Isa;
#[cfg(not(feature = "cuda"))]
use temper_kernels::{ScaleDtype, Src};

/// What `--device` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    /// The first CUDA GPU when this build has CUDA and the host a driver and a GPU, else the
    /// CPU with its best instruction set.
    #[default]
    Auto,
    /// The CPU; `None`: its best instruction set.
    Cpu(Option<Isa>),
    /// CUDA device `ordinal`; an error if it cannot be opened.
    Cuda(usize),
}

const DEVICE_FORMS: &str = "auto, cpu, cpu:scalar, cpu:avx2, cpu:avx512, cuda or cuda:N";

impl FromStr for DeviceRequest {
    type Err = CudaError;

    fn from_str(s: &str) -> Result<Self, CudaError> {
        let bad = || CudaError::BadDevice {
            value: s.to_string(),
            expected: DEVICE_FORMS,
        };
        let lower = s.trim().to_ascii_lowercase();
        let (kind, arg) = match lower.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (lower.as_str(), None),
        };
        match (kind, arg) {
            ("auto", None) => Ok(DeviceRequest::Auto),
            ("cpu", None) => Ok(DeviceRequest::Cpu(None)),
            ("cpu", Some("scalar")) => Ok(DeviceRequest::Cpu(Some(Isa::Scalar))),
            ("cpu", Some("avx2")) => Ok(DeviceRequest::Cpu(Some(Isa::Avx2))),
            ("cpu", Some("avx512")) => Ok(DeviceRequest::Cpu(Some(Isa::Avx512))),
            ("cuda" | "gpu", None) => Ok(DeviceRequest::Cuda(0)),
            ("cuda" | "gpu", Some(n)) => n.parse().map(DeviceRequest::Cuda).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRequest::Auto => f.write_str("auto"),
            DeviceRequest::Cpu(None) => f.write_str("cpu"),
            DeviceRequest::Cpu(Some(isa)) => write!(f, "cpu:{}", isa.name()),
            DeviceRequest::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Where a job's arithmetic runs.
#[derive(Clone, Debug)]
pub enum Device {
    Cpu(Isa),
    Cuda(Gpu),
}

impl Device {
    /// Opens what `request` names. `Auto` falls back to the CPU (never an error) when no GPU
    /// can be used, and says why in the returned note; an explicit `cuda:N` that cannot be
    /// opened is an error saying what to do.
    pub fn resolve(request: DeviceRequest) -> Result<(Device, Option<String>), CudaError> {
        match request {
            DeviceRequest::Cpu(isa) => Ok((Device::Cpu(isa.unwrap_or_else(Isa::detect)), None)),
            DeviceRequest::Cuda(n) => Ok((Device::Cuda(Gpu::open(n)?), None)),
            DeviceRequest::Auto => match Gpu::open(0) {
                Ok(gpu) => Ok((Device::Cuda(gpu), None)),
                Err(why) => Ok((
                    Device::Cpu(Isa::detect()),
                    Some(format!("running on the CPU: {why}")),
                )),
            },
        }
    }

    /// The CPU instruction set for the work that stays on the host (also on a GPU device:
    /// calibration, packing, the quality evaluation's reference).
    pub fn isa(&self) -> Isa {
        match self {
            Device::Cpu(isa) => *isa,
            Device::Cuda(_) => Isa::detect(),
        }
    }

    pub fn gpu(&self) -> Option<&Gpu> {
        match self {
            Device::Cpu(_) => None,
            Device::Cuda(g) => Some(g),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu(isa) => write!(f, "cpu ({})", isa.name()),
            Device::Cuda(g) => {
                let i = g.info();
                write!(
                    f,
                    "cuda:{} ({}, sm_{}, {:.0} GiB)",
                    i.ordinal,
                    i.name,
                    i.compute_capability,
                    i.memory_bytes as f64 / (1u64 << 30) as f64
                )
            }
        }
    }
}

/// What a GPU is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    /// Major * 10 + minor, e.g. 89 for an L4.
    pub compute_capability: u32,
    pub memory_bytes: u64,
    /// As the driver reports it, e.g. 12080 for CUDA 12.8.
    pub driver_version: u32,
}

impl GpuInfo {
    /// FP8 E4M3 matrix instructions exist from sm_89 (Ada) on.
    pub fn fp8_native(&self) -> bool {
        self.compute_capability >= 89
    }
}

/// An opened CUDA GPU with temper's kernels loaded. Cheap to clone.
#[derive(Clone)]
pub struct Gpu {
    #[cfg(feature = "cuda")]
    pub(crate) inner: std::sync::Arc<crate::imp::Loaded>,
    #[cfg(not(feature = "cuda"))]
    never: std::convert::Infallible,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Gpu").field(self.info()).finish()
    }
}

/// INT8 or FP8 codes with per-row (group) scales, resident on the GPU: the weights of one
/// Linear for [`Gpu::weight_only_matmul`].
pub struct GpuMatrix {
    pub rows: usize,
    pub cols: usize,
    pub group: usize,
    pub fp8: bool,
    #[cfg(feature = "cuda")]
    pub(crate) codes: cudarc::driver::CudaSlice<u8>,
    #[cfg(feature = "cuda")]
    pub(crate) scales: cudarc::driver::CudaSlice<f32>,
}

#[cfg(not(feature = "cuda"))]
impl Gpu {
    pub fn open(_ordinal: usize) -> Result<Gpu, CudaError> {
        Err(CudaError::NotBuilt)
    }

    pub fn info(&self) -> &GpuInfo {
        match self.never {}
    }

    pub fn quantize(
        &self,
        _src: Src,
        _rows: usize,
        _cols: usize,
        _fp8: bool,
        _layout: QuantLayout,
        _scale_dtype: ScaleDtype,
    ) -> Result<Quantized, CudaError> {
        match self.never {}
    }

    pub fn upload_matrix(
        &self,
        _codes: &[u8],
        _scales: &[f32],
        _fp8: bool,
        _rows: usize,
        _cols: usize,
        _group: usize,
    ) -> Result<GpuMatrix, CudaError> {
        match self.never {}
    }

    pub fn weight_only_matmul(
        &self,
        _w: &GpuMatrix,
        _x: &[f32],
        _m: usize,
    ) -> Result<Vec<f32>, CudaError> {
        match self.never {}
    }
}

impl Gpu {
    /// An error unless this GPU multiplies FP8 natively (sm_89+), for jobs that ask for FP8
    /// matrix products rather than FP8 storage.
    pub fn require_native_fp8(&self) -> Result<(), CudaError> {
        let i = self.info();
        if i.fp8_native() {
            Ok(())
        } else {
            Err(CudaError::NoNativeFp8 {
                device: i.name.clone(),
                cc: i.compute_capability,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_names_the_forms_on_a_bad_one() {
        let ok = [
            ("auto", DeviceRequest::Auto),
            ("CPU", DeviceRequest::Cpu(None)),
            ("cpu:avx2", DeviceRequest::Cpu(Some(Isa::Avx2))),
            ("cuda", DeviceRequest::Cuda(0)),
            ("cuda:3", DeviceRequest::Cuda(3)),
            ("gpu:1", DeviceRequest::Cuda(1)),
        ];
        for (s, want) in ok {
            assert_eq!(s.parse::<DeviceRequest>().unwrap(), want, "{s}");
        }
        for bad in ["", "tpu", "cuda:x", "cpu:sse", "cuda:-1"] {
            let e = bad.parse::<DeviceRequest>().unwrap_err().to_string();
            assert!(
                e.contains("cuda:N") && e.contains(&format!("{bad:?}")),
                "{e}"
            );
        }
    }

    #[test]
    fn cpu_resolves_and_auto_never_fails() {
        let (d, note) = Device::resolve(DeviceRequest::Cpu(Some(Isa::Scalar))).unwrap();
        assert!(matches!(d, Device::Cpu(Isa::Scalar)) && note.is_none());
        let (d, note) = Device::resolve(DeviceRequest::Auto).unwrap();
        // Here (no GPU, or no cuda feature) auto is the CPU and says why.
        if d.gpu().is_none() {
            assert!(note.unwrap().starts_with("running on the CPU: "));
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_typed_error() {
        let e = Device::resolve(DeviceRequest::Cuda(0)).unwrap_err();
        assert!(matches!(e, CudaError::NotBuilt), "{e}");
        assert!(e.to_string().contains("--features cuda"));
    }
}
