//! The deployment target, asked by every pass: which instance, which tensor-parallel degree
//! (requested, or the GPU count lowered to what the model allows), whether the GPU runs FP8
//! natively, and whether the weights fit its memory with room for the KV cache.

use crate::error::{Error, Result};
use crate::shard::OPTION_TENSOR_PARALLEL_DEGREE;
use serde::Serialize;
use temper_catalog::Instance;
use temper_core::config::ModelConfig;
use temper_core::manifest::FitRecord;

/// Where the tensor-parallel degree came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DegreeOrigin {
    /// `OPTION_TENSOR_PARALLEL_DEGREE`.
    Requested,
    /// The instance's GPU count.
    Instance,
    /// The GPU count lowered to a degree the model allows (see the notes).
    Lowered,
}

/// The model dimensions a tensor-parallel split must divide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
}

impl ModelShape {
    pub fn of(config: &ModelConfig) -> Self {
        ModelShape {
            heads: config.num_attention_heads,
            kv_heads: config.num_key_value_heads,
            intermediate: config.intermediate_size,
            vocab: config.vocab_size,
        }
    }

    /// Why the model cannot be split `degree` ways, if it cannot (vLLM's rules: heads divide;
    /// kv heads divide the degree or are divisible by it, being replicated when fewer than the
    /// ranks; the MLP's intermediate size divides).
    pub fn degree_problem(&self, degree: u32) -> Option<String> {
        temper_format::sharded::degree_problem(
            self.heads,
            self.kv_heads,
            self.intermediate,
            self.vocab,
            degree as usize,
        )
    }

    /// Every degree up to `max` the model allows.
    pub fn allowed_degrees(&self, max: u32) -> Vec<u32> {
        (1..=max)
            .filter(|&d| self.degree_problem(d).is_none())
            .collect()
    }
}

/// The resolved target of a job.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub instance: &'static Instance,
    pub tensor_parallel_degree: u32,
    pub degree_origin: DegreeOrigin,
    /// How the target runs the artifact (degree lowered, FP8 weight-only, ...).
    pub notes: Vec<String>,
}

impl Target {
    /// Resolves the degree for `model` on `instance`. A requested degree is checked and kept
    /// (an error names the value when the model or the instance cannot take it); otherwise
    /// the GPU count, lowered with a note to the largest degree the model allows.
    pub fn resolve(
        instance: &'static Instance,
        model: ModelShape,
        requested: Option<u32>,
    ) -> Result<Target> {
        Self::resolve_for(instance, model, requested, false)
    }

    /// [`Target::resolve`] for a job that compiles (`compiled`): only such a job may target
    /// a Neuron instance, whose degree counts NeuronCores and must be given.
    pub fn resolve_for(
        instance: &'static Instance,
        model: ModelShape,
        requested: Option<u32>,
        compiled: bool,
    ) -> Result<Target> {
        if compiled && instance.accelerator.is_neuron() {
            return neuron_target(instance, model, requested);
        }
        refuse_neuron(instance)?;
        let gpus = instance.default_tensor_parallel_degree().max(1);
        if let Some(d) = requested {
            if d > gpus {
                return Err(Error::Option {
                    option: OPTION_TENSOR_PARALLEL_DEGREE.into(),
                    value: d.to_string(),
                    expected: format!(
                        "at most the {gpus} GPU(s) of {} (one rank per GPU); choose a larger \
                         instance type or a smaller degree",
                        instance.name
                    ),
                });
            }
            if let Some(problem) = model.degree_problem(d) {
                return Err(Error::Option {
                    option: OPTION_TENSOR_PARALLEL_DEGREE.into(),
                    value: d.to_string(),
                    expected: format!(
                        "a degree this model can be split by ({problem}); degrees it allows on {}: {:?}",
                        instance.name,
                        model.allowed_degrees(gpus)
                    ),
                });
            }
            return Ok(Target {
                instance,
                tensor_parallel_degree: d,
                degree_origin: DegreeOrigin::Requested,
                notes: Vec::new(),
            });
        }
        let d = (1..=gpus)
            .rev()
            .find(|&d| model.degree_problem(d).is_none())
            .unwrap_or(1);
        let mut target = Target {
            instance,
            tensor_parallel_degree: d,
            degree_origin: DegreeOrigin::Instance,
            notes: Vec::new(),
        };
        if d < gpus {
            let why = model.degree_problem(gpus).unwrap_or_default();
            target.lower(d, &why);
        }
        Ok(target)
    }

    /// Lowers the degree (only ever when the user did not choose it), with the reason.
    pub fn lower(&mut self, degree: u32, why: &str) {
        let gpus = self.instance.default_tensor_parallel_degree();
        self.notes.push(format!(
            "tensor-parallel degree {degree} instead of {gpus} (the GPUs of {}): {why}",
            self.instance.name
        ));
        self.tensor_parallel_degree = degree;
        self.degree_origin = DegreeOrigin::Lowered;
    }

    pub fn fp8_native(&self) -> bool {
        self.instance.accelerator.native_fp8()
    }

    /// Whether `weight_bytes` split over the degree fit each device.
    pub fn fit(&self, weight_bytes: u64) -> FitRecord {
        fit(self.instance, self.tensor_parallel_degree, weight_bytes)
    }

    /// [`Target::fit`], or an error saying how many devices of this memory the model needs.
    pub fn check_fit(&self, weight_bytes: u64, model: ModelShape) -> Result<FitRecord> {
        let record = self.fit(weight_bytes);
        if record.fits != Some(false) {
            return Ok(record);
        }
        let gib = self.instance.memory_per_rank_bytes().unwrap_or(0) as f64 / GIB;
        let need = (1..=crate::shard::MAX_DEGREE).find(|&d| {
            model.degree_problem(d).is_none()
                && fit(self.instance, d, weight_bytes).fits == Some(true)
        });
        let advice = match need {
            Some(d) => format!(
                "it needs at least {d} devices of {gib:.0} GiB (tensor-parallel degree {d}); {} has {}",
                self.instance.name,
                self.instance.devices
            ),
            None => format!(
                "it does not fit even split over {} devices of {gib:.0} GiB",
                crate::shard::MAX_DEGREE
            ),
        };
        Err(Error::Target(format!(
            "{}; {advice}: choose an instance with more or larger accelerators, or quantize \
             (OPTION_QUANTIZE=fp8 halves 16-bit weights)",
            record.explanation
        )))
    }
}

/// Tensor-parallel degrees the Neuron runtime supports on each family (Neuron SDK docs,
/// transformers-neuronx): inf2 1/2/4/8/24, trn1 1/2/8/32 NeuronCores.
fn neuron_degrees(instance: &Instance) -> &'static [u32] {
    if instance.name.starts_with("ml.trn1") {
        &[1, 2, 8, 32]
    } else {
        &[1, 2, 4, 8, 24]
    }
}

/// A Neuron target: OPTION_TENSOR_PARALLEL_DEGREE is required (as in SageMaker), counts
/// NeuronCores, and must be one the runtime supports within the instance's cores. Heads that
/// do not divide by it are padded by transformers-neuronx, which the notes say.
fn neuron_target(
    instance: &'static Instance,
    model: ModelShape,
    requested: Option<u32>,
) -> Result<Target> {
    let cores = instance.neuron_cores;
    let allowed: Vec<u32> = neuron_degrees(instance)
        .iter()
        .copied()
        .filter(|&d| d <= cores)
        .collect();
    let Some(d) = requested else {
        return Err(Error::Target(format!(
            "compiling for {} ({cores} NeuronCores) needs OPTION_TENSOR_PARALLEL_DEGREE, the \
             NeuronCores the model is split over: one of {allowed:?}",
            instance.name
        )));
    };
    if !allowed.contains(&d) {
        return Err(Error::Option {
            option: OPTION_TENSOR_PARALLEL_DEGREE.into(),
            value: d.to_string(),
            expected: format!(
                "a NeuronCore count the Neuron runtime supports on {} ({cores} cores): {allowed:?}",
                instance.name
            ),
        });
    }
    let mut notes = Vec::new();
    if !model.heads.is_multiple_of(d as usize) {
        notes.push(format!(
            "{} attention heads do not divide by {d} NeuronCores: transformers-neuronx pads \
             them to a multiple of {d}, which costs memory and time",
            model.heads
        ));
    }
    Ok(Target {
        instance,
        tensor_parallel_degree: d,
        degree_origin: DegreeOrigin::Requested,
        notes,
    })
}

/// Neuron instances run compiled models only; their tensor parallelism is applied while
/// compiling.
fn refuse_neuron(instance: &Instance) -> Result<()> {
    if instance.accelerator.is_neuron() {
        return Err(Error::Target(format!(
            "{} is a Neuron instance: Neuron serves compiled models only (SageMaker's rule), and \
             its engines load neither compressed-tensors nor vLLM pre-sharded checkpoints; tensor \
             parallelism for Neuron is applied by the compilation pass: add ModelCompilationConfig \
             (optimize --compile) with OPTION_TENSOR_PARALLEL_DEGREE, or use a GPU instance type",
            instance.name
        )));
    }
    Ok(())
}

const GIB: f64 = (1u64 << 30) as f64;

/// Weights per rank must leave room for activations and the KV cache inside the 90% of
/// device memory vLLM uses by default (`gpu_memory_utilization`): at least 1 GiB or 10%.
pub fn fit(instance: &Instance, tp: u32, weight_bytes: u64) -> FitRecord {
    let per_rank = weight_bytes.div_ceil(tp as u64);
    let Some(device) = instance.memory_per_rank_bytes() else {
        return FitRecord {
            fits: None,
            tensor_parallel_degree: tp,
            weight_bytes,
            weight_bytes_per_device: per_rank,
            device_bytes: None,
            explanation: format!(
                "{} is listed by the API but its device memory is not confirmed here; check that {:.2} GiB \
                 of weights per device fit",
                instance.name,
                per_rank as f64 / GIB
            ),
        };
    };
    let usable = device as f64 * 0.9;
    let headroom = (device as f64 * 0.1).max(GIB);
    let fits = per_rank as f64 + headroom <= usable;
    let explanation = format!(
        "{:.2} GiB of weights per device (tensor-parallel degree {tp}) {} {:.1} GiB usable of {:.1} GiB on {} \
         with {:.1} GiB kept for activations and KV cache",
        per_rank as f64 / GIB,
        if fits { "fit in" } else { "do not fit in" },
        usable / GIB,
        device as f64 / GIB,
        instance.name,
        headroom / GIB,
    );
    FitRecord {
        fits: Some(fits),
        tensor_parallel_degree: tp,
        weight_bytes,
        weight_bytes_per_device: per_rank,
        device_bytes: Some(device),
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: ModelShape = ModelShape {
        heads: 9,
        kv_heads: 3,
        intermediate: 1536,
        vocab: 49152,
    };
    const LLAMA8B: ModelShape = ModelShape {
        heads: 32,
        kv_heads: 8,
        intermediate: 14336,
        vocab: 128256,
    };

    fn instance(name: &str) -> &'static Instance {
        Instance::lookup(name).unwrap()
    }

    #[test]
    fn degree_defaults_to_gpus_lowered_for_the_heads() {
        let t = Target::resolve(instance("ml.g6.12xlarge"), SMOLLM2, None).unwrap();
        assert_eq!(t.tensor_parallel_degree, 3);
        assert_eq!(t.degree_origin, DegreeOrigin::Lowered);
        assert!(t.notes[0].contains("9 attention heads"), "{:?}", t.notes);
        let t = Target::resolve(instance("ml.p5.48xlarge"), LLAMA8B, None).unwrap();
        assert_eq!(
            (t.tensor_parallel_degree, t.degree_origin),
            (8, DegreeOrigin::Instance)
        );
        let t = Target::resolve(
            instance("ml.g6.12xlarge"),
            ModelShape {
                heads: 28,
                kv_heads: 4,
                intermediate: 18944,
                vocab: 152064,
            },
            None,
        )
        .unwrap();
        assert_eq!(t.tensor_parallel_degree, 4);
    }

    #[test]
    fn requested_degrees_are_checked_not_lowered() {
        let g6 = instance("ml.g6.12xlarge");
        let err = Target::resolve(g6, SMOLLM2, Some(2))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("OPTION_TENSOR_PARALLEL_DEGREE=2") && err.contains("9 attention heads"),
            "{err}"
        );
        let err = Target::resolve(g6, LLAMA8B, Some(8))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most the 4 GPU"), "{err}");
        // More ranks than kv heads: replicated when the degree is a multiple of them.
        let replicated = ModelShape {
            heads: 12,
            kv_heads: 2,
            intermediate: 96,
            vocab: 64,
        };
        assert!(replicated.degree_problem(4).is_none());
        assert!(replicated
            .degree_problem(3)
            .unwrap()
            .contains("multiple of 2"));
        let ffn = ModelShape {
            heads: 8,
            kv_heads: 8,
            intermediate: 100,
            vocab: 64,
        };
        assert!(ffn
            .degree_problem(8)
            .unwrap()
            .contains("intermediate size 100"));
        let t = Target::resolve(g6, SMOLLM2, Some(1)).unwrap();
        assert_eq!(t.degree_origin, DegreeOrigin::Requested);
    }

    #[test]
    fn neuron_is_refused_naming_the_compilation_pass() {
        let err = Target::resolve(instance("ml.inf2.xlarge"), SMOLLM2, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("compilation pass"), "{err}");
    }

    #[test]
    fn too_big_says_how_many_devices_it_needs() {
        let t = Target::resolve(instance("ml.g5.xlarge"), LLAMA8B, None).unwrap();
        let err = t.check_fit(70 << 30, LLAMA8B).unwrap_err().to_string();
        assert!(err.contains("needs at least 4 devices of 22 GiB"), "{err}");
        assert!(t.check_fit(8 << 30, LLAMA8B).is_ok());
        let g7 = Target::resolve(instance("ml.g7.2xlarge"), LLAMA8B, None).unwrap();
        assert_eq!(g7.fit(1 << 30).fits, None);
    }
}
