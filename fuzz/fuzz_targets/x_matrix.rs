//! The X-Matrix `Authorization` header parser on arbitrary bytes: no panics; whatever it
//! accepts round-trips through the header a sender would write.
#![no_main]

use invited_matrix::x_matrix::{header_value, parse_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(credential)) = parse_header(data) {
        // The canonical header for it parses back to the same credential (when its signature
        // needs no escaping, which a real base64 signature never does).
        if !credential.sig.contains(['"', '\\']) {
            let again = parse_header(header_value(&credential).as_bytes());
            assert_eq!(again, Ok(Some(credential)));
        }
    }
});
