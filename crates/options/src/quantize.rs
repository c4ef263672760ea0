//! The quantization pass's options (`ModelQuantizationConfig`).

use crate::env::Env;
use crate::error::{invalid, Result};
use serde::Serialize;
use temper_format::Scheme;

pub const OPTION_QUANTIZE: &str = "OPTION_QUANTIZE";
pub const OPTION_FP8_SCHEME: &str = "OPTION_FP8_SCHEME";
pub const OPTION_INT8_SCHEME: &str = "OPTION_INT8_SCHEME";
pub const OPTION_QUANT_GROUP_SIZE: &str = "OPTION_QUANT_GROUP_SIZE";
pub const OPTION_FP8_IGNORE: &str = "OPTION_FP8_IGNORE";

/// The options this pass reads.
pub const KEYS: &[&str] = &[
    OPTION_QUANTIZE,
    OPTION_FP8_SCHEME,
    OPTION_INT8_SCHEME,
    OPTION_QUANT_GROUP_SIZE,
    OPTION_FP8_IGNORE,
];

/// What to quantize, and how.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuantizeOptions {
    pub scheme: Scheme,
    /// Module names and `re:` patterns left unquantized (default `lm_head`).
    pub ignore: Vec<String>,
}

impl QuantizeOptions {
    pub fn parse(env: &Env) -> Result<Self> {
        let quantize = env
            .get(OPTION_QUANTIZE)
            .ok_or_else(|| invalid(OPTION_QUANTIZE, "(not set)", "`fp8` or `int8`"))?;
        let group = match env.get(OPTION_QUANT_GROUP_SIZE) {
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
            "fp8" => parse_fp8_scheme(env.get(OPTION_FP8_SCHEME), group)?,
            "int8" => parse_int8_scheme(env.get(OPTION_INT8_SCHEME), group)?,
            "awq" | "smoothquant" | "static_int8" | "gptq" => return Err(invalid(
                OPTION_QUANTIZE,
                quantize,
                "`fp8` or `int8`; this quantization method needs calibration and is not built yet",
            )),
            _ => return Err(invalid(OPTION_QUANTIZE, quantize, "`fp8` or `int8`")),
        };
        let ignore = match env.get(OPTION_FP8_IGNORE) {
            None => vec!["lm_head".to_string()],
            Some(list) => list
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        };
        Ok(QuantizeOptions { scheme, ignore })
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
