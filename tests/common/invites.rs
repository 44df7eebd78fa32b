//! Invite helpers shared by the end-to-end tests: a server configured to trust the test CA,
//! and encoded invite paths.
#![allow(dead_code)]

use std::path::Path;

use super::{Invited, TestCa, write_config};

/// The server name of invited in the tests.
pub const US: &str = "invited.test";

/// Starts invited trusting `ca` for outbound HTTPS and allowing loopback key fetches.
pub fn start_invited(dir: &Path, ca: &TestCa, extra: &str) -> Invited {
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
    let config = write_config(
        dir,
        US,
        &format!(
            "[federation]\nca_file = \"ca.pem\"\nip_range_allowlist = [\"127.0.0.0/8\", \"::1/128\"]\n{extra}"
        ),
    );
    Invited::start(&config)
}

/// Percent-encodes a path segment (everything but unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/_matrix/federation/v{api}/invite/{roomId}/{eventId}`, encoded.
pub fn invite_path(api: u8, room_id: &str, event_id: &str) -> String {
    format!(
        "/_matrix/federation/v{api}/invite/{}/{}",
        enc(room_id),
        enc(event_id)
    )
}
