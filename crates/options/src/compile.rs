//! The compilation pass's options (`ModelCompilationConfig`), for the two engines it targets:
//! TensorRT-LLM on GPU instances and the Neuron SDK on inf2/trn1. Each is parsed here and
//! checked against the instance and the model when the pass is planned.

use crate::env::Env;
use crate::error::{invalid, Error, Result};
use serde::Serialize;
use temper_catalog::Instance;

pub const OPTION_MAX_INPUT_LEN: &str = "OPTION_MAX_INPUT_LEN";
pub const OPTION_MAX_OUTPUT_LEN: &str = "OPTION_MAX_OUTPUT_LEN";
pub const OPTION_MAX_NUM_TOKENS: &str = "OPTION_MAX_NUM_TOKENS";
pub const OPTION_MAX_ROLLING_BATCH_SIZE: &str = "OPTION_MAX_ROLLING_BATCH_SIZE";
pub const OPTION_N_POSITIONS: &str = "OPTION_N_POSITIONS";
pub const OPTION_DTYPE: &str = "OPTION_DTYPE";
pub const OPTION_NEURON_OPTIMIZE_LEVEL: &str = "OPTION_NEURON_OPTIMIZE_LEVEL";

const GPU_KEYS: &[&str] = &[
    OPTION_MAX_INPUT_LEN,
    OPTION_MAX_OUTPUT_LEN,
    OPTION_MAX_NUM_TOKENS,
    OPTION_MAX_ROLLING_BATCH_SIZE,
];
const NEURON_KEYS: &[&str] = &[
    OPTION_N_POSITIONS,
    OPTION_DTYPE,
    OPTION_NEURON_OPTIMIZE_LEVEL,
];

/// The options this pass reads (OPTION_TENSOR_PARALLEL_DEGREE is the job's, read by the
/// target). OPTION_MAX_ROLLING_BATCH_SIZE also goes to the serving engine.
pub const KEYS: &[&str] = &[
    OPTION_MAX_INPUT_LEN,
    OPTION_MAX_OUTPUT_LEN,
    OPTION_MAX_NUM_TOKENS,
    OPTION_MAX_ROLLING_BATCH_SIZE,
    OPTION_N_POSITIONS,
    OPTION_DTYPE,
    OPTION_NEURON_OPTIMIZE_LEVEL,
];

/// Defaults of the LMI TensorRT-LLM image with `option.rolling_batch=trtllm`
/// (djl-serving 0.33.0 `LmiConfigRecommender`, trt_properties.py).
pub const DEFAULT_MAX_INPUT_LEN: u32 = 1024;
pub const DEFAULT_MAX_OUTPUT_LEN: u32 = 512;
pub const DEFAULT_MAX_NUM_TOKENS: u32 = 16384;
pub const DEFAULT_MAX_ROLLING_BATCH_SIZE: u32 = 256;
/// Largest sequence length accepted for any setting (1M tokens).
const MAX_LEN: u32 = 1 << 20;

/// What the TensorRT-LLM engine build is told (trtllm-build flags).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrtllmOptions {
    pub max_input_len: u32,
    pub max_output_len: u32,
    pub max_num_tokens: u32,
    pub max_batch_size: u32,
}

impl TrtllmOptions {
    /// `--max_seq_len`: prompt plus output (trtllm-build has no output length of its own).
    pub fn max_seq_len(&self) -> u32 {
        self.max_input_len + self.max_output_len
    }
}

/// Neuron's dtypes as LMI spells them (`option.dtype`, exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NeuronDtype {
    Fp16,
    Bf16,
    Fp32,
}

impl NeuronDtype {
    pub fn name(self) -> &'static str {
        match self {
            NeuronDtype::Fp16 => "fp16",
            NeuronDtype::Bf16 => "bf16",
            NeuronDtype::Fp32 => "fp32",
        }
    }

    pub fn bytes(self) -> u64 {
        match self {
            NeuronDtype::Fp32 => 4,
            _ => 2,
        }
    }
}

/// What the Neuron compile is told (transformers-neuronx through LMI).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NeuronOptions {
    /// `OPTION_N_POSITIONS`; `None`: the model's context, at most 4,096 (LMI 0.30).
    pub n_positions: Option<u32>,
    pub dtype: NeuronDtype,
    /// `OPTION_NEURON_OPTIMIZE_LEVEL` (neuronx-cc `-O1..3`); `None`: the compiler's (2).
    pub optimize_level: Option<u8>,
    pub max_rolling_batch_size: Option<u32>,
}

/// The pass's options as given; which engine is decided by the instance at planning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompileOptions {
    pub trtllm: TrtllmOptions,
    pub neuron: NeuronOptions,
    /// The OPTION_* names the job set, to refuse those of the other engine.
    pub given: Vec<String>,
}

impl CompileOptions {
    pub fn parse(env: &Env) -> Result<Self> {
        let len = |key: &str, default: u32| -> Result<u32> {
            match env.get(key) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LEN).contains(n))
                    .ok_or_else(|| {
                        invalid(
                            key,
                            v,
                            "a whole number of tokens from 1 to 1048576, e.g. 2048",
                        )
                    }),
            }
        };
        let given = KEYS
            .iter()
            .filter(|k| env.get(k).is_some())
            .map(|k| k.to_string())
            .collect();
        let dtype = match env.get(OPTION_DTYPE) {
            None => NeuronDtype::Fp16,
            Some("fp16") => NeuronDtype::Fp16,
            Some("bf16") => NeuronDtype::Bf16,
            Some("fp32") => NeuronDtype::Fp32,
            Some(v) => {
                return Err(invalid(
                    OPTION_DTYPE,
                    v,
                    "fp16, bf16 or fp32 (exactly, as LMI's Neuron image checks it)",
                ))
            }
        };
        let optimize_level = match env.get(OPTION_NEURON_OPTIMIZE_LEVEL) {
            None => None,
            Some(v @ ("1" | "2" | "3")) => Some(v.parse().expect("a digit")),
            Some(v) => {
                return Err(invalid(
                    OPTION_NEURON_OPTIMIZE_LEVEL,
                    v,
                    "1, 2 or 3 (neuronx-cc -O1: fastest compile, -O3: fastest model)",
                ))
            }
        };
        let rolling = env
            .get(OPTION_MAX_ROLLING_BATCH_SIZE)
            .map(|_| len(OPTION_MAX_ROLLING_BATCH_SIZE, 0))
            .transpose()?;
        Ok(CompileOptions {
            trtllm: TrtllmOptions {
                max_input_len: len(OPTION_MAX_INPUT_LEN, DEFAULT_MAX_INPUT_LEN)?,
                max_output_len: len(OPTION_MAX_OUTPUT_LEN, DEFAULT_MAX_OUTPUT_LEN)?,
                max_num_tokens: len(OPTION_MAX_NUM_TOKENS, DEFAULT_MAX_NUM_TOKENS)?,
                max_batch_size: rolling.unwrap_or(DEFAULT_MAX_ROLLING_BATCH_SIZE),
            },
            neuron: NeuronOptions {
                n_positions: env
                    .get(OPTION_N_POSITIONS)
                    .map(|_| len(OPTION_N_POSITIONS, 0))
                    .transpose()?,
                dtype,
                optimize_level,
                max_rolling_batch_size: rolling,
            },
            given,
        })
    }

    /// Refuses the other engine's options for `instance`, and checks the TensorRT-LLM
    /// lengths against the model's context (`max_position_embeddings`).
    pub fn check_for(&self, instance: &Instance, context: Option<u64>) -> Result<()> {
        let neuron = instance.accelerator.is_neuron();
        let (wrong, own) = if neuron {
            (GPU_KEYS, NEURON_KEYS)
        } else {
            (NEURON_KEYS, GPU_KEYS)
        };
        if let Some(k) = self
            .given
            .iter()
            .find(|k| wrong.contains(&k.as_str()) && k.as_str() != OPTION_MAX_ROLLING_BATCH_SIZE)
        {
            return Err(Error::Unsupported(format!(
                "{k} is a {} compilation option, but {} compiles for {}: its options are {}",
                if neuron { "TensorRT-LLM" } else { "Neuron" },
                instance.name,
                if neuron {
                    "the Neuron SDK"
                } else {
                    "TensorRT-LLM"
                },
                own.join(", ")
            )));
        }
        if neuron {
            if let (Some(n), Some(ctx)) = (self.neuron.n_positions, context) {
                if u64::from(n) > ctx {
                    return Err(invalid(
                        OPTION_N_POSITIONS,
                        &n.to_string(),
                        &format!(
                            "at most the model's context of {ctx} tokens (max_position_embeddings)"
                        ),
                    ));
                }
            }
            return Ok(());
        }
        let t = &self.trtllm;
        if let Some(ctx) = context {
            if u64::from(t.max_seq_len()) > ctx {
                return Err(invalid(
                    OPTION_MAX_OUTPUT_LEN,
                    &t.max_output_len.to_string(),
                    &format!(
                        "with OPTION_MAX_INPUT_LEN={}, a sequence within the model's context of \
                         {ctx} tokens (max_position_embeddings): input + output <= {ctx}",
                        t.max_input_len
                    ),
                ));
            }
        }
        if t.max_num_tokens < t.max_input_len {
            return Err(invalid(
                OPTION_MAX_NUM_TOKENS,
                &t.max_num_tokens.to_string(),
                &format!(
                    "at least OPTION_MAX_INPUT_LEN={}: the engine runs a whole prompt in one step",
                    t.max_input_len
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<CompileOptions> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CompileOptions::parse(&Env::new(&map))
    }

    #[test]
    fn defaults_are_lmis_and_bad_values_name_the_option() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.trtllm.max_seq_len(), 1536);
        assert_eq!(o.trtllm.max_batch_size, 256);
        for (k, v) in [
            (OPTION_MAX_INPUT_LEN, "0"),
            (OPTION_MAX_OUTPUT_LEN, "-5"),
            (OPTION_MAX_NUM_TOKENS, "lots"),
            (OPTION_DTYPE, "FP16"),
            (OPTION_NEURON_OPTIMIZE_LEVEL, "4"),
        ] {
            let e = parse(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(k) && e.contains(v), "{e}");
        }
    }

    #[test]
    fn the_other_engines_options_and_lengths_beyond_the_context_are_refused() {
        let g6 = Instance::lookup("ml.g6.xlarge").unwrap();
        let inf2 = Instance::lookup("ml.inf2.xlarge").unwrap();
        let o = parse(&[(OPTION_N_POSITIONS, "512")]).unwrap();
        let e = o.check_for(g6, Some(8192)).unwrap_err().to_string();
        assert!(
            e.contains("OPTION_N_POSITIONS") && e.contains("TensorRT-LLM"),
            "{e}"
        );
        o.check_for(inf2, Some(8192)).unwrap();
        assert!(o.check_for(inf2, Some(256)).is_err());
        let o = parse(&[
            (OPTION_MAX_INPUT_LEN, "4096"),
            (OPTION_MAX_OUTPUT_LEN, "4096"),
        ])
        .unwrap();
        let e = o.check_for(g6, Some(8191)).unwrap_err().to_string();
        assert!(e.contains("8191"), "{e}");
        let e = o.check_for(inf2, Some(8192)).unwrap_err().to_string();
        assert!(e.contains("OPTION_MAX_INPUT_LEN is a TensorRT-LLM"), "{e}");
        let o = parse(&[
            (OPTION_MAX_INPUT_LEN, "2048"),
            (OPTION_MAX_NUM_TOKENS, "1024"),
        ])
        .unwrap();
        assert!(o
            .check_for(g6, None)
            .unwrap_err()
            .to_string()
            .contains("OPTION_MAX_NUM_TOKENS"));
    }
}
