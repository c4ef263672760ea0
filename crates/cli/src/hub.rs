//! `--model org/name[@revision]`: models from the Hugging Face Hub, through the `hf-hub` crate.
//!
//! Only the files a job reads are fetched (config, safetensors and their index, tokenizer
//! files, generation config, chat template), into the standard cache (`HF_HOME`, default
//! `~/.cache/huggingface`), so Python tools share them. `HF_TOKEN` (or the token file
//! `huggingface-cli login` writes) authenticates; `HF_ENDPOINT` points at another Hub;
//! `HF_HUB_OFFLINE=1` uses the cache only. A download interrupted by a dropped connection or
//! a killed process resumes from its `.part` file (HTTP range requests) on the next try.
//!
//! The Hub is not reachable from the machines temper is built on: the tests run this code
//! against a local server that answers the Hub's file API from files on disk.

use anyhow::{bail, Context, Result};
use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};
use std::path::{Path, PathBuf};

/// Tries per file: a dropped connection is resumed from where it stopped.
const RETRIES: usize = 3;

/// `model` itself when it is a directory here, else the snapshot directory of the Hub model
/// it names (`org/name` or `org/name@revision`), downloaded as needed.
pub fn resolve(model: &Path, progress: bool) -> Result<PathBuf> {
    if model.is_dir() {
        return Ok(model.to_path_buf());
    }
    let text = model.to_string_lossy();
    let Some((id, revision)) = parse_id(&text) else {
        bail!(
            "--model {text} does not exist here, and is not a Hugging Face Hub id \
             (org/name or org/name@revision)"
        );
    };
    let repo = Repo::with_revision(id.to_string(), RepoType::Model, revision.to_string());
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1") {
        return from_cache(&repo, &text);
    }
    let cache = Cache::from_env();
    let token = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| cache.token());
    let api = ApiBuilder::from_env()
        .with_token(token)
        .with_progress(progress)
        .with_retries(RETRIES)
        .build()
        .map_err(|e| explain(e, &text))?;
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let hub = api.repo(repo);
    let info = hub
        .info()
        .map_err(|e| explain(e, &text))
        .with_context(|| format!("listing the files of {text} on {endpoint}"))?;
    let files: Vec<&str> = info
        .siblings
        .iter()
        .map(|s| s.rfilename.as_str())
        .filter(|f| needed(f))
        .collect();
    if !files.iter().any(|f| f.ends_with(".safetensors")) {
        bail!(
            "{text} has no .safetensors weights on the Hub (files: {}); temper reads safetensors: \
             convert the checkpoint (e.g. with transformers' save_pretrained(safe_serialization=True)) \
             and pass the directory",
            info.siblings.iter().map(|s| s.rfilename.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    if !files.contains(&"config.json") {
        bail!("{text} has no config.json on the Hub; it is not a transformers model");
    }
    let mut dir = None;
    for f in &files {
        let path = hub
            .get(f)
            .map_err(|e| explain(e, &text))
            .with_context(|| format!("downloading {f} of {text}"))?;
        if *f == "config.json" {
            dir = path.parent().map(Path::to_path_buf);
        }
    }
    dir.context("the Hub cache gave no directory for config.json")
}

/// `org/name` or `org/name@revision` (names as the Hub allows them), split.
fn parse_id(text: &str) -> Option<(&str, &str)> {
    let (id, revision) = match text.split_once('@') {
        Some((id, rev)) if !rev.is_empty() => (id, rev),
        Some(_) => return None,
        None => (text, "main"),
    };
    let (org, name) = id.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !s.starts_with('.')
    };
    (ok(org) && ok(name)).then_some((id, revision))
}

/// Whether a job reads this file of a model repository (top-level files only).
fn needed(file: &str) -> bool {
    if file.contains('/') {
        return false;
    }
    file.ends_with(".safetensors")
        || matches!(
            file,
            "config.json"
                | "generation_config.json"
                | "model.safetensors.index.json"
                | "tokenizer.json"
                | "tokenizer_config.json"
                | "special_tokens_map.json"
                | "chat_template.jinja"
                | "chat_template.json"
        )
}

/// `HF_HUB_OFFLINE=1`: the cached snapshot of `repo`, or what to do.
fn from_cache(repo: &Repo, text: &str) -> Result<PathBuf> {
    let cached = Cache::from_env().repo(repo.clone()).get("config.json");
    match cached.and_then(|p| p.parent().map(Path::to_path_buf)) {
        Some(dir) => Ok(dir),
        None => bail!(
            "{text} is not in the Hugging Face cache ({}) and HF_HUB_OFFLINE=1 forbids downloading \
             it: unset HF_HUB_OFFLINE on a connected machine once, or pass a local directory",
            Cache::from_env().path().display()
        ),
    }
}

/// The Hub's answers as what the user can do about them.
fn explain(e: ApiError, model: &str) -> anyhow::Error {
    match e {
        ApiError::RequestError(inner) => match *inner {
            ureq::Error::Status(401 | 403, _) => anyhow::anyhow!(
                "{model} is gated or private: accept its terms on the Hub with your account, then \
                 set HF_TOKEN to a token of that account (or run `huggingface-cli login`)"
            ),
            ureq::Error::Status(404, _) => anyhow::anyhow!(
                "{model} was not found on the Hub (check the org/name and the revision); a private \
                 repository also answers 404 without a token: set HF_TOKEN"
            ),
            ureq::Error::Status(code, _) => {
                anyhow::anyhow!("the Hub answered HTTP {code} for {model}; try again later")
            }
            ureq::Error::Transport(t) => anyhow::anyhow!(
                "cannot reach the Hub for {model} ({t}); offline? Pass a local directory, or set \
                 HF_HUB_OFFLINE=1 to use what is already in the cache (HF_HOME)"
            ),
        },
        ApiError::TooManyRetries(inner) => explain(*inner, model).context(format!(
            "the download of {model} kept failing after {RETRIES} retries; rerun to resume it"
        )),
        other => anyhow::anyhow!("{model}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_revisions_parse() {
        assert_eq!(
            parse_id("HuggingFaceTB/SmolLM2-135M-Instruct"),
            Some(("HuggingFaceTB/SmolLM2-135M-Instruct", "main"))
        );
        assert_eq!(parse_id("org/name@v1.0"), Some(("org/name", "v1.0")));
        assert_eq!(parse_id("name-only"), None);
        assert_eq!(parse_id("org/name@"), None);
        assert_eq!(parse_id("./local/dir"), None);
        assert_eq!(parse_id("/abs/path"), None);
    }

    #[test]
    fn only_what_a_job_reads_is_fetched() {
        for f in [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json",
        ] {
            assert!(needed(f), "{f}");
        }
        for f in [
            "pytorch_model.bin",
            "README.md",
            "onnx/model.onnx",
            "flax_model.msgpack",
        ] {
            assert!(!needed(f), "{f}");
        }
    }
}
