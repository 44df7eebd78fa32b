//! Talking to, and trusting, other servers: request authentication (X-Matrix), their keys
//! (cache, fetching, notaries, validity rules), server discovery and the outbound client,
//! shared by key fetches and deliveries.

pub mod auth;
pub mod client;
pub mod discovery;
pub mod fetch_slots;
pub mod ip_filter;
pub mod key_fetch;
pub mod key_validity;
pub mod keyring;
pub mod outbound;
