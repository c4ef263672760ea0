//! What each compressed-tensors scheme writes for one Linear weight, and the
//! `quantization_config` that tells vLLM and SGLang how to load it (FORMATS.md).

use crate::quant_config::{InputActivations, LinearScheme, Strategy, WeightFormat};
use safetensors::Dtype;
use serde::Serialize;
use serde_json::{json, Value};
use temper_core::writer::TensorSpec;

/// FP8_BLOCK tile: 128 output rows by 128 input columns.
pub const FP8_BLOCK: (usize, usize) = (128, 128);

/// Largest finite FP8 E4M3 magnitude: scales are absmax / this.
pub const FP8_MAX: f32 = 448.0;

/// The compressed-tensors scheme written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Scheme {
    /// FP8 E4M3 weights, one scale per output channel; activations quantized per token
    /// at run time.
    Fp8Dynamic,
    /// FP8 E4M3 weights with one scale per 128x128 block.
    Fp8Block,
    /// FP8 E4M3 weights with one scale per tensor, and a static per-tensor input scale
    /// calibrated by running sample text through the model (`OPTION_FP8_SCHEME=FP8`).
    Fp8Static,
    /// INT8 weights, 16-bit activations (`pack-quantized`); `group` None = per channel.
    W8A16 { group: Option<usize> },
    /// INT8 weights per channel, INT8 activations per token at run time (`int-quantized`).
    W8A8,
    /// INT4 weights in groups of `group` input columns, 16-bit activations
    /// (`pack-quantized`, 8 codes per int32); `zero_point` = asymmetric, with a zero point
    /// per group (AWQ's default, what vLLM's Marlin kernels load as `uint4`), else symmetric
    /// (`uint4b8`).
    W4A16 { group: usize, zero_point: bool },
}

impl Scheme {
    pub fn label(&self) -> String {
        match self {
            Scheme::Fp8Dynamic => "FP8_DYNAMIC".into(),
            Scheme::Fp8Block => "FP8_BLOCK".into(),
            Scheme::Fp8Static => "FP8 (static, calibrated)".into(),
            Scheme::W8A16 { group: None } => "INT8 W8A16 (per channel)".into(),
            Scheme::W8A16 { group: Some(g) } => format!("INT8 W8A16 (group {g})"),
            Scheme::W8A8 => "INT8 W8A8".into(),
            Scheme::W4A16 {
                group,
                zero_point: true,
            } => format!("INT4 W4A16 (group {group}, zero points)"),
            Scheme::W4A16 {
                group,
                zero_point: false,
            } => format!("INT4 W4A16 (group {group}, symmetric)"),
        }
    }
}

impl Scheme {
    /// compressed-tensors `format`.
    pub fn format(&self) -> &'static str {
        match self {
            Scheme::Fp8Dynamic | Scheme::Fp8Block | Scheme::Fp8Static => "float-quantized",
            Scheme::W8A16 { .. } | Scheme::W4A16 { .. } => "pack-quantized",
            Scheme::W8A8 => "int-quantized",
        }
    }

    /// Why this scheme can't take a `[rows, cols]` weight, if it can't.
    pub fn check_shape(&self, rows: usize, cols: usize) -> Option<String> {
        match *self {
            Scheme::W8A16 { group: Some(g) } if !cols.is_multiple_of(g) => Some(format!(
                "{cols} input columns are not a multiple of the group size {g}; use per-channel \
                 scales (leave OPTION_QUANT_GROUP_SIZE unset) or a group size that divides {cols}"
            )),
            Scheme::W4A16 { group, .. } if !cols.is_multiple_of(group) => Some(format!(
                "{cols} input columns are not a multiple of the group size {group}; choose a group \
                 size that divides {cols} (OPTION_AWQ_BLOCK_SIZE / OPTION_QUANT_GROUP_SIZE) or add \
                 the module to the ignore list to keep it unquantized"
            )),
            Scheme::W4A16 { .. } if !cols.is_multiple_of(8) => Some(format!(
                "pack-quantized stores eight int4 values per int32 along the input dimension, and \
                 {cols} columns are not a multiple of 8"
            )),
            Scheme::W8A16 { .. } if !cols.is_multiple_of(4) => Some(format!(
                "pack-quantized stores four int8 values per int32 along the input dimension, and {cols} \
                 columns are not a multiple of 4"
            )),
            _ if rows == 0 || cols == 0 => Some("has an empty dimension".into()),
            _ => None,
        }
    }

    /// Scales per row for row-wise schemes (1 for per channel).
    pub fn groups_per_row(&self, cols: usize) -> usize {
        match *self {
            Scheme::W8A16 { group: Some(g) } | Scheme::W4A16 { group: g, .. } => cols / g,
            _ => 1,
        }
    }

    /// The shape of `weight_scale` for a `[rows, cols]` weight.
    pub fn scale_shape(&self, rows: usize, cols: usize) -> Vec<usize> {
        match self {
            Scheme::Fp8Block => vec![rows.div_ceil(FP8_BLOCK.0), cols.div_ceil(FP8_BLOCK.1)],
            Scheme::Fp8Static => vec![1],
            _ => vec![rows, self.groups_per_row(cols)],
        }
    }

    /// The tensors written for module `prefix` (e.g. `model.layers.0.mlp.up_proj`).
    pub fn output_tensors(
        &self,
        prefix: &str,
        rows: usize,
        cols: usize,
        scale_dtype: Dtype,
    ) -> Vec<TensorSpec> {
        let scale = TensorSpec::new(
            format!("{prefix}.weight_scale"),
            scale_dtype,
            self.scale_shape(rows, cols),
        );
        match self {
            Scheme::Fp8Dynamic | Scheme::Fp8Block => {
                vec![
                    TensorSpec::new(format!("{prefix}.weight"), Dtype::F8_E4M3, vec![rows, cols]),
                    scale,
                ]
            }
            Scheme::Fp8Static => vec![
                TensorSpec::new(format!("{prefix}.weight"), Dtype::F8_E4M3, vec![rows, cols]),
                scale,
                TensorSpec::new(format!("{prefix}.input_scale"), scale_dtype, vec![1]),
            ],
            Scheme::W8A8 => vec![
                TensorSpec::new(format!("{prefix}.weight"), Dtype::I8, vec![rows, cols]),
                scale,
            ],
            Scheme::W8A16 { .. } => vec![
                TensorSpec::new(
                    format!("{prefix}.weight_packed"),
                    Dtype::I32,
                    vec![rows, cols / 4],
                ),
                TensorSpec::new(format!("{prefix}.weight_shape"), Dtype::I64, vec![2]),
                scale,
            ],
            Scheme::W4A16 { zero_point, .. } => {
                let mut t = vec![
                    TensorSpec::new(
                        format!("{prefix}.weight_packed"),
                        Dtype::I32,
                        vec![rows, cols / 8],
                    ),
                    TensorSpec::new(format!("{prefix}.weight_shape"), Dtype::I64, vec![2]),
                    scale,
                ];
                if *zero_point {
                    // Packed eight per int32 along the output dimension (compressed-tensors'
                    // `packed_dim=0`), one column per group.
                    t.push(TensorSpec::new(
                        format!("{prefix}.weight_zero_point"),
                        Dtype::I32,
                        vec![rows.div_ceil(8), self.groups_per_row(cols)],
                    ));
                }
                t
            }
        }
    }

    /// The scheme a Linear with `cols` input columns gets when this one is asked for: itself,
    /// except INT4 groups that do not divide `cols`, which fall back to the largest of 64 and
    /// 32 (group sizes vLLM's INT4 kernels take) that does, when one does. Otherwise `self`,
    /// which [`Scheme::check_shape`] then refuses with the reason.
    pub fn fit_columns(&self, cols: usize) -> Scheme {
        match *self {
            Scheme::W4A16 { group, zero_point } if !cols.is_multiple_of(group) => [64, 32]
                .into_iter()
                .find(|&g| g < group && cols.is_multiple_of(g))
                .map_or(*self, |group| Scheme::W4A16 { group, zero_point }),
            _ => *self,
        }
    }

    /// As [`Scheme::quantization_config`], plus one config group per `(scheme, modules)` of
    /// `others` that targets those modules by name (named groups win over the `Linear`
    /// catch-all in compressed-tensors and vLLM). All schemes must share this one's format.
    pub fn quantization_config_with(
        &self,
        ignore: &[String],
        others: &[(Scheme, Vec<String>)],
    ) -> Value {
        let mut config = self.quantization_config(ignore);
        for (i, (scheme, modules)) in others.iter().enumerate() {
            debug_assert_eq!(scheme.format(), self.format());
            config["config_groups"][format!("group_{}", i + 1)] = json!({
                "targets": modules,
                "weights": scheme.weight_args(),
                "input_activations": scheme.activation_args(),
                "output_activations": null,
                "format": scheme.format(),
            });
        }
        config
    }

    /// The `quantization_config` object for `config.json`.
    pub fn quantization_config(&self, ignore: &[String]) -> Value {
        json!({
            "quant_method": "compressed-tensors",
            "format": self.format(),
            "quantization_status": "compressed",
            "ignore": ignore,
            "kv_cache_scheme": null,
            "config_groups": {
                "group_0": {
                    "targets": ["Linear"],
                    "weights": self.weight_args(),
                    "input_activations": self.activation_args(),
                    "output_activations": null,
                    "format": self.format(),
                }
            },
        })
    }

    fn weight_args(&self) -> Value {
        let (kind, strategy, group, block) = match *self {
            Scheme::Fp8Dynamic => ("float", "channel", None, None),
            Scheme::Fp8Block => ("float", "block", None, Some([FP8_BLOCK.0, FP8_BLOCK.1])),
            Scheme::Fp8Static => ("float", "tensor", None, None),
            Scheme::W8A16 { group: None } | Scheme::W8A8 => ("int", "channel", None, None),
            Scheme::W8A16 { group: Some(g) } => ("int", "group", Some(g), None),
            Scheme::W4A16 { group, zero_point } => {
                return json!({
                    "num_bits": 4, "type": "int", "strategy": "group", "symmetric": !zero_point,
                    "dynamic": false, "group_size": group, "block_structure": null, "actorder": null,
                    "observer": "minmax", "observer_kwargs": {},
                })
            }
        };
        json!({
            "num_bits": 8, "type": kind, "strategy": strategy, "symmetric": true, "dynamic": false,
            "group_size": group, "block_structure": block, "actorder": null, "observer": "minmax",
            "observer_kwargs": {},
        })
    }

    fn activation_args(&self) -> Value {
        let dynamic = |kind: &str, strategy: &str, group: Option<usize>| {
            json!({
                "num_bits": 8, "type": kind, "strategy": strategy, "symmetric": true, "dynamic": true,
                "group_size": group, "block_structure": null, "actorder": null, "observer": null,
                "observer_kwargs": {},
            })
        };
        match self {
            Scheme::Fp8Dynamic => dynamic("float", "token", None),
            Scheme::Fp8Block => dynamic("float", "group", Some(FP8_BLOCK.1)),
            Scheme::W8A8 => dynamic("int", "token", None),
            Scheme::Fp8Static => json!({
                "num_bits": 8, "type": "float", "strategy": "tensor", "symmetric": true, "dynamic": false,
                "group_size": null, "block_structure": null, "actorder": null, "observer": "minmax",
                "observer_kwargs": {},
            }),
            Scheme::W8A16 { .. } | Scheme::W4A16 { .. } => Value::Null,
        }
    }

    /// How a reader must run a Linear this scheme wrote: what [`crate::quant_config`] reads
    /// back from [`Scheme::quantization_config`] (held equal by the round-trip test).
    pub fn linear_scheme(&self) -> LinearScheme {
        let (weights, inputs) = match *self {
            Scheme::Fp8Dynamic => (
                WeightFormat::Fp8 {
                    strategy: Strategy::Channel,
                },
                InputActivations::Fp8PerToken,
            ),
            Scheme::Fp8Block => (
                WeightFormat::Fp8 {
                    strategy: Strategy::Block(FP8_BLOCK.0, FP8_BLOCK.1),
                },
                InputActivations::Fp8PerGroup(FP8_BLOCK.1),
            ),
            Scheme::Fp8Static => (
                WeightFormat::Fp8 {
                    strategy: Strategy::Tensor,
                },
                InputActivations::Fp8Static,
            ),
            Scheme::W8A16 { group } => (
                WeightFormat::Int8 {
                    strategy: group.map_or(Strategy::Channel, Strategy::Group),
                    packed: true,
                },
                InputActivations::Float,
            ),
            Scheme::W8A8 => (
                WeightFormat::Int8 {
                    strategy: Strategy::Channel,
                    packed: false,
                },
                InputActivations::Int8PerToken,
            ),
            Scheme::W4A16 { group, zero_point } => (
                WeightFormat::Int4 {
                    strategy: Strategy::Group(group),
                    symmetric: !zero_point,
                },
                InputActivations::Float,
            ),
        };
        LinearScheme { weights, inputs }
    }

    /// Largest representable code magnitude: the scale is absmax / this.
    pub fn qmax(&self) -> f32 {
        match self {
            Scheme::Fp8Dynamic | Scheme::Fp8Block | Scheme::Fp8Static => 448.0,
            // Symmetric [-127, 127]: the largest weight maps exactly onto a code, and no
            // clamping error appears (llm-compressor uses 127.5 and clamps at 127).
            Scheme::W8A16 { .. } | Scheme::W8A8 => 127.0,
            // Symmetric INT4 as llm-compressor: absmax / 7.5, codes clamped to [-8, 7] (the
            // largest weight rounds to 8 and clamps to 7, within half a step). Asymmetric
            // schemes use (max - min) / 15 instead; see the INT4 quantizer.
            Scheme::W4A16 { .. } => 7.5,
        }
    }

    pub fn is_fp8(&self) -> bool {
        matches!(
            self,
            Scheme::Fp8Dynamic | Scheme::Fp8Block | Scheme::Fp8Static
        )
    }

    /// Whether the scheme needs calibration data run through the model.
    pub fn needs_calibration(&self) -> bool {
        *self == Scheme::Fp8Static
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every scheme's `quantization_config`, read back by the reader the runtime uses, gives
    /// the format the writer meant; ignored modules read back dense.
    #[test]
    fn quantization_config_round_trips_through_the_reader() {
        use crate::quant_config::QuantConfig;
        let schemes = [
            Scheme::Fp8Dynamic,
            Scheme::Fp8Block,
            Scheme::Fp8Static,
            Scheme::W8A16 { group: None },
            Scheme::W8A16 { group: Some(64) },
            Scheme::W8A8,
            Scheme::W4A16 {
                group: 128,
                zero_point: true,
            },
            Scheme::W4A16 {
                group: 32,
                zero_point: false,
            },
        ];
        let ignore = vec!["lm_head".to_string(), "re:.*down_proj".to_string()];
        for scheme in schemes {
            let config = scheme.quantization_config(&ignore);
            let read = QuantConfig::parse(std::path::Path::new("config.json"), &config)
                .unwrap_or_else(|e| panic!("{scheme:?}: {e}"));
            assert_eq!(
                read.scheme_for("model.layers.0.mlp.up_proj"),
                scheme.linear_scheme(),
                "{scheme:?}"
            );
            assert_eq!(read.scheme_for("lm_head"), LinearScheme::DENSE);
            assert_eq!(
                read.scheme_for("model.layers.3.mlp.down_proj"),
                LinearScheme::DENSE
            );
        }
    }

    #[test]
    fn tensors_per_scheme() {
        let t = Scheme::W8A16 { group: Some(128) }.output_tensors("m.q", 256, 512, Dtype::BF16);
        let shapes: Vec<_> = t
            .iter()
            .map(|t| (t.name.as_str(), t.dtype, t.shape.clone()))
            .collect();
        assert_eq!(
            shapes,
            vec![
                ("m.q.weight_packed", Dtype::I32, vec![256, 128]),
                ("m.q.weight_shape", Dtype::I64, vec![2]),
                ("m.q.weight_scale", Dtype::BF16, vec![256, 4]),
            ]
        );
        let t = Scheme::Fp8Block.output_tensors("m.q", 300, 129, Dtype::F16);
        assert_eq!(t[1].shape, vec![3, 2]);
        assert_eq!(t[0].dtype, Dtype::F8_E4M3);
    }

    #[test]
    fn int4_groups_fall_back_and_are_named_in_the_config() {
        use crate::quant_config::QuantConfig;
        let asked = Scheme::W4A16 {
            group: 128,
            zero_point: true,
        };
        let g64 = Scheme::W4A16 {
            group: 64,
            zero_point: true,
        };
        assert_eq!(asked.fit_columns(1536), asked);
        assert_eq!(asked.fit_columns(576), g64);
        assert_eq!(asked.fit_columns(100), asked);
        assert_eq!(Scheme::W8A8.fit_columns(576), Scheme::W8A8);
        let config = asked.quantization_config_with(
            &["lm_head".into()],
            &[(g64, vec!["model.layers.0.self_attn.q_proj".into()])],
        );
        let read = QuantConfig::parse(std::path::Path::new("config.json"), &config).unwrap();
        assert_eq!(
            read.scheme_for("model.layers.0.self_attn.q_proj"),
            g64.linear_scheme()
        );
        assert_eq!(
            read.scheme_for("model.layers.0.mlp.down_proj"),
            asked.linear_scheme()
        );
    }

    #[test]
    fn int4_tensors_and_config() {
        let scheme = Scheme::W4A16 {
            group: 128,
            zero_point: true,
        };
        let t = scheme.output_tensors("m.q", 300, 512, Dtype::BF16);
        let shapes: Vec<_> = t
            .iter()
            .map(|t| (t.name.as_str(), t.dtype, t.shape.clone()))
            .collect();
        assert_eq!(
            shapes,
            vec![
                ("m.q.weight_packed", Dtype::I32, vec![300, 64]),
                ("m.q.weight_shape", Dtype::I64, vec![2]),
                ("m.q.weight_scale", Dtype::BF16, vec![300, 4]),
                ("m.q.weight_zero_point", Dtype::I32, vec![38, 4]),
            ]
        );
        let c = scheme.quantization_config(&[]);
        assert_eq!(c["format"], "pack-quantized");
        let w = &c["config_groups"]["group_0"]["weights"];
        assert_eq!(w["num_bits"], 4);
        assert_eq!(w["symmetric"], false);
        assert_eq!(w["group_size"], 128);
        let symmetric = Scheme::W4A16 {
            group: 128,
            zero_point: false,
        };
        assert_eq!(symmetric.output_tensors("m", 8, 128, Dtype::F16).len(), 3);
        assert!(scheme.check_shape(8, 576).unwrap().contains("576"));
        assert!(Scheme::W4A16 {
            group: 4,
            zero_point: true
        }
        .check_shape(8, 12)
        .unwrap()
        .contains("multiple of 8"));
    }

    #[test]
    fn shapes_that_cannot_be_packed_are_explained() {
        assert!(Scheme::W8A16 { group: Some(128) }
            .check_shape(10, 576)
            .unwrap()
            .contains("576"));
        assert!(Scheme::W8A16 { group: None }
            .check_shape(10, 578)
            .unwrap()
            .contains("multiple of 4"));
        assert!(Scheme::W8A16 { group: None }.check_shape(10, 576).is_none());
    }

    #[test]
    fn config_matches_formats_md() {
        let c = Scheme::Fp8Dynamic.quantization_config(&["lm_head".into()]);
        assert_eq!(c["format"], "float-quantized");
        let g = &c["config_groups"]["group_0"];
        assert_eq!(g["weights"]["strategy"], "channel");
        assert_eq!(g["input_activations"]["dynamic"], true);
        let c = Scheme::W8A16 { group: None }.quantization_config(&[]);
        assert_eq!(c["format"], "pack-quantized");
        assert!(c["config_groups"]["group_0"]["input_activations"].is_null());
        let c = Scheme::Fp8Static.quantization_config(&[]);
        let g = &c["config_groups"]["group_0"];
        assert_eq!(g["weights"]["strategy"], "tensor");
        assert_eq!(g["input_activations"]["strategy"], "tensor");
        assert_eq!(g["input_activations"]["dynamic"], false);
        let t = Scheme::Fp8Static.output_tensors("m.q", 300, 129, Dtype::BF16);
        let names: Vec<_> = t
            .iter()
            .map(|t| (t.name.as_str(), t.shape.clone()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("m.q.weight", vec![300, 129]),
                ("m.q.weight_scale", vec![1]),
                ("m.q.input_scale", vec![1])
            ]
        );
        let c = Scheme::Fp8Block.quantization_config(&[]);
        assert_eq!(
            c["config_groups"]["group_0"]["weights"]["block_structure"],
            json!([128, 128])
        );
    }
}
