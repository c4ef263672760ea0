//! Deployment instance catalog: every `DeploymentInstanceType` of the
//! CreateOptimizationJob API with its accelerators, and the image recommended to
//! serve an artifact on it.
//!
//! Facts from the AWS accelerated-computing instance specifications (usable memory per
//! device in GiB). The ml.g7 / ml.g7e rows are in the API enum but their hardware is not
//! confirmed here: they are listed as unverified and the fit check says so instead of
//! guessing.

mod images;
pub mod prices;
pub mod roofline;
mod table;

pub use images::{recommended_image, ImageFlavour, DEFAULT_REGION};
pub use table::INSTANCES;

/// An accelerator model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Accelerator {
    T4,
    A10G,
    L4,
    L40S,
    A100,
    H100,
    H200,
    B200,
    /// ml.g7 / ml.g7e: Blackwell RTX-class GPUs, specifications not confirmed.
    BlackwellRtx,
    Inferentia2,
    Trainium,
}

impl Accelerator {
    pub fn name(self) -> &'static str {
        match self {
            Accelerator::T4 => "NVIDIA T4",
            Accelerator::A10G => "NVIDIA A10G",
            Accelerator::L4 => "NVIDIA L4",
            Accelerator::L40S => "NVIDIA L40S",
            Accelerator::A100 => "NVIDIA A100",
            Accelerator::H100 => "NVIDIA H100",
            Accelerator::H200 => "NVIDIA H200",
            Accelerator::B200 => "NVIDIA B200",
            Accelerator::BlackwellRtx => "NVIDIA Blackwell RTX-class (unverified)",
            Accelerator::Inferentia2 => "AWS Inferentia2",
            Accelerator::Trainium => "AWS Trainium",
        }
    }

    /// CUDA compute capability as `(major, minor)`; `None` for Neuron devices.
    pub fn compute_capability(self) -> Option<(u8, u8)> {
        Some(match self {
            Accelerator::T4 => (7, 5),
            Accelerator::A10G => (8, 6),
            Accelerator::L4 | Accelerator::L40S => (8, 9),
            Accelerator::A100 => (8, 0),
            Accelerator::H100 | Accelerator::H200 => (9, 0),
            Accelerator::B200 => (10, 0),
            Accelerator::BlackwellRtx => (12, 0),
            Accelerator::Inferentia2 | Accelerator::Trainium => return None,
        })
    }

    /// Whether FP8 matmuls run natively (compute capability >= 8.9). Elsewhere engines
    /// run FP8 checkpoints weight-only (dequantizing to 16-bit for the matmul).
    pub fn native_fp8(self) -> bool {
        self.compute_capability().is_some_and(|cc| cc >= (8, 9))
    }

    pub fn is_neuron(self) -> bool {
        self.compute_capability().is_none()
    }

    /// `sm_89`, or `neuron`.
    pub fn compute_label(self) -> String {
        match self.compute_capability() {
            Some((a, b)) => format!("sm_{a}{b}"),
            None => "neuron".into(),
        }
    }
}

/// One deployment instance type.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Instance {
    pub name: &'static str,
    pub accelerator: Accelerator,
    /// Accelerator devices (GPUs, or Neuron chips).
    pub devices: u32,
    /// NeuronCores per instance (0 on GPUs): the unit of Neuron tensor parallelism.
    pub neuron_cores: u32,
    /// Usable memory per device in GiB; `None` where unverified.
    pub memory_gib: Option<f64>,
}

impl Instance {
    /// Looks up an instance type, with suggestions for a near miss.
    pub fn lookup(name: &str) -> Result<&'static Instance, CatalogError> {
        INSTANCES.iter().find(|i| i.name == name).ok_or_else(|| {
            let family = name
                .trim_start_matches("ml.")
                .split('.')
                .next()
                .unwrap_or("");
            let mut close: Vec<&str> = INSTANCES
                .iter()
                .filter(|i| {
                    !family.is_empty()
                        && i.name
                            .trim_start_matches("ml.")
                            .starts_with(&format!("{family}."))
                })
                .map(|i| i.name)
                .collect();
            if close.is_empty() {
                close = vec![
                    "ml.g5.xlarge",
                    "ml.g6.12xlarge",
                    "ml.g6e.xlarge",
                    "ml.p4d.24xlarge",
                    "ml.p5.48xlarge",
                    "ml.inf2.xlarge",
                ];
            }
            CatalogError::UnknownInstance {
                name: name.to_string(),
                suggestions: close.join(", "),
            }
        })
    }

    /// Default tensor-parallel degree: one rank per GPU; on Neuron one per NeuronCore.
    pub fn default_tensor_parallel_degree(&self) -> u32 {
        if self.accelerator.is_neuron() {
            self.neuron_cores
        } else {
            self.devices
        }
    }

    /// Memory per tensor-parallel rank in bytes (a NeuronCore gets half a chip).
    pub fn memory_per_rank_bytes(&self) -> Option<u64> {
        let per_device = self.memory_gib? * (1u64 << 30) as f64;
        let per_rank = if self.accelerator.is_neuron() {
            per_device * self.devices as f64 / self.neuron_cores as f64
        } else {
            per_device
        };
        Some(per_rank as u64)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("unknown deployment instance type `{name}`; known types include: {suggestions}")]
    UnknownInstance { name: String, suggestions: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_enum_value_is_in_the_table() {
        let shapes: serde_json::Value = serde_json::from_str(include_str!(
            "../../api/sagemaker-2017-07-24-optimization.json"
        ))
        .unwrap();
        let values = shapes["shapes"]["OptimizationJobDeploymentInstanceType"]["enum"]
            .as_array()
            .unwrap();
        assert!(values.len() > 50);
        for v in values {
            Instance::lookup(v.as_str().unwrap()).unwrap();
        }
        assert_eq!(
            values.len(),
            INSTANCES.len(),
            "the table lists types the API does not"
        );
    }

    #[test]
    fn facts_of_some_rows() {
        let g6 = Instance::lookup("ml.g6.12xlarge").unwrap();
        assert_eq!(
            (g6.accelerator, g6.devices, g6.memory_gib),
            (Accelerator::L4, 4, Some(22.0))
        );
        assert!(g6.accelerator.native_fp8());
        assert!(!Instance::lookup("ml.g5.2xlarge")
            .unwrap()
            .accelerator
            .native_fp8());
        assert!(!Instance::lookup("ml.p4d.24xlarge")
            .unwrap()
            .accelerator
            .native_fp8());
        assert_eq!(
            Instance::lookup("ml.p4de.24xlarge").unwrap().memory_gib,
            Some(80.0)
        );
        let inf2 = Instance::lookup("ml.inf2.48xlarge").unwrap();
        assert_eq!((inf2.devices, inf2.neuron_cores), (12, 24));
        assert_eq!(inf2.default_tensor_parallel_degree(), 24);
        assert_eq!(inf2.memory_per_rank_bytes(), Some(16 << 30));
        let err = Instance::lookup("ml.g6.13xlarge").unwrap_err().to_string();
        assert!(err.contains("ml.g6.12xlarge"), "{err}");
    }
}
