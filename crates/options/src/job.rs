//! A whole job's options: the ordered passes with their typed options, and the job-wide
//! settings (evaluation, calibration data, shard size, unknown architectures) that no single
//! pass owns. Parsed once, from the `OPTION_*` maps of the [`JobSpec`]: by the CLI and the
//! worker before running, and by the job API at Create time, so a bad value is a
//! `ValidationException` there and never a failed job.

use crate::compile::{self, CompileOptions};
use crate::env::Env;
use crate::error::{invalid, Error, Result};
use crate::quantize::{self, QuantizeOptions};
use crate::shard::{self, ShardOptions};
use crate::speculative::{self, SpeculativeOptions, TrainingSource};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use temper_core::spec::{JobSpec, Technique};

/// Not an LMI option: lets name/shape-driven quantization run on an unknown family.
pub const OPTION_ALLOW_UNKNOWN_ARCHITECTURE: &str = "OPTION_ALLOW_UNKNOWN_ARCHITECTURE";
/// Not an LMI option: largest safetensors file written, in bytes (default 5 GiB).
pub const OPTION_MAX_SHARD_BYTES: &str = "OPTION_MAX_SHARD_BYTES";
/// Not an LMI option: a text, ShareGPT or JSON-lines file for calibration and the quality
/// evaluation (default: the sample text built into temper).
pub const OPTION_CALIB_DATA: &str = "OPTION_CALIB_DATA";
/// Not an LMI option: `false` skips measuring the artifact's quality (default `true`).
pub const OPTION_EVAL: &str = "OPTION_EVAL";
/// Not an LMI option: held-out windows the quality evaluation runs (default 4).
pub const OPTION_EVAL_SAMPLES: &str = "OPTION_EVAL_SAMPLES";
pub const OPTION_CALIB_SIZE: &str = "OPTION_CALIB_SIZE";
pub const OPTION_MAX_MODEL_LEN: &str = "OPTION_MAX_MODEL_LEN";

const KEYS: &[&str] = &[
    OPTION_ALLOW_UNKNOWN_ARCHITECTURE,
    OPTION_MAX_SHARD_BYTES,
    OPTION_CALIB_DATA,
    OPTION_EVAL,
    OPTION_EVAL_SAMPLES,
    OPTION_CALIB_SIZE,
    OPTION_MAX_MODEL_LEN,
];

/// Default calibration windows: enough for stable per-tensor maxima on a CPU budget.
pub const DEFAULT_CALIB_SIZE: usize = 8;
/// Default evaluation windows (4 x 256 tokens).
pub const DEFAULT_EVAL_SAMPLES: usize = 4;
/// Default tokens per window.
pub const DEFAULT_WINDOW_LEN: usize = 256;

/// The sample text run through the model: calibration (static FP8) and the quality
/// evaluation written into the manifest, on disjoint windows of the same data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleOptions {
    /// `None`: the sample text built into temper.
    pub data: Option<PathBuf>,
    /// Tokens per window (`OPTION_MAX_MODEL_LEN`).
    pub window_len: usize,
    /// Calibration windows (`OPTION_CALIB_SIZE`), used by static FP8 only.
    pub calibration_windows: usize,
    /// Held-out windows for the quality evaluation; 0 when `OPTION_EVAL=false`.
    pub eval_windows: usize,
}

/// Settings of the whole job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommonOptions {
    pub allow_unknown_architecture: bool,
    pub max_shard_bytes: u64,
    pub samples: SampleOptions,
}

/// One pass of the chain, with its options.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "pass", rename_all = "snake_case")]
pub enum PassOptions {
    Quantize(QuantizeOptions),
    Speculative(SpeculativeOptions),
    Shard(ShardOptions),
    Compile(CompileOptions),
}

impl PassOptions {
    pub fn name(&self) -> &'static str {
        match self {
            PassOptions::Quantize(_) => "quantize",
            PassOptions::Speculative(_) => "speculative",
            PassOptions::Shard(_) => "shard",
            PassOptions::Compile(_) => "compile",
        }
    }
}

/// Everything a job's `OPTION_*` maps say, typed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobOptions {
    /// In the order of the job's `OptimizationConfigs`.
    pub passes: Vec<PassOptions>,
    pub common: CommonOptions,
    /// `OPTION_TENSOR_PARALLEL_DEGREE` from anywhere in the job (the sharding entry wins).
    pub requested_degree: Option<u32>,
    /// `OPTION_*` entries no pass interprets: meant for the serving engine, written to
    /// `serving.properties` as `option.<name>`.
    pub passthrough: BTreeMap<String, String>,
}

impl JobOptions {
    pub fn quantize(&self) -> Option<&QuantizeOptions> {
        self.passes.iter().find_map(|p| match p {
            PassOptions::Quantize(q) => Some(q),
            _ => None,
        })
    }

    pub fn sharded(&self) -> bool {
        self.passes
            .iter()
            .any(|p| matches!(p, PassOptions::Shard(_)))
    }

    /// Parses every pass's options and the job-wide ones; checks the chain's order.
    pub fn parse(spec: &JobSpec) -> Result<JobOptions> {
        if spec.optimizations.is_empty() {
            return Err(Error::Unsupported(
                "the job has no optimization to apply (give OPTION_QUANTIZE, OPTION_EAGLE_* or \
                 OPTION_TENSOR_PARALLEL_DEGREE)"
                    .into(),
            ));
        }
        // Job-wide settings may sit in any entry's OverrideEnvironment or in the job's
        // OptimizationEnvironment; later entries win, as they are applied later.
        let mut all = spec.environment.clone();
        for o in &spec.optimizations {
            all.extend(o.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let mut passes = Vec::new();
        let mut requested_degree = shard::parse_degree(&Env::new(&all))?;
        for o in &spec.optimizations {
            let env = spec.options_for(o);
            let env = Env::new(&env);
            let pass = match o.technique {
                Technique::Quantization => PassOptions::Quantize(QuantizeOptions::parse(&env)?),
                Technique::Sharding => {
                    let s = ShardOptions::parse(&env)?;
                    requested_degree = s.requested_degree.or(requested_degree);
                    PassOptions::Shard(s)
                }
                Technique::Compilation => PassOptions::Compile(CompileOptions::parse(&env)?),
                Technique::SpeculativeDecoding => {
                    let mut s = SpeculativeOptions::parse(&env)?;
                    s.source = Some(match &o.training_data {
                        Some(d) => TrainingSource {
                            // s3:// data is downloaded by the worker, which then points
                            // the spec at the local copy.
                            path: d.location.local_path().ok().map(|p| p.to_path_buf()),
                            uri: d.location.to_string(),
                            data_type: d.data_type.clone(),
                            default: false,
                        },
                        None => speculative::default_source(),
                    });
                    PassOptions::Speculative(s)
                }
            };
            if passes.iter().any(|p: &PassOptions| p.name() == pass.name()) {
                return Err(Error::Unsupported(format!(
                    "the {} pass is given twice; give each technique once",
                    pass.name()
                )));
            }
            passes.push(pass);
        }
        if let Some(i) = passes
            .iter()
            .position(|p| matches!(p, PassOptions::Shard(_)))
        {
            if i + 1 != passes.len() {
                return Err(Error::Unsupported(format!(
                    "sharding is entry {} of {}: it must be the last optimization, because \
                     every other pass reads an unsharded checkpoint (list ModelShardingConfig \
                     after the others)",
                    i + 1,
                    passes.len()
                )));
            }
        }
        if passes.iter().any(|p| matches!(p, PassOptions::Compile(_))) {
            if let Some(other) = passes
                .iter()
                .find(|p| matches!(p, PassOptions::Shard(_) | PassOptions::Speculative(_)))
            {
                return Err(Error::Unsupported(format!(
                    "compilation does not combine with {}: {}",
                    other.name(),
                    if other.name() == "shard" {
                        "the compiled checkpoint is split per rank by the compilation itself; drop \
                         ModelShardingConfig and give OPTION_TENSOR_PARALLEL_DEGREE to the \
                         compilation"
                    } else {
                        "SageMaker's rule, and TensorRT-LLM engines do not take an EAGLE-3 head \
                         written for vLLM; run them as two jobs"
                    }
                )));
            }
        }
        // The draft head is trained against the model the job outputs: after quantization,
        // whichever order the job listed them in (sharding, last, only moves bytes).
        passes.sort_by_key(|p| match p {
            PassOptions::Quantize(_) => 0,
            PassOptions::Speculative(_) => 1,
            PassOptions::Shard(_) => 2,
            PassOptions::Compile(_) => 3,
        });
        let common = CommonOptions::parse(&Env::new(&all), &all)?;
        // The compilation's options are its own only when the job compiles: otherwise
        // OPTION_MAX_ROLLING_BATCH_SIZE and the like are the serving engine's.
        let compiles = passes.iter().any(|p| matches!(p, PassOptions::Compile(_)));
        let compile_keys: &[&str] = if compiles { compile::KEYS } else { &[] };
        let passthrough = all
            .iter()
            .filter(|(k, _)| {
                k.starts_with("OPTION_")
                    && ![
                        KEYS,
                        quantize::KEYS,
                        shard::KEYS,
                        speculative::KEYS,
                        compile_keys,
                    ]
                    .iter()
                    .any(|keys| keys.contains(&k.as_str()))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(JobOptions {
            passes,
            common,
            requested_degree,
            passthrough,
        })
    }
}

/// The file `OPTION_CALIB_DATA` names, as the job will open it (trimmed, `file://`
/// removed, empty meaning unset): the job API checks this same path against its roots.
pub fn calib_data_path(env: &BTreeMap<String, String>) -> Option<PathBuf> {
    env.get(OPTION_CALIB_DATA)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(|v| v.strip_prefix("file://").unwrap_or(v).into())
}

impl CommonOptions {
    fn parse(env: &Env, raw: &BTreeMap<String, String>) -> Result<Self> {
        let max_shard_bytes = match env.get(OPTION_MAX_SHARD_BYTES) {
            None => 5 << 30,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|&n| n >= 1 << 20)
                .ok_or_else(|| {
                    invalid(
                        OPTION_MAX_SHARD_BYTES,
                        v,
                        "a size in bytes of at least 1048576",
                    )
                })?,
        };
        let data = calib_data_path(raw);
        // Checked now, so a mistyped path fails before any work rather than after it.
        if let Some(path) = data.as_ref().filter(|p| !p.is_file()) {
            return Err(invalid(
                OPTION_CALIB_DATA,
                &path.display().to_string(),
                "an existing file of plain text, ShareGPT JSON or JSON lines",
            ));
        }
        let eval = env.bool(OPTION_EVAL, true)?;
        let samples = SampleOptions {
            data,
            window_len: env.count(OPTION_MAX_MODEL_LEN, DEFAULT_WINDOW_LEN, 16)?,
            calibration_windows: env.count(OPTION_CALIB_SIZE, DEFAULT_CALIB_SIZE, 1)?,
            eval_windows: if eval {
                env.count(OPTION_EVAL_SAMPLES, DEFAULT_EVAL_SAMPLES, 1)?
            } else {
                0
            },
        };
        Ok(CommonOptions {
            allow_unknown_architecture: env.bool(OPTION_ALLOW_UNKNOWN_ARCHITECTURE, false)?,
            max_shard_bytes,
            samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use temper_core::spec::{Location, Optimization, Stopping};
    use temper_format::Scheme;

    fn spec(passes: &[(Technique, &[(&str, &str)])]) -> JobSpec {
        JobSpec {
            name: "j".into(),
            source: Location::Local("m".into()),
            output: Location::Local("o".into()),
            instance_type: "ml.g6.12xlarge".into(),
            optimizations: passes
                .iter()
                .map(|(t, env)| {
                    Optimization::new(
                        *t,
                        env.iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    )
                })
                .collect(),
            environment: BTreeMap::new(),
            stopping: Stopping::default(),
            kms_key_id: None,
            role_arn: None,
            tags: vec![],
            overwrite: false,
        }
    }

    fn quantize(env: &[(&str, &str)]) -> Result<JobOptions> {
        JobOptions::parse(&spec(&[(Technique::Quantization, env)]))
    }

    #[test]
    fn defaults_and_every_scheme() {
        let o = quantize(&[("OPTION_QUANTIZE", "fp8")]).unwrap();
        assert_eq!(o.quantize().unwrap().scheme, Scheme::Fp8Dynamic);
        assert_eq!(o.quantize().unwrap().ignore, vec!["lm_head"]);
        assert_eq!(o.common.samples.eval_windows, DEFAULT_EVAL_SAMPLES);
        for (env, scheme) in [
            (
                vec![("OPTION_QUANTIZE", "int8")],
                Scheme::W8A16 { group: None },
            ),
            (
                vec![
                    ("OPTION_QUANTIZE", "fp8"),
                    ("OPTION_FP8_SCHEME", "FP8_BLOCK"),
                ],
                Scheme::Fp8Block,
            ),
            (
                vec![
                    ("OPTION_QUANTIZE", "int8"),
                    ("OPTION_QUANT_GROUP_SIZE", "128"),
                ],
                Scheme::W8A16 { group: Some(128) },
            ),
            (
                vec![("OPTION_QUANTIZE", "int8"), ("OPTION_INT8_SCHEME", "W8A8")],
                Scheme::W8A8,
            ),
            (
                vec![("OPTION_QUANTIZE", "fp8"), ("OPTION_FP8_SCHEME", "FP8")],
                Scheme::Fp8Static,
            ),
            (
                vec![("OPTION_QUANTIZE", "int4")],
                Scheme::W4A16 {
                    group: 128,
                    zero_point: true,
                },
            ),
            (
                vec![
                    ("OPTION_AWQ_BLOCK_SIZE", "64"),
                    ("OPTION_AWQ_ZERO_POINT", "false"),
                ],
                Scheme::W4A16 {
                    group: 64,
                    zero_point: false,
                },
            ),
        ] {
            assert_eq!(quantize(&env).unwrap().quantize().unwrap().scheme, scheme);
        }
    }

    #[test]
    fn mse_scale_search_is_a_round_to_nearest_option() {
        for method in ["int4", "int8", "fp8"] {
            let o = quantize(&[
                ("OPTION_QUANTIZE", method),
                ("OPTION_QUANT_SCALE_SEARCH", "mse"),
            ])
            .unwrap();
            assert!(o.quantize().unwrap().mse_scale_search, "{method}");
            let o = quantize(&[("OPTION_QUANTIZE", method)]).unwrap();
            assert!(!o.quantize().unwrap().mse_scale_search, "{method}");
        }
        for env in [
            vec![("OPTION_QUANTIZE", "gptq")],
            vec![
                ("OPTION_QUANTIZE", "fp8"),
                ("OPTION_FP8_SCHEME", "FP8_BLOCK"),
            ],
            vec![("OPTION_QUANTIZE", "fp8"), ("OPTION_FP8_SCHEME", "FP8")],
        ] {
            let mut env = env;
            env.push(("OPTION_QUANT_SCALE_SEARCH", "mse"));
            let err = quantize(&env).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains("OPTION_QUANT_SCALE_SEARCH"), "{err}");
        }
    }

    #[test]
    fn gptq_bits_and_activation_order() {
        use crate::quantize::Method;
        let q = quantize(&[("OPTION_QUANTIZE", "gptq")]).unwrap();
        let q = q.quantize().unwrap();
        assert_eq!(q.method, Method::Gptq { actorder: true });
        assert!(matches!(q.scheme, Scheme::W4A16 { group: 128, .. }));
        let q = quantize(&[
            ("OPTION_QUANTIZE", "gptq"),
            ("OPTION_GPTQ_WEIGHT_BIT_WIDTH", "8"),
            ("OPTION_GPTQ_ACTORDER", "none"),
        ])
        .unwrap();
        let q = q.quantize().unwrap();
        assert_eq!(q.method, Method::Gptq { actorder: false });
        assert_eq!(q.scheme, Scheme::W8A16 { group: None });
        for (option, value) in [
            ("OPTION_GPTQ_WEIGHT_BIT_WIDTH", "3"),
            ("OPTION_GPTQ_ACTORDER", "group"),
            ("OPTION_GPTQ_ACTORDER", "sideways"),
        ] {
            let err = quantize(&[("OPTION_QUANTIZE", "gptq"), (option, value)])
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(err.contains(option) && err.contains(value), "{err}");
        }
    }

    #[test]
    fn awq_and_smoothquant_can_round_with_gptq() {
        let q = quantize(&[("OPTION_AWQ_ROUNDING", "gptq")]).unwrap();
        assert!(q.quantize().unwrap().gptq_rounding);
        assert!(!quantize(&[]).unwrap().quantize().unwrap().gptq_rounding);
        let q = quantize(&[
            ("OPTION_QUANTIZE", "smoothquant"),
            ("OPTION_SMOOTHQUANT_ROUNDING", "gptq"),
        ])
        .unwrap();
        assert!(q.quantize().unwrap().gptq_rounding);
        for (env, option) in [
            (
                vec![("OPTION_QUANTIZE", "int4"), ("OPTION_AWQ_ROUNDING", "gptq")],
                "OPTION_AWQ_ROUNDING",
            ),
            (
                vec![("OPTION_AWQ_ROUNDING", "stochastic")],
                "OPTION_AWQ_ROUNDING",
            ),
            (
                vec![("OPTION_SMOOTHQUANT_ROUNDING", "gptq")],
                "OPTION_SMOOTHQUANT_ROUNDING",
            ),
            (
                vec![
                    ("OPTION_QUANTIZE", "smoothquant"),
                    ("OPTION_SMOOTHQUANT_ROUNDING", "up"),
                ],
                "OPTION_SMOOTHQUANT_ROUNDING",
            ),
        ] {
            let err = quantize(&env).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(option), "{err}");
        }
    }

    #[test]
    fn awq_is_the_default_method() {
        let o = quantize(&[]).unwrap();
        let q = o.quantize().unwrap();
        assert_eq!(q.method, crate::quantize::Method::Awq);
        assert_eq!(
            q.scheme,
            Scheme::W4A16 {
                group: 128,
                zero_point: true
            }
        );
    }

    #[test]
    fn errors_name_option_and_value_without_cli_flags() {
        for (env, option, value) in [
            (
                vec![("OPTION_QUANTIZE", "static_int8")],
                "OPTION_QUANTIZE",
                "static_int8",
            ),
            (
                vec![
                    ("OPTION_QUANTIZE", "awq"),
                    ("OPTION_QUANT_SCALE_SEARCH", "mse"),
                ],
                "OPTION_QUANT_SCALE_SEARCH",
                "mse",
            ),
            (
                vec![
                    ("OPTION_QUANTIZE", "int4"),
                    ("OPTION_QUANT_SCALE_SEARCH", "best"),
                ],
                "OPTION_QUANT_SCALE_SEARCH",
                "best",
            ),
            (
                vec![
                    ("OPTION_QUANTIZE", "smoothquant"),
                    ("OPTION_SMOOTHQUANT_ALPHA", "1.5"),
                ],
                "OPTION_SMOOTHQUANT_ALPHA",
                "1.5",
            ),
            (
                vec![("OPTION_AWQ_WEIGHT_BIT_WIDTH", "8")],
                "OPTION_AWQ_WEIGHT_BIT_WIDTH",
                "8",
            ),
            (
                vec![("OPTION_QUANTIZE", "awq"), ("OPTION_AWQ_BLOCK_SIZE", "12")],
                "OPTION_AWQ_BLOCK_SIZE",
                "12",
            ),
            (
                vec![("OPTION_QUANTIZE", "fp8"), ("OPTION_CALIB_SIZE", "0")],
                "OPTION_CALIB_SIZE",
                "0",
            ),
            (
                vec![
                    ("OPTION_QUANTIZE", "int8"),
                    ("OPTION_QUANT_GROUP_SIZE", "-3"),
                ],
                "OPTION_QUANT_GROUP_SIZE",
                "-3",
            ),
        ] {
            let err = quantize(&env).unwrap_err().to_string();
            assert!(err.contains(&format!("{option}={value}")), "{err}");
            assert!(
                !err.contains("--"),
                "a library error names a CLI flag: {err}"
            );
        }
    }

    #[test]
    fn passes_keep_their_order_and_job_wide_options_are_shared() {
        let o = JobOptions::parse(&spec(&[
            (
                Technique::Quantization,
                &[("OPTION_QUANTIZE", "int8"), ("OPTION_EVAL", "false")],
            ),
            (
                Technique::Sharding,
                &[
                    ("OPTION_TENSOR_PARALLEL_DEGREE", "4"),
                    ("OPTION_MAX_ROLLING_BATCH_SIZE", "32"),
                ],
            ),
        ]))
        .unwrap();
        let names: Vec<_> = o.passes.iter().map(PassOptions::name).collect();
        assert_eq!(names, ["quantize", "shard"]);
        assert_eq!(o.requested_degree, Some(4));
        assert_eq!(o.common.samples.eval_windows, 0);
        assert_eq!(o.passthrough["OPTION_MAX_ROLLING_BATCH_SIZE"], "32");
        assert!(!o.passthrough.contains_key("OPTION_TENSOR_PARALLEL_DEGREE"));
        let err = JobOptions::parse(&spec(&[
            (Technique::Sharding, &[]),
            (Technique::Quantization, &[("OPTION_QUANTIZE", "fp8")]),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("must be the last"), "{err}");
        for bad in ["0", "-1", "abc", "65"] {
            let err = JobOptions::parse(&spec(&[(
                Technique::Sharding,
                &[("OPTION_TENSOR_PARALLEL_DEGREE", bad)],
            )]))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(&format!("OPTION_TENSOR_PARALLEL_DEGREE={bad}")),
                "{err}"
            );
        }
        let err = JobOptions::parse(&spec(&[
            (Technique::Compilation, &[]),
            (
                Technique::Sharding,
                &[("OPTION_TENSOR_PARALLEL_DEGREE", "2")],
            ),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("compilation does not combine with shard"),
            "{err}"
        );
    }

    #[test]
    fn the_draft_head_is_trained_after_quantization_whatever_the_listed_order() {
        let o = JobOptions::parse(&spec(&[
            (
                Technique::SpeculativeDecoding,
                &[("OPTION_EAGLE_STEPS", "5")],
            ),
            (Technique::Quantization, &[("OPTION_QUANTIZE", "fp8")]),
        ]))
        .unwrap();
        let names: Vec<_> = o.passes.iter().map(PassOptions::name).collect();
        assert_eq!(names, ["quantize", "speculative"]);
        let PassOptions::Speculative(s) = &o.passes[1] else {
            panic!("{o:?}")
        };
        assert_eq!(s.steps, 5);
        // Without a TrainingDataSource the documented default is used, and said to be.
        assert!(s.source.as_ref().is_some_and(|src| src.default));
        let err = JobOptions::parse(&spec(&[(
            Technique::SpeculativeDecoding,
            &[("OPTION_EAGLE_TTT_STEPS", "99")],
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("OPTION_EAGLE_TTT_STEPS=99"), "{err}");
    }
}
