//! Why sender authentication could not be set up: a bad `[auth]` value or no usable resolver.
//!
//! Checks themselves never fail: a DNS timeout or a malformed record becomes a `temperror` or
//! `permerror` result in the report, as the RFCs define, never an error of this type.

/// Why [`SenderAuth`](super::SenderAuth) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A key of `[auth]` has a value that cannot be used.
    #[error("auth.{key} = {value:?}: expected {expected}")]
    Value {
        /// The key within `[auth]`.
        key: &'static str,
        /// The value found.
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
    /// No resolver is configured and the system's (/etc/resolv.conf) cannot be read.
    #[error("sender authentication resolver: {0}")]
    Resolver(String),
}

/// A [`AuthError::Value`] for `key`.
pub(super) fn bad_value(
    key: &'static str,
    value: impl ToString,
    expected: &'static str,
) -> AuthError {
    AuthError::Value {
        key,
        value: value.to_string(),
        expected,
    }
}
