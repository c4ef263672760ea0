//! Reading the small JSON files of a model directory.

use std::path::Path;

use serde_json::{Map, Value};

use crate::TextError;

/// The top-level object of a JSON file, or `None` when the file does not exist.
pub(crate) fn read_json_object(path: &Path) -> Result<Option<Map<String, Value>>, TextError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TextError::read(path, e)),
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(other) => Err(TextError::config(
            path,
            format!(
                "expected a JSON object at the top level, got {}",
                json_kind(&other)
            ),
        )),
        Err(e) => Err(TextError::config(
            path,
            format!("not valid JSON ({e}); restore the file from the model's original download"),
        )),
    }
}

/// How a JSON value's type is called in messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A special token field: `"<s>"`, `{"content": "<s>", ...}` or null.
pub(crate) fn special_token(
    config: &Map<String, Value>,
    name: &str,
    path: &Path,
) -> Result<Option<String>, TextError> {
    match config.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(TextError::config(
                path,
                format!("field `{name}` is an object without a string `content`"),
            )),
        },
        Some(other) => Err(TextError::config(
            path,
            format!(
                "field `{name}` must be a string or an object with `content`, got {}",
                json_kind(other)
            ),
        )),
    }
}
