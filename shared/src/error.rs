//! One error type for the library, and its mapping to the Lambda runtime's
//! `Diagnostic`.
//!
//! The `errorType` a caller sees is either `Retryable` (an exhausted throttle,
//! a 5xx, a timeout: running the same invocation again may succeed, so Lambda's
//! async retries and the on-failure destination are the right place for it) or
//! `NonRetryable` (a malformed event, bad configuration, a denied call: retrying
//! changes nothing).

use lambda_runtime::Diagnostic;

/// What went wrong in one AWS call, classified once at the adapter.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed: {}{message}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
pub struct AwsError {
    /// The API operation, e.g. `CreateLogGroup`.
    pub operation: &'static str,
    /// The service's error code, e.g. `ThrottlingException`, when it sent one.
    pub code: Option<String>,
    pub message: String,
    /// True when the SDK's own retries were exhausted on a transient failure.
    pub retryable: bool,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl AwsError {
    /// A response that succeeded but lacks what it must carry.
    pub fn unexpected(operation: &'static str, message: impl Into<String>) -> Self {
        AwsError { operation, code: None, message: message.into(), retryable: false, source: None }
    }

    pub fn code_is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration variable has a value we cannot use. Raised at cold start.
    #[error("invalid configuration: {variable}={value:?}: {problem}")]
    Config { variable: &'static str, value: String, problem: String },

    /// The invocation payload is not a shape we accept.
    #[error("malformed event: {0}")]
    MalformedEvent(String),

    /// A well-formed event that this function does not handle.
    #[error("unexpected event: {0}")]
    UnexpectedEvent(String),

    /// A request names something that does not exist (a cluster, a service).
    #[error("not found: {0}")]
    NotFound(String),

    #[error(transparent)]
    Aws(#[from] AwsError),

    /// A source of "in use" could not be read, so nothing was deleted. The
    /// message names the source, the region and the IAM permission.
    #[error("{message}")]
    InUseUnreadable { source_key: &'static str, region: String, permission: String, retryable: bool, message: String },

    /// Some items of an otherwise completed run failed; the report has details.
    #[error("{failed} of {total} item(s) failed; first: {first}")]
    Partial { failed: usize, total: usize, first: String, retryable: bool },
}

impl Error {
    pub fn malformed(detail: impl std::fmt::Display) -> Self {
        Error::MalformedEvent(detail.to_string())
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Aws(e) => e.retryable,
            Error::Partial { retryable, .. } => *retryable,
            Error::InUseUnreadable { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

impl From<Error> for Diagnostic {
    fn from(error: Error) -> Self {
        let error_type = if error.is_retryable() { "Retryable" } else { "NonRetryable" };
        Diagnostic { error_type: error_type.to_string(), error_message: error.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttled() -> AwsError {
        AwsError {
            operation: "PutRetentionPolicy",
            code: Some("ThrottlingException".into()),
            message: "Rate exceeded".into(),
            retryable: true,
            source: None,
        }
    }

    #[test]
    fn exhausted_throttle_is_retryable() {
        let d: Diagnostic = Error::from(throttled()).into();
        assert_eq!(d.error_type, "Retryable");
        assert_eq!(d.error_message, "PutRetentionPolicy failed: ThrottlingException: Rate exceeded");
    }

    #[test]
    fn bad_event_is_not_retryable() {
        let d: Diagnostic = Error::malformed("missing field `detail`").into();
        assert_eq!(d.error_type, "NonRetryable");
        assert_eq!(d.error_message, "malformed event: missing field `detail`");
    }

    #[test]
    fn config_error_names_variable_and_allowed_values() {
        let e = Error::Config { variable: "LOG_RETENTION_DAYS", value: "2".into(), problem: "allowed: 1, 3".into() };
        assert_eq!(e.to_string(), "invalid configuration: LOG_RETENTION_DAYS=\"2\": allowed: 1, 3");
    }
}
