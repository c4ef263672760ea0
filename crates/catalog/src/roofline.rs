//! Per-device memory bandwidth and dense tensor throughput: what the serving projection
//! (`temper-recommend`) needs to project a decode step or a prefill onto an instance.
//!
//! Figures are the vendors' peak datasheet numbers, **dense** (NVIDIA quotes Ampere-and-later
//! tensor throughput "with sparsity"; those are halved here), read second-hand from pages
//! reproducing the datasheets (no vendor page was reachable from here):
//! - T4: NVIDIA T4 datasheet (320 GB/s, 65 FP16 TFLOPS, 130 INT8 TOPS; no BF16, no FP8).
//! - A10G: 600 GB/s (baseten.co, "NVIDIA A10 vs A10G"); its tensor throughput has no citable
//!   source (third-party figures disagree), so it is unknown here.
//! - L4: 300 GB/s; 121 BF16, 242.5 FP8, 242.5 INT8 (NVIDIA L4 datasheet, sparse halved).
//! - L40S: 864 GB/s; 362 BF16, 733 FP8, 733 INT8 (NVIDIA L40S datasheet, sparse halved).
//! - A100 SXM: 1,555 GB/s (40 GB) or 2,039 GB/s (80 GB); 312 BF16, 624 INT8; no FP8
//!   (NVIDIA A100 datasheet).
//! - H100 SXM: 3,350 GB/s; 989.5 BF16, 1,979 FP8, 1,979 INT8 (NVIDIA H100 datasheet).
//! - H200: 4,800 GB/s; the H100's compute (same GH100 die).
//! - B200 (HGX, 1,000 W, as in p6-b200): 8,000 GB/s; 2,250 BF16, 4,500 FP8, 4,500 INT8.
//! - Inferentia2 and Trainium chips: 820 GiB/s (880 GB/s); 190 BF16 and cFP8, 380 INT8
//!   (AWS Neuron architecture docs, per chip of two NeuronCore-v2).

use crate::{Accelerator, Instance};
use serde::Serialize;

/// The precision a model's products run in on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Precision {
    /// 16-bit activations (weight-only quantized models dequantize to 16-bit).
    Bf16,
    /// FP8 weights and activations (native FP8 only).
    Fp8,
    /// INT8 weights and activations (W8A8).
    Int8,
}

/// One device's peaks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Roofline {
    /// Memory bandwidth, bytes per second.
    pub bandwidth: f64,
    /// Dense tensor throughput in operations (2 per multiply-add) per second, by precision;
    /// `None` where the device lacks the format or the figure is unknown.
    pub bf16_flops: Option<f64>,
    pub fp8_flops: Option<f64>,
    pub int8_ops: Option<f64>,
}

impl Roofline {
    /// Dense multiply-adds per second at `p`, if known and supported.
    pub fn macs_per_second(&self, p: Precision) -> Option<f64> {
        let ops = match p {
            Precision::Bf16 => self.bf16_flops,
            Precision::Fp8 => self.fp8_flops,
            Precision::Int8 => self.int8_ops,
        }?;
        Some(ops / 2.0)
    }
}

const GB: f64 = 1e9;
const T: f64 = 1e12;

const fn row(gb_s: f64, bf16: Option<f64>, fp8: Option<f64>, int8: Option<f64>) -> Roofline {
    Roofline {
        bandwidth: gb_s * GB,
        bf16_flops: match bf16 {
            Some(t) => Some(t * T),
            None => None,
        },
        fp8_flops: match fp8 {
            Some(t) => Some(t * T),
            None => None,
        },
        int8_ops: match int8 {
            Some(t) => Some(t * T),
            None => None,
        },
    }
}

impl Instance {
    /// One device's roofline (per Neuron chip on inf2/trn1); `None` where unverified.
    pub fn roofline(&self) -> Option<Roofline> {
        Some(match self.accelerator {
            // FP16 (Turing has no BF16): what a 16-bit model runs at.
            Accelerator::T4 => row(320.0, Some(65.0), None, Some(130.0)),
            Accelerator::A10G => row(600.0, None, None, None),
            Accelerator::L4 => row(300.0, Some(121.0), Some(242.5), Some(242.5)),
            Accelerator::L40S => row(864.0, Some(362.0), Some(733.0), Some(733.0)),
            Accelerator::A100 => {
                let bw = if self.memory_gib? > 60.0 {
                    2039.0
                } else {
                    1555.0
                };
                row(bw, Some(312.0), None, Some(624.0))
            }
            Accelerator::H100 => row(3350.0, Some(989.5), Some(1979.0), Some(1979.0)),
            Accelerator::H200 => row(4800.0, Some(989.5), Some(1979.0), Some(1979.0)),
            Accelerator::B200 => row(8000.0, Some(2250.0), Some(4500.0), Some(4500.0)),
            Accelerator::Inferentia2 | Accelerator::Trainium => {
                row(880.0, Some(190.0), Some(190.0), Some(380.0))
            }
            Accelerator::BlackwellRtx => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooflines_of_some_instances() {
        let bw = |name: &str| {
            Instance::lookup(name)
                .unwrap()
                .roofline()
                .unwrap()
                .bandwidth
        };
        assert_eq!(bw("ml.g5.xlarge"), 600e9);
        assert_eq!(bw("ml.p4d.24xlarge"), 1555e9);
        assert_eq!(bw("ml.p4de.24xlarge"), 2039e9);
        let h100 = Instance::lookup("ml.p5.48xlarge")
            .unwrap()
            .roofline()
            .unwrap();
        assert_eq!(h100.macs_per_second(Precision::Fp8), Some(1979e12 / 2.0));
        // No FP8 before Ada; no tensor figure for the A10G; unverified rows have none.
        let a100 = Instance::lookup("ml.p4d.24xlarge")
            .unwrap()
            .roofline()
            .unwrap();
        assert_eq!(a100.macs_per_second(Precision::Fp8), None);
        let a10g = Instance::lookup("ml.g5.2xlarge")
            .unwrap()
            .roofline()
            .unwrap();
        assert_eq!(a10g.macs_per_second(Precision::Bf16), None);
        assert!(Instance::lookup("ml.g7e.2xlarge")
            .unwrap()
            .roofline()
            .is_none());
    }

    #[test]
    fn every_known_gpu_with_fp8_natively_has_an_fp8_figure() {
        for i in crate::INSTANCES {
            if let Some(r) = i.roofline() {
                assert!(r.bandwidth > 0.0, "{}", i.name);
                if i.accelerator.native_fp8() {
                    assert!(r.fp8_flops.is_some(), "{}", i.name);
                }
            }
        }
    }
}
