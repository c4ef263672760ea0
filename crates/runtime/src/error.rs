//! Errors of the model runtime.

use std::path::PathBuf;

/// Everything that can go wrong loading or running a model.
///
/// Messages name the file, tensor or field and say what to do, so a user can act on the text
/// alone.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Checkpoint(#[from] temper_core::Error),
    #[error("{path}: field `{field}`: {reason}")]
    Config {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error("tensor `{tensor}` in {path}: {reason}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error("{path}: {detail}")]
    UnsupportedQuantization { path: PathBuf, detail: String },
    #[error(transparent)]
    Format(#[from] temper_format::FormatError),
    #[error(
        "the sequence needs {needed} positions but the context window holds {limit}: {advice}"
    )]
    ContextOverflow {
        needed: usize,
        limit: usize,
        advice: String,
    },
    #[error("invalid input: {0}")]
    Input(String),
    /// A progress callback asked the pass to stop (the job was cancelled).
    #[error("stopped before the pass finished")]
    Stopped,
    #[error(transparent)]
    Text(#[from] temper_text::TextError),
    #[error("kernel: {0}")]
    Kernel(#[from] temper_kernels::KernelError),
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

impl RuntimeError {
    pub(crate) fn tensor(
        path: impl Into<PathBuf>,
        tensor: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        RuntimeError::Tensor {
            path: path.into(),
            tensor: tensor.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn config(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        RuntimeError::Config {
            path: path.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}
