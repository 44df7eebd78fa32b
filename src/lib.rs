//! invited: answers Matrix federation invites for the users of one server.
//!
//! Data flows one way: the HTTP edge (`invited_http`) → [`routes`] → request authentication →
//! invite rules (`invited_matrix`) → signing → [`store`] → response. See ARCHITECTURE.md.

pub mod cli;
pub mod config;
pub mod error;
pub mod federation;
pub mod invite;
pub mod keys;
pub mod policy;
pub mod routes;
pub mod server;
pub mod store;
pub mod writer;

use std::fmt;

/// A fatal problem for a command or for start-up: one line for the operator, no backtrace.
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

impl From<store::StoreError> for Error {
    fn from(e: store::StoreError) -> Error {
        Error(e.to_string())
    }
}

impl From<config::ConfigError> for Error {
    fn from(e: config::ConfigError) -> Error {
        Error(e.0)
    }
}
