//! A Hugging Face tokenizer (`tokenizer.json`, `tokenizer_config.json`,
//! `special_tokens_map.json`) from the vocabulary in GGUF metadata.
//!
//! GGUF keeps the tokenizer's data (tokens, merges or scores, token types, special ids)
//! but not its pipeline; the pipeline (normalizer, pre-tokenizer, decoder) follows
//! from `tokenizer.ggml.model` and, for byte-level BPE, `tokenizer.ggml.pre`, which
//! names the Hugging Face tokenizer the file was converted from.

mod byte_level;
mod spm;

use crate::error::{Error, Result};
use crate::reader::Meta;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::path::Path;
use tokenizers::{AddedToken, Tokenizer};

/// GGUF token types (llama.cpp's `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    fn from_gguf(v: i64) -> Option<Self> {
        Some(match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => return None,
        })
    }
}

/// The tokenizer data common to every GGUF tokenizer model.
pub(crate) struct Vocab<'a> {
    pub path: &'a Path,
    pub tokens: Vec<&'a str>,
    pub types: Vec<TokenType>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
}

impl<'a> Vocab<'a> {
    fn read(meta: &Meta<'a>) -> Result<Self> {
        let path = meta.path();
        let key = "tokenizer.ggml.tokens";
        let tokens = meta.opt_strings(key)?.ok_or_else(|| {
            Error::tokenizer(
                path,
                format!("metadata `{key}` is missing, so there is no vocabulary"),
            )
        })?;
        if tokens.is_empty() {
            return Err(Error::metadata(path, key, "is an empty list"));
        }
        let types = match meta.opt_ints("tokenizer.ggml.token_type")? {
            None => vec![TokenType::Normal; tokens.len()],
            Some(raw) => read_types(meta, &raw, tokens.len())?,
        };
        let id = |key: &str| -> Result<Option<u32>> {
            match meta.opt_u64(key)? {
                None => Ok(None),
                Some(id) if (id as usize) < tokens.len() => Ok(Some(id as u32)),
                Some(id) => Err(Error::metadata(
                    path,
                    key,
                    format!(
                        "token id {id} is outside the vocabulary of {} tokens",
                        tokens.len()
                    ),
                )),
            }
        };
        Ok(Vocab {
            path,
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            pad: id("tokenizer.ggml.padding_token_id")?,
            add_bos: meta
                .opt_bool("tokenizer.ggml.add_bos_token")?
                .unwrap_or(false),
            add_eos: meta
                .opt_bool("tokenizer.ggml.add_eos_token")?
                .unwrap_or(false),
            tokens,
            types,
        })
    }

    fn token(&self, id: Option<u32>) -> Option<&'a str> {
        id.map(|i| self.tokens[i as usize])
    }

    /// Tokens Hugging Face keeps as "added tokens", matched whole before the model
    /// runs: control (and SentencePiece's unknown) tokens are special, user-defined
    /// tokens (llama.cpp's mark for added tokens that were not special) are not.
    fn added_tokens(&self, unknown_is_special: bool) -> Vec<(u32, AddedToken)> {
        self.types
            .iter()
            .enumerate()
            .filter_map(|(id, ty)| {
                let special = match ty {
                    TokenType::Control => true,
                    TokenType::Unknown if unknown_is_special => true,
                    TokenType::UserDefined => false,
                    _ => return None,
                };
                let token = AddedToken::from(self.tokens[id], special).normalized(false);
                Some((id as u32, token))
            })
            .collect()
    }

    /// The post-processor template adding BOS/EOS, when the metadata asks for them.
    fn template(&self) -> Result<Option<tokenizers::processors::template::TemplateProcessing>> {
        let bos = self.token(self.bos).filter(|_| self.add_bos);
        let eos = self.token(self.eos).filter(|_| self.add_eos);
        if bos.is_none() && eos.is_none() {
            return Ok(None);
        }
        let piece = |seq: &str| -> Vec<String> {
            let mut p: Vec<String> = bos.iter().map(|b| b.to_string()).collect();
            p.push(seq.to_string());
            p.extend(eos.iter().map(|e| e.to_string()));
            p
        };
        let (single, mut pair) = (piece("$A"), piece("$A"));
        pair.extend(piece("$B:1"));
        let mut specials = Vec::new();
        if let (Some(b), Some(id)) = (bos, self.bos) {
            specials.push((b.to_string(), id));
        }
        if let (Some(e), Some(id)) = (eos, self.eos) {
            specials.push((e.to_string(), id));
        }
        let fail = |e: String| {
            Error::tokenizer(self.path, format!("cannot build the BOS/EOS template: {e}"))
        };
        let mut builder = tokenizers::processors::template::TemplateProcessing::builder();
        builder.try_single(single).map_err(fail)?;
        builder.try_pair(pair).map_err(fail)?;
        builder.special_tokens(specials);
        builder.build().map(Some).map_err(|e| {
            Error::tokenizer(self.path, format!("cannot build the BOS/EOS template: {e}"))
        })
    }
}

fn read_types(meta: &Meta<'_>, raw: &[i64], count: usize) -> Result<Vec<TokenType>> {
    let key = "tokenizer.ggml.token_type";
    if raw.len() != count {
        return Err(Error::metadata(
            meta.path(),
            key,
            format!("has {} entries but there are {count} tokens", raw.len()),
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(i, &t)| {
            TokenType::from_gguf(t).ok_or_else(|| {
                Error::metadata(
                    meta.path(),
                    &format!("{key}[{i}]"),
                    format!("unknown token type {t}"),
                )
            })
        })
        .collect()
}

/// What was built, for the import report.
#[derive(Debug, Clone, Serialize)]
pub struct TokenizerSummary {
    /// `tokenizer.ggml.model` (`gpt2` or `llama`).
    pub model: String,
    /// `tokenizer.ggml.pre`, for byte-level BPE.
    pub pre: Option<String>,
    pub vocab_size: usize,
    pub special_tokens: usize,
    pub tokenizer_class: String,
}

/// The three tokenizer files of a Hugging Face model directory.
pub struct TokenizerFiles {
    pub tokenizer: Tokenizer,
    pub tokenizer_config: Value,
    pub special_tokens_map: Value,
    pub summary: TokenizerSummary,
    pub warnings: Vec<String>,
}

/// A tokenizer model/pipeline before its added tokens and configuration files.
pub(crate) struct Pipeline {
    pub tokenizer: Tokenizer,
    pub tokenizer_class: &'static str,
    pub unknown_is_special: bool,
    /// Extra `tokenizer_config.json` fields of this tokenizer family.
    pub config_extra: Vec<(&'static str, Value)>,
}

/// Builds the tokenizer files from GGUF metadata.
pub fn build(meta: &Meta<'_>, model_max_length: usize) -> Result<TokenizerFiles> {
    let model_key = "tokenizer.ggml.model";
    let model = meta.opt_str(model_key)?.ok_or_else(|| {
        Error::tokenizer(
            meta.path(),
            format!("metadata `{model_key}` is missing: the file carries no tokenizer"),
        )
    })?;
    let vocab = Vocab::read(meta)?;
    let mut warnings = Vec::new();
    let pre = meta.opt_str("tokenizer.ggml.pre")?;
    let mut pipeline = match model {
        "gpt2" => byte_level::build(meta, &vocab, pre, &mut warnings)?,
        "llama" => spm::build(meta, &vocab)?,
        other => {
            return Err(Error::tokenizer(
                meta.path(),
                format!(
                    "tokenizer model `{other}` (metadata `{model_key}`) is not supported; supported: `gpt2` \
                     (byte-level BPE) and `llama` (SentencePiece BPE)"
                ),
            ))
        }
    };
    let added = vocab.added_tokens(pipeline.unknown_is_special);
    let (special, plain): (Vec<_>, Vec<_>) = added.iter().cloned().partition(|(_, t)| t.special);
    let fail = |e: tokenizers::Error| {
        Error::tokenizer(meta.path(), format!("cannot register added tokens: {e}"))
    };
    pipeline
        .tokenizer
        .add_special_tokens(special.into_iter().map(|(_, t)| t))
        .map_err(fail)?;
    pipeline
        .tokenizer
        .add_tokens(plain.into_iter().map(|(_, t)| t))
        .map_err(fail)?;
    let chat_template = meta.opt_str("tokenizer.chat_template")?;
    let (tokenizer_config, special_tokens_map) =
        config_files(&vocab, &added, &pipeline, chat_template, model_max_length);
    let summary = TokenizerSummary {
        model: model.to_string(),
        pre: pre.map(str::to_string),
        vocab_size: vocab.tokens.len(),
        special_tokens: added.iter().filter(|(_, t)| t.special).count(),
        tokenizer_class: pipeline.tokenizer_class.to_string(),
    };
    Ok(TokenizerFiles {
        tokenizer: pipeline.tokenizer,
        tokenizer_config,
        special_tokens_map,
        summary,
        warnings,
    })
}

/// `tokenizer_config.json` and `special_tokens_map.json`.
fn config_files(
    vocab: &Vocab<'_>,
    added: &[(u32, AddedToken)],
    pipeline: &Pipeline,
    chat_template: Option<&str>,
    model_max_length: usize,
) -> (Value, Value) {
    let named = [
        ("bos_token", vocab.token(vocab.bos)),
        ("eos_token", vocab.token(vocab.eos)),
        ("unk_token", vocab.token(vocab.unk)),
        ("pad_token", vocab.token(vocab.pad)),
    ];
    let additional: Vec<&str> = added
        .iter()
        .filter(|(_, t)| t.special && named.iter().all(|(_, n)| *n != Some(t.content.as_str())))
        .map(|(_, t)| t.content.as_str())
        .collect();
    let mut map = Map::new();
    for (key, token) in named {
        if let Some(token) = token {
            map.insert(key.into(), json!(token));
        }
    }
    if !additional.is_empty() {
        map.insert("additional_special_tokens".into(), json!(additional));
    }
    let decoder: Map<String, Value> = added
        .iter()
        .map(|(id, t)| {
            let entry = json!({
                "content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                "rstrip": t.rstrip, "single_word": t.single_word, "special": t.special,
            });
            (id.to_string(), entry)
        })
        .collect();
    let mut config = Map::new();
    config.insert("add_bos_token".into(), json!(vocab.add_bos));
    config.insert("add_eos_token".into(), json!(vocab.add_eos));
    config.insert("added_tokens_decoder".into(), Value::Object(decoder));
    config.extend(map.clone());
    if let Some(template) = chat_template {
        config.insert("chat_template".into(), json!(template));
    }
    config.insert("clean_up_tokenization_spaces".into(), json!(false));
    config.insert("model_max_length".into(), json!(model_max_length));
    for (key, value) in &pipeline.config_extra {
        config.insert((*key).into(), value.clone());
    }
    config.insert("tokenizer_class".into(), json!(pipeline.tokenizer_class));
    (Value::Object(config), Value::Object(map))
}

#[cfg(test)]
mod tests;
