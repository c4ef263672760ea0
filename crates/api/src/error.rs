//! The errors the API answers with, named as SageMaker names them on the wire.

use serde_json::json;

/// An error in the shape botocore parses: `{"__type": "<name>", "message": "..."}`,
/// sent with HTTP 400 (500 for [`ApiError::InternalFailure`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request breaks the service model or one of SageMaker's rules.
    #[error("ValidationException: {0}")]
    ValidationException(String),
    /// A job of that name exists already.
    #[error("ResourceInUse: {0}")]
    ResourceInUse(String),
    /// No job of that name exists.
    #[error("ResourceNotFound: {0}")]
    ResourceNotFound(String),
    /// Too many jobs (running or stored).
    #[error("ResourceLimitExceeded: {0}")]
    ResourceLimitExceeded(String),
    /// `X-Amz-Target` named an operation this service does not have.
    #[error("UnknownOperationException: {0}")]
    UnknownOperation(String),
    /// A fault of the service itself, not of the request.
    #[error("InternalFailure: {0}")]
    InternalFailure(String),
    /// The request carries no AWS Signature V4 (`Authorization` header).
    #[error("MissingAuthenticationTokenException: {0}")]
    MissingAuthenticationToken(String),
    /// The signature does not match, is malformed or has expired.
    #[error("InvalidSignatureException: {0}")]
    InvalidSignature(String),
    /// The access key is not one the server knows.
    #[error("UnrecognizedClientException: {0}")]
    UnrecognizedClient(String),
    /// The request body is larger than the server accepts.
    #[error("RequestEntityTooLargeException: {0}")]
    RequestEntityTooLarge(String),
}

impl ApiError {
    /// The wire name, as sent in `__type` and raised by botocore as the error code.
    pub fn type_name(&self) -> &'static str {
        match self {
            ApiError::ValidationException(_) => "ValidationException",
            ApiError::ResourceInUse(_) => "ResourceInUse",
            ApiError::ResourceNotFound(_) => "ResourceNotFound",
            ApiError::ResourceLimitExceeded(_) => "ResourceLimitExceeded",
            ApiError::UnknownOperation(_) => "UnknownOperationException",
            ApiError::InternalFailure(_) => "InternalFailure",
            ApiError::MissingAuthenticationToken(_) => "MissingAuthenticationTokenException",
            ApiError::InvalidSignature(_) => "InvalidSignatureException",
            ApiError::UnrecognizedClient(_) => "UnrecognizedClientException",
            ApiError::RequestEntityTooLarge(_) => "RequestEntityTooLargeException",
        }
    }

    /// The human-readable message, without the type name.
    pub fn message(&self) -> &str {
        match self {
            ApiError::ValidationException(m)
            | ApiError::ResourceInUse(m)
            | ApiError::ResourceNotFound(m)
            | ApiError::ResourceLimitExceeded(m)
            | ApiError::UnknownOperation(m)
            | ApiError::InternalFailure(m)
            | ApiError::MissingAuthenticationToken(m)
            | ApiError::InvalidSignature(m)
            | ApiError::UnrecognizedClient(m)
            | ApiError::RequestEntityTooLarge(m) => m,
        }
    }

    /// The HTTP status the json protocol pairs with this error.
    pub fn http_status(&self) -> u16 {
        match self {
            ApiError::InternalFailure(_) => 500,
            // As AWS answers them: 403 for a request it cannot attribute to a key.
            ApiError::MissingAuthenticationToken(_)
            | ApiError::InvalidSignature(_)
            | ApiError::UnrecognizedClient(_) => 403,
            ApiError::RequestEntityTooLarge(_) => 413,
            _ => 400,
        }
    }

    /// The JSON body of the error response.
    pub fn to_body(&self) -> serde_json::Value {
        json!({ "__type": self.type_name(), "message": self.message() })
    }

    /// Reads an error body back (botocore accepts `message` or `Message`, and a
    /// `__type` qualified as `namespace#Name`); `None` when it is not one of ours.
    pub fn from_body(body: &[u8]) -> Option<ApiError> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let type_field = value.get("__type")?.as_str()?;
        let name = type_field.rsplit('#').next().unwrap_or(type_field);
        let message = value
            .get("message")
            .or_else(|| value.get("Message"))
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_string();
        Some(match name {
            "ValidationException" => ApiError::ValidationException(message),
            "ResourceInUse" => ApiError::ResourceInUse(message),
            "ResourceNotFound" => ApiError::ResourceNotFound(message),
            "ResourceLimitExceeded" => ApiError::ResourceLimitExceeded(message),
            "UnknownOperationException" => ApiError::UnknownOperation(message),
            "InternalFailure" => ApiError::InternalFailure(message),
            "MissingAuthenticationTokenException" => ApiError::MissingAuthenticationToken(message),
            "InvalidSignatureException" => ApiError::InvalidSignature(message),
            "UnrecognizedClientException" => ApiError::UnrecognizedClient(message),
            "RequestEntityTooLargeException" => ApiError::RequestEntityTooLarge(message),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trips_with_wire_names() {
        let e = ApiError::ResourceNotFound("Optimization job x not found".into());
        let body = e.to_body();
        assert_eq!(body["__type"], "ResourceNotFound");
        assert_eq!(body["message"], "Optimization job x not found");
        let bytes = serde_json::to_vec(&body).unwrap();
        assert_eq!(ApiError::from_body(&bytes), Some(e));
        let qualified = br#"{"__type":"com.amazonaws.sagemaker#ResourceInUse","Message":"m"}"#;
        assert_eq!(
            ApiError::from_body(qualified),
            Some(ApiError::ResourceInUse("m".into()))
        );
        assert_eq!(ApiError::from_body(br#"{"__type":"Other"}"#), None);
    }

    #[test]
    fn statuses_and_display() {
        assert_eq!(ApiError::ValidationException("v".into()).http_status(), 400);
        assert_eq!(ApiError::InternalFailure("i".into()).http_status(), 500);
        assert_eq!(
            ApiError::ResourceLimitExceeded("too many".into()).to_string(),
            "ResourceLimitExceeded: too many"
        );
    }
}
