//! Errors of the admin-API client.

use thiserror::Error;

/// An admin operation failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    /// The server could not be reached.
    #[error("{0}")]
    Connect(String),
    /// The server's answer was not understood.
    #[error("{0}")]
    Protocol(String),
    /// The user's input is unusable.
    #[error("{0}")]
    Input(String),
    /// A local file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}
