//! Loading a Hugging Face `tokenizer.json`.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::TextError;

/// The tokenizer of a model: `path` is the model directory (holding `tokenizer.json`) or
/// the `tokenizer.json` file itself.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, TextError> {
    let file = if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&file).map_err(|e| TextError::read(&file, e))?;
    Tokenizer::from_bytes(&bytes).map_err(|e| TextError::TokenizerLoad {
        path: file,
        reason: e.to_string(),
    })
}

/// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processing
/// (BOS/EOS as the model's tokenizer.json defines them).
pub(crate) fn encode(
    tokenizer: &Tokenizer,
    text: &str,
    add_special_tokens: bool,
) -> Result<Vec<u32>, TextError> {
    tokenizer
        .encode(text, add_special_tokens)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| TextError::Tokenizer {
            action: "encoding text",
            reason: e.to_string(),
        })
}

/// The text of `ids`.
pub(crate) fn decode(
    tokenizer: &Tokenizer,
    ids: &[u32],
    skip_special_tokens: bool,
) -> Result<String, TextError> {
    tokenizer
        .decode(ids, skip_special_tokens)
        .map_err(|e| TextError::Tokenizer {
            action: "decoding tokens",
            reason: e.to_string(),
        })
}
