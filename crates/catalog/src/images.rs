//! The inference image recommended for an artifact: SageMaker's Large Model Inference
//! (LMI) images, in the flavour the target and the applied passes call for.

use crate::Instance;

pub const DEFAULT_REGION: &str = "us-east-1";

const ACCOUNT: &str = "763104351884";
const LMI_TAG: &str = "0.33.0-lmi15.0.0-cu128";
const TENSORRT_LLM_TAG: &str = "0.33.0-tensorrtllm0.21.0-cu128";
const NEURON_TAG: &str = "0.30.0-neuronx-sdk2.20.1";

/// Which engine family serves the artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFlavour {
    /// vLLM-based LMI (the default for GPU artifacts).
    Lmi,
    /// TensorRT-LLM (artifacts compiled for a GPU).
    TensorRtLlm,
    /// Neuron (inf2, trn1).
    Neuron,
}

impl ImageFlavour {
    /// Neuron targets always get the Neuron flavour; GPU targets get TensorRT-LLM when
    /// the artifact was compiled, LMI (vLLM) otherwise.
    pub fn for_target(instance: &Instance, compiled: bool) -> Self {
        if instance.accelerator.is_neuron() {
            ImageFlavour::Neuron
        } else if compiled {
            ImageFlavour::TensorRtLlm
        } else {
            ImageFlavour::Lmi
        }
    }
}

/// `763104351884.dkr.ecr.<region>.amazonaws.com/djl-inference:<tag>`.
pub fn recommended_image(flavour: ImageFlavour, region: &str) -> String {
    let tag = match flavour {
        ImageFlavour::Lmi => LMI_TAG,
        ImageFlavour::TensorRtLlm => TENSORRT_LLM_TAG,
        ImageFlavour::Neuron => NEURON_TAG,
    };
    format!("{ACCOUNT}.dkr.ecr.{region}.amazonaws.com/djl-inference:{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavour_follows_target_and_passes() {
        let g6 = Instance::lookup("ml.g6.xlarge").unwrap();
        let inf2 = Instance::lookup("ml.inf2.xlarge").unwrap();
        assert_eq!(ImageFlavour::for_target(g6, false), ImageFlavour::Lmi);
        assert_eq!(
            ImageFlavour::for_target(g6, true),
            ImageFlavour::TensorRtLlm
        );
        assert_eq!(ImageFlavour::for_target(inf2, false), ImageFlavour::Neuron);
        assert_eq!(
            recommended_image(ImageFlavour::Lmi, "eu-west-1"),
            "763104351884.dkr.ecr.eu-west-1.amazonaws.com/djl-inference:0.33.0-lmi15.0.0-cu128"
        );
    }
}
