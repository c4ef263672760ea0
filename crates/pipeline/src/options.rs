//! Quantization options, parsed once from the LMI `OPTION_*` map a job carries.
//!
//! The CLI flags are mapped onto the same names before parsing, so there is exactly one
//! parser and one set of defaults for the CLI, the job API and the worker.

use crate::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
pub use temper_format::Scheme;

pub const OPTION_QUANTIZE: &str = "OPTION_QUANTIZE";
pub const OPTION_FP8_SCHEME: &str = "OPTION_FP8_SCHEME";
pub const OPTION_INT8_SCHEME: &str = "OPTION_INT8_SCHEME";
pub const OPTION_QUANT_GROUP_SIZE: &str = "OPTION_QUANT_GROUP_SIZE";
pub const OPTION_FP8_IGNORE: &str = "OPTION_FP8_IGNORE";
pub const OPTION_CALIB_SIZE: &str = "OPTION_CALIB_SIZE";
pub const OPTION_MAX_MODEL_LEN: &str = "OPTION_MAX_MODEL_LEN";
/// Not an LMI option: lets name/shape-driven quantization run on an unknown family.
pub const OPTION_ALLOW_UNKNOWN_ARCHITECTURE: &str = "OPTION_ALLOW_UNKNOWN_ARCHITECTURE";
/// Not an LMI option: largest safetensors shard written, in bytes (default 5 GiB).
pub const OPTION_MAX_SHARD_BYTES: &str = "OPTION_MAX_SHARD_BYTES";
/// Not an LMI option: a text, ShareGPT or JSON-lines file for calibration and the quality
/// evaluation (default: the sample text built into temper).
pub const OPTION_CALIB_DATA: &str = "OPTION_CALIB_DATA";
/// Not an LMI option: `false` skips measuring the artifact's quality (default `true`).
pub const OPTION_EVAL: &str = "OPTION_EVAL";
/// Not an LMI option: held-out windows the quality evaluation runs (default 4).
pub const OPTION_EVAL_SAMPLES: &str = "OPTION_EVAL_SAMPLES";

/// Options this pass understands; anything else starting with `OPTION_` is passed
/// through to `serving.properties` untouched (it may be meant for the serving engine).
const KNOWN: &[&str] = &[
    OPTION_QUANTIZE,
    OPTION_FP8_SCHEME,
    OPTION_INT8_SCHEME,
    OPTION_QUANT_GROUP_SIZE,
    OPTION_FP8_IGNORE,
    OPTION_CALIB_SIZE,
    OPTION_MAX_MODEL_LEN,
    OPTION_ALLOW_UNKNOWN_ARCHITECTURE,
    OPTION_MAX_SHARD_BYTES,
    OPTION_CALIB_DATA,
    OPTION_EVAL,
    OPTION_EVAL_SAMPLES,
];

/// Everything the quantize pass needs, with defaults applied.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeOptions {
    pub scheme: Scheme,
    /// Module names and `re:` patterns left unquantized (default `lm_head`).
    pub ignore: Vec<String>,
    pub allow_unknown_architecture: bool,
    pub max_shard_bytes: u64,
    /// `OPTION_*` entries this pass does not interpret, kept for `serving.properties`.
    pub passthrough: BTreeMap<String, String>,
    pub samples: SampleOptions,
}

/// The sample text run through the model: calibration (static FP8) and the quality
/// evaluation written into the manifest, on disjoint windows of the same data.
#[derive(Debug, Clone, Serialize)]
pub struct SampleOptions {
    /// `None`: the sample text built into temper.
    pub data: Option<std::path::PathBuf>,
    /// Tokens per window (`OPTION_MAX_MODEL_LEN`, at most 256 unless set).
    pub window_len: usize,
    /// Calibration windows (`OPTION_CALIB_SIZE`), used by static FP8 only.
    pub calibration_windows: usize,
    /// Held-out windows for the quality evaluation; 0 when `OPTION_EVAL=false`.
    pub eval_windows: usize,
}

/// Default calibration windows: enough for stable per-tensor maxima on a CPU budget.
pub const DEFAULT_CALIB_SIZE: usize = 8;
/// Default evaluation windows (4 x 256 tokens).
pub const DEFAULT_EVAL_SAMPLES: usize = 4;
/// Default tokens per window.
pub const DEFAULT_WINDOW_LEN: usize = 256;

fn invalid(option: &str, value: &str, expected: &str) -> Error {
    Error::Option {
        option: option.to_string(),
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

/// The file `OPTION_CALIB_DATA` names, as the job will open it (trimmed, `file://`
/// removed, empty meaning unset): the job API checks this same path against its roots.
pub fn calib_data_path(env: &BTreeMap<String, String>) -> Option<std::path::PathBuf> {
    env.get(OPTION_CALIB_DATA)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(|v| v.strip_prefix("file://").unwrap_or(v).into())
}

impl QuantizeOptions {
    /// Parses the options of a quantization job.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Self> {
        let get = |k: &str| env.get(k).map(|v| v.trim());
        let quantize = get(OPTION_QUANTIZE).ok_or_else(|| {
            invalid(
                OPTION_QUANTIZE,
                "(not set)",
                "`fp8` or `int8` (e.g. --quantize fp8)",
            )
        })?;
        let group = match get(OPTION_QUANT_GROUP_SIZE) {
            None => None,
            Some(v) => match v.parse::<usize>() {
                Ok(g) if g > 0 && g % 4 == 0 => Some(g),
                _ => {
                    return Err(invalid(
                        OPTION_QUANT_GROUP_SIZE,
                        v,
                        "a positive multiple of 4, such as 128",
                    ))
                }
            },
        };
        let scheme = match quantize.to_ascii_lowercase().as_str() {
            "fp8" => parse_fp8_scheme(get(OPTION_FP8_SCHEME), group)?,
            "int8" => parse_int8_scheme(get(OPTION_INT8_SCHEME), group)?,
            "awq" | "smoothquant" | "static_int8" | "gptq" => return Err(invalid(
                OPTION_QUANTIZE,
                quantize,
                "`fp8` or `int8`; this quantization method needs calibration and is not built yet",
            )),
            _ => return Err(invalid(OPTION_QUANTIZE, quantize, "`fp8` or `int8`")),
        };
        let ignore = match get(OPTION_FP8_IGNORE) {
            None => vec!["lm_head".to_string()],
            Some(list) => list
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        };
        let allow_unknown_architecture = match get(OPTION_ALLOW_UNKNOWN_ARCHITECTURE) {
            None => false,
            Some(v) => parse_bool(OPTION_ALLOW_UNKNOWN_ARCHITECTURE, v)?,
        };
        let max_shard_bytes = match get(OPTION_MAX_SHARD_BYTES) {
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
        let count = |option: &str, default: usize, min: usize| -> Result<usize> {
            match get(option) {
                None => Ok(default),
                Some(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n >= min)
                    .ok_or_else(|| {
                        invalid(option, v, &format!("a whole number of at least {min}"))
                    }),
            }
        };
        let eval = match get(OPTION_EVAL) {
            None => true,
            Some(v) => parse_bool(OPTION_EVAL, v)?,
        };
        let data = calib_data_path(env);
        // Checked now, so a mistyped path fails before any work rather than after it.
        if let Some(path) = data.as_ref().filter(|p| !p.is_file()) {
            return Err(Error::Option {
                option: OPTION_CALIB_DATA.into(),
                value: path.display().to_string(),
                expected: "an existing file of plain text, ShareGPT JSON or JSON lines".into(),
            });
        }
        let samples = SampleOptions {
            data,
            window_len: count(OPTION_MAX_MODEL_LEN, DEFAULT_WINDOW_LEN, 16)?,
            calibration_windows: count(OPTION_CALIB_SIZE, DEFAULT_CALIB_SIZE, 1)?,
            eval_windows: if eval {
                count(OPTION_EVAL_SAMPLES, DEFAULT_EVAL_SAMPLES, 1)?
            } else {
                0
            },
        };
        let passthrough = env
            .iter()
            .filter(|(k, _)| k.starts_with("OPTION_") && !KNOWN.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(QuantizeOptions {
            scheme,
            ignore,
            allow_unknown_architecture,
            max_shard_bytes,
            passthrough,
            samples,
        })
    }
}

fn parse_fp8_scheme(value: Option<&str>, group: Option<usize>) -> Result<Scheme> {
    if let Some(g) = group {
        return Err(invalid(
            OPTION_QUANT_GROUP_SIZE,
            &g.to_string(),
            "unset for fp8 (FP8_BLOCK uses fixed 128x128 blocks); group sizes apply to int8 W8A16",
        ));
    }
    match value.map(str::to_ascii_uppercase).as_deref() {
        None | Some("FP8_DYNAMIC") => Ok(Scheme::Fp8Dynamic),
        Some("FP8_BLOCK") => Ok(Scheme::Fp8Block),
        Some("FP8") => Ok(Scheme::Fp8Static),
        Some(_) => Err(invalid(
            OPTION_FP8_SCHEME,
            value.unwrap_or_default(),
            "FP8_DYNAMIC, FP8 or FP8_BLOCK",
        )),
    }
}

fn parse_int8_scheme(value: Option<&str>, group: Option<usize>) -> Result<Scheme> {
    match value.map(str::to_ascii_uppercase).as_deref() {
        None | Some("W8A16") => Ok(Scheme::W8A16 { group }),
        Some("W8A8") if group.is_none() => Ok(Scheme::W8A8),
        Some("W8A8") => Err(invalid(
            OPTION_QUANT_GROUP_SIZE,
            &group.unwrap_or_default().to_string(),
            "unset for W8A8 (vLLM's int8 W8A8 kernels take per-channel weight scales only)",
        )),
        Some(_) => Err(invalid(
            OPTION_INT8_SCHEME,
            value.unwrap_or_default(),
            "W8A16 or W8A8",
        )),
    }
}

fn parse_bool(option: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(invalid(option, v, "true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let o = QuantizeOptions::from_env(&env(&[("OPTION_QUANTIZE", "fp8")])).unwrap();
        assert_eq!(o.scheme, Scheme::Fp8Dynamic);
        assert_eq!(o.ignore, vec!["lm_head"]);
        let o = QuantizeOptions::from_env(&env(&[("OPTION_QUANTIZE", "int8")])).unwrap();
        assert_eq!(o.scheme, Scheme::W8A16 { group: None });
    }

    #[test]
    fn every_scheme_parses() {
        let cases = [
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
        ];
        for (pairs, scheme) in cases {
            assert_eq!(
                QuantizeOptions::from_env(&env(&pairs)).unwrap().scheme,
                scheme
            );
        }
    }

    #[test]
    fn errors_name_option_and_value() {
        let err = QuantizeOptions::from_env(&env(&[("OPTION_QUANTIZE", "int4")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("OPTION_QUANTIZE") && err.contains("int4"),
            "{err}"
        );
        let err = QuantizeOptions::from_env(&env(&[
            ("OPTION_QUANTIZE", "fp8"),
            ("OPTION_CALIB_SIZE", "0"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("OPTION_CALIB_SIZE") && err.contains("at least 1"),
            "{err}"
        );
        let err = QuantizeOptions::from_env(&env(&[
            ("OPTION_QUANTIZE", "int8"),
            ("OPTION_QUANT_GROUP_SIZE", "-3"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("OPTION_QUANT_GROUP_SIZE") && err.contains("-3"),
            "{err}"
        );
    }

    #[test]
    fn ignore_list_and_passthrough() {
        let o = QuantizeOptions::from_env(&env(&[
            ("OPTION_QUANTIZE", "int8"),
            ("OPTION_FP8_IGNORE", "lm_head, re:.*down_proj"),
            ("OPTION_MAX_ROLLING_BATCH_SIZE", "32"),
        ]))
        .unwrap();
        assert_eq!(o.ignore, vec!["lm_head", "re:.*down_proj"]);
        assert_eq!(o.passthrough["OPTION_MAX_ROLLING_BATCH_SIZE"], "32");
    }
}
