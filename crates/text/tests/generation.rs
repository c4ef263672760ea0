//! End-of-sequence ids from a model directory.

mod common;

use serde_json::json;
use temper_text::{GenerationDefaults, TextError};

#[test]
fn smollm2_eos() {
    let tokenizer = common::smollm2_tokenizer();
    let defaults = GenerationDefaults::from_model_dir(&common::smollm2_dir(), &tokenizer).unwrap();
    // eos_token_id 2 in both configs; tokenizer_config's eos_token <|im_end|> is also 2.
    assert_eq!(defaults.eos_token_ids, vec![2]);
    assert!(defaults.is_eos(2) && !defaults.is_eos(0));
}

#[test]
fn ids_from_all_files_are_merged() {
    let tokenizer = common::smollm2_tokenizer();
    let dir = common::model_dir_with_config(&json!({"eos_token": {"content": "<|endoftext|>"}}));
    std::fs::write(
        dir.path().join("generation_config.json"),
        json!({"eos_token_id": [2, 7]}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        json!({"eos_token_id": 5}).to_string(),
    )
    .unwrap();
    let defaults = GenerationDefaults::from_model_dir(dir.path(), &tokenizer).unwrap();
    assert_eq!(defaults.eos_token_ids, vec![0, 2, 5, 7]);

    let empty = tempfile::tempdir().unwrap();
    let none = GenerationDefaults::from_model_dir(empty.path(), &tokenizer).unwrap();
    assert!(none.eos_token_ids.is_empty());
}

#[test]
fn bad_values_name_file_and_field() {
    let tokenizer = common::smollm2_tokenizer();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        json!({"eos_token_id": "2"}).to_string(),
    )
    .unwrap();
    let err = GenerationDefaults::from_model_dir(dir.path(), &tokenizer).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TextError::Config { .. }));
    assert!(
        msg.contains("config.json") && msg.contains("eos_token_id"),
        "{msg}"
    );

    std::fs::write(
        dir.path().join("config.json"),
        json!({"eos_token_id": [-1]}).to_string(),
    )
    .unwrap();
    let msg = GenerationDefaults::from_model_dir(dir.path(), &tokenizer)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("-1"), "{msg}");

    let dir = common::model_dir_with_config(&json!({"eos_token": "<not-a-token>"}));
    let msg = GenerationDefaults::from_model_dir(dir.path(), &tokenizer)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("tokenizer_config.json") && msg.contains("<not-a-token>"),
        "{msg}"
    );
}
