//! When to stop generating: the set of end-of-sequence tokens.
//!
//! Models often have more than one (Llama 3 instruct ends turns with `<|eot_id|>` but
//! the base config names `<|end_of_text|>`), spread over `generation_config.json`,
//! `config.json` and the tokenizer's `eos_token`; stopping on only one of them makes
//! a chat model run on past the end of its answer.

use std::path::Path;

use serde_json::{Map, Value};
use tokenizers::Tokenizer;

use super::json::{json_kind, read_json_object, special_token};
use crate::TextError;

/// Generation settings read from a model directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationDefaults {
    /// Every token id that ends generation, ascending, without duplicates. Empty when
    /// the model names none (generation then runs to its token limit).
    pub eos_token_ids: Vec<u32>,
}

impl GenerationDefaults {
    /// The union of `eos_token_id` in `generation_config.json` and `config.json` (an
    /// integer or a list; missing files or fields are fine) and the id of
    /// `tokenizer_config.json`'s `eos_token` in `tokenizer`.
    pub fn from_model_dir(dir: &Path, tokenizer: &Tokenizer) -> Result<Self, TextError> {
        let mut ids = Vec::new();
        for name in ["generation_config.json", "config.json"] {
            let path = dir.join(name);
            if let Some(config) = read_json_object(&path)? {
                eos_ids(&config, &path, &mut ids)?;
            }
        }
        let path = dir.join("tokenizer_config.json");
        if let Some(config) = read_json_object(&path)? {
            if let Some(token) = special_token(&config, "eos_token", &path)? {
                let id = tokenizer.token_to_id(&token).ok_or_else(|| {
                    TextError::config(
                        &path,
                        format!(
                            "field `eos_token` is {token:?}, which is not a token of the \
                             model's tokenizer.json; the two files do not belong together"
                        ),
                    )
                })?;
                ids.push(id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(GenerationDefaults { eos_token_ids: ids })
    }

    /// Whether `token` ends generation.
    pub fn is_eos(&self, token: u32) -> bool {
        self.eos_token_ids.binary_search(&token).is_ok()
    }
}

/// `eos_token_id`: an integer, a list of integers, or null.
fn eos_ids(config: &Map<String, Value>, path: &Path, out: &mut Vec<u32>) -> Result<(), TextError> {
    let bad = |v: &Value| {
        TextError::config(
            path,
            format!(
                "field `eos_token_id` must be a token id (a non-negative integer) or a list \
                 of them, got {}",
                if v.is_number() {
                    v.to_string()
                } else {
                    json_kind(v).to_string()
                }
            ),
        )
    };
    let id = |v: &Value| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad(v))
    };
    match config.get("eos_token_id") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for v in list {
                out.push(id(v)?);
            }
        }
        Some(v) => out.push(id(v)?),
    }
    Ok(())
}
