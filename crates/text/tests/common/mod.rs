//! Shared test helpers: the real model and text the test script puts in `.cache/`.

#![allow(dead_code)]

use std::path::PathBuf;

/// `.cache/` at the workspace root.
fn cache() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache")
}

/// SmolLM2-135M-Instruct: tokenizer.json, tokenizer_config.json (ChatML template), configs.
pub fn smollm2_dir() -> PathBuf {
    let dir = cache().join("models/smollm2-135m-instruct");
    assert!(
        dir.join("tokenizer.json").is_file(),
        "{} is missing; run scripts/fetch-assets.sh first",
        dir.display()
    );
    dir
}

pub fn hamlet() -> PathBuf {
    let path = cache().join("assets/hamlet.txt");
    assert!(
        path.is_file(),
        "{} is missing; run scripts/fetch-assets.sh first",
        path.display()
    );
    path
}

pub fn smollm2_tokenizer() -> temper_text::Tokenizer {
    match temper_text::load_tokenizer(&smollm2_dir()) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

/// Writes `tokenizer_config.json` with `config` into a fresh directory.
pub fn model_dir_with_config(config: &serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).expect("write");
    dir
}

/// ShareGPT V3 as published: a 125 MB JSON array cut off in the middle of a record.
pub fn sharegpt() -> PathBuf {
    let path = cache().join("assets/ShareGPT_V3_unfiltered_cleaned_split.json");
    assert!(
        path.is_file(),
        "{} is missing; run scripts/fetch-assets.sh first",
        path.display()
    );
    path
}
