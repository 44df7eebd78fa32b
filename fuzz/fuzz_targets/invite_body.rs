//! The invite request body through every pipeline step that needs no keys or storage (shape,
//! size, room version, format, canonical JSON, invite semantics, path agreement), for both
//! endpoint versions: no panics, and every refusal is a 4xx Matrix error.
#![no_main]

use invited_matrix::invite::{Api, check_request};
use invited_matrix::{ServerName, json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = json::parse_bytes(data) else {
        return;
    };
    let origin = ServerName::parse("origin.example").unwrap();
    let us = ServerName::parse("invited.example").unwrap();
    for api in [Api::V1, Api::V2] {
        let room = body["event"]["room_id"].as_str().unwrap_or("!r:origin.example");
        match check_request(api, body.clone(), &origin, &us, room, "$e") {
            Ok(checked) => assert!(checked.event_id.as_str().starts_with('$')),
            Err(e) => assert!((400..500).contains(&e.code.status()), "{e}"),
        }
    }
});
