//! The one error type of tenancy-core: a small, stable set of kinds that servers map to
//! HTTP statuses and gRPC codes in one place each.

/// What kind of failure an [`Error`] is. Stable: servers and clients switch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The thing asked for does not exist (or is not visible to the calling tenant).
    NotFound,
    /// The thing being created exists already (a unique key is taken).
    AlreadyExists,
    /// The write lost a race or contradicts the current state (stale version, used token).
    Conflict,
    /// The input is malformed or out of range; nothing was changed.
    InvalidInput,
    /// The caller could not be authenticated.
    Unauthenticated,
    /// The caller is known but not allowed to do this.
    PermissionDenied,
    /// A quota or rate limit refuses the request.
    QuotaExceeded,
    /// A backend is unreachable or overloaded; retrying later may succeed.
    Unavailable,
    /// A bug or an unexpected backend failure.
    Internal,
}

/// An error of tenancy-core. Messages are lowercase, without a final period, with user
/// input in backticks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`ErrorKind::NotFound`].
    #[error("{0}")]
    NotFound(String),
    /// See [`ErrorKind::AlreadyExists`].
    #[error("{0}")]
    AlreadyExists(String),
    /// See [`ErrorKind::Conflict`].
    #[error("{0}")]
    Conflict(String),
    /// See [`ErrorKind::InvalidInput`]; `field` names the offending input.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The name of the offending field, as the API spells it.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// See [`ErrorKind::Unauthenticated`].
    #[error("{0}")]
    Unauthenticated(String),
    /// See [`ErrorKind::PermissionDenied`].
    #[error("{0}")]
    PermissionDenied(String),
    /// See [`ErrorKind::QuotaExceeded`].
    #[error("{0}")]
    QuotaExceeded(String),
    /// See [`ErrorKind::Unavailable`].
    #[error("{0}")]
    Unavailable(String),
    /// See [`ErrorKind::Internal`].
    #[error("{0}")]
    Internal(String),
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The kind of this error.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Self::Conflict(_) => ErrorKind::Conflict,
            Self::InvalidInput { .. } => ErrorKind::InvalidInput,
            Self::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Self::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Self::QuotaExceeded(_) => ErrorKind::QuotaExceeded,
            Self::Unavailable(_) => ErrorKind::Unavailable,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    /// An [`Error::InvalidInput`] naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The offending field of an [`Error::InvalidInput`], if this is one.
    #[must_use]
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::InvalidInput { field, .. } => Some(field),
            _ => None,
        }
    }

    /// An [`Error::NotFound`] for `what` with identifier `id`.
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self::NotFound(format!("{what} `{id}` not found"))
    }

    /// An [`Error::Conflict`] for a write that carried a stale version.
    pub fn stale(what: &str, id: impl std::fmt::Display, expected: i64) -> Self {
        Self::Conflict(format!(
            "{what} `{id}` was modified concurrently: version {expected} is stale"
        ))
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::RowNotFound => Self::NotFound("row not found".into()),
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::Unavailable(format!("database unavailable: {err}"))
            }
            other => Self::Internal(format!("database error: {other}")),
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::migrate::MigrateError> for Error {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Self::Internal(format!("database migration failed: {err}"))
    }
}
