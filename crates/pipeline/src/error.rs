use std::path::PathBuf;

/// Why a job could not be planned or run. Messages name the option, file, tensor and
/// value involved, and what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] temper_core::Error),
    #[error(transparent)]
    Catalog(#[from] temper_catalog::CatalogError),
    #[error("option {option}={value} is not valid: expected {expected}")]
    Option {
        option: String,
        value: String,
        expected: String,
    },
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("tensor `{tensor}` in {path}: {reason}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error(transparent)]
    Options(#[from] temper_options::Error),
    #[error(transparent)]
    Runtime(#[from] temper_runtime::RuntimeError),
    #[error(transparent)]
    Text(#[from] temper_text::TextError),
    /// Boxed: the training errors carry the runtime's and the text crate's, which would make
    /// every `Result` of the pipeline larger.
    #[error(transparent)]
    Eagle(Box<temper_eagle::EagleError>),
    #[error("the job cannot run as planned: {0}")]
    Plan(String),
    #[error("cancelled; nothing was written to the output")]
    Cancelled,
}

impl From<Error> for temper_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Core(c) => c,
            other => temper_core::Error::Spec(other.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<temper_eagle::EagleError> for Error {
    fn from(e: temper_eagle::EagleError) -> Self {
        Error::Eagle(Box::new(e))
    }
}

/// Tensor arithmetic in the pipeline (AWQ's search) fails as the runtime's does.
impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Runtime(e.into())
    }
}
