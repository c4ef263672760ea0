use std::path::PathBuf;

/// A `quantization_config` (or a sharded layout) this crate cannot read or write. Messages
/// name the file, field and value, and what is supported instead.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {detail}")]
    UnsupportedQuantization { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Layout { path: PathBuf, detail: String },
}

pub type Result<T, E = FormatError> = std::result::Result<T, E>;
