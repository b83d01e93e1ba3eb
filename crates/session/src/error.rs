//! [`SessionError`]: everything the session manager can refuse or fail with. Each variant has a
//! stable code ([`SessionError::code`]) that the HTTP API puts in `{"error":{"code":..}}`.

/// Why a session-manager operation failed. Messages are safe to show to an operator: they never
/// contain passwords, tokens or phone numbers.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Input that fails validation; `field` names the offending field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// No such record.
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: String },
    /// The change conflicts with stored data (duplicate name, overlapping room use).
    #[error("{0}")]
    Conflict(String),
    /// Wrong credentials, or no (valid) session / API token.
    #[error("{0}")]
    Unauthorized(String),
    /// Too many failed logins; try again after `retry_after_secs`.
    #[error("too many failed logins; try again in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// Too many logins are being checked at once (the password-hash pool is full); try again
    /// after `retry_after_secs`.
    #[error("the server is busy checking other logins; try again in {retry_after_secs} s")]
    Busy { retry_after_secs: u64 },
    /// The operator account is disabled.
    #[error("{0}")]
    Forbidden(String),
    /// The storage failed (I/O, corruption, ...).
    #[error("storage error: {0}")]
    Storage(String),
}

impl SessionError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        SessionError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        SessionError::NotFound {
            what,
            id: id.to_string(),
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            SessionError::Invalid { .. } => "invalid_input",
            SessionError::NotFound { .. } => "not_found",
            SessionError::Conflict(_) => "conflict",
            SessionError::Unauthorized(_) => "unauthorized",
            SessionError::RateLimited { .. } => "rate_limited",
            SessionError::Busy { .. } => "busy",
            SessionError::Forbidden(_) => "forbidden",
            SessionError::Storage(_) => "internal",
        }
    }
}

impl From<sqlx::Error> for SessionError {
    fn from(e: sqlx::Error) -> Self {
        SessionError::Storage(e.to_string())
    }
}

pub type Result<T, E = SessionError> = std::result::Result<T, E>;
