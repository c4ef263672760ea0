use std::path::PathBuf;

/// Everything that can go wrong while importing a GGUF file.
///
/// Every variant names the GGUF file and, where there is one, the metadata key or
/// tensor at fault, so the message alone tells a user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open GGUF file {path}: {source}; check the path and its permissions")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a readable GGUF file: {reason}. If it was downloaded it may be incomplete or \
         corrupt: download it again"
    )]
    Parse { path: PathBuf, reason: String },
    #[error("{path}: metadata key `{key}`: {reason}")]
    Metadata {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("{path}: tensor `{tensor}`: {reason}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error(
        "{path}: unsupported architecture `{architecture}` (metadata `general.architecture`); \
         GGUF import supports {supported}"
    )]
    UnsupportedArchitecture {
        path: PathBuf,
        architecture: String,
        supported: &'static str,
    },
    #[error("{path}: tokenizer: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error(transparent)]
    Core(#[from] temper_core::Error),
}

impl Error {
    pub(crate) fn metadata(path: impl Into<PathBuf>, key: &str, reason: impl Into<String>) -> Self {
        Error::Metadata {
            path: path.into(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn tensor(
        path: impl Into<PathBuf>,
        tensor: &str,
        reason: impl Into<String>,
    ) -> Self {
        Error::Tensor {
            path: path.into(),
            tensor: tensor.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn tokenizer(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Tokenizer {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
