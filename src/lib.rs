//! invited: answers Matrix federation invites for the users of one server.
//!
//! A request goes from the HTTP edge (`invited_http`) to [`routes`], then to a handler such
//! as [`invite`], which calls on [`federation`] (request authentication, others' keys),
//! [`policy`], the pure rules of `invited_matrix`, and the [`writer`]; the [`store`] is the
//! service all of them read and write through. ARCHITECTURE.md has the map and the rules.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod disk;
pub mod error;
pub mod fatal;
pub mod federation;
pub mod invite;
pub mod json_memory;
pub mod keys;
pub mod maintenance;
pub mod metrics;
pub mod outbox;
pub mod policy;
pub mod rate_limit;
pub mod routes;
pub mod server;
pub mod store;
pub mod text;
pub mod time;
pub mod transaction;
pub mod writer;

pub use fatal::Error;
