//! Errors of the matrix-level helpers.

/// Why a matrix-level helper refused its input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    /// A NaN or ±Inf in the source; the first one in row-major order is reported.
    #[error("non-finite value {value} at row {row}, column {col}")]
    NonFinite { row: usize, col: usize, value: f32 },
    /// Slice lengths or block sizes that do not fit the stated shape.
    #[error("bad shape: {detail}")]
    Shape { detail: String },
}

impl KernelError {
    pub(crate) fn shape(detail: impl Into<String>) -> Self {
        KernelError::Shape {
            detail: detail.into(),
        }
    }
}
