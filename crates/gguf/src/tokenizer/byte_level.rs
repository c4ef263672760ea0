//! `tokenizer.ggml.model = "gpt2"`: byte-level BPE (GPT-2, SmolLM, StarCoder, Llama 3,
//! Qwen2, ...). The families differ only in how text is split before BPE, which
//! `tokenizer.ggml.pre` names; each maps to the pipeline of its Hugging Face original.

use super::{Pipeline, Vocab};
use crate::error::{Error, Result};
use crate::reader::Meta;
use serde_json::json;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::NFC;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::sequence::Sequence as ProcessorSequence;
use tokenizers::{PostProcessorWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// Llama 3's split pattern, as in its `tokenizer.json` (numbers in runs of up to 3).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split pattern, as in its `tokenizer.json` (every digit on its own).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Pre-tokenization families, by the `tokenizer.ggml.pre` names llama.cpp gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// The GPT-2 regex alone.
    Gpt2,
    /// Every digit split off, then the GPT-2 regex (StarCoder and its descendants).
    Digits,
    Llama3,
    Qwen2,
}

const FAMILIES: [(&str, Family); 12] = [
    ("gpt-2", Family::Gpt2),
    ("phi-2", Family::Gpt2),
    ("mpt", Family::Gpt2),
    ("olmo", Family::Gpt2),
    ("smollm", Family::Digits),
    ("starcoder", Family::Digits),
    ("refact", Family::Digits),
    ("llama-bpe", Family::Llama3),
    ("llama3", Family::Llama3),
    ("llama-v3", Family::Llama3),
    ("qwen2", Family::Qwen2),
    ("deepseek-r1-qwen", Family::Qwen2),
];

fn family(meta: &Meta<'_>, pre: Option<&str>, warnings: &mut Vec<String>) -> Result<Family> {
    let name = match pre {
        None | Some("default") => {
            // llama.cpp itself falls back to the GPT-2 split here (and warns too).
            warnings.push(format!(
                "{}: no `tokenizer.ggml.pre` (or `default`): using the GPT-2 pre-tokenizer; check the \
                 tokenization against the original model",
                meta.path().display()
            ));
            return Ok(Family::Gpt2);
        }
        Some(name) => name,
    };
    FAMILIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .ok_or_else(|| {
            let known: Vec<&str> = FAMILIES.iter().map(|(n, _)| *n).collect();
            Error::tokenizer(
                meta.path(),
                format!(
                    "pre-tokenizer `{name}` (metadata `tokenizer.ggml.pre`) is not supported; supported: {}. \
                     Import the model from its original Hugging Face repository instead",
                    known.join(", ")
                ),
            )
        })
}

pub(crate) fn build(
    meta: &Meta<'_>,
    vocab: &Vocab<'_>,
    pre: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Pipeline> {
    let family = family(meta, pre, warnings)?;
    let bpe = model(meta, vocab, family, warnings)?;
    let mut tokenizer = Tokenizer::new(bpe);
    let pre_tokenizer = pre_tokenizer(meta, family)?;
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    if family == Family::Qwen2 {
        tokenizer.with_normalizer(Some(NFC)).map_err(|e| {
            Error::tokenizer(meta.path(), format!("cannot set the NFC normalizer: {e}"))
        })?;
    }
    // The byte-level post-processor only fixes offsets; BOS/EOS come from a template.
    let byte_level = ByteLevel::new(false, false, true);
    let post: PostProcessorWrapper = match vocab.template()? {
        None => byte_level.into(),
        Some(template) => ProcessorSequence::new(vec![byte_level.into(), template.into()]).into(),
    };
    tokenizer.with_post_processor(Some(post));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let (class, extra) = match family {
        Family::Llama3 => ("PreTrainedTokenizerFast", vec![]),
        Family::Qwen2 => ("Qwen2Tokenizer", vec![("errors", json!("replace"))]),
        Family::Gpt2 | Family::Digits => {
            ("GPT2Tokenizer", vec![("add_prefix_space", json!(false))])
        }
    };
    Ok(Pipeline {
        tokenizer,
        tokenizer_class: class,
        unknown_is_special: false,
        config_extra: extra,
    })
}

fn pre_tokenizer(meta: &Meta<'_>, family: Family) -> Result<PreTokenizerWrapper> {
    let split = |pattern: &str| {
        Split::new(
            SplitPattern::Regex(pattern.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| {
            Error::tokenizer(
                meta.path(),
                format!("cannot compile the split pattern: {e}"),
            )
        })
    };
    Ok(match family {
        Family::Gpt2 => ByteLevel::new(false, true, true).into(),
        Family::Digits => Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])
        .into(),
        Family::Llama3 => Sequence::new(vec![
            split(LLAMA3_PATTERN)?.into(),
            ByteLevel::new(false, true, false).into(),
        ])
        .into(),
        Family::Qwen2 => Sequence::new(vec![
            split(QWEN2_PATTERN)?.into(),
            ByteLevel::new(false, false, false).into(),
        ])
        .into(),
    })
}

fn model(
    meta: &Meta<'_>,
    vocab: &Vocab<'_>,
    family: Family,
    warnings: &mut Vec<String>,
) -> Result<BPE> {
    let key = "tokenizer.ggml.merges";
    let raw = meta.opt_strings(key)?.ok_or_else(|| {
        Error::tokenizer(
            meta.path(),
            format!("metadata `{key}` is missing; byte-level BPE needs its merges"),
        )
    })?;
    let merges = raw
        .iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                Ok((a.to_string(), b.to_string()))
            }
            _ => Err(Error::metadata(
                meta.path(),
                &format!("{key}[{i}]"),
                format!("{m:?} is not two tokens separated by one space"),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut map = ahash::AHashMap::with_capacity(vocab.tokens.len());
    let mut duplicates = 0usize;
    for (id, token) in vocab.tokens.iter().enumerate() {
        if map.insert(token.to_string(), id as u32).is_some() {
            duplicates += 1;
        }
    }
    if duplicates > 0 {
        // Keep the first id of a repeated string, as Hugging Face's vocab (a map) must.
        map.clear();
        for (id, token) in vocab.tokens.iter().enumerate().rev() {
            map.insert(token.to_string(), id as u32);
        }
        warnings.push(format!(
            "{}: {duplicates} token strings appear more than once in `tokenizer.ggml.tokens`; each maps to its \
             first id",
            meta.path().display()
        ));
    }
    BPE::builder()
        .vocab_and_merges(map, merges)
        // Llama 3 looks a whole pre-token up in the vocabulary before merging.
        .ignore_merges(family == Family::Llama3)
        .build()
        .map_err(|e| {
            Error::tokenizer(
                meta.path(),
                format!("the BPE vocabulary and merges are inconsistent: {e}"),
            )
        })
}
