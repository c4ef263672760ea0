//! Training samples for a speculative-decoding draft model (EAGLE): conversations and
//! prompt/completion pairs as token ids with a loss mask that is true on the tokens the
//! target model writes (assistant replies, completions).
//!
//! Conversations are normalised as EAGLE's data preparation does (SpecForge
//! `specforge/data/parse.py`, official EAGLE `traineagle3`): a leading system message is
//! kept, other turns before the first user turn are dropped, and the rest must
//! alternate user/assistant; the conversation is cut at the first turn that does not.
//! The whole conversation is rendered with the target's chat template
//! (`add_generation_prompt = false`) and tokenized without the tokenizer's special-token
//! post-processing; assistant spans are found from renderings of the conversation's
//! prefixes, so any template whose prefixes render as prefixes works (ChatML, Llama 3,
//! ...), and the mask covers each reply *and* the template's end-of-turn text (ChatML:
//! `<|im_end|>\n`).

use std::ops::Range;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tokenizers::Tokenizer;

use super::windows::plain_tokenizer;
use super::{load_records, DataFormat, Document, RecordLocation, Skipped};
use crate::chat::{render_plain, ChatTemplate, Message};
use crate::TextError;

/// One training sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatSample {
    pub tokens: Vec<u32>,
    /// One per token: true on the tokens of assistant replies (with the template's
    /// end-of-turn text) or of a completion. The last token's is always false: it has no
    /// next token to predict.
    pub loss_mask: Vec<bool>,
    /// Where the record came from: `file:line` (JSON lines) or `file:byte N` (JSON array).
    pub origin: String,
}

impl ChatSample {
    /// How many tokens are training targets.
    pub fn masked(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m).count()
    }
}

/// How samples are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatSampleOptions {
    /// Samples of more tokens are dropped (EAGLE-3 drops them; it does not truncate).
    pub max_len: usize,
    /// Stop after this many samples (records are read in order); `None`: all of them.
    pub max_samples: Option<usize>,
}

/// A file that was read, and what was left out of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub format: DataFormat,
    /// Usable records read (conversations and prompt/completion pairs).
    pub records: usize,
    /// Unusable records: malformed, truncated, of an unknown shape, or `{"text"}` records
    /// in a file of conversations.
    pub skipped: Option<Skipped>,
}

/// The samples of a training data set, and what was left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatSamples {
    /// In the order of the files and of the records in each.
    pub samples: Vec<ChatSample>,
    /// Records (conversations and prompt/completion pairs) looked at.
    pub conversations_read: usize,
    /// Samples longer than `max_len` tokens, dropped.
    pub dropped_too_long: usize,
    /// Records without a training target: no assistant turn after normalisation, or no
    /// token left in the loss mask.
    pub dropped_no_assistant: usize,
    /// Turns before a conversation's first user turn (other than a leading system
    /// message), dropped.
    pub dropped_leading_turns: usize,
    /// Conversations cut at a turn that broke the user/assistant alternation.
    pub truncated_conversations: usize,
    /// The turns removed by those cuts.
    pub truncated_turns: usize,
    /// The files read, in order (files after the one that gave the last sample needed
    /// by `max_samples` are not read).
    pub files: Vec<SourceFile>,
}

impl ChatSamples {
    /// Tokens in all samples.
    pub fn tokens(&self) -> usize {
        self.samples.iter().map(|s| s.tokens.len()).sum()
    }

    /// Training targets in all samples.
    pub fn masked_tokens(&self) -> usize {
        self.samples.iter().map(ChatSample::masked).sum()
    }
}

const TRAINING_FORMATS: &str =
    "ShareGPT records `{\"conversations\": [{\"from\": \"human\"|\"gpt\"|\"system\", \
    \"value\": \"...\"}]}` (a JSON array or JSON lines), OpenAI chat JSON lines `{\"messages\": \
    [{\"role\", \"content\"}]}`, or OpenAI completions JSON lines `{\"prompt\", \"completion\"}`";

/// Records handed to the thread pool at once: large enough to keep both cores busy,
/// small enough that `max_samples` stops soon after it is reached.
const CHUNK: usize = 256;

/// Training samples from `files`, in order.
///
/// Each conversation is normalised (see the module's documentation), rendered with
/// `template` (or [`render_plain`] without one) and tokenized with
/// `add_special_tokens = false` (true for plain renderings and completions, which are
/// raw text); the loss mask is true on the tokens that *start* inside an assistant span
/// (reply plus end-of-turn text). A prompt/completion pair is the tokens of
/// `prompt + completion`, masked on the completion's. Samples longer than
/// `opts.max_len` and samples without a masked token are dropped and counted.
///
/// Errors name the file, record or option at fault: no file, a file that is not one of
/// the training formats, a template whose prefix renderings are not prefixes, no
/// sample with an assistant turn, or every sample too long.
pub fn chat_samples(
    files: &[PathBuf],
    template: Option<&ChatTemplate>,
    tokenizer: &Tokenizer,
    opts: &ChatSampleOptions,
) -> Result<ChatSamples, TextError> {
    if files.is_empty() {
        return Err(TextError::TrainingOptions {
            field: "files",
            reason: "no training data file was given".into(),
        });
    }
    if opts.max_len < 2 {
        return Err(TextError::TrainingOptions {
            field: "max_len",
            reason: format!(
                "{} tokens leaves no token to train on; use the target's context length \
                 (OPTION_MAX_MODEL_LEN)",
                opts.max_len
            ),
        });
    }
    if opts.max_samples == Some(0) {
        return Err(TextError::TrainingOptions {
            field: "max_samples",
            reason: "must be at least 1 (or unset for every sample)".into(),
        });
    }
    let tokenizer = plain_tokenizer(tokenizer)?;
    let wanted = opts.max_samples.unwrap_or(usize::MAX);
    let mut out = ChatSamples::default();
    let mut too_long: Option<(usize, usize)> = None;
    'files: for path in files {
        let records = load_records(path)?;
        let docs = records.documents;
        let format_name = match docs.format {
            DataFormat::PlainText => Some("plain text"),
            DataFormat::TextRecords => Some("`{\"text\"}` records"),
            _ => None,
        };
        if let Some(format) = format_name {
            return Err(TextError::UnsupportedTrainingFormat {
                path: path.clone(),
                format,
                expected: TRAINING_FORMATS,
            });
        }
        let mut file = SourceFile {
            path: path.clone(),
            format: docs.format,
            records: 0,
            skipped: docs.skipped.clone(),
        };
        let items: Vec<(&Document, RecordLocation)> =
            docs.documents.iter().zip(records.locations).collect();
        for chunk in items.chunks(CHUNK) {
            let outcomes: Vec<Result<Outcome, TextError>> = chunk
                .par_iter()
                .map(|(doc, at)| sample(doc, path, *at, template, &tokenizer, opts.max_len))
                .collect();
            for ((_, at), outcome) in chunk.iter().zip(outcomes) {
                let outcome = outcome?;
                if let Outcome::NotTrainingData = outcome {
                    skip_text_record(&mut file.skipped, *at);
                    continue;
                }
                file.records += 1;
                out.conversations_read += 1;
                match outcome {
                    Outcome::Sample { sample, cuts } => {
                        count_cuts(&mut out, cuts);
                        out.samples.push(sample);
                    }
                    Outcome::TooLong { len, cuts } => {
                        count_cuts(&mut out, cuts);
                        out.dropped_too_long += 1;
                        too_long = Some(match too_long {
                            None => (len, len),
                            Some((lo, hi)) => (lo.min(len), hi.max(len)),
                        });
                    }
                    Outcome::NoTarget { cuts } => {
                        count_cuts(&mut out, cuts);
                        out.dropped_no_assistant += 1;
                    }
                    Outcome::NotTrainingData => unreachable!("handled above"),
                }
                if out.samples.len() >= wanted {
                    out.files.push(file);
                    break 'files;
                }
            }
        }
        out.files.push(file);
    }
    if out.samples.is_empty() {
        let names = file_list(files);
        if let Some((shortest, longest)) = too_long {
            return Err(TextError::AllTooLong {
                files: names,
                max_len: opts.max_len,
                count: out.dropped_too_long,
                shortest,
                longest,
            });
        }
        let skipped: usize = out
            .files
            .iter()
            .filter_map(|f| f.skipped.as_ref())
            .map(|s| s.count)
            .sum();
        let mut detail = format!(
            "{} record(s) read, none with an assistant turn to train on (a conversation \
             needs a user turn followed by an assistant turn; turns before the first user \
             turn, other than a leading system message, are dropped)",
            out.conversations_read
        );
        if skipped > 0 {
            detail.push_str(&format!("; {skipped} unusable record(s) were skipped"));
        }
        if let Some(s) = out.files.iter().find_map(|f| {
            f.skipped
                .as_ref()
                .map(|s| format!("{}: {s}", f.path.display()))
        }) {
            detail.push_str(&format!(" ({s})"));
        }
        return Err(TextError::NoTrainingSamples {
            files: names,
            detail,
        });
    }
    Ok(out)
}

fn count_cuts(out: &mut ChatSamples, cuts: Cuts) {
    out.dropped_leading_turns += cuts.leading;
    if cuts.truncated > 0 {
        out.truncated_conversations += 1;
        out.truncated_turns += cuts.truncated;
    }
}

/// Counts a `{"text"}` record in a mixed file as skipped.
fn skip_text_record(skipped: &mut Option<Skipped>, at: RecordLocation) {
    let reason = "a `{\"text\"}` record: training data needs conversations or \
                  prompt/completion pairs, to know which tokens the model writes"
        .to_string();
    match skipped {
        Some(s) => {
            s.count += 1;
            let earlier = match (at, s.first_at) {
                (RecordLocation::Line(a), RecordLocation::Line(b))
                | (RecordLocation::Byte(a), RecordLocation::Byte(b)) => a < b,
                _ => false,
            };
            if earlier {
                s.first_at = at;
                s.first_reason = reason;
            }
        }
        None => {
            *skipped = Some(Skipped {
                count: 1,
                first_at: at,
                first_reason: reason,
                stopped_reading: false,
            })
        }
    }
}

/// `a, b, c` or `a, b, c and N more`.
fn file_list(files: &[PathBuf]) -> String {
    const SHOWN: usize = 3;
    let mut names: Vec<String> = files
        .iter()
        .take(SHOWN)
        .map(|f| f.display().to_string())
        .collect();
    if files.len() > SHOWN {
        names.push(format!("{} more file(s)", files.len() - SHOWN));
    }
    names.join(", ")
}

/// Turns normalisation removed from a conversation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cuts {
    /// Before the first user turn.
    leading: usize,
    /// From the first break of the alternation on.
    truncated: usize,
}

/// What one record gave.
enum Outcome {
    Sample {
        sample: ChatSample,
        cuts: Cuts,
    },
    TooLong {
        len: usize,
        cuts: Cuts,
    },
    NoTarget {
        cuts: Cuts,
    },
    /// A `{"text"}` record: no boundary between what the model reads and writes.
    NotTrainingData,
}

/// `file:line` or `file:byte N`.
fn origin(path: &Path, at: RecordLocation) -> String {
    match at {
        RecordLocation::Line(n) => format!("{}:{n}", path.display()),
        RecordLocation::Byte(n) => format!("{}:byte {n}", path.display()),
    }
}

fn sample(
    doc: &Document,
    path: &Path,
    at: RecordLocation,
    template: Option<&ChatTemplate>,
    tokenizer: &Tokenizer,
    max_len: usize,
) -> Result<Outcome, TextError> {
    let (text, spans, add_special, cuts) = match doc {
        Document::Text(_) => return Ok(Outcome::NotTrainingData),
        Document::Completion { prompt, completion } => {
            let text = format!("{prompt}{completion}");
            let span = prompt.len()..text.len();
            (text, vec![span], true, Cuts::default())
        }
        Document::Chat(messages) => {
            let (messages, cuts) = normalise(messages);
            if !messages.iter().any(|m| m.role == "assistant") {
                return Ok(Outcome::NoTarget { cuts });
            }
            let (text, spans) = match template {
                Some(template) => assistant_spans(&messages, |m, gen| {
                    template.render(m, gen).map_err(|e| in_record(e, path, at))
                })
                .map_err(|detail| TextError::TemplatePrefix {
                    path: template.path().to_path_buf(),
                    origin: origin(path, at),
                    detail,
                })??,
                None => assistant_spans(&messages, |m, gen| Ok(plain(m, gen)))
                    .expect("plain renderings of prefixes are prefixes")?,
            };
            (text, spans, template.is_none(), cuts)
        }
    };
    let encoding =
        tokenizer
            .encode(text.as_str(), add_special)
            .map_err(|e| TextError::Tokenizer {
                action: "encoding training data",
                reason: format!("{e} (record at {})", origin(path, at)),
            })?;
    let tokens = encoding.get_ids().to_vec();
    let mut loss_mask = Vec::with_capacity(tokens.len());
    let mut spans = spans.iter().peekable();
    for &(start, end) in encoding.get_offsets() {
        while spans.next_if(|s| s.end <= start).is_some() {}
        // Tokens the post-processor adds (BOS) have empty offsets: never targets.
        let inside = end > start && spans.peek().is_some_and(|s| s.contains(&start));
        loss_mask.push(inside);
    }
    if let Some(last) = loss_mask.last_mut() {
        *last = false;
    }
    if !loss_mask.contains(&true) {
        return Ok(Outcome::NoTarget { cuts });
    }
    if tokens.len() > max_len {
        return Ok(Outcome::TooLong {
            len: tokens.len(),
            cuts,
        });
    }
    Ok(Outcome::Sample {
        sample: ChatSample {
            tokens,
            loss_mask,
            origin: origin(path, at),
        },
        cuts,
    })
}

/// Adds the record's place to a template's refusal.
fn in_record(e: TextError, path: &Path, at: RecordLocation) -> TextError {
    match e {
        TextError::TemplateRaised { path: t, message } => TextError::TemplateRaised {
            path: t,
            message: format!("{message} (training record at {})", origin(path, at)),
        },
        TextError::TemplateRender { path: t, reason } => TextError::TemplateRender {
            path: t,
            reason: format!("{reason} (training record at {})", origin(path, at)),
        },
        other => other,
    }
}

/// The conversation as EAGLE trains on it, and the turns removed. A leading system
/// message is kept; other turns before the first user turn are dropped; the rest is cut
/// at the first break of the user/assistant alternation; a trailing user turn (nothing
/// to learn from it) is dropped without being counted.
fn normalise(messages: &[Message]) -> (Vec<Message>, Cuts) {
    let mut out = Vec::with_capacity(messages.len());
    let mut rest = messages;
    if let Some((first, tail)) = rest.split_first() {
        if first.role == "system" {
            out.push(first.clone());
            rest = tail;
        }
    }
    let start = rest
        .iter()
        .position(|m| m.role == "user")
        .unwrap_or(rest.len());
    let rest = &rest[start..];
    let mut cuts = Cuts {
        leading: start,
        truncated: 0,
    };
    for (j, m) in rest.iter().enumerate() {
        let want = if j % 2 == 0 { "user" } else { "assistant" };
        if m.role != want {
            cuts.truncated = rest.len() - j;
            break;
        }
        out.push(m.clone());
    }
    if out.last().is_some_and(|m| m.role == "user") {
        out.pop();
    }
    (out, cuts)
}

/// The plain rendering ([`render_plain`]). A generation prompt is `Assistant:` without
/// the space that follows it in a rendered turn: byte-level tokenizers attach that space
/// to the reply's first word, and the token must count as the reply's.
fn plain(messages: &[Message], add_generation_prompt: bool) -> String {
    let mut text = render_plain(messages);
    if add_generation_prompt {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str("Assistant:");
    }
    text
}

type Spans = (String, Vec<Range<usize>>);

/// The whole rendering of `messages` and the byte span of each assistant turn in it:
/// for assistant message `i`, A = render(messages[..i], generation prompt) and
/// B = render(messages[..=i]); B must start with A and the whole rendering with B, and
/// the span is `A.len()..B.len()` (the reply and the template's end-of-turn text).
///
/// The outer error says which rendering was not a prefix; the inner one is the
/// renderer's.
fn assistant_spans(
    messages: &[Message],
    render: impl Fn(&[Message], bool) -> Result<String, TextError>,
) -> Result<Result<Spans, TextError>, String> {
    let full = match render(messages, false) {
        Ok(full) => full,
        Err(e) => return Ok(Err(e)),
    };
    let mut spans = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let (a, b) = match (render(&messages[..i], true), render(&messages[..=i], false)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
        };
        if !b.starts_with(&a) {
            return Err(format!(
                "the messages before message {i} rendered with add_generation_prompt=true \
                 ({} bytes) are not a prefix of the messages up to it rendered without \
                 ({} bytes); they differ from byte {}",
                a.len(),
                b.len(),
                common_prefix(&a, &b)
            ));
        }
        if !full.starts_with(&b) {
            return Err(format!(
                "the messages up to message {i} ({} bytes) do not render as a prefix of the \
                 whole conversation ({} bytes); they differ from byte {}",
                b.len(),
                full.len(),
                common_prefix(&b, &full)
            ));
        }
        spans.push(a.len()..b.len());
    }
    Ok(Ok((full, spans)))
}

fn common_prefix(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: &str) -> Message {
        Message::new(role, role)
    }

    fn roles(messages: &[Message]) -> Vec<&str> {
        messages.iter().map(|m| m.role.as_str()).collect()
    }

    #[test]
    fn normalisation_keeps_a_leading_system_and_cuts_at_the_first_break() {
        let cuts = |leading, truncated| Cuts { leading, truncated };
        let (out, cut) = normalise(&[m("system"), m("assistant"), m("user"), m("assistant")]);
        assert_eq!(
            (roles(&out), cut),
            (vec!["system", "user", "assistant"], cuts(1, 0))
        );
        let (out, cut) = normalise(&[
            m("user"),
            m("assistant"),
            m("user"),
            m("user"),
            m("assistant"),
        ]);
        assert_eq!((roles(&out), cut), (vec!["user", "assistant"], cuts(0, 2)));
        let (out, cut) = normalise(&[m("assistant"), m("system"), m("user"), m("tool")]);
        assert_eq!((roles(&out), cut), (Vec::<&str>::new(), cuts(2, 1)));
        assert_eq!(normalise(&[]), (vec![], cuts(0, 0)));
    }

    #[test]
    fn plain_spans_cover_the_replies() {
        let messages = [
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello"),
            Message::new("user", "Bye"),
            Message::new("assistant", "Ciao"),
        ];
        let (text, spans) = assistant_spans(&messages, |m, g| Ok(plain(m, g)))
            .unwrap()
            .unwrap();
        assert_eq!(
            text,
            "User: Hi\nAssistant: Hello\nUser: Bye\nAssistant: Ciao"
        );
        let got: Vec<&str> = spans.iter().map(|s| &text[s.clone()]).collect();
        assert_eq!(got, vec![" Hello", " Ciao"]);
    }

    #[test]
    fn a_template_that_rewrites_history_is_refused() {
        // Like templates that drop earlier reasoning: the prefix renders differently.
        let messages = [
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello"),
            Message::new("user", "Bye"),
            Message::new("assistant", "Ciao"),
        ];
        let render = |m: &[Message], g: bool| {
            let mut s: String = m
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    if x.role == "assistant" && i + 1 < m.len() {
                        "[old]".to_string()
                    } else {
                        x.content.clone()
                    }
                })
                .collect();
            if g {
                s.push('>');
            }
            Ok(s)
        };
        let err = assistant_spans(&messages, render).unwrap_err();
        assert!(err.contains("message 1"), "{err}");
    }
}
