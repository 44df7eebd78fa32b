//! The error of a command or of start-up: one line for the operator, no backtrace.
//!
//! Request handling never returns this (it answers [`crate::error::MatrixError`]); it is for
//! problems that stop `invited` itself: a bad config, an unreadable key, a database that
//! cannot be opened.

use std::fmt;

use crate::config::ConfigError;
use crate::store::StoreError;

/// A fatal problem for a command or for start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl Error {
    pub fn new(message: impl Into<String>) -> Error {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        Error(e.to_string())
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error(e.0)
    }
}
