use std::path::PathBuf;

/// Everything that can go wrong in `temper-text`.
///
/// Each message names the file (and, where there is one, the field or position) at fault
/// and says what would fix it, so a CLI can print it as it is.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("cannot read {path}; check the path and its permissions")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },

    #[error(
        "{path}: the chat template does not compile: {reason}. Fix the template (it is Jinja as \
         used by Hugging Face transformers) or remove it to use the plain fallback"
    )]
    TemplateSyntax { path: PathBuf, reason: String },

    #[error(
        "the chat template from {path} refused the conversation: {message}. Change the messages \
         (roles, order) to what this model's template accepts"
    )]
    TemplateRaised { path: PathBuf, message: String },

    #[error("rendering the chat template from {path} failed: {reason}")]
    TemplateRender { path: PathBuf, reason: String },

    #[error(
        "cannot load tokenizer {path}: {reason}; the file must be a Hugging Face tokenizer.json"
    )]
    TokenizerLoad { path: PathBuf, reason: String },

    #[error("tokenizer failed while {action}: {reason}")]
    Tokenizer {
        action: &'static str,
        reason: String,
    },

    #[error("invalid sampling parameter `{field}` = {value}: expected {expected}")]
    Sampling {
        field: &'static str,
        value: String,
        expected: &'static str,
    },

    #[error(
        "{path}: invalid UTF-8 at byte offset {offset}; convert the file to UTF-8 (for example \
         with iconv) or remove the damaged bytes"
    )]
    InvalidUtf8 { path: PathBuf, offset: usize },

    #[error("{path} is empty; expected {expected}")]
    EmptyData {
        path: PathBuf,
        expected: &'static str,
    },

    #[error("{path}: no usable record ({detail}); expected {expected}")]
    NoRecords {
        path: PathBuf,
        detail: String,
        expected: &'static str,
    },

    #[error(
        "not enough text for one window: the documents gave {have} tokens but a window needs \
         {needed}; use more text or a shorter window"
    )]
    TooFewTokens { have: usize, needed: usize },

    #[error("invalid window option `{field}`: {reason}")]
    WindowOptions { field: &'static str, reason: String },

    #[error("no training data files under {path}: {detail}")]
    NoTrainingFiles { path: PathBuf, detail: String },

    #[error(
        "training data manifest {manifest}: {reason}. A manifest is a JSON list \
         [{{\"prefix\": \"/abs/dir/\"}}, \"relative/key1\", \"relative/key2\", ...] \
         (SageMaker's ManifestFile format)"
    )]
    Manifest { manifest: String, reason: String },

    #[error(
        "training data manifest {manifest}: entry [{index}], key `{key}` ({target}): {reason}"
    )]
    ManifestKey {
        manifest: String,
        /// The entry's index in the manifest's JSON list (the prefix is entry 0).
        index: usize,
        key: String,
        /// Where the key leads: prefix + key.
        target: String,
        reason: String,
    },

    #[error(
        "{path} is {format}, which is not training data for a draft model; expected \
         {expected}"
    )]
    UnsupportedTrainingFormat {
        path: PathBuf,
        format: &'static str,
        expected: &'static str,
    },

    #[error("invalid training data option `{field}`: {reason}")]
    TrainingOptions { field: &'static str, reason: String },

    #[error(
        "the chat template from {path} cannot locate the assistant turns of the conversation \
         at {origin}: {detail}; the loss mask needs a template whose renderings of a \
         conversation's prefixes are prefixes of its whole rendering"
    )]
    TemplatePrefix {
        path: PathBuf,
        origin: String,
        detail: String,
    },

    #[error("no training sample in {files}: {detail}")]
    NoTrainingSamples { files: String, detail: String },

    #[error(
        "every sample of {files} is longer than the maximum length of {max_len} tokens: \
         {count} sample(s) of {shortest} to {longest} tokens were dropped (longer samples are \
         dropped, not truncated); raise OPTION_MAX_MODEL_LEN to at least {shortest}, or use \
         shorter conversations"
    )]
    AllTooLong {
        files: String,
        max_len: usize,
        count: usize,
        shortest: usize,
        longest: usize,
    },
}

impl TextError {
    pub(crate) fn config(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        TextError::Config {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn read(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TextError::Read {
            path: path.into(),
            source,
        }
    }
}
