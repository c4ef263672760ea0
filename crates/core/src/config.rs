//! The `config.json` of a Hugging Face decoder model, as far as optimization needs it.
//!
//! The whole JSON object is kept (`raw`) so an artifact's `config.json` is the
//! original plus what the optimization adds, never a lossy re-serialisation.

use crate::{Error, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Model families whose layout (names, fused projections, rotary embedding) this
/// project knows. Everything else is [`Family::Unknown`]: quantization by tensor name
/// and shape may still work, but only on explicit request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Unknown,
}

impl Family {
    pub const SUPPORTED: &'static str = "llama (Llama 2/3.x, SmolLM, TinyLlama), mistral, qwen2";

    fn from_model_type(model_type: &str) -> Family {
        match model_type {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            _ => Family::Unknown,
        }
    }
}

/// A parsed `config.json`.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub path: PathBuf,
    pub raw: Map<String, Value>,
    pub architecture: String,
    pub model_type: String,
    pub family: Family,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
    /// `torch_dtype` (`bfloat16`, `float16`, `float32`), if given.
    pub torch_dtype: Option<String>,
    /// `quantization_config.quant_method`, when the model is already quantized.
    pub quant_method: Option<String>,
}

impl ModelConfig {
    /// Reads and checks `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let Value::Object(raw) = value else {
            return Err(field_error(path, "(top level)", "must be a JSON object"));
        };
        Self::from_map(path, raw)
    }

    /// Checks an already-parsed `config.json` object (`path` is used in messages).
    pub fn from_map(path: &Path, raw: Map<String, Value>) -> Result<Self> {
        let get = Fields { path, raw: &raw };
        let model_type = get.string("model_type")?;
        let architecture = match raw.get("architectures") {
            Some(Value::Array(a)) if !a.is_empty() => a[0]
                .as_str()
                .ok_or_else(|| field_error(path, "architectures", "must be a list of strings"))?
                .to_string(),
            Some(_) => {
                return Err(field_error(
                    path,
                    "architectures",
                    "must be a non-empty list of strings",
                ))
            }
            None => model_type.clone(),
        };
        let hidden_size = get.usize("hidden_size")?;
        let num_attention_heads = get.usize("num_attention_heads")?;
        let num_key_value_heads = get
            .opt_usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if num_attention_heads == 0
            || num_key_value_heads == 0
            || num_attention_heads % num_key_value_heads != 0
        {
            return Err(field_error(
                path,
                "num_key_value_heads",
                &format!("{num_key_value_heads} must be positive and divide num_attention_heads ({num_attention_heads})"),
            ));
        }
        let head_dim = match get.opt_usize("head_dim")? {
            Some(d) => d,
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => {
                return Err(field_error(
                    path,
                    "hidden_size",
                    &format!("{hidden_size} is not a multiple of num_attention_heads ({num_attention_heads}) and no head_dim is given"),
                ))
            }
        };
        let quant_method = raw
            .get("quantization_config")
            .and_then(|q| q.get("quant_method"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(ModelConfig {
            path: path.to_path_buf(),
            family: Family::from_model_type(&model_type),
            architecture,
            hidden_size,
            intermediate_size: get.usize("intermediate_size")?,
            num_hidden_layers: get.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: get.usize("vocab_size")?,
            tie_word_embeddings: raw
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            torch_dtype: raw
                .get("torch_dtype")
                .and_then(Value::as_str)
                .map(str::to_string),
            quant_method,
            model_type,
            raw,
        })
    }

    /// Fails with a clear message unless the family is known (or `allow_unknown`).
    pub fn check_supported(&self, allow_unknown: bool) -> Result<()> {
        if self.family == Family::Unknown && !allow_unknown {
            return Err(Error::UnsupportedArchitecture {
                path: self.path.clone(),
                architecture: self.architecture.clone(),
                model_type: self.model_type.clone(),
                reason: format!(
                    "known families are {}. Linear weights can still be found by name and shape: set \
                     OPTION_ALLOW_UNKNOWN_ARCHITECTURE=true to quantize them, but check that your serving engine \
                     supports this architecture",
                    Family::SUPPORTED
                ),
            });
        }
        Ok(())
    }
}

fn field_error(path: &Path, field: &str, reason: &str) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

struct Fields<'a> {
    path: &'a Path,
    raw: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn string(&self, field: &str) -> Result<String> {
        match self.raw.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(field_error(
                self.path,
                field,
                &format!("must be a string, found {v}"),
            )),
            None => Err(field_error(self.path, field, "is missing")),
        }
    }

    fn usize(&self, field: &str) -> Result<usize> {
        self.opt_usize(field)?
            .ok_or_else(|| field_error(self.path, field, "is missing"))
    }

    fn opt_usize(&self, field: &str) -> Result<Option<usize>> {
        match self.raw.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Ok(Some(n as usize)),
                _ => Err(field_error(
                    self.path,
                    field,
                    &format!("must be a positive integer, found {v}"),
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm() -> Map<String, Value> {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
            "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
            "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": true,
            "torch_dtype": "bfloat16"
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn parses_a_llama_config() {
        let c = ModelConfig::from_map(Path::new("config.json"), smollm()).unwrap();
        assert_eq!(c.family, Family::Llama);
        assert_eq!(c.head_dim, 64);
        assert!(c.tie_word_embeddings);
        c.check_supported(false).unwrap();
    }

    #[test]
    fn names_the_bad_field() {
        let mut raw = smollm();
        raw.insert("hidden_size".into(), "576".into());
        let err = ModelConfig::from_map(Path::new("m/config.json"), raw)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m/config.json") && err.contains("hidden_size") && err.contains("\"576\""),
            "{err}"
        );
        let mut raw = smollm();
        raw.insert("num_key_value_heads".into(), 4.into());
        let err = ModelConfig::from_map(Path::new("config.json"), raw)
            .unwrap_err()
            .to_string();
        assert!(err.contains("num_key_value_heads"), "{err}");
    }

    #[test]
    fn unknown_architecture_is_refused_unless_allowed() {
        let mut raw = smollm();
        raw.insert("model_type".into(), "bert".into());
        raw.insert("architectures".into(), serde_json::json!(["BertModel"]));
        let c = ModelConfig::from_map(Path::new("config.json"), raw).unwrap();
        let err = c.check_supported(false).unwrap_err().to_string();
        assert!(
            err.contains("BertModel") && err.contains("OPTION_ALLOW_UNKNOWN_ARCHITECTURE=true"),
            "{err}"
        );
        c.check_supported(true).unwrap();
    }
}
