//! Chat templates: a model's Jinja template turning a conversation into the exact
//! prompt text it was trained on, rendered the way Hugging Face transformers does.

mod env;
mod pyjson;

use std::path::{Path, PathBuf};

use minijinja::{Environment, Value};
use serde_json::Value as Json;

use crate::config::{read_json_object, special_token};
use crate::TextError;

/// One turn of a conversation. `role` is what templates expect: `system`, `user`,
/// `assistant` (some templates accept others, such as `tool`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template plus the special tokens templates refer to (`bos_token`,
/// `eos_token`, `unk_token`, `pad_token`).
///
/// The rendered text already contains the special tokens the template writes, so
/// tokenize it *without* the tokenizer's special-token post-processing
/// (`add_special_tokens = false`), as transformers' `apply_chat_template` does, or
/// a BOS token can appear twice.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The file the template came from, for error messages.
    path: PathBuf,
    special_tokens: Vec<(&'static str, String)>,
}

/// The special tokens transformers passes to every template (its `special_tokens_map`).
const SPECIAL_TOKENS: [&str; 4] = ["bos_token", "eos_token", "unk_token", "pad_token"];

impl ChatTemplate {
    /// The template of the model in `dir`, or `None` when it has none.
    ///
    /// Like transformers, a `chat_template.jinja` file wins over the `chat_template`
    /// field of `tokenizer_config.json`; that field is a string or a list of
    /// `{"name", "template"}` of which the one named `default` is used. Special tokens
    /// come from `tokenizer_config.json`, else `special_tokens_map.json` (plain strings or
    /// `{"content": ...}` objects).
    pub fn from_model_dir(dir: &Path) -> Result<Option<ChatTemplate>, TextError> {
        let config_path = dir.join("tokenizer_config.json");
        let config = read_json_object(&config_path)?;
        let jinja_path = dir.join("chat_template.jinja");
        let (source, path) = match std::fs::read_to_string(&jinja_path) {
            Ok(source) => (source, jinja_path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let field = config.as_ref().and_then(|c| c.get("chat_template"));
                match template_field(field, &config_path)? {
                    Some(source) => (source, config_path.clone()),
                    None => return Ok(None),
                }
            }
            Err(e) => return Err(TextError::read(jinja_path, e)),
        };
        // transformers also reads `special_tokens_map.json`; tokenizer_config.json wins
        // where both name a token.
        let map_path = dir.join("special_tokens_map.json");
        let map = read_json_object(&map_path)?;
        let mut special_tokens = Vec::new();
        for name in SPECIAL_TOKENS {
            let mut token = None;
            if let Some(config) = &config {
                token = special_token(config, name, &config_path)?;
            }
            if token.is_none() {
                if let Some(map) = &map {
                    token = special_token(map, name, &map_path)?;
                }
            }
            if let Some(token) = token {
                special_tokens.push((name, token));
            }
        }
        let env = env::build(source).map_err(|e| TextError::TemplateSyntax {
            path: path.clone(),
            reason: error_chain(&e),
        })?;
        Ok(Some(ChatTemplate {
            env,
            path,
            special_tokens,
        }))
    }

    /// The prompt text for `messages`; with `add_generation_prompt` it ends with the
    /// header of an assistant turn, ready for the model to continue.
    ///
    /// The template sees `messages` (maps with `role` and `content`),
    /// `add_generation_prompt`, `tools` and `documents` (both `none`) and the special
    /// tokens, as in transformers. A template that calls `raise_exception(msg)` gives
    /// [`TextError::TemplateRaised`] carrying `msg`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TextError> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_pairs([
                    ("role", Value::from(m.role.as_str())),
                    ("content", Value::from(m.content.as_str())),
                ])
            })
            .collect();
        let mut context = vec![
            ("messages", Value::from(messages)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
        ];
        for (name, token) in &self.special_tokens {
            context.push((name, Value::from(token.as_str())));
        }
        let template = self
            .env
            .get_template(env::TEMPLATE_NAME)
            .map_err(|e| self.render_error(&e))?;
        template
            .render(Value::from_pairs(context))
            .map_err(|e| self.render_error(&e))
    }

    /// The file the template was read from (`chat_template.jinja` or
    /// `tokenizer_config.json`), for messages about it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A special token as the template sees it, e.g. `eos_token`.
    pub fn special_token(&self, name: &str) -> Option<&str> {
        self.special_tokens
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.as_str())
    }

    fn render_error(&self, e: &minijinja::Error) -> TextError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = source {
            if let Some(raised) = err.downcast_ref::<env::Raised>() {
                return TextError::TemplateRaised {
                    path: self.path.clone(),
                    message: raised.0.clone(),
                };
            }
            source = err.source();
        }
        TextError::TemplateRender {
            path: self.path.clone(),
            reason: error_chain(e),
        }
    }
}

/// A fallback rendering for models without a chat template: one `Role: content` line
/// per message (`System:`, `User:`, `Assistant:`), joined by newlines.
pub fn render_plain(messages: &[Message]) -> String {
    let mut out = String::new();
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut chars = m.role.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
        out.push_str(": ");
        out.push_str(&m.content);
    }
    out
}

/// The template text of a `chat_template` field (string, or named list using `default`).
fn template_field(field: Option<&Json>, path: &Path) -> Result<Option<String>, TextError> {
    match field {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Array(list)) => {
            let mut names = Vec::new();
            for entry in list {
                let name = entry.get("name").and_then(Json::as_str);
                let template = entry.get("template").and_then(Json::as_str);
                match (name, template) {
                    (Some("default"), Some(t)) => return Ok(Some(t.to_string())),
                    (Some(n), Some(_)) => names.push(n.to_string()),
                    _ => {
                        return Err(TextError::config(
                            path,
                            "field `chat_template`: each entry of the list must be an object \
                             with string fields `name` and `template`",
                        ))
                    }
                }
            }
            Err(TextError::config(
                path,
                format!(
                    "field `chat_template` lists templates {names:?} but none is named \
                     `default`; name the one to use for chat `default`"
                ),
            ))
        }
        Some(other) => Err(TextError::config(
            path,
            format!(
                "field `chat_template` must be a string or a list of {{name, template}}, got {}",
                crate::config::json_kind(other)
            ),
        )),
    }
}

/// A minijinja error with its causes, on one line.
fn error_chain(e: &minijinja::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        out.push_str(": ");
        out.push_str(&err.to_string());
        source = err.source();
    }
    out
}
