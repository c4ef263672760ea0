use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, EagleError>;

#[derive(Debug, thiserror::Error)]
pub enum EagleError {
    #[error(transparent)]
    Runtime(#[from] temper_runtime::RuntimeError),
    #[error(transparent)]
    Text(#[from] temper_text::TextError),
    #[error("tensor arithmetic: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Checkpoint { path: PathBuf, what: String },
    #[error("{0}")]
    Input(String),
}

impl EagleError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EagleError::Io {
            path: path.into(),
            source,
        }
    }
}
