//! Fixed-length token windows: the standard perplexity protocol (concatenate the
//! corpus, cut non-overlapping windows of the model's context length, score each) and
//! the same windows as calibration samples.

use std::borrow::Cow;

use tokenizers::Tokenizer;

use super::Document;
use crate::chat::ChatTemplate;
use crate::tokenizer::encode;
use crate::TextError;

/// How to cut windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowOptions {
    /// Tokens per window.
    pub window_len: usize,
    /// At most this many windows (`usize::MAX`: as many as the text gives). Tokenizing
    /// stops once enough tokens are collected (large documents are tokenized in pieces),
    /// so a small count on a large file is cheap.
    pub max_windows: usize,
}

impl WindowOptions {
    /// All the windows of `window_len` tokens the text gives.
    pub fn new(window_len: usize) -> Self {
        WindowOptions {
            window_len,
            max_windows: usize::MAX,
        }
    }
}

/// Appended to every document but the last before tokenizing, like the
/// `"\n\n".join(texts)` of the usual perplexity recipe.
const SEPARATOR: &str = "\n\n";

/// Non-overlapping windows of exactly `window_len` tokens from `docs`, in order; the
/// tokens after the last full window are dropped.
///
/// Conversations are rendered with `template`, or the plain `User: ...` fallback
/// without one. Each document is tokenized on its own with the tokenizer's
/// special-token post-processing (so a model whose tokenizer adds BOS sees BOS at the
/// start of each document), except text rendered by a chat template, which already
/// contains its special tokens. Documents are separated by a blank line. Truncation
/// and padding configured in tokenizer.json are ignored.
pub fn token_windows(
    tokenizer: &Tokenizer,
    docs: impl AsRef<[Document]>,
    template: Option<&ChatTemplate>,
    options: &WindowOptions,
) -> Result<Vec<Vec<u32>>, TextError> {
    let docs = docs.as_ref();
    let WindowOptions {
        window_len,
        max_windows,
    } = *options;
    if window_len == 0 {
        return Err(TextError::WindowOptions {
            field: "window_len",
            reason: "must be at least 1 token".into(),
        });
    }
    if max_windows == 0 {
        return Err(TextError::WindowOptions {
            field: "max_windows",
            reason: "must be at least 1 (usize::MAX for all windows)".into(),
        });
    }
    let tokenizer = plain_tokenizer(tokenizer)?;
    let wanted = max_windows.saturating_mul(window_len);
    let mut tokens: Vec<u32> = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        if tokens.len() >= wanted {
            break;
        }
        // A template that refuses a conversation (roles that do not alternate, a system role
        // it does not take) names the template; say which conversation too.
        let (mut text, add_special) = doc.render(template).map_err(|e| match e {
            TextError::TemplateRaised { path, message } => TextError::TemplateRaised {
                path,
                message: format!(
                    "{message} (conversation {} of {} in the data; remove or fix it)",
                    i + 1,
                    docs.len()
                ),
            },
            other => other,
        })?;
        if i + 1 < docs.len() {
            text.push_str(SEPARATOR);
        }
        // A large document (a whole corpus in one text file) is tokenized a paragraph-aligned
        // piece at a time, so a few windows from a multi-GB file cost a few pieces, not the
        // file. Special-token processing (BOS) applies at the document's start only.
        for (j, piece) in pieces(&text, PIECE_BYTES).enumerate() {
            if tokens.len() >= wanted {
                break;
            }
            tokens.extend(encode(&tokenizer, piece, add_special && j == 0)?);
        }
    }
    let count = (tokens.len() / window_len).min(max_windows);
    if count == 0 {
        return Err(TextError::TooFewTokens {
            have: tokens.len(),
            needed: window_len,
        });
    }
    Ok(tokens
        .chunks_exact(window_len)
        .take(count)
        .map(<[u32]>::to_vec)
        .collect())
}

/// Bytes of text tokenized at once, at least (pieces end before a blank line).
const PIECE_BYTES: usize = 1 << 20;

/// `text` cut into consecutive pieces of at least `min` bytes, each ending just before a
/// blank line (`"\n\n"`) where one follows, else at the end of the text. Byte-level BPE
/// pre-tokenizers split there anyway (after the last non-space, before the whitespace run
/// that leads into the next word), so the tokens are those of the whole text; a piece
/// ending in the blank line instead would turn it into one `"\n\n"` token.
fn pieces(text: &str, min: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = if rest.len() <= min {
            rest.len()
        } else {
            // `min` may fall inside a character: search from the next char boundary.
            let from = (min..rest.len())
                .find(|&i| rest.is_char_boundary(i))
                .unwrap_or(rest.len());
            rest[from..].find("\n\n").map_or(rest.len(), |at| from + at)
        };
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

/// The tokenizer without truncation or padding: some tokenizer.json files truncate to
/// a few hundred tokens, which would silently cut every document.
pub(super) fn plain_tokenizer(tokenizer: &Tokenizer) -> Result<Cow<'_, Tokenizer>, TextError> {
    if tokenizer.get_truncation().is_none() && tokenizer.get_padding().is_none() {
        return Ok(Cow::Borrowed(tokenizer));
    }
    let mut plain = tokenizer.clone();
    plain
        .with_truncation(None)
        .map_err(|e| TextError::Tokenizer {
            action: "turning truncation off",
            reason: e.to_string(),
        })?
        .with_padding(None);
    Ok(Cow::Owned(plain))
}

/// Windows split into two disjoint sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeldOut {
    pub calibration: Vec<Vec<u32>>,
    pub evaluation: Vec<Vec<u32>>,
}

/// Sets `eval_count` windows aside for evaluation and leaves the rest for calibration,
/// so a quantized model is never scored on text it was calibrated on.
///
/// The evaluation windows are spread evenly over the list (the middle of each of
/// `eval_count` equal stretches), so both sets sample the whole corpus; the choice
/// depends only on the counts, and the order within each set is kept.
pub fn split_held_out(windows: Vec<Vec<u32>>, eval_count: usize) -> Result<HeldOut, TextError> {
    let n = windows.len();
    if eval_count > n {
        return Err(TextError::WindowOptions {
            field: "eval_count",
            reason: format!(
                "{eval_count} evaluation windows were asked for but there are only {n}; \
                 use more text, shorter windows or fewer evaluation windows"
            ),
        });
    }
    let mut held = HeldOut::default();
    let mut next_eval = 0;
    for (i, window) in windows.into_iter().enumerate() {
        // The j-th evaluation window is at floor((2j + 1) n / (2 eval_count)); these are
        // strictly increasing because n >= eval_count.
        let is_eval = next_eval < eval_count && i == (2 * next_eval + 1) * n / (2 * eval_count);
        if is_eval {
            held.evaluation.push(window);
            next_eval += 1;
        } else {
            held.calibration.push(window);
        }
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::pieces;

    #[test]
    fn pieces_cover_the_text_and_end_after_blank_lines() {
        let text = "aé b\n\nccc\n\nd\n\ne";
        let cut: Vec<&str> = pieces(text, 3).collect();
        assert_eq!(cut.concat(), text);
        assert_eq!(cut, vec!["aé b", "\n\nccc", "\n\nd", "\n\ne"]);
        assert_eq!(pieces("short", 100).collect::<Vec<_>>(), vec!["short"]);
        assert_eq!(pieces("", 100).count(), 0);
    }
}
