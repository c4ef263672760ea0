//! The Jinja environment Hugging Face transformers renders chat templates in
//! (`transformers.utils.chat_template_utils._compile_jinja_template`), rebuilt on
//! minijinja: `trim_blocks` and `lstrip_blocks` on, loop controls, the globals
//! `raise_exception` and `strftime_now`, its `tojson`, and Python string/dict methods.

use std::sync::LazyLock;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error, ErrorKind, Value};
use regex::Regex;

use super::pyjson;

/// The name the single template is stored under.
pub(crate) const TEMPLATE_NAME: &str = "chat_template";

/// Marks an error raised by the template's own `raise_exception(msg)`, so rendering can
/// report the template's message rather than an engine failure.
#[derive(Debug)]
pub(crate) struct Raised(pub(crate) String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

/// An environment holding `source` as [`TEMPLATE_NAME`]; fails on a syntax error.
pub(crate) fn build(source: String) -> Result<Environment<'static>, Error> {
    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()?,
    );
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", pyjson::tojson);
    env.add_template_owned(TEMPLATE_NAME, strip_generation_tags(&source))?;
    Ok(env)
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(Raised(message)))
}

/// Python's `datetime.now().strftime(fmt)`: local time (UTC when the zone is unknown).
fn strftime_now(format: String) -> Result<String, Error> {
    let now = jiff::Zoned::now();
    jiff::fmt::strtime::format(format.as_bytes(), &now).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now({format:?}): {e}"),
        )
    })
}

/// transformers' `{% generation %}...{% endgeneration %}` extension only marks assistant
/// text for training masks and renders its body unchanged; minijinja has no such tag,
/// so it becomes an always-true `if` with the same whitespace control.
fn strip_generation_tags(source: &str) -> String {
    static TAG: LazyLock<Option<Regex>> =
        LazyLock::new(|| Regex::new(r"\{%([-+]?)\s*(end)?generation\s*([-+]?)%\}").ok());
    match TAG.as_ref() {
        Some(tag) if source.contains("generation") => tag
            .replace_all(source, |c: &regex::Captures<'_>| {
                let body = if c.get(2).is_some() {
                    "endif"
                } else {
                    "if true"
                };
                format!("{{%{} {body} {}%}}", &c[1], &c[3])
            })
            .into_owned(),
        _ => source.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::strip_generation_tags;

    #[test]
    fn generation_tags_become_if_blocks() {
        assert_eq!(
            strip_generation_tags("a{%- generation %}b{% endgeneration -%}c"),
            "a{%- if true %}b{% endif -%}c"
        );
        assert_eq!(
            strip_generation_tags("{{ generation }}"),
            "{{ generation }}"
        );
    }
}
