//! A shape-driven validator: walks a request (`serde_json::Value`) against its shape in
//! the service model and reports every violation at once, in SageMaker's words:
//!
//! ```text
//! 2 validation errors detected: Value 'bad_name' at 'optimizationJobName' failed to
//! satisfy constraint: Member must satisfy regular expression pattern:
//! [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}; Value null at 'roleArn' failed to satisfy
//! constraint: Member must not be null
//! ```
//!
//! Paths are camelCase as AWS prints them; list entries are 1-based and followed by
//! `.member` (`optimizationConfigs.1.member.modelQuantizationConfig`). Map keys and
//! values are reported once per map, listing every constraint of the key (or value)
//! shape, as AWS does: `Map keys must satisfy constraint: [...]`.
//!
//! Departures from AWS, on purpose: members the shape does not define are rejected
//! (AWS ignores them; a typo such as `S3URI` would otherwise silently drop the
//! setting), and a value of the wrong JSON type is a `ValidationException` here
//! rather than the `SerializationException` AWS's deserializer raises.

use crate::model::{model, Bounds, Model, Shape};
use crate::ApiError;
use serde_json::{Map, Value};

/// How strict the validator is about URI members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValidateOptions {
    /// Accept `file://...` URIs and plain paths in members of the `S3Uri` shape
    /// (model source, output location, speculative-decoding training data), skipping
    /// only that shape's `(https|s3)://...` pattern. For local request documents of
    /// the CLI; the HTTP API keeps the model's rule.
    pub allow_local_uris: bool,
}

/// String shapes whose pattern [`ValidateOptions::allow_local_uris`] relaxes.
const LOCAL_URI_SHAPES: &[&str] = &["S3Uri"];

/// Whether a URI names a local file: `file://...` or no scheme at all.
pub(crate) fn is_local_uri(uri: &str) -> bool {
    uri.starts_with("file://") || !uri.contains("://")
}

/// One broken constraint: where, which value, and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    /// camelCase member path, e.g. `stoppingCondition.maxRuntimeInSeconds`.
    pub(crate) path: String,
    /// The value as AWS prints it; `None` prints as `null` (a missing member).
    pub(crate) value: Option<String>,
    pub(crate) constraint: String,
}

impl Violation {
    pub(crate) fn new(path: &str, value: Option<&Value>, constraint: impl Into<String>) -> Self {
        Violation {
            path: path.to_string(),
            value: value.map(render),
            constraint: constraint.into(),
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "Value '{v}'")?,
            None => write!(f, "Value null")?,
        }
        write!(
            f,
            " at '{}' failed to satisfy constraint: {}",
            self.path, self.constraint
        )
    }
}

/// `Ok` when there is nothing to report, else one `ValidationException` listing all.
pub(crate) fn to_result(violations: Vec<Violation>) -> Result<(), ApiError> {
    if violations.is_empty() {
        return Ok(());
    }
    let n = violations.len();
    let listed: Vec<String> = violations.iter().map(Violation::to_string).collect();
    let plural = if n == 1 { "" } else { "s" };
    Err(ApiError::ValidationException(format!(
        "{n} validation error{plural} detected: {}",
        listed.join("; ")
    )))
}

/// Validates `value` against the model shape named `shape` (e.g.
/// `CreateOptimizationJobRequest`), reporting every violation in one error.
pub fn validate(shape: &str, value: &Value, opts: &ValidateOptions) -> Result<(), ApiError> {
    if !value.is_object() {
        return Err(ApiError::ValidationException(format!(
            "The request body must be a JSON object; got {}",
            json_kind(value)
        )));
    }
    let mut walker = Walker {
        model: model()?,
        opts,
        out: Vec::new(),
    };
    walker.walk(shape, value, "")?;
    to_result(walker.out)
}

/// AWS's member-path spelling: the wire name with its first letter lowered.
pub(crate) fn child_path(parent: &str, member: &str) -> String {
    let mut chars = member.chars();
    let lowered: String = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    };
    if parent.is_empty() {
        lowered
    } else {
        format!("{parent}.{lowered}")
    }
}

/// The path of the `index`-th (0-based) entry of a list, printed 1-based.
pub(crate) fn item_path(list: &str, index: usize) -> String {
    format!("{list}.{}.member", index + 1)
}

/// A value as Java's `toString` would print it in an AWS message: strings bare,
/// lists `[a, b]`, maps and structures `{k=v, k2=v2}`.
pub(crate) fn render(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(render).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}={}", render(v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A structure shape, borrowed from the model.
#[derive(Clone, Copy)]
struct StructDef<'a> {
    name: &'a str,
    members: &'a [(String, String)],
    required: &'a [String],
    union: bool,
}

struct Walker<'a> {
    model: &'a Model,
    opts: &'a ValidateOptions,
    out: Vec<Violation>,
}

impl Walker<'_> {
    fn push(&mut self, path: &str, value: Option<&Value>, constraint: impl Into<String>) {
        self.out.push(Violation::new(path, value, constraint));
    }

    fn walk(&mut self, shape_name: &str, value: &Value, path: &str) -> Result<(), ApiError> {
        let shape = self.model.shape(shape_name)?;
        if let Some(expected) = type_mismatch(shape, value) {
            let got = json_kind(value);
            self.push(
                path,
                Some(value),
                format!("Member must be {expected}, not {got}"),
            );
            return Ok(());
        }
        match shape {
            Shape::Structure {
                members,
                required,
                union,
            } => {
                if let Some(object) = value.as_object() {
                    let def = StructDef {
                        name: shape_name,
                        members,
                        required,
                        union: *union,
                    };
                    self.structure(&def, object, value, path)?;
                }
            }
            Shape::List { member, len } => {
                let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
                self.collection_len(len, items.len(), value, path);
                for (i, item) in items.iter().enumerate() {
                    let item_path = item_path(path, i);
                    if item.is_null() {
                        self.push(&item_path, None, "Member must not be null");
                    } else {
                        self.walk(member, item, &item_path)?;
                    }
                }
            }
            Shape::Map { key, value: v, len } => {
                if let Some(entries) = value.as_object() {
                    self.collection_len(len, entries.len(), value, path);
                    self.map(key, v, entries, value, path)?;
                }
            }
            Shape::String { .. } => {
                let s = value.as_str().unwrap_or_default();
                for c in self.string_violations(shape_name, shape, s) {
                    self.push(path, Some(value), c);
                }
            }
            Shape::Integer { range, .. } | Shape::Float { range } => {
                let n = value.as_f64().unwrap_or_default();
                if let Some(c) = range_violation(range, n) {
                    self.push(path, Some(value), c);
                }
            }
            Shape::Boolean | Shape::Timestamp | Shape::Blob => {}
        }
        Ok(())
    }

    fn structure(
        &mut self,
        def: &StructDef<'_>,
        object: &Map<String, Value>,
        whole: &Value,
        path: &str,
    ) -> Result<(), ApiError> {
        let StructDef {
            name: shape_name,
            members,
            required,
            union,
        } = *def;
        // JSON null means "not set", as botocore and AWS treat it.
        let present = |name: &str| object.get(name).filter(|v| !v.is_null());
        if union {
            let set: Vec<&str> = members
                .iter()
                .filter(|(name, _)| present(name).is_some())
                .map(|(name, _)| name.as_str())
                .collect();
            if set.len() != 1 {
                let all: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
                let found = match set.len() {
                    0 => "found none".to_string(),
                    n => format!("found {n}: [{}]", set.join(", ")),
                };
                let rule = format!(
                    "Member must set exactly one of [{}]; {found}",
                    all.join(", ")
                );
                self.push(path, Some(whole), rule);
            }
        }
        for (name, target) in members {
            let member_path = child_path(path, name);
            match present(name) {
                Some(v) => self.walk(target, v, &member_path)?,
                None if required.contains(name) => {
                    self.push(&member_path, None, "Member must not be null")
                }
                None => {}
            }
        }
        for (name, v) in object {
            if !members.iter().any(|(m, _)| m == name) {
                let known: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
                let rule = format!(
                    "Member '{name}' is not defined in {shape_name}; its members are [{}]",
                    known.join(", ")
                );
                self.push(&child_path(path, name), Some(v), rule);
            }
        }
        Ok(())
    }

    /// Map entries: key and value violations are each reported once for the whole
    /// map, listing every constraint of the key (value) shape, as AWS does.
    fn map(
        &mut self,
        key_shape: &str,
        value_shape: &str,
        entries: &Map<String, Value>,
        whole: &Value,
        path: &str,
    ) -> Result<(), ApiError> {
        let key_def = self.model.shape(key_shape)?;
        let bad_key = entries
            .keys()
            .any(|k| !self.string_violations(key_shape, key_def, k).is_empty());
        if bad_key {
            let rule = format!(
                "Map keys must satisfy constraint: [{}]",
                all_constraints(key_def)
            );
            self.push(path, Some(whole), rule);
        }
        let value_def = self.model.shape(value_shape)?;
        let mut bad_value = false;
        for (k, v) in entries {
            let entry_path = format!("{path}.{k}");
            match (value_def, v) {
                (_, Value::Null) => self.push(&entry_path, None, "Member must not be null"),
                (Shape::String { .. }, Value::String(s)) => {
                    bad_value |= !self.string_violations(value_shape, value_def, s).is_empty();
                }
                _ => self.walk(value_shape, v, &entry_path)?,
            }
        }
        if bad_value {
            let rule = format!(
                "Map value must satisfy constraint: [{}]",
                all_constraints(value_def)
            );
            self.push(path, Some(whole), rule);
        }
        Ok(())
    }

    fn collection_len(&mut self, len: &Bounds, count: usize, value: &Value, path: &str) {
        // Collections report their size as "length", as AWS does for lists and maps.
        if let Some(c) = length_violation(len, count) {
            self.push(path, Some(value), c);
        }
    }

    /// The broken constraints of a string shape, length first, then pattern, then
    /// the enum (the order AWS lists them in).
    fn string_violations(&self, shape_name: &str, shape: &Shape, s: &str) -> Vec<String> {
        let Shape::String {
            len,
            pattern,
            enum_values,
        } = shape
        else {
            return vec![format!("Member must be {}", expected_type(shape))];
        };
        let mut broken = Vec::new();
        // Lengths count characters (code points), as AWS does.
        broken.extend(length_violation(len, s.chars().count()));
        let local_ok =
            self.opts.allow_local_uris && LOCAL_URI_SHAPES.contains(&shape_name) && is_local_uri(s);
        if let Some(p) = pattern.as_ref().filter(|p| !local_ok && !p.matches(s)) {
            broken.push(format!(
                "Member must satisfy regular expression pattern: {}",
                p.source()
            ));
        }
        if let Some(values) = enum_values.as_ref().filter(|v| !v.iter().any(|e| e == s)) {
            broken.push(format!(
                "Member must satisfy enum value set: [{}]",
                values.join(", ")
            ));
        }
        broken
    }
}

/// Every constraint of a string shape, as listed in `Map keys must satisfy ...`.
fn all_constraints(shape: &Shape) -> String {
    let Shape::String {
        len,
        pattern,
        enum_values,
    } = shape
    else {
        return format!("Member must be {}", expected_type(shape));
    };
    let mut rules = Vec::new();
    if let Some(max) = &len.max {
        rules.push(format!(
            "Member must have length less than or equal to {max}"
        ));
    }
    // A minimum of 0 constrains nothing and would only add noise.
    if let Some(min) = len.min.as_ref().filter(|m| m.as_f64() != Some(0.0)) {
        rules.push(format!(
            "Member must have length greater than or equal to {min}"
        ));
    }
    if let Some(p) = pattern {
        rules.push(format!(
            "Member must satisfy regular expression pattern: {}",
            p.source()
        ));
    }
    if let Some(values) = enum_values {
        rules.push(format!(
            "Member must satisfy enum value set: [{}]",
            values.join(", ")
        ));
    }
    rules.join(", ")
}

fn length_violation(len: &Bounds, count: usize) -> Option<String> {
    let count = count as f64;
    match (&len.min, &len.max) {
        (_, Some(max)) if len.max_f64().is_some_and(|m| count > m) => Some(format!(
            "Member must have length less than or equal to {max}"
        )),
        (Some(min), _) if len.min_f64().is_some_and(|m| count < m) => Some(format!(
            "Member must have length greater than or equal to {min}"
        )),
        _ => None,
    }
}

fn range_violation(range: &Bounds, n: f64) -> Option<String> {
    match (&range.min, &range.max) {
        (Some(min), _) if range.min_f64().is_some_and(|m| n < m) => Some(format!(
            "Member must have value greater than or equal to {min}"
        )),
        (_, Some(max)) if range.max_f64().is_some_and(|m| n > m) => Some(format!(
            "Member must have value less than or equal to {max}"
        )),
        _ => None,
    }
}

/// What a shape needs on the wire, for type-mismatch messages.
fn expected_type(shape: &Shape) -> String {
    match shape {
        Shape::Structure { .. } | Shape::Map { .. } => "an object".into(),
        Shape::List { .. } => "an array".into(),
        Shape::String { .. } | Shape::Blob => "a string".into(),
        Shape::Integer { bits, .. } => format!("a whole number that fits in {bits} bits"),
        Shape::Float { .. } => "a number".into(),
        Shape::Boolean => "a boolean (true or false)".into(),
        Shape::Timestamp => "a number (seconds since the Unix epoch)".into(),
    }
}

/// `Some(expected)` when the JSON type of `value` cannot hold `shape`.
fn type_mismatch(shape: &Shape, value: &Value) -> Option<String> {
    let fits = match shape {
        Shape::Structure { .. } | Shape::Map { .. } => value.is_object(),
        Shape::List { .. } => value.is_array(),
        Shape::String { .. } | Shape::Blob => value.is_string(),
        Shape::Integer { bits: 32, .. } => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        Shape::Integer { .. } => value.as_i64().is_some(),
        Shape::Float { .. } | Shape::Timestamp => value.is_number(),
        Shape::Boolean => value.is_boolean(),
    };
    (!fits).then(|| expected_type(shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_and_rendering_follow_aws() {
        assert_eq!(child_path("", "OptimizationJobName"), "optimizationJobName");
        assert_eq!(child_path("modelSource", "S3"), "modelSource.s3");
        assert_eq!(
            child_path("modelSource.s3", "S3Uri"),
            "modelSource.s3.s3Uri"
        );
        assert_eq!(item_path("tags", 0), "tags.1.member");
        assert_eq!(
            render(&json!({"A": "x", "B": [1, true]})),
            "{A=x, B=[1, true]}"
        );
        let v = Violation::new("roleArn", None, "Member must not be null");
        assert_eq!(
            v.to_string(),
            "Value null at 'roleArn' failed to satisfy constraint: Member must not be null"
        );
    }

    #[test]
    fn one_or_many_errors_are_counted() {
        assert!(to_result(vec![]).is_ok());
        let a = Violation::new("a", Some(&json!(1)), "x");
        let b = Violation::new("b", None, "y");
        let one = to_result(vec![a.clone()]).unwrap_err();
        assert!(one
            .message()
            .starts_with("1 validation error detected: Value '1' at 'a'"));
        let two = to_result(vec![a, b]).unwrap_err();
        assert!(two.message().starts_with("2 validation errors detected: "));
        assert!(two.message().contains("constraint: x; Value null at 'b'"));
    }

    #[test]
    fn integers_must_be_whole_and_fit() {
        let opts = ValidateOptions::default();
        let m = model().unwrap();
        let mut w = Walker {
            model: m,
            opts: &opts,
            out: vec![],
        };
        w.walk("MaxResults", &json!(5), "maxResults").unwrap();
        assert!(w.out.is_empty());
        for bad in [json!(5.5), json!(4_294_967_296_i64), json!("5")] {
            w.walk("MaxResults", &bad, "maxResults").unwrap();
        }
        assert_eq!(w.out.len(), 3);
        w.out.clear();
        w.walk("MaxResults", &json!(101), "maxResults").unwrap();
        assert_eq!(
            w.out[0].constraint,
            "Member must have value less than or equal to 100"
        );
    }
}
