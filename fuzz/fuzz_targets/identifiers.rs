//! Every identifier parser on arbitrary strings: no panics, and what is accepted is
//! self-consistent.
#![no_main]

use invited_matrix::{EventId, KeyId, RoomId, RoomVersion, ServerName, UserId, base64};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(n) = ServerName::parse(s) {
        assert_eq!(n.as_str(), s);
        let _ = (n.host(), n.port(), n.host_str());
    }
    if let Ok(u) = UserId::parse(s) {
        assert_eq!(u.as_str(), s);
        assert!(ServerName::parse(u.server_str()).is_ok());
        assert_eq!(format!("@{}:{}", u.localpart(), u.server_str()), s);
        let _ = u.server_name();
    }
    if let Ok(r) = RoomId::parse(s) {
        assert_eq!(r.as_str(), s);
        if let Some(server) = r.server_str() {
            assert!(ServerName::parse(server).is_ok());
        } else {
            assert!(r.is_hash_id());
        }
    }
    if let Ok(e) = EventId::parse(s) {
        assert_eq!(e.as_str(), s);
        let _ = e.server_str();
    }
    if let Ok(k) = KeyId::parse(s) {
        assert_eq!(format!("{}:{}", k.algorithm(), k.version()), s);
        let _ = k.is_ed25519();
    }
    let _ = KeyId::ed25519(s);
    let _ = RoomVersion::by_id(s);
    let _ = base64::decode(s);
    let _ = base64::decode_url_safe(s);
});
