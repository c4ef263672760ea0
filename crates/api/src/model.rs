//! The service model: botocore's SageMaker shapes and operations for the optimization
//! (and inference-recommendation) jobs, embedded at build time and read once.
//!
//! The validator walks these shapes instead of hand-written checks, so a constraint
//! exists in exactly one place: the vendored `sagemaker-2017-07-24-optimization.json`.

use crate::pattern::Pattern;
use crate::ApiError;
use serde::Deserialize;
use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use std::sync::OnceLock;

/// The shapes file, vendored from `shared/api/` (taken from botocore).
const MODEL_JSON: &str = include_str!("../sagemaker-2017-07-24-optimization.json");

/// One shape of the model, with the constraints the validator enforces.
#[derive(Debug)]
pub(crate) enum Shape {
    Structure {
        /// Members in model order (wire name, target shape).
        members: Vec<(String, String)>,
        required: Vec<String>,
        /// A tagged union: exactly one member must be set.
        union: bool,
    },
    List {
        member: String,
        len: Bounds,
    },
    Map {
        key: String,
        value: String,
        len: Bounds,
    },
    String {
        len: Bounds,
        pattern: Option<Pattern>,
        enum_values: Option<Vec<String>>,
    },
    /// `integer` (32-bit) and `long` (64-bit) shapes.
    Integer {
        bits: u32,
        range: Bounds,
    },
    /// `float` and `double` shapes.
    Float {
        range: Bounds,
    },
    Boolean,
    /// botocore's json protocol sends timestamps as epoch seconds (a JSON number).
    Timestamp,
    /// Base64 text on the wire.
    Blob,
}

/// `min`/`max` of a shape, kept as the model writes them so that messages print
/// `1` where the model says 1 and `1.0` where it says 1.0.
#[derive(Debug, Default, Clone)]
pub(crate) struct Bounds {
    pub(crate) min: Option<Number>,
    pub(crate) max: Option<Number>,
}

impl Bounds {
    pub(crate) fn min_f64(&self) -> Option<f64> {
        self.min.as_ref().and_then(Number::as_f64)
    }
    pub(crate) fn max_f64(&self) -> Option<f64> {
        self.max.as_ref().and_then(Number::as_f64)
    }
}

/// One operation: its wire name and input/output shapes.
#[derive(Debug)]
pub(crate) struct OperationDef {
    pub(crate) input: Option<String>,
    pub(crate) output: Option<String>,
}

/// The whole model, shapes by name.
#[derive(Debug)]
pub(crate) struct Model {
    shapes: HashMap<String, Shape>,
    operations: HashMap<String, OperationDef>,
}

impl Model {
    pub(crate) fn shape(&self, name: &str) -> Result<&Shape, ApiError> {
        self.shapes.get(name).ok_or_else(|| {
            ApiError::InternalFailure(format!("the service model has no shape `{name}`"))
        })
    }

    pub(crate) fn operation(&self, name: &str) -> Option<&OperationDef> {
        self.operations.get(name)
    }

    #[cfg(test)]
    pub(crate) fn shape_names(&self) -> impl Iterator<Item = &str> {
        self.shapes.keys().map(String::as_str)
    }
}

/// The model, parsed on first use. A broken embedded file is a build defect, but it
/// is reported as `InternalFailure` rather than a panic inside a request handler.
pub(crate) fn model() -> Result<&'static Model, ApiError> {
    static MODEL: OnceLock<Result<Model, String>> = OnceLock::new();
    MODEL
        .get_or_init(|| parse_model(MODEL_JSON))
        .as_ref()
        .map_err(|e| ApiError::InternalFailure(format!("the embedded service model: {e}")))
}

/// The parts of a botocore shape this crate reads; documentation is skipped.
#[derive(Deserialize)]
struct RawShape {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    members: Map<String, Value>,
    #[serde(default)]
    required: Vec<String>,
    #[serde(default)]
    union: bool,
    member: Option<RawRef>,
    key: Option<RawRef>,
    value: Option<RawRef>,
    min: Option<Number>,
    max: Option<Number>,
    pattern: Option<String>,
    #[serde(rename = "enum")]
    enum_values: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawRef {
    shape: String,
}

#[derive(Deserialize)]
struct RawOperation {
    input: Option<RawRef>,
    output: Option<RawRef>,
}

#[derive(Deserialize)]
struct RawModel {
    operations: HashMap<String, RawOperation>,
    shapes: HashMap<String, RawShape>,
}

fn parse_model(text: &str) -> Result<Model, String> {
    let raw: RawModel = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let shapes = raw
        .shapes
        .into_iter()
        .map(|(name, shape)| convert_shape(&name, shape).map(|s| (name, s)))
        .collect::<Result<HashMap<_, _>, _>>()?;
    let operations = raw
        .operations
        .into_iter()
        .map(|(name, op)| {
            let def = OperationDef {
                input: op.input.map(|r| r.shape),
                output: op.output.map(|r| r.shape),
            };
            (name, def)
        })
        .collect();
    Ok(Model { shapes, operations })
}

fn convert_shape(name: &str, raw: RawShape) -> Result<Shape, String> {
    let bounds = Bounds {
        min: raw.min,
        max: raw.max,
    };
    let target = |r: Option<RawRef>, what: &str| {
        r.map(|r| r.shape)
            .ok_or_else(|| format!("shape `{name}` has no `{what}`"))
    };
    Ok(match raw.kind.as_str() {
        "structure" => Shape::Structure {
            members: raw
                .members
                .into_iter()
                .map(|(member, target)| {
                    let shape = serde_json::from_value::<RawRef>(target)
                        .map_err(|e| format!("shape `{name}` member `{member}`: {e}"))?;
                    Ok((member, shape.shape))
                })
                .collect::<Result<_, String>>()?,
            required: raw.required,
            union: raw.union,
        },
        "list" => Shape::List {
            member: target(raw.member, "member")?,
            len: bounds,
        },
        "map" => Shape::Map {
            key: target(raw.key, "key")?,
            value: target(raw.value, "value")?,
            len: bounds,
        },
        "string" => Shape::String {
            len: bounds,
            pattern: raw
                .pattern
                .map(|p| Pattern::new(&p).map_err(|e| format!("shape `{name}` pattern {p}: {e}")))
                .transpose()?,
            enum_values: raw.enum_values,
        },
        "integer" => Shape::Integer {
            bits: 32,
            range: bounds,
        },
        "long" => Shape::Integer {
            bits: 64,
            range: bounds,
        },
        "float" | "double" => Shape::Float { range: bounds },
        "boolean" => Shape::Boolean,
        "timestamp" => Shape::Timestamp,
        "blob" => Shape::Blob,
        other => return Err(format!("shape `{name}` has unknown type `{other}`")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_model_loads_and_every_reference_resolves() {
        let m = model().unwrap();
        for name in m.shape_names() {
            let refs: Vec<&str> = match m.shape(name).unwrap() {
                Shape::Structure {
                    members, required, ..
                } => {
                    for r in required {
                        assert!(
                            members.iter().any(|(n, _)| n == r),
                            "{name}: required `{r}` is not a member"
                        );
                    }
                    members.iter().map(|(_, s)| s.as_str()).collect()
                }
                Shape::List { member, .. } => vec![member],
                Shape::Map { key, value, .. } => vec![key, value],
                _ => vec![],
            };
            for r in refs {
                assert!(m.shape(r).is_ok(), "{name} refers to missing shape {r}");
            }
        }
        for op in [
            "CreateOptimizationJob",
            "DescribeOptimizationJob",
            "ListOptimizationJobs",
            "StopOptimizationJob",
            "DeleteOptimizationJob",
        ] {
            let def = m.operation(op).unwrap();
            let input = def.input.as_deref().unwrap();
            assert_eq!(input, format!("{op}Request"));
            assert!(m.shape(input).is_ok());
            if let Some(out) = &def.output {
                assert!(m.shape(out).is_ok());
            }
        }
    }

    /// Every pattern compiles with fancy-regex (the model would not load otherwise),
    /// and the ones the plain `regex` crate refuses are exactly those known to need
    /// lookarounds. A new one appearing in an updated model fails here on purpose.
    #[test]
    fn every_pattern_compiles_and_only_the_lookahead_needs_fancy_regex() {
        let raw: Value = serde_json::from_str(MODEL_JSON).unwrap();
        let mut patterns: Vec<String> = raw["shapes"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|s| s.get("pattern")?.as_str().map(str::to_string))
            .collect();
        patterns.sort();
        patterns.dedup();
        assert!(
            patterns.len() > 15,
            "found only {} patterns",
            patterns.len()
        );
        let mut refused = Vec::new();
        for p in &patterns {
            assert!(Pattern::new(p).is_ok(), "fancy-regex refuses {p}");
            let translated = format!(r"\A(?:{})\z", crate::pattern::java_to_rust(p));
            if regex::Regex::new(&translated).is_err() {
                refused.push(p.as_str());
            }
        }
        assert_eq!(refused, vec![r"(?!\s*$).+"]);
    }
}
