//! A small, synchronous HTTP/1.1 server edge.
//!
//! It turns bytes into [`Request`]s and [`Response`]s into bytes, and enforces every limit a
//! server facing the open internet needs: connection caps (overall and per address), head and
//! body size, a memory budget for bodies in flight, per-request deadlines, keep-alive rules,
//! TLS handshake and first-byte deadlines. It knows nothing of Matrix: errors that
//! the edge itself detects are handed to [`Handler::edge_error`] so the application decides the
//! body (invited answers with Matrix error JSON).
//!
//! Why our own edge and not `tiny_http`: see the project README ("Why not tiny_http").
//!
//! Shape: the thread calling [`Server::run`] accepts; one I/O thread reads every connection
//! with `poll(2)` until a whole request is buffered (so slow clients never hold a worker); a
//! fixed pool of workers runs the [`Handler`] and writes the response under a deadline.

mod api;
mod conn;
mod head;
mod io_loop;
mod quota;
mod response;
mod server;
mod shared;
mod sys;
mod tls;
mod worker;

pub use api::{ConnectionRefused, EdgeError, Handler, Limits, Request, Response};
pub use server::{ConnectionCount, Server, ServerOptions, ShutdownHandle};
pub use sys::bound_allocator_retention;
pub use tls::load_tls_config;
