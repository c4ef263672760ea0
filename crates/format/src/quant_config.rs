//! Which quantized format each Linear of a checkpoint is stored in, read from
//! `config.json`'s `quantization_config`.
//!
//! Supported (what this project writes, and what vLLM's older `fp8` method writes):
//! - compressed-tensors `float-quantized`: FP8 E4M3 weights per channel, per tensor or in
//!   blocks; activations none, dynamic per token, or static per tensor (`input_scale`);
//! - compressed-tensors `int-quantized`: INT8 weights per channel with dynamic per-token INT8
//!   activations (W8A8) or none;
//! - compressed-tensors `pack-quantized` with 8 bits: INT8 weight-only (W8A16), per channel or
//!   per group;
//! - `quant_method: "fp8"`: per-tensor FP8 weights, dynamic or static activations.
//!
//! Everything else (GPTQ, AWQ, bitsandbytes, 4-bit packing, asymmetric schemes...) is refused
//! with a message naming the field and value, rather than run wrongly.

use crate::error::{FormatError, Result};
use serde_json::{Map, Value};
use std::path::Path;
use temper_core::config::ModelConfig;
use temper_core::select::IgnoreList;

/// How a quantized weight's scales are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// One scale per output row: `weight_scale` `[out, 1]`.
    Channel,
    /// One scale per row and run of `group` input columns: `[out, in/group]`.
    Group(usize),
    /// One scale for the whole matrix: `[1]` or `[]`.
    Tensor,
    /// One scale per `rows x cols` tile: `[ceil(out/rows), ceil(in/cols)]`.
    Block(usize, usize),
}

/// The stored element type of a Linear weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// Not quantized: the checkpoint's float dtype.
    Dense,
    /// INT8 codes; `packed` is compressed-tensors' pack-quantized layout (`weight_packed` I32,
    /// four codes + 128 per word) instead of a plain I8 `weight`.
    Int8 { strategy: Strategy, packed: bool },
    /// FP8 E4M3 codes.
    Fp8 { strategy: Strategy },
    /// INT4 codes in compressed-tensors' pack-quantized layout (`weight_packed` I32, eight codes
    /// plus 8 per word); without `symmetric`, a `weight_zero_point` I32 packed eight per word
    /// along the output dimension.
    Int4 { strategy: Strategy, symmetric: bool },
}

/// How the serving engine treats a Linear's input activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputActivations {
    /// Weight-only: activations stay in floating point.
    Float,
    /// INT8, one dynamic scale per token (W8A8).
    Int8PerToken,
    /// FP8 E4M3, one dynamic scale per token.
    Fp8PerToken,
    /// FP8 E4M3, one dynamic scale per token and run of `group` columns (block-FP8 models).
    Fp8PerGroup(usize),
    /// FP8 E4M3, one dynamic scale for the whole input.
    Fp8PerTensor,
    /// FP8 E4M3 with the calibrated `input_scale` stored beside the weight.
    Fp8Static,
}

/// The format of one Linear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearScheme {
    pub weights: WeightFormat,
    pub inputs: InputActivations,
}

impl LinearScheme {
    pub const DENSE: LinearScheme = LinearScheme {
        weights: WeightFormat::Dense,
        inputs: InputActivations::Float,
    };
}

/// The parsed `quantization_config`.
#[derive(Debug, Clone)]
pub struct QuantConfig {
    groups: Vec<(Targets, LinearScheme)>,
    ignore: IgnoreList,
}

#[derive(Debug, Clone)]
enum Targets {
    /// `"Linear"`: every Linear module.
    AllLinear,
    Names(IgnoreList),
}

const SUPPORTED: &str = "compressed-tensors float-quantized (FP8), int-quantized (INT8 W8A8) and \
    pack-quantized (INT8 W8A16, INT4 W4A16) checkpoints, and vLLM `fp8` checkpoints";

impl QuantConfig {
    /// `None` for an unquantized model.
    pub fn from_config(cfg: &ModelConfig) -> Result<Option<QuantConfig>> {
        match cfg.raw.get("quantization_config") {
            None => Ok(None),
            Some(q) => QuantConfig::parse(cfg.path.as_path(), q).map(Some),
        }
    }

    /// Reads a `quantization_config` object (`path` names the file it came from).
    pub fn parse(path: &Path, q: &Value) -> Result<QuantConfig> {
        let Value::Object(q) = q else {
            return Err(unsupported(path, "quantization_config must be an object"));
        };
        match q.get("quant_method").and_then(Value::as_str) {
            Some("compressed-tensors") => compressed_tensors(path, q),
            Some("fp8") => vllm_fp8(path, q),
            Some(other) => Err(unsupported(
                path,
                &format!("quantization_config.quant_method `{other}` is not supported; the runtime runs {SUPPORTED}"),
            )),
            None => Err(unsupported(
                path,
                "quantization_config has no quant_method string",
            )),
        }
    }

    /// The scheme of Linear module `module` (e.g. `model.layers.0.mlp.up_proj`).
    pub fn scheme_for(&self, module: &str) -> LinearScheme {
        if self.ignore.matches(module) {
            return LinearScheme::DENSE;
        }
        // Groups naming the module (or a pattern matching it) win over a `Linear` catch-all,
        // whatever their order in the file, as in compressed-tensors.
        let named = self.groups.iter().find(|(targets, _)| match targets {
            Targets::AllLinear => false,
            Targets::Names(list) => list.matches(module),
        });
        let any = || {
            self.groups
                .iter()
                .find(|(targets, _)| matches!(targets, Targets::AllLinear))
        };
        named
            .or_else(any)
            .map(|(_, scheme)| *scheme)
            .unwrap_or(LinearScheme::DENSE)
    }
}

fn unsupported(path: &Path, detail: &str) -> FormatError {
    FormatError::UnsupportedQuantization {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

fn string_list(path: &Path, v: Option<&Value>, field: &str) -> Result<Vec<String>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_string).ok_or_else(|| {
                    unsupported(
                        path,
                        &format!("{field} must be a list of strings, found {i}"),
                    )
                })
            })
            .collect(),
        Some(other) => Err(unsupported(
            path,
            &format!("{field} must be a list of strings, found {other}"),
        )),
    }
}

fn ignore_list(path: &Path, v: Option<&Value>, field: &str) -> Result<IgnoreList> {
    let entries = string_list(path, v, field)?;
    IgnoreList::parse(&entries).map_err(|e| unsupported(path, &format!("{field}: {e}")))
}

fn compressed_tensors(path: &Path, q: &Map<String, Value>) -> Result<QuantConfig> {
    let format = q.get("format").and_then(Value::as_str).unwrap_or("");
    if !matches!(
        format,
        "float-quantized" | "int-quantized" | "pack-quantized" | "naive-quantized"
    ) {
        return Err(unsupported(
            path,
            &format!("quantization_config.format `{format}` is not supported; the runtime runs {SUPPORTED}"),
        ));
    }
    if let Some(status) = q.get("quantization_status").and_then(Value::as_str) {
        if status != "compressed" {
            return Err(unsupported(
                path,
                &format!("quantization_config.quantization_status is `{status}`; only `compressed` checkpoints hold quantized codes"),
            ));
        }
    }
    // Sparse storage and online rotations change what the tensors mean; running without them
    // would give wrong output rather than an error. llm-compressor writes `{}` for "none".
    for key in ["sparsity_config", "transform_config"] {
        let none = match q.get(key) {
            None | Some(Value::Null) => true,
            Some(Value::Object(m)) => m.is_empty(),
            _ => false,
        };
        if !none {
            return Err(unsupported(
                path,
                &format!("quantization_config.{key} is set; this runtime runs dense, unrotated checkpoints only"),
            ));
        }
    }
    if !matches!(q.get("kv_cache_scheme"), None | Some(Value::Null)) {
        return Err(unsupported(
            path,
            "quantization_config.kv_cache_scheme is set; a quantized KV cache is not supported by this runtime",
        ));
    }
    let Some(Value::Object(groups)) = q.get("config_groups") else {
        return Err(unsupported(
            path,
            "quantization_config.config_groups must be an object of scheme groups",
        ));
    };
    let mut parsed = Vec::new();
    for (name, group) in groups {
        let field = format!("quantization_config.config_groups.{name}");
        let targets = string_list(path, group.get("targets"), &format!("{field}.targets"))?;
        let targets = if targets.iter().any(|t| t == "Linear") {
            Targets::AllLinear
        } else {
            Targets::Names(
                IgnoreList::parse(&targets)
                    .map_err(|e| unsupported(path, &format!("{field}.targets: {e}")))?,
            )
        };
        let weights = group_weights(path, format, group.get("weights"), &field)?;
        let inputs = group_inputs(path, group.get("input_activations"), &field)?;
        if inputs == InputActivations::Int8PerToken
            && !matches!(
                weights,
                WeightFormat::Int8 {
                    strategy: Strategy::Channel,
                    ..
                }
            )
        {
            return Err(unsupported(
                path,
                &format!(
                    "{field}: INT8 activations are supported with per-channel INT8 weights only"
                ),
            ));
        }
        parsed.push((targets, LinearScheme { weights, inputs }));
    }
    Ok(QuantConfig {
        groups: parsed,
        ignore: ignore_list(path, q.get("ignore"), "quantization_config.ignore")?,
    })
}

fn group_weights(
    path: &Path,
    format: &str,
    w: Option<&Value>,
    field: &str,
) -> Result<WeightFormat> {
    let Some(Value::Object(w)) = w else {
        return Err(unsupported(
            path,
            &format!("{field}.weights must be an object"),
        ));
    };
    let bits = w.get("num_bits").and_then(Value::as_u64);
    let four_bit = bits == Some(4) && format == "pack-quantized";
    if bits != Some(8) && !four_bit {
        return Err(unsupported(
            path,
            &format!(
                "{field}.weights.num_bits is {:?} with format `{format}`; 8-bit weights, and 4-bit \
                 weights in pack-quantized checkpoints, are supported",
                bits
            ),
        ));
    }
    let symmetric = w.get("symmetric").and_then(Value::as_bool) != Some(false);
    // `weight` (or `static`) activation order only changed the order GPTQ processed the columns
    // in: the stored layout is the plain one. `group` (`dynamic`, or `true` in older files)
    // stores a g_idx permutation this runtime does not apply.
    match w.get("actorder") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::String(a)) if a == "weight" || a == "static" => {}
        Some(other) => {
            return Err(unsupported(
                path,
                &format!(
                    "{field}.weights.actorder is {other}; activation-reordered (group, g_idx) \
                     checkpoints are not supported by this runtime (`weight` order is)"
                ),
            ))
        }
    }
    if !symmetric && !four_bit {
        return Err(unsupported(
            path,
            &format!("{field}.weights.symmetric is false; asymmetric (zero-point) weights are not supported"),
        ));
    }
    let strategy = match w.get("strategy").and_then(Value::as_str) {
        Some("channel") => Strategy::Channel,
        Some("tensor") => Strategy::Tensor,
        Some("group") => match w.get("group_size").and_then(Value::as_u64) {
            Some(g) if g > 0 => Strategy::Group(g as usize),
            _ => {
                return Err(unsupported(
                    path,
                    &format!("{field}.weights.group_size must be a positive integer for strategy `group`"),
                ))
            }
        },
        Some("block") => match w.get("block_structure") {
            Some(Value::Array(b))
                if b.len() == 2 && b.iter().all(|x| x.as_u64().is_some_and(|x| x > 0)) =>
            {
                Strategy::Block(
                    b[0].as_u64().unwrap_or(1) as usize,
                    b[1].as_u64().unwrap_or(1) as usize,
                )
            }
            other => {
                return Err(unsupported(
                    path,
                    &format!("{field}.weights.block_structure must be [rows, cols], found {other:?}"),
                ))
            }
        },
        other => {
            return Err(unsupported(
                path,
                &format!("{field}.weights.strategy {other:?} is not supported (channel, group, tensor, block are)"),
            ))
        }
    };
    if four_bit {
        if w.get("type").and_then(Value::as_str) != Some("int") {
            return Err(unsupported(
                path,
                &format!("{field}.weights.type must be `int` for 4-bit weights"),
            ));
        }
        if !matches!(strategy, Strategy::Group(_) | Strategy::Channel) {
            return Err(unsupported(
                path,
                &format!("{field}.weights.strategy {strategy:?}: 4-bit weights are supported per group or per channel"),
            ));
        }
        return Ok(WeightFormat::Int4 {
            strategy,
            symmetric,
        });
    }
    match (w.get("type").and_then(Value::as_str), format) {
        (Some("float"), "float-quantized" | "naive-quantized") => {
            Ok(WeightFormat::Fp8 { strategy })
        }
        (Some("int"), "int-quantized" | "naive-quantized") => Ok(WeightFormat::Int8 {
            strategy,
            packed: false,
        }),
        (Some("int"), "pack-quantized") => Ok(WeightFormat::Int8 {
            strategy,
            packed: true,
        }),
        (kind, _) => Err(unsupported(
            path,
            &format!("{field}.weights.type {kind:?} does not fit format `{format}`"),
        )),
    }
}

fn group_inputs(path: &Path, a: Option<&Value>, field: &str) -> Result<InputActivations> {
    let a = match a {
        None | Some(Value::Null) => return Ok(InputActivations::Float),
        Some(Value::Object(a)) => a,
        Some(other) => {
            return Err(unsupported(
                path,
                &format!("{field}.input_activations must be an object or null, found {other}"),
            ))
        }
    };
    if a.get("symmetric").and_then(Value::as_bool) == Some(false) {
        return Err(unsupported(
            path,
            &format!("{field}.input_activations.symmetric is false; asymmetric (zero-point) activations are not supported"),
        ));
    }
    let bits = a.get("num_bits").and_then(Value::as_u64);
    let kind = a.get("type").and_then(Value::as_str);
    let strategy = a.get("strategy").and_then(Value::as_str);
    let dynamic = a.get("dynamic").and_then(Value::as_bool).unwrap_or(false);
    match (bits, kind, strategy, dynamic) {
        (Some(8), Some("int"), Some("token"), true) => Ok(InputActivations::Int8PerToken),
        (Some(8), Some("float"), Some("token"), true) => Ok(InputActivations::Fp8PerToken),
        (Some(8), Some("float"), Some("group"), true) => match a.get("group_size").and_then(Value::as_u64) {
            Some(g) if g > 0 => Ok(InputActivations::Fp8PerGroup(g as usize)),
            _ => Err(unsupported(
                path,
                &format!("{field}.input_activations.group_size must be a positive integer for strategy `group`"),
            )),
        },
        (Some(8), Some("float"), Some("tensor"), true) => Ok(InputActivations::Fp8PerTensor),
        (Some(8), Some("float"), Some("tensor"), false) => Ok(InputActivations::Fp8Static),
        _ => Err(unsupported(
            path,
            &format!(
                "{field}.input_activations ({bits:?} bits, type {kind:?}, strategy {strategy:?}, dynamic {dynamic}) \
                 is not supported; supported are 8-bit int per token (dynamic), float per token or per group \
                 (dynamic) and float per tensor (dynamic or static)"
            ),
        )),
    }
}

fn vllm_fp8(path: &Path, q: &Map<String, Value>) -> Result<QuantConfig> {
    let inputs = match q.get("activation_scheme").and_then(Value::as_str) {
        Some("dynamic") | None => InputActivations::Fp8PerTensor,
        Some("static") => InputActivations::Fp8Static,
        Some(other) => {
            return Err(unsupported(
                path,
                &format!("quantization_config.activation_scheme `{other}` is not supported (dynamic or static)"),
            ))
        }
    };
    if q.get("weight_block_size").is_some_and(|v| !v.is_null()) {
        return Err(unsupported(
            path,
            "quantization_config.weight_block_size (DeepSeek-style block FP8) is not supported by this runtime",
        ));
    }
    Ok(QuantConfig {
        groups: vec![(
            Targets::AllLinear,
            LinearScheme {
                weights: WeightFormat::Fp8 {
                    strategy: Strategy::Tensor,
                },
                inputs,
            },
        )],
        ignore: ignore_list(
            path,
            q.get("ignored_layers"),
            "quantization_config.ignored_layers",
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_groups_win_over_a_linear_catch_all() {
        let weights = |kind: &str| {
            serde_json::json!({"num_bits": 8, "type": kind, "strategy": "channel",
                               "symmetric": true, "dynamic": false})
        };
        // The catch-all comes first in the file; the named group must still win.
        let q = serde_json::json!({
            "quant_method": "compressed-tensors",
            "format": "naive-quantized",
            "config_groups": {
                "group_0": {"targets": ["Linear"], "weights": weights("int")},
                "group_1": {"targets": ["re:.*down_proj"], "weights": weights("float")}
            }
        });
        let c = compressed_tensors(Path::new("config.json"), q.as_object().unwrap()).unwrap();
        let down = c.scheme_for("model.layers.0.mlp.down_proj").weights;
        let up = c.scheme_for("model.layers.0.mlp.up_proj").weights;
        assert!(matches!(down, WeightFormat::Fp8 { .. }), "{down:?}");
        assert!(matches!(up, WeightFormat::Int8 { .. }), "{up:?}");
    }

    /// The metadata llm-compressor 0.14 writes for GPTQ W4A16 with `actorder="weight"`: empty
    /// sparsity and transform configs, and an activation order that left the layout alone.
    #[test]
    fn llm_compressor_metadata_is_accepted_and_group_order_refused() {
        let config = |actorder: Value, sparsity: Value| {
            serde_json::json!({
                "quant_method": "compressed-tensors",
                "format": "pack-quantized",
                "quantization_status": "compressed",
                "sparsity_config": sparsity,
                "transform_config": {},
                "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                    "num_bits": 4, "type": "int", "strategy": "group", "group_size": 128,
                    "symmetric": false, "dynamic": false, "actorder": actorder}}}
            })
        };
        let parse = |q: Value| compressed_tensors(Path::new("config.json"), q.as_object().unwrap());
        for order in [
            serde_json::json!("weight"),
            serde_json::json!("static"),
            Value::Null,
        ] {
            let c = parse(config(order.clone(), serde_json::json!({}))).unwrap();
            let w = c.scheme_for("model.layers.0.mlp.down_proj").weights;
            assert!(matches!(w, WeightFormat::Int4 { .. }), "{order}: {w:?}");
        }
        for order in [serde_json::json!("group"), serde_json::json!(true)] {
            let err = parse(config(order.clone(), serde_json::json!({})))
                .unwrap_err()
                .to_string();
            assert!(err.contains("actorder") && err.contains("g_idx"), "{err}");
        }
        let sparse =
            serde_json::json!({"format": "sparse-24-bitmask", "sparsity_structure": "2:4"});
        let err = parse(config(Value::Null, sparse)).unwrap_err().to_string();
        assert!(err.contains("sparsity_config"), "{err}");
    }
}
