use std::path::PathBuf;

/// Everything that can go wrong while reading a checkpoint or writing an artifact.
///
/// Every variant names the file (and tensor or field, where there is one) so that the
/// message alone tells a user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: field `{field}`: {reason}")]
    Config {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error("model directory {dir}: {reason}")]
    ModelDir { dir: PathBuf, reason: String },
    #[error("tensor `{tensor}` in {path}: {reason}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error(
        "unsupported architecture {architecture} (model_type `{model_type}`) in {path}: {reason}"
    )]
    UnsupportedArchitecture {
        path: PathBuf,
        architecture: String,
        model_type: String,
        reason: String,
    },
    #[error("output {path} already exists and is never replaced unless the job asks for it; choose another output directory (optimize: add --overwrite to replace it)")]
    OutputExists { path: PathBuf },
    #[error("invalid job specification: {0}")]
    Spec(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn tensor(
        path: impl Into<PathBuf>,
        tensor: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Tensor {
            path: path.into(),
            tensor: tensor.into(),
            reason: reason.into(),
        }
    }
}

/// Adds the path to an `io::Result`.
pub trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
