//! Text for perplexity evaluation and quantization calibration: dataset files in the
//! formats users have ([`load_documents`]) and fixed-length token windows cut from them
//! ([`token_windows`], [`split_held_out`]). Training data for a speculative-decoding
//! draft model: the files a source names ([`training_files`]) and loss-masked samples
//! made of their conversations ([`chat_samples`]).

mod chat_samples;
mod records;
mod sources;
mod windows;

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use chat_samples::{chat_samples, ChatSample, ChatSampleOptions, ChatSamples, SourceFile};
pub use sources::{training_files, Manifest, SourceKind};
pub use windows::{split_held_out, token_windows, HeldOut, WindowOptions};

use crate::chat::{render_plain, ChatTemplate, Message};
use crate::TextError;

/// One document: running text, a conversation to render with the model's chat
/// template ([`Document::render`]), or an OpenAI completions record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Document {
    Text(String),
    Chat(Vec<Message>),
    /// `{"prompt", "completion"}`: as model input it is the text `prompt + completion`
    /// ([`Document::render`]); the boundary is kept for training, where only the
    /// completion is a target.
    Completion {
        prompt: String,
        completion: String,
    },
}

impl Document {
    /// The document as model input text, and whether the tokenizer should add its
    /// special tokens when encoding it: not for text from a chat template, which
    /// writes them itself.
    ///
    /// Conversations use `template` when given, else [`render_plain`].
    pub fn render(&self, template: Option<&ChatTemplate>) -> Result<(String, bool), TextError> {
        Ok(match (self, template) {
            (Document::Text(text), _) => (text.clone(), true),
            (Document::Completion { prompt, completion }, _) => {
                (format!("{prompt}{completion}"), true)
            }
            (Document::Chat(messages), Some(template)) => {
                (template.render(messages, false)?, false)
            }
            (Document::Chat(messages), None) => (render_plain(messages), true),
        })
    }
}

/// The format a file was read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFormat {
    /// The whole file is one document.
    PlainText,
    /// `{"conversations": [{"from", "value"}]}` records, as a JSON array or JSON lines.
    ShareGpt,
    /// `{"messages": [{"role", "content"}]}` JSON lines.
    OpenAiChat,
    /// `{"prompt", "completion"}` JSON lines ([`Document::Completion`]).
    OpenAiCompletions,
    /// `{"text"}` records.
    TextRecords,
    /// Records of more than one of the JSON formats.
    Mixed,
}

/// Where a record starts: a line (JSON lines, 1-based) or a byte offset (JSON array).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordLocation {
    Line(usize),
    Byte(usize),
}

impl fmt::Display for RecordLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordLocation::Line(n) => write!(f, "line {n}"),
            RecordLocation::Byte(n) => write!(f, "byte offset {n}"),
        }
    }
}

/// Records that were left out of a file, so a caller can warn about them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub count: usize,
    /// Where the first skipped record starts, and why it was skipped.
    pub first_at: RecordLocation,
    pub first_reason: String,
    /// Reading stopped at the first skipped record: a JSON array that is truncated or
    /// broken cannot be resynchronised, so nothing after it was read.
    pub stopped_reading: bool,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "skipped {} unusable record(s); the first starts at {}: {}",
            self.count, self.first_at, self.first_reason
        )?;
        if self.stopped_reading {
            f.write_str(" (reading stopped there)")?;
        }
        Ok(())
    }
}

/// The documents of a file.
#[derive(Clone, Debug)]
pub struct Documents {
    pub path: PathBuf,
    pub format: DataFormat,
    pub documents: Vec<Document>,
    /// `None` when every record was usable.
    pub skipped: Option<Skipped>,
}

impl Documents {
    /// How many documents were read.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// How many records were skipped as unusable.
    pub fn skipped_count(&self) -> usize {
        self.skipped.as_ref().map_or(0, |s| s.count)
    }
}

impl AsRef<[Document]> for Documents {
    fn as_ref(&self) -> &[Document] {
        &self.documents
    }
}

const EXPECTED: &str = "plain text (the whole file is one document), a ShareGPT JSON array \
    `[{\"conversations\": [{\"from\": \"human\", \"value\": \"...\"}]}]`, or JSON lines \
    (one object per line) of ShareGPT records, OpenAI chat `{\"messages\": [{\"role\", \
    \"content\"}]}`, OpenAI completions `{\"prompt\", \"completion\"}` or `{\"text\"}`";

/// Reads a dataset file. The format is chosen by extension and content: `.txt`, `.md`
/// and anything not starting with `[` or `{` is plain text (one document); a `[` starts
/// a JSON array of records, a `{` JSON lines.
///
/// Unusable records (malformed, truncated, of an unknown shape) are skipped and
/// reported in [`Documents::skipped`]; files that users download are often cut off in
/// the middle of the last record. A file without any usable record is an error.
pub fn load_documents(path: &Path) -> Result<Documents, TextError> {
    load_records(path).map(|records| records.documents)
}

/// The documents of a file with where each record starts, so that what is made of a
/// record can name it.
#[derive(Clone, Debug)]
pub struct Records {
    pub documents: Documents,
    /// Where each document's record starts, one per document: `Line(1)` for a plain
    /// text file.
    pub locations: Vec<RecordLocation>,
}

/// [`load_documents`], also saying where each record starts in the file.
pub fn load_records(path: &Path) -> Result<Records, TextError> {
    let bytes = std::fs::read(path).map_err(|e| TextError::read(path, e))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| TextError::InvalidUtf8 {
        path: path.to_path_buf(),
        offset: e.valid_up_to(),
    })?;
    let bom = if text.starts_with('\u{FEFF}') { 3 } else { 0 };
    let text = &text[bom..];
    let Some(first) = text.trim_start().chars().next() else {
        return Err(TextError::EmptyData {
            path: path.to_path_buf(),
            expected: EXPECTED,
        });
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let json_ext = matches!(ext.as_str(), "json" | "jsonl" | "ndjson");
    let parsed = match (ext.as_str(), first) {
        ("txt" | "text" | "md", _) => None,
        (_, '[') => Some(parse_array(text, bom)),
        (_, '{') => Some(parse_lines(text)),
        _ if json_ext => {
            return Err(TextError::NoRecords {
                path: path.to_path_buf(),
                detail: format!("the file starts with {first:?}, not `[` or `{{`"),
                expected: EXPECTED,
            })
        }
        _ => None,
    };
    let plain = |text: &str| Records {
        documents: Documents {
            path: path.to_path_buf(),
            format: DataFormat::PlainText,
            documents: vec![Document::Text(text.to_string())],
            skipped: None,
        },
        locations: vec![RecordLocation::Line(1)],
    };
    let Some(parsed) = parsed else {
        return Ok(plain(text));
    };
    if parsed.documents.is_empty() {
        // Not JSON at all, and not claiming to be: text that happens to start with a bracket.
        if !json_ext && parsed.first_is_syntax_error {
            return Ok(plain(text));
        }
        let detail = match &parsed.skipped {
            Some(s) => format!(
                "{} record(s), none usable; the first starts at {}: {}",
                s.count, s.first_at, s.first_reason
            ),
            None => "the JSON array is empty".to_string(),
        };
        return Err(TextError::NoRecords {
            path: path.to_path_buf(),
            detail,
            expected: EXPECTED,
        });
    }
    Ok(Records {
        documents: Documents {
            path: path.to_path_buf(),
            format: parsed.format.unwrap_or(DataFormat::Mixed),
            documents: parsed.documents,
            skipped: parsed.skipped,
        },
        locations: parsed.locations,
    })
}

/// Records read from a JSON file.
#[derive(Default)]
struct Parsed {
    documents: Vec<Document>,
    /// Where each document's record starts.
    locations: Vec<RecordLocation>,
    /// The common format of the records; `None` if there were none, or `Mixed`.
    format: Option<DataFormat>,
    skipped: Option<Skipped>,
    /// The first record was not even JSON syntax.
    first_is_syntax_error: bool,
}

impl Parsed {
    fn record(&mut self, value: &Value, at: RecordLocation) {
        match records::interpret(value) {
            Ok((doc, format)) => {
                self.documents.push(doc);
                self.locations.push(at);
                self.format = match self.format {
                    None => Some(format),
                    Some(f) if f == format => Some(f),
                    Some(_) => Some(DataFormat::Mixed),
                };
            }
            Err(reason) => self.skip(at, reason, false),
        }
    }

    fn skip(&mut self, at: RecordLocation, reason: String, stops: bool) {
        match &mut self.skipped {
            Some(s) => {
                s.count += 1;
                s.stopped_reading |= stops;
            }
            None => {
                self.skipped = Some(Skipped {
                    count: 1,
                    first_at: at,
                    first_reason: reason,
                    stopped_reading: stops,
                })
            }
        }
    }

    fn syntax_error(&mut self, at: RecordLocation, e: &serde_json::Error, stops: bool) {
        if self.documents.is_empty() && self.skipped.is_none() {
            self.first_is_syntax_error = true;
        }
        let reason = if e.is_eof() {
            format!("the file ends inside this record, it is truncated ({e})")
        } else {
            format!("not valid JSON ({e}, counted from the record's start)")
        };
        self.skip(at, reason, stops);
    }
}

/// A JSON array of records, read one element at a time so that a truncated or broken
/// file still yields the records before the damage. `base` is the byte offset of `text`
/// in the file.
fn parse_array(text: &str, base: usize) -> Parsed {
    let bytes = text.as_bytes();
    let skip_ws = |mut pos: usize| {
        while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        pos
    };
    let mut parsed = Parsed::default();
    // Past the opening bracket (the format check skipped Unicode whitespace to find it).
    let mut pos = text.len() - text.trim_start().len() + 1;
    loop {
        pos = skip_ws(pos);
        if pos >= bytes.len() || bytes[pos] == b']' {
            break;
        }
        let at = RecordLocation::Byte(base + pos);
        let mut stream = serde_json::Deserializer::from_str(&text[pos..]).into_iter::<Value>();
        match stream.next() {
            Some(Ok(value)) => {
                pos += stream.byte_offset();
                parsed.record(&value, at);
            }
            Some(Err(e)) => {
                parsed.syntax_error(at, &e, true);
                break;
            }
            None => break,
        }
        pos = skip_ws(pos);
        match bytes.get(pos) {
            Some(b',') => pos += 1,
            Some(b']') => {
                // Anything after the array would otherwise be dropped without a word.
                let rest = text[pos + 1..].trim();
                if !rest.is_empty() {
                    let at = RecordLocation::Byte(base + pos + 1);
                    let reason = format!(
                        "{} bytes follow the closing `]` of the array; they were not read",
                        rest.len()
                    );
                    parsed.skip(at, reason, true);
                }
                break;
            }
            None => break,
            Some(&other) => {
                let at = RecordLocation::Byte(base + pos);
                let reason = format!(
                    "expected `,` or `]` between records, found {:?}",
                    char::from(other)
                );
                parsed.skip(at, reason, true);
                break;
            }
        }
    }
    parsed
}

/// JSON lines: one record per non-blank line; a bad line is skipped on its own.
fn parse_lines(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = RecordLocation::Line(i + 1);
        match serde_json::from_str::<Value>(line) {
            Ok(value) => parsed.record(&value, at),
            Err(e) => parsed.syntax_error(at, &e, false),
        }
    }
    parsed
}
