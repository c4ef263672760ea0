//! The instance table, one row per `OptimizationJobDeploymentInstanceType` value.

use crate::{Accelerator, Instance};

const fn gpu(
    name: &'static str,
    accelerator: Accelerator,
    devices: u32,
    memory_gib: f64,
) -> Instance {
    Instance {
        name,
        accelerator,
        devices,
        neuron_cores: 0,
        memory_gib: Some(memory_gib),
    }
}

/// Neuron chips carry 2 NeuronCore-v2 each and 32 GiB.
const fn neuron(name: &'static str, accelerator: Accelerator, chips: u32) -> Instance {
    Instance {
        name,
        accelerator,
        devices: chips,
        neuron_cores: 2 * chips,
        memory_gib: Some(32.0),
    }
}

/// Blackwell RTX-class rows whose device count and memory are not confirmed.
const fn unverified(name: &'static str) -> Instance {
    Instance {
        name,
        accelerator: Accelerator::BlackwellRtx,
        devices: 1,
        neuron_cores: 0,
        memory_gib: None,
    }
}

pub static INSTANCES: [Instance; 55] = [
    gpu("ml.p4d.24xlarge", Accelerator::A100, 8, 40.0),
    gpu("ml.p4de.24xlarge", Accelerator::A100, 8, 80.0),
    gpu("ml.p5.48xlarge", Accelerator::H100, 8, 80.0),
    gpu("ml.p5e.48xlarge", Accelerator::H200, 8, 141.0),
    gpu("ml.p5en.48xlarge", Accelerator::H200, 8, 141.0),
    gpu("ml.g4dn.xlarge", Accelerator::T4, 1, 16.0),
    gpu("ml.g4dn.2xlarge", Accelerator::T4, 1, 16.0),
    gpu("ml.g4dn.4xlarge", Accelerator::T4, 1, 16.0),
    gpu("ml.g4dn.8xlarge", Accelerator::T4, 1, 16.0),
    gpu("ml.g4dn.12xlarge", Accelerator::T4, 4, 16.0),
    gpu("ml.g4dn.16xlarge", Accelerator::T4, 1, 16.0),
    gpu("ml.g5.xlarge", Accelerator::A10G, 1, 22.0),
    gpu("ml.g5.2xlarge", Accelerator::A10G, 1, 22.0),
    gpu("ml.g5.4xlarge", Accelerator::A10G, 1, 22.0),
    gpu("ml.g5.8xlarge", Accelerator::A10G, 1, 22.0),
    gpu("ml.g5.12xlarge", Accelerator::A10G, 4, 22.0),
    gpu("ml.g5.16xlarge", Accelerator::A10G, 1, 22.0),
    gpu("ml.g5.24xlarge", Accelerator::A10G, 4, 22.0),
    gpu("ml.g5.48xlarge", Accelerator::A10G, 8, 22.0),
    gpu("ml.g6.xlarge", Accelerator::L4, 1, 22.0),
    gpu("ml.g6.2xlarge", Accelerator::L4, 1, 22.0),
    gpu("ml.g6.4xlarge", Accelerator::L4, 1, 22.0),
    gpu("ml.g6.8xlarge", Accelerator::L4, 1, 22.0),
    gpu("ml.g6.12xlarge", Accelerator::L4, 4, 22.0),
    gpu("ml.g6.16xlarge", Accelerator::L4, 1, 22.0),
    gpu("ml.g6.24xlarge", Accelerator::L4, 4, 22.0),
    gpu("ml.g6.48xlarge", Accelerator::L4, 8, 22.0),
    gpu("ml.g6e.xlarge", Accelerator::L40S, 1, 44.0),
    gpu("ml.g6e.2xlarge", Accelerator::L40S, 1, 44.0),
    gpu("ml.g6e.4xlarge", Accelerator::L40S, 1, 44.0),
    gpu("ml.g6e.8xlarge", Accelerator::L40S, 1, 44.0),
    gpu("ml.g6e.12xlarge", Accelerator::L40S, 4, 44.0),
    gpu("ml.g6e.16xlarge", Accelerator::L40S, 1, 44.0),
    gpu("ml.g6e.24xlarge", Accelerator::L40S, 4, 44.0),
    gpu("ml.g6e.48xlarge", Accelerator::L40S, 8, 44.0),
    neuron("ml.inf2.xlarge", Accelerator::Inferentia2, 1),
    neuron("ml.inf2.8xlarge", Accelerator::Inferentia2, 1),
    neuron("ml.inf2.24xlarge", Accelerator::Inferentia2, 6),
    neuron("ml.inf2.48xlarge", Accelerator::Inferentia2, 12),
    neuron("ml.trn1.2xlarge", Accelerator::Trainium, 1),
    neuron("ml.trn1.32xlarge", Accelerator::Trainium, 16),
    neuron("ml.trn1n.32xlarge", Accelerator::Trainium, 16),
    gpu("ml.p6-b200.48xlarge", Accelerator::B200, 8, 179.0),
    unverified("ml.g7e.2xlarge"),
    unverified("ml.g7e.4xlarge"),
    unverified("ml.g7e.8xlarge"),
    unverified("ml.g7e.12xlarge"),
    unverified("ml.g7e.24xlarge"),
    unverified("ml.g7e.48xlarge"),
    unverified("ml.g7.2xlarge"),
    unverified("ml.g7.4xlarge"),
    unverified("ml.g7.8xlarge"),
    unverified("ml.g7.12xlarge"),
    unverified("ml.g7.24xlarge"),
    unverified("ml.g7.48xlarge"),
];
