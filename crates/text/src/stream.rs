//! Turning generated tokens into printable text as they arrive.
//!
//! Decoding token by token and concatenating is wrong: byte-level BPE tokens can end in
//! the middle of a UTF-8 character, and SentencePiece decoders treat the first token
//! of a sequence specially (leading space). [`TextStream`] decodes a short window of
//! recent tokens and emits only what became stable.

use tokenizers::Tokenizer;

use crate::tokenizer::decode;
use crate::TextError;

/// Incremental detokenizer: push tokens, get the text they completed.
///
/// The concatenation of everything [`push`](Self::push) and [`finish`](Self::finish)
/// return equals decoding all the tokens at once (after the context, with
/// [`with_context`](Self::with_context)).
#[derive(Debug)]
pub struct TextStream<'t> {
    tokenizer: &'t Tokenizer,
    skip_special_tokens: bool,
    ids: Vec<u32>,
    /// Leading tokens of `ids` that are context (the end of the prompt), never printed.
    context: usize,
    /// Start of the decoding window: tokens before it are printed and never re-decoded.
    prefix_offset: usize,
    /// End of what has been printed; `ids[prefix_offset..read_offset]` is decoded again
    /// only as context, so the window decodes like the whole sequence would.
    read_offset: usize,
}

impl<'t> TextStream<'t> {
    /// A stream that leaves special tokens (such as `<|im_end|>`) out of the text.
    pub fn new(tokenizer: &'t Tokenizer) -> Self {
        TextStream {
            tokenizer,
            skip_special_tokens: true,
            ids: Vec::new(),
            context: 0,
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    /// Decodes the generated tokens after `context` (the last few prompt tokens), as if
    /// they were printed already. SentencePiece decoders drop the leading space of a
    /// sequence's first token; with the prompt's tail in front, the first generated word
    /// keeps its space (" Paris" after "The capital of France is"), as in a whole decode.
    pub fn with_context(mut self, context: &[u32]) -> Self {
        self.ids = context.to_vec();
        self.context = context.len();
        self.prefix_offset = 0;
        self.read_offset = context.len();
        self
    }

    /// Whether special tokens are left out of the text (the default) or printed.
    pub fn skip_special_tokens(mut self, skip: bool) -> Self {
        self.skip_special_tokens = skip;
        self
    }

    /// Adds a token; returns the text it completed, possibly empty.
    ///
    /// Text is held back while the decoded window ends in U+FFFD, the replacement
    /// character a decoder produces for a character whose remaining bytes are in tokens
    /// not yet generated.
    pub fn push(&mut self, token: u32) -> Result<String, TextError> {
        self.ids.push(token);
        let prefix = self.decode(self.prefix_offset, self.read_offset)?;
        let text = self.decode(self.prefix_offset, self.ids.len())?;
        if text.len() > prefix.len() && !text.ends_with('\u{FFFD}') {
            let new = suffix_after(&text, &prefix);
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(new)
        } else {
            Ok(String::new())
        }
    }

    /// The text still held back (an incomplete character at the end of generation is
    /// printed as U+FFFD, as a full decode would).
    pub fn finish(&mut self) -> Result<String, TextError> {
        let prefix = self.decode(self.prefix_offset, self.read_offset)?;
        let text = self.decode(self.prefix_offset, self.ids.len())?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(suffix_after(&text, &prefix))
    }

    /// All tokens pushed so far (without the context).
    pub fn tokens(&self) -> &[u32] {
        &self.ids[self.context..]
    }

    fn decode(&self, start: usize, end: usize) -> Result<String, TextError> {
        if start == end {
            return Ok(String::new());
        }
        decode(
            self.tokenizer,
            &self.ids[start..end],
            self.skip_special_tokens,
        )
    }
}

/// `text` minus its leading `prefix`. Decoders that normalise text (cleanup of spaces
/// before punctuation) can change the end of `prefix` once more tokens follow; then the
/// common part is skipped and the rest is printed.
fn suffix_after(text: &str, prefix: &str) -> String {
    if let Some(rest) = text.strip_prefix(prefix) {
        return rest.to_string();
    }
    let common: usize = text
        .char_indices()
        .zip(prefix.chars())
        .take_while(|((_, a), b)| a == b)
        .last()
        .map_or(0, |((i, a), _)| i + a.len_utf8());
    text[common..].to_string()
}

/// Stop strings: text is printed up to, and not including, the first stop string.
///
/// Feed it the deltas of a [`TextStream`]. Any tail of the text that could be the start
/// of a stop string is held back until the next delta decides it, so a stop string
/// split over several tokens is still caught and never half printed.
#[derive(Clone, Debug)]
pub struct StopStrings {
    stops: Vec<String>,
    pending: String,
    stopped: bool,
}

/// What [`StopStrings::push`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopOutput {
    /// Text safe to print now.
    pub text: String,
    /// A stop string was reached: generation should end; `text` ends right before it.
    pub stopped: bool,
}

impl StopStrings {
    /// Empty strings are ignored (they would stop before the first character).
    pub fn new(stops: Vec<String>) -> Self {
        StopStrings {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
            stopped: false,
        }
    }

    /// Adds generated text. After a stop, everything is discarded.
    pub fn push(&mut self, delta: &str) -> StopOutput {
        if self.stopped {
            return StopOutput {
                text: String::new(),
                stopped: true,
            };
        }
        self.pending.push_str(delta);
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = first_stop {
            self.pending.truncate(at);
            self.stopped = true;
            return StopOutput {
                text: std::mem::take(&mut self.pending),
                stopped: true,
            };
        }
        let hold = self
            .stops
            .iter()
            .map(|s| partial_match_len(&self.pending, s))
            .max()
            .unwrap_or(0);
        let rest = self.pending.split_off(self.pending.len() - hold);
        StopOutput {
            text: std::mem::replace(&mut self.pending, rest),
            stopped: false,
        }
    }

    /// At the end of generation: the held-back text (it did not become a stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Whether a stop string has been reached.
    pub fn stopped(&self) -> bool {
        self.stopped
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `stop`.
fn partial_match_len(text: &str, stop: &str) -> usize {
    let longest = (stop.len() - 1).min(text.len());
    (1..=longest)
        .rev()
        .find(|&n| stop.is_char_boundary(n) && text.ends_with(&stop[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{partial_match_len, suffix_after};

    #[test]
    fn partial_matches() {
        assert_eq!(partial_match_len("hello <|e", "<|end|>"), 3);
        assert_eq!(partial_match_len("hello", "<|end|>"), 0);
        assert_eq!(partial_match_len("ab", "abc"), 2);
        assert_eq!(partial_match_len("é", "éa"), 2);
    }

    #[test]
    fn suffix_after_changed_prefix() {
        assert_eq!(suffix_after("hello world", "hello"), " world");
        assert_eq!(suffix_after("a,b", "a ,"), ",b");
    }
}
