//! invited: answers Matrix federation invites for the users of one server.
//!
//! Data flows one way: the HTTP edge (`invited_http`) → [`routes`] → request authentication →
//! invite rules (`invited_matrix`) → signing → [`store`] → response. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod error;
pub mod fatal;
pub mod federation;
pub mod invite;
pub mod keys;
pub mod policy;
pub mod routes;
pub mod server;
pub mod store;
pub mod time;
pub mod writer;

pub use fatal::Error;
