/// Why a job's options or target cannot work. Messages name the option and value (the
/// `OPTION_*` names the job API and the CLI share), and what would work instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("option {option}={value} is not valid: expected {expected}")]
    Option {
        option: String,
        value: String,
        expected: String,
    },
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("the job cannot run on its target: {0}")]
    Target(String),
    #[error(transparent)]
    Catalog(#[from] temper_catalog::CatalogError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid(option: &str, value: &str, expected: &str) -> Error {
    Error::Option {
        option: option.to_string(),
        value: value.to_string(),
        expected: expected.to_string(),
    }
}
