//! Behind a real nginx (README, "Deployment", topology b): the proxy sends only the invite
//! endpoints and the key endpoint to invited, everything else to the homeserver beside it.
//! The X-Matrix signature covers the raw request target, so the proxy must pass it unchanged:
//! room and event IDs with `+`, `/` and `%` in them prove it does. nginx comes from Debian's
//! package (`scripts/test.sh` installs it when missing); the test fails, not skips, without it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::invites::{Harness, US, enc, invite_path, sign_invite, valid_invite};
use common::wire::{Reply, exchange};
use serde_json::json;

/// The nginx config of README topology (b), with this test's ports and paths.
fn nginx_conf(
    dir: &std::path::Path,
    listen: u16,
    invited: SocketAddr,
    other: SocketAddr,
) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{listen};
        # --- as in README, "Deployment", topology (b) ---
        client_max_body_size 1m;
        # No URI after the upstream: nginx passes the request target exactly as received
        # (the X-Matrix signature covers it).
        location ~ ^/_matrix/federation/v[12]/invite/ {{
            proxy_pass http://{invited};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
        location /_matrix/key/ {{
            proxy_pass http://{invited};
            proxy_set_header Host $host;
        }}
        location / {{
            proxy_pass http://{other};
            proxy_set_header Host $host;
        }}
        # --- end ---
    }}
}}
"#
    )
}

/// The homeserver beside invited: answers every request "other backend", with its path.
fn other_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]);
            let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
            let body = format!("other backend {target}");
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    addr
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx_binary() -> String {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if std::path::Path::new(p).exists() {
            return p.to_owned();
        }
    }
    panic!("nginx is not installed: scripts/test.sh installs it (apt-get install nginx-light)");
}

fn start_nginx(
    dir: &std::path::Path,
    invited: SocketAddr,
    other: SocketAddr,
) -> (Nginx, SocketAddr) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.join("nginx.conf"),
        nginx_conf(dir, port, invited, other),
    )
    .unwrap();
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let nginx = Nginx(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not start: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (nginx, addr)
}

fn through(
    proxy: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&[u8]>,
) -> Reply {
    // `request_bytes` writes `Host` itself.
    let mut headers: Vec<(&str, &[u8])> = Vec::new();
    if let Some(a) = auth {
        headers.push(("Authorization", a.as_bytes()));
    }
    if body.is_some() {
        headers.push(("Content-Type", b"application/json"));
    }
    let bytes = common::wire::request_bytes(method, path, &headers, body);
    exchange(proxy, bytes, Duration::from_secs(10), Duration::ZERO).unwrap()
}

#[test]
fn invites_reach_invited_through_nginx_with_their_raw_targets() {
    let h = Harness::start("");
    let other = other_backend();
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, proxy) = start_nginx(dir.path(), h.invited.addr, other);

    // A room version 3 invite whose event ID (standard base64) has both '+' and '/'.
    let inv = (0..200)
        .map(|_| valid_invite(&h.origin, "3", &format!("@bob:{US}")))
        .find(|i| i.event_id.contains('+') && i.event_id.contains('/'))
        .expect("an event ID with '+' and '/'");
    // A room version 1 invite in a room whose ID has '+', '/' and '%' in it.
    let room = format!("!a+b/c%d:{}", h.origin.name());
    let mut raw = h.origin.raw_invite("1", &room, &format!("@carol:{US}"));
    raw["event_id"] = json!(format!("$e+f/g%h:{}", h.origin.name()));
    let odd_room = sign_invite(&h.origin, "1", &room, &[], &raw);
    assert!(
        odd_room.path.contains("%25")
            && odd_room.path.contains("%2B")
            && odd_room.path.contains("%2F")
    );

    for (what, inv) in [("v3", &inv), ("odd room ID", &odd_room)] {
        let body = serde_json::to_vec(&inv.body).unwrap();
        let auth = h.origin.sign_request("PUT", &inv.path, US, Some(&inv.body));
        let reply = through(proxy, "PUT", &inv.path, Some(&auth), Some(&body));
        assert_eq!(reply.status, 200, "{what} through nginx: {}", reply.text());
        let answer: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert!(
            answer["event"]["signatures"][US].is_object(),
            "{what}: co-signed"
        );
    }
    // The v1 endpoint too.
    let v1 = valid_invite(&h.origin, "2", &format!("@dave:{US}"));
    let mut v1_body = v1.event.clone();
    v1_body["unsigned"]["invite_room_state"] = v1.body["invite_room_state"].clone();
    let v1_path = invite_path(1, &v1.room_id, &v1.event_id);
    let auth = h.origin.sign_request("PUT", &v1_path, US, Some(&v1_body));
    let reply = through(
        proxy,
        "PUT",
        &v1_path,
        Some(&auth),
        Some(&serde_json::to_vec(&v1_body).unwrap()),
    );
    assert_eq!(reply.status, 200, "v1 through nginx: {}", reply.text());

    // Keys come from invited; everything else from the homeserver beside it (rescinds
    // included: /send is the homeserver's in this topology).
    let keys = through(proxy, "GET", "/_matrix/key/v2/server", None, None);
    assert_eq!(keys.status, 200);
    assert!(keys.text().contains("verify_keys"), "{}", keys.text());
    for path in [
        "/_matrix/federation/v1/send/txn1",
        "/_matrix/client/versions",
        &format!("/_matrix/federation/v1/make_join/{}/%40x%3Ay", enc(&room)),
    ] {
        let reply = through(proxy, "GET", path, None, None);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), format!("other backend {path}"), "{path}");
    }
}
