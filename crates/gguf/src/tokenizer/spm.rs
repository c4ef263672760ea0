//! `tokenizer.ggml.model = "llama"`: SentencePiece BPE (Llama 1/2, Mistral, TinyLlama).
//!
//! GGUF keeps each piece's score but no merge list. SentencePiece BPE repeatedly joins
//! the adjacent pair whose union is the best-scoring piece, so a merge list ranked by
//! the union's score reproduces it in Hugging Face's BPE model, which is how Hugging
//! Face's own converters build `tokenizer.json` for these models.

use super::{Pipeline, TokenType, Vocab};
use crate::error::{Error, Result};
use crate::reader::Meta;
use serde_json::json;
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::{DecoderWrapper, NormalizerWrapper, Tokenizer};

/// SentencePiece's word-boundary marker.
const SPACE: &str = "\u{2581}";

pub(crate) fn build(meta: &Meta<'_>, vocab: &Vocab<'_>) -> Result<Pipeline> {
    let key = "tokenizer.ggml.scores";
    let scores = meta.opt_floats(key)?.ok_or_else(|| {
        Error::tokenizer(
            meta.path(),
            format!("metadata `{key}` is missing; SentencePiece BPE needs the piece scores"),
        )
    })?;
    if scores.len() != vocab.tokens.len() {
        return Err(Error::metadata(
            meta.path(),
            key,
            format!(
                "has {} entries but there are {} tokens",
                scores.len(),
                vocab.tokens.len()
            ),
        ));
    }
    let fail =
        |what: &str, e: tokenizers::Error| Error::tokenizer(meta.path(), format!("{what}: {e}"));
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab_map(vocab), merges_from_scores(vocab, &scores))
        .fuse_unk(true)
        .byte_fallback(true);
    if let Some(unk) = vocab.token(vocab.unk) {
        builder = builder.unk_token(unk.to_string());
    }
    let bpe = builder
        .build()
        .map_err(|e| fail("cannot build the BPE model", e))?;
    let mut tokenizer = Tokenizer::new(bpe);
    // `add_space_prefix`: SentencePiece puts a word boundary before the text.
    let add_prefix = meta
        .opt_bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(true);
    let replace = |from: &str, to: &str| {
        Replace::new(from, to).map_err(|e| fail("cannot build a replace step", e))
    };
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if add_prefix {
        normalizers.push(Prepend::new(SPACE.to_string()).into());
    }
    normalizers.push(replace(" ", SPACE)?.into());
    tokenizer
        .with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .map_err(|e| fail("cannot set the normalizer", e))?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        replace(SPACE, " ")?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    if let Some(template) = vocab.template()? {
        tokenizer.with_post_processor(Some(template));
    }
    Ok(Pipeline {
        tokenizer,
        tokenizer_class: "LlamaTokenizer",
        unknown_is_special: true,
        // `legacy`: the normalizer above is the original (legacy) Llama behaviour.
        config_extra: vec![("legacy", json!(true)), ("sp_model_kwargs", json!({}))],
    })
}

fn vocab_map(vocab: &Vocab<'_>) -> ahash::AHashMap<String, u32> {
    // Reversed so that a repeated string keeps its first id.
    vocab
        .tokens
        .iter()
        .enumerate()
        .rev()
        .map(|(id, t)| (t.to_string(), id as u32))
        .collect()
}

/// Every split of a normal piece into two normal pieces, best-scoring union first
/// (ties: lower id first, as the vocabulary is ordered by score).
fn merges_from_scores(vocab: &Vocab<'_>, scores: &[f32]) -> Vec<(String, String)> {
    let normal: HashMap<&str, u32> = vocab
        .tokens
        .iter()
        .enumerate()
        .filter(|(id, _)| vocab.types[*id] == TokenType::Normal)
        .map(|(id, t)| (*t, id as u32))
        .collect();
    let mut merges: Vec<(f32, u32, u32, u32)> = Vec::new();
    for (&piece, &id) in &normal {
        for (cut, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(cut);
            if let (Some(&l), Some(&r)) = (normal.get(left), normal.get(right)) {
                merges.push((scores[id as usize], id, l, r));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    merges
        .into_iter()
        .map(|(_, _, l, r)| {
            (
                vocab.tokens[l as usize].to_string(),
                vocab.tokens[r as usize].to_string(),
            )
        })
        .collect()
}
