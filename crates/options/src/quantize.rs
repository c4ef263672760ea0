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
pub const OPTION_AWQ_BLOCK_SIZE: &str = "OPTION_AWQ_BLOCK_SIZE";
pub const OPTION_AWQ_WEIGHT_BIT_WIDTH: &str = "OPTION_AWQ_WEIGHT_BIT_WIDTH";
pub const OPTION_AWQ_ZERO_POINT: &str = "OPTION_AWQ_ZERO_POINT";
/// Not an LMI option: zero points for INT4 by round-to-nearest or GPTQ (default true).
pub const OPTION_INT4_ZERO_POINT: &str = "OPTION_INT4_ZERO_POINT";
pub const OPTION_SMOOTHQUANT_ALPHA: &str = "OPTION_SMOOTHQUANT_ALPHA";
/// Not an LMI option: `mse` searches each group's (INT4) or row's/group's (INT8, FP8_DYNAMIC)
/// clip ratio for the least squared weight error instead of using the full range (`minmax`,
/// the default).
pub const OPTION_QUANT_SCALE_SEARCH: &str = "OPTION_QUANT_SCALE_SEARCH";
/// Not an LMI option: GPTQ's column order, `weight` (by decreasing Hessian diagonal, grids
/// fixed up front; llm-compressor's `actorder="weight"`, the default) or `none`.
pub const OPTION_GPTQ_ACTORDER: &str = "OPTION_GPTQ_ACTORDER";
/// Not an LMI option (named after `OPTION_AWQ_WEIGHT_BIT_WIDTH`): GPTQ's weight bits, 4 (W4A16,
/// the default) or 8 (W8A16, per channel unless `OPTION_QUANT_GROUP_SIZE`).
pub const OPTION_GPTQ_WEIGHT_BIT_WIDTH: &str = "OPTION_GPTQ_WEIGHT_BIT_WIDTH";
/// Not an LMI option: how AWQ rounds the scaled weights, `nearest` (round-to-nearest with its
/// clip search, the default) or `gptq` (GPTQ's error feedback on the scaled weights and inputs).
pub const OPTION_AWQ_ROUNDING: &str = "OPTION_AWQ_ROUNDING";
/// Not an LMI option: how SmoothQuant rounds the smoothed INT8 weights, `nearest` (the default)
/// or `gptq` (llm-compressor's SmoothQuantModifier followed by GPTQModifier).
pub const OPTION_SMOOTHQUANT_ROUNDING: &str = "OPTION_SMOOTHQUANT_ROUNDING";

/// The options this pass reads.
pub const KEYS: &[&str] = &[
    OPTION_QUANTIZE,
    OPTION_FP8_SCHEME,
    OPTION_INT8_SCHEME,
    OPTION_QUANT_GROUP_SIZE,
    OPTION_FP8_IGNORE,
    OPTION_AWQ_BLOCK_SIZE,
    OPTION_AWQ_WEIGHT_BIT_WIDTH,
    OPTION_AWQ_ZERO_POINT,
    OPTION_INT4_ZERO_POINT,
    OPTION_SMOOTHQUANT_ALPHA,
    OPTION_QUANT_SCALE_SEARCH,
    OPTION_GPTQ_ACTORDER,
    OPTION_GPTQ_WEIGHT_BIT_WIDTH,
    OPTION_AWQ_ROUNDING,
    OPTION_SMOOTHQUANT_ROUNDING,
];

/// The method and default of `OPTION_QUANTIZE` when a job does not set it: SageMaker's (and
/// the LMI images') default.
pub const DEFAULT_QUANTIZE: &str = "awq";

/// Default INT4 group size (`OPTION_AWQ_BLOCK_SIZE`, and `OPTION_QUANT_GROUP_SIZE` for int4).
pub const DEFAULT_INT4_GROUP: usize = 128;

/// How the codes are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Data-free: each weight rounded to the nearest code of its group's minmax grid.
    RoundToNearest,
    /// Activation-aware weight quantization: per-input-channel scales searched on calibration
    /// activations, folded into the preceding norm or Linear, then round-to-nearest.
    Awq,
    /// GPTQ: columns quantized in order, each one's error spread over the rest through the
    /// inverse Hessian of the calibration inputs; `actorder`: most active inputs first.
    Gptq { actorder: bool },
    /// SmoothQuant: activation outliers moved into the weights by per-channel scales
    /// `max|x|^alpha / max|w|^(1 - alpha)` before W8A8 quantization.
    SmoothQuant { alpha: f32 },
}

/// What to quantize, and how.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuantizeOptions {
    pub scheme: Scheme,
    pub method: Method,
    /// Round-to-nearest INT4, INT8 and FP8_DYNAMIC: search each group's (or row's) clip ratio
    /// for the least squared weight error.
    pub mse_scale_search: bool,
    /// AWQ or SmoothQuant: round the scaled weights with GPTQ (activation order) instead of
    /// round-to-nearest.
    pub gptq_rounding: bool,
    /// Module names and `re:` patterns left unquantized (default `lm_head`).
    pub ignore: Vec<String>,
}

const METHODS: &str = "`awq` (the default), `gptq`, `smoothquant`, `int4`, `fp8` or `int8`";

impl QuantizeOptions {
    pub fn parse(env: &Env) -> Result<Self> {
        let quantize = env.get(OPTION_QUANTIZE).unwrap_or(DEFAULT_QUANTIZE);
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
        let (scheme, method) = match quantize.to_ascii_lowercase().as_str() {
            "fp8" => (
                parse_fp8_scheme(env.get(OPTION_FP8_SCHEME), group)?,
                Method::RoundToNearest,
            ),
            "int8" => (
                parse_int8_scheme(env.get(OPTION_INT8_SCHEME), group)?,
                Method::RoundToNearest,
            ),
            "int4" => (
                Scheme::W4A16 {
                    group: int4_group(OPTION_QUANT_GROUP_SIZE, group)?,
                    zero_point: env.bool(OPTION_INT4_ZERO_POINT, true)?,
                },
                Method::RoundToNearest,
            ),
            "awq" => (parse_awq_scheme(env)?, Method::Awq),
            "gptq" => (parse_gptq_scheme(env, group)?, parse_gptq(env)?),
            "smoothquant" => (Scheme::W8A8, parse_smoothquant(env, group)?),
            "static_int8" => {
                return Err(invalid(
                    OPTION_QUANTIZE,
                    quantize,
                    &format!("{METHODS}; this calibrated method is not built yet"),
                ))
            }
            _ => return Err(invalid(OPTION_QUANTIZE, quantize, METHODS)),
        };
        let ignore = match env.get(OPTION_FP8_IGNORE) {
            None => vec!["lm_head".to_string()],
            Some(list) => list
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        };
        let mse_scale_search = match env.get(OPTION_QUANT_SCALE_SEARCH).map(str::trim) {
            None | Some("minmax") => false,
            Some("mse") if method != Method::RoundToNearest => {
                return Err(invalid(
                    OPTION_QUANT_SCALE_SEARCH,
                    "mse",
                    "`minmax` here: the MSE search is for the round-to-nearest schemes \
                     (OPTION_QUANTIZE=int4, int8 or fp8); AWQ searches its own clip ratios and \
                     GPTQ and SmoothQuant choose their codes from calibration data",
                ))
            }
            Some("mse") => match scheme {
                Scheme::W4A16 { .. } | Scheme::W8A16 { .. } | Scheme::W8A8 | Scheme::Fp8Dynamic => {
                    true
                }
                _ => {
                    return Err(invalid(
                        OPTION_QUANT_SCALE_SEARCH,
                        "mse",
                        "`minmax` for FP8_BLOCK and static FP8: the search chooses per-channel \
                         and group scales (INT4, INT8, FP8_DYNAMIC), not block or tensor ones",
                    ))
                }
            },
            Some(other) => {
                return Err(invalid(
                    OPTION_QUANT_SCALE_SEARCH,
                    other,
                    "`minmax` or `mse`",
                ))
            }
        };
        let gptq_rounding = match method {
            Method::Awq => parse_rounding(env, OPTION_AWQ_ROUNDING, "awq")?,
            Method::SmoothQuant { .. } => {
                parse_rounding(env, OPTION_SMOOTHQUANT_ROUNDING, "smoothquant")?
            }
            _ => false,
        };
        for (option, applies_to) in [
            (OPTION_AWQ_ROUNDING, "awq"),
            (OPTION_SMOOTHQUANT_ROUNDING, "smoothquant"),
        ] {
            // Set for another method: say so rather than ignore it.
            if env.get(option).is_some() && !quantize.eq_ignore_ascii_case(applies_to) {
                return Err(invalid(
                    option,
                    env.get(option).unwrap_or_default(),
                    &format!("unset: it applies to OPTION_QUANTIZE={applies_to}"),
                ));
            }
        }
        Ok(QuantizeOptions {
            scheme,
            method,
            mse_scale_search,
            gptq_rounding,
            ignore,
        })
    }
}

impl QuantizeOptions {
    /// Whether the job must run calibration data through the model before quantizing.
    pub fn needs_calibration(&self) -> bool {
        self.scheme.needs_calibration() || self.method != Method::RoundToNearest
    }
}

/// `nearest` (the default) or `gptq`: how a scaling method rounds its rewritten weights.
fn parse_rounding(env: &Env, option: &str, method: &str) -> Result<bool> {
    match env.get(option).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if v == "nearest" => Ok(false),
        Some(v) if v == "gptq" => Ok(true),
        Some(v) => Err(invalid(
            option,
            &v,
            &format!("`nearest` or `gptq` (how {method} rounds its scaled weights)"),
        )),
    }
}

/// GPTQ's format: INT4 W4A16 (groups, zero points) or INT8 W8A16 (per channel or groups).
fn parse_gptq_scheme(env: &Env, group: Option<usize>) -> Result<Scheme> {
    match env.get(OPTION_GPTQ_WEIGHT_BIT_WIDTH).map(str::trim) {
        None | Some("4") => Ok(Scheme::W4A16 {
            group: int4_group(OPTION_QUANT_GROUP_SIZE, group)?,
            zero_point: env.bool(OPTION_INT4_ZERO_POINT, true)?,
        }),
        Some("8") => Ok(Scheme::W8A16 { group }),
        Some(v) => Err(invalid(
            OPTION_GPTQ_WEIGHT_BIT_WIDTH,
            v,
            "4 (W4A16) or 8 (W8A16)",
        )),
    }
}

/// GPTQ's options besides the scheme.
fn parse_gptq(env: &Env) -> Result<Method> {
    let actorder =
        match env
            .get(OPTION_GPTQ_ACTORDER)
            .map(|v| v.trim().to_ascii_lowercase())
        {
            None => true,
            Some(v) if v == "weight" || v == "static" || v == "true" => true,
            Some(v) if v == "none" || v == "false" => false,
            Some(v) if v == "group" || v == "dynamic" => return Err(invalid(
                OPTION_GPTQ_ACTORDER,
                &v,
                "`weight` (the default) or `none`; `group` ordering needs a g_idx tensor in the \
                 checkpoint, which temper does not write",
            )),
            Some(v) => return Err(invalid(OPTION_GPTQ_ACTORDER, &v, "`weight` or `none`")),
        };
    Ok(Method::Gptq { actorder })
}

/// SmoothQuant writes W8A8 (per-channel weights, dynamic per-token activations, what vLLM
/// runs); `alpha` in [0, 1], default 0.5 as the paper and llm-compressor.
fn parse_smoothquant(env: &Env, group: Option<usize>) -> Result<Method> {
    if let Some(g) = group {
        return Err(invalid(
            OPTION_QUANT_GROUP_SIZE,
            &g.to_string(),
            "unset for smoothquant (its W8A8 weights are per channel)",
        ));
    }
    let alpha = match env.get(OPTION_SMOOTHQUANT_ALPHA) {
        None => 0.5,
        Some(v) => match v.trim().parse::<f32>() {
            Ok(a) if (0.0..=1.0).contains(&a) => a,
            _ => {
                return Err(invalid(
                    OPTION_SMOOTHQUANT_ALPHA,
                    v,
                    "a number between 0 and 1 (0.5 by default; larger moves more of the \
                     activations' range into the weights)",
                ))
            }
        },
    };
    Ok(Method::SmoothQuant { alpha })
}

/// INT4 groups: a multiple of 8 (pack-quantized packs eight codes per int32).
fn int4_group(option: &str, group: Option<usize>) -> Result<usize> {
    match group {
        None => Ok(DEFAULT_INT4_GROUP),
        Some(g) if g.is_multiple_of(8) => Ok(g),
        Some(g) => Err(invalid(
            option,
            &g.to_string(),
            "a positive multiple of 8 for INT4 (vLLM's kernels take 32, 64 or 128)",
        )),
    }
}

fn parse_awq_scheme(env: &Env) -> Result<Scheme> {
    if let Some(bits) = env.get(OPTION_AWQ_WEIGHT_BIT_WIDTH) {
        if bits.trim() != "4" {
            return Err(invalid(
                OPTION_AWQ_WEIGHT_BIT_WIDTH,
                bits,
                "4 (the INT4 W4A16 checkpoint vLLM runs; for 8-bit weights use OPTION_QUANTIZE=int8)",
            ));
        }
    }
    let group = match env.get(OPTION_AWQ_BLOCK_SIZE) {
        None => None,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(g) if g > 0 => Some(g),
            _ => {
                return Err(invalid(
                    OPTION_AWQ_BLOCK_SIZE,
                    v,
                    "a positive multiple of 8, such as 128",
                ))
            }
        },
    };
    Ok(Scheme::W4A16 {
        group: int4_group(OPTION_AWQ_BLOCK_SIZE, group)?,
        zero_point: env.bool(OPTION_AWQ_ZERO_POINT, true)?,
    })
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
