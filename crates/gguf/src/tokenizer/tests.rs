//! Tokenizers built from small synthetic vocabularies (the real SmolLM2 vocabulary is
//! tested in `tests/import.rs`).

use super::*;
use candle_core::quantized::gguf_file::Value;
use std::collections::HashMap;

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
}

fn meta_map(entries: Vec<(&str, Value)>) -> HashMap<String, Value> {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// A SentencePiece vocabulary where "Hello world!" needs scored merges and a byte
/// fallback for "!".
fn spm_meta() -> HashMap<String, Value> {
    let pieces: Vec<(&str, f32, i32)> = vec![
        ("<unk>", 0.0, 2),
        ("<s>", 0.0, 3),
        ("</s>", 0.0, 3),
        ("<0x21>", 0.0, 6),
        ("\u{2581}", -100.0, 1),
        ("H", -100.0, 1),
        ("e", -100.0, 1),
        ("l", -100.0, 1),
        ("o", -100.0, 1),
        ("w", -100.0, 1),
        ("r", -100.0, 1),
        ("d", -100.0, 1),
        ("\u{2581}H", -1.0, 1),
        ("ll", -2.0, 1),
        ("\u{2581}He", -3.0, 1),
        ("llo", -4.0, 1),
        ("\u{2581}Hello", -5.0, 1),
        ("\u{2581}w", -6.0, 1),
        ("or", -7.0, 1),
        ("ld", -8.0, 1),
        ("\u{2581}wor", -9.0, 1),
        ("\u{2581}world", -10.0, 1),
    ];
    meta_map(vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            strings(&pieces.iter().map(|p| p.0).collect::<Vec<_>>()),
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array(pieces.iter().map(|p| Value::F32(p.1)).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(pieces.iter().map(|p| Value::I32(p.2)).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
    ])
}

#[test]
fn sentencepiece_vocabulary_tokenizes_like_sentencepiece() {
    let map = spm_meta();
    let files = build(&Meta::new(Path::new("t.gguf"), &map), 4096).unwrap();
    let tok = &files.tokenizer;
    let enc = tok.encode("Hello world!", true).unwrap();
    assert_eq!(
        enc.get_tokens(),
        ["<s>", "\u{2581}Hello", "\u{2581}world", "<0x21>"]
    );
    assert_eq!(enc.get_ids(), [1, 16, 21, 3]);
    assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "Hello world!");
    assert_eq!(
        tok.decode(enc.get_ids(), false).unwrap(),
        "<s> Hello world!"
    );
    // A character with no piece and no byte token falls back to <unk>.
    assert_eq!(tok.encode("z", false).unwrap().get_ids(), [4, 0]);
    let config = &files.tokenizer_config;
    assert_eq!(config["tokenizer_class"], "LlamaTokenizer");
    assert_eq!(config["bos_token"], "<s>");
    assert_eq!(config["unk_token"], "<unk>");
    assert_eq!(config["add_bos_token"], true);
    assert_eq!(config["added_tokens_decoder"]["0"]["special"], true);
    assert_eq!(files.summary.special_tokens, 3);
}

fn bpe_meta(pre: &str) -> HashMap<String, Value> {
    meta_map(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        (
            "tokenizer.ggml.tokens",
            strings(&[
                "<|end|>",
                "a",
                "b",
                "ab",
                "\u{120}",
                "\u{120}ab",
                "1",
                "2",
                "12",
                "<tool>",
            ]),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(
                [3, 1, 1, 1, 1, 1, 1, 1, 1, 4]
                    .into_iter()
                    .map(Value::I32)
                    .collect(),
            ),
        ),
        (
            "tokenizer.ggml.merges",
            strings(&["a b", "\u{120} ab", "1 2"]),
        ),
        ("tokenizer.ggml.eos_token_id", Value::U32(0)),
    ])
}

#[test]
fn byte_level_families_split_as_their_originals() {
    // Qwen2 and SmolLM split digits one by one; Llama 3 keeps runs of up to three.
    for (pre, digits) in [
        ("qwen2", vec![6, 7]),
        ("smollm", vec![6, 7]),
        ("llama-bpe", vec![8]),
        ("gpt-2", vec![8]),
    ] {
        let map = bpe_meta(pre);
        let files = build(&Meta::new(Path::new("t.gguf"), &map), 128).unwrap();
        let tok = &files.tokenizer;
        let enc = tok.encode("ab ab<|end|>", false).unwrap();
        assert_eq!(enc.get_ids(), [3, 5, 0], "{pre}");
        assert_eq!(tok.encode("12", false).unwrap().get_ids(), digits, "{pre}");
        assert_eq!(
            tok.decode(enc.get_ids(), false).unwrap(),
            "ab ab<|end|>",
            "{pre}"
        );
        // User-defined tokens are matched whole but are not special.
        assert_eq!(tok.encode("<tool>", false).unwrap().get_ids(), [9], "{pre}");
        assert_eq!(
            files.tokenizer_config["added_tokens_decoder"]["9"]["special"], false,
            "{pre}"
        );
        assert_eq!(files.special_tokens_map["eos_token"], "<|end|>", "{pre}");
    }
}

#[test]
fn unsupported_tokenizers_are_named() {
    let map = bpe_meta("tekken");
    let err = build(&Meta::new(Path::new("m.gguf"), &map), 128)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("m.gguf") && err.contains("`tekken`") && err.contains("smollm"),
        "{err}"
    );
    let mut map = bpe_meta("smollm");
    map.insert("tokenizer.ggml.model".into(), Value::String("bert".into()));
    let err = build(&Meta::new(Path::new("m.gguf"), &map), 128)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`bert`") && err.contains("tokenizer.ggml.model"),
        "{err}"
    );
    let mut map = bpe_meta("smollm");
    map.insert("tokenizer.ggml.merges".into(), strings(&["a b", "ab"]));
    let err = build(&Meta::new(Path::new("m.gguf"), &map), 128)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("tokenizer.ggml.merges[1]") && err.contains("\"ab\""),
        "{err}"
    );
    let mut map = bpe_meta("smollm");
    map.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(99));
    let err = build(&Meta::new(Path::new("m.gguf"), &map), 128)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("tokenizer.ggml.eos_token_id") && err.contains("99"),
        "{err}"
    );
}
