//! Behind a real nginx and a real Caddy (README, "Deployment", topology b): the proxy sends
//! only the invite endpoints and the key endpoint to invited, everything else to the
//! homeserver beside it. The X-Matrix signature covers the raw request target, so the proxy
//! must pass it unchanged: room and event IDs with `+`, `/` and `%` in them prove it does.
//! Both come from Debian's packages (`scripts/test.sh` installs them when missing); the tests
//! fail, not skip, without them. The Caddyfile is README's own text.
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

/// A proxy process, killed on drop.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first of `paths` that exists; `missing` otherwise (a failure, not a skip).
fn binary(paths: &[&str], missing: &str) -> String {
    for p in paths {
        if std::path::Path::new(p).exists() {
            return (*p).to_owned();
        }
    }
    panic!("{missing}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the proxy at `addr` accepts connections; `log` explains a failure.
fn wait_for(proxy: &mut Proxy, addr: SocketAddr, what: &str, log: &std::path::Path) {
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        let exited = proxy.0.try_wait().unwrap();
        assert!(
            exited.is_none() && started.elapsed() < Duration::from_secs(10),
            "{what} did not start ({exited:?}): {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_nginx(
    dir: &std::path::Path,
    invited: SocketAddr,
    other: SocketAddr,
) -> (Proxy, SocketAddr) {
    let port = free_port();
    std::fs::write(
        dir.join("nginx.conf"),
        nginx_conf(dir, port, invited, other),
    )
    .unwrap();
    let nginx = binary(
        &["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"],
        "nginx is not installed: scripts/test.sh installs it (apt-get install nginx-light)",
    );
    let child = Command::new(nginx)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut nginx = Proxy(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for(&mut nginx, addr, "nginx", &dir.join("error.log"));
    (nginx, addr)
}

/// README's Caddyfile for topology (b) (the ```caddy block with the `@invites` matcher), with
/// this test's addresses for its site and backends, after global options that keep Caddy off
/// its admin port, away from certificates and on loopback.
fn caddyfile(listen: u16, invited: SocketAddr, other: SocketAddr) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("```caddy\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .find(|block| block.contains("@invites"))
        .expect("README: a ```caddy block for topology (b)");
    let mut site = block.to_owned();
    for (from, to) in [
        // Our server name, as the proxy's site (requests carry it as `Host`), over plain HTTP.
        ("example.org:8448", format!("http://{US}:{listen}")),
        ("127.0.0.1:8449", invited.to_string()),
        ("127.0.0.1:8008", other.to_string()),
    ] {
        assert!(
            site.contains(from),
            "README's Caddyfile has no {from}:\n{block}"
        );
        site = site.replace(from, &to);
    }
    format!("{{\n    admin off\n    auto_https off\n    default_bind 127.0.0.1\n}}\n\n{site}")
}

fn start_caddy(
    dir: &std::path::Path,
    invited: SocketAddr,
    other: SocketAddr,
) -> (Proxy, SocketAddr) {
    let port = free_port();
    let config = dir.join("Caddyfile");
    std::fs::write(&config, caddyfile(port, invited, other)).unwrap();
    let caddy = binary(
        &["/usr/bin/caddy", "/usr/sbin/caddy", "/usr/local/bin/caddy"],
        "caddy is not installed: scripts/test.sh installs it (apt-get install caddy)",
    );
    let log = dir.join("caddy.log");
    let child = Command::new(caddy)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&config)
        // Whatever Caddy stores (its data, autosaved config) stays in the temporary directory.
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut caddy = Proxy(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for(&mut caddy, addr, "caddy", &log);
    (caddy, addr)
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
    topology_b(&h, proxy, "nginx");
}

#[test]
fn invites_reach_invited_through_caddy_with_their_raw_targets() {
    let h = Harness::start("");
    let other = other_backend();
    let dir = tempfile::tempdir().unwrap();
    let (_caddy, proxy) = start_caddy(dir.path(), h.invited.addr, other);
    topology_b(&h, proxy, "caddy");
}

/// Through `proxy` (named `via`): invites with odd IDs over v1 and v2 and the key endpoint
/// reach invited unchanged; everything else reaches the other backend.
fn topology_b(h: &Harness, proxy: SocketAddr, via: &str) {
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
        assert_eq!(reply.status, 200, "{what} through {via}: {}", reply.text());
        let answer: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_else(|e| {
            panic!(
                "{what} through {via}: not invited's answer ({e}): {}",
                reply.text()
            )
        });
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
    assert_eq!(reply.status, 200, "v1 through {via}: {}", reply.text());

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
        assert_eq!(reply.status, 200, "{path} through {via}");
        assert_eq!(
            reply.text(),
            format!("other backend {path}"),
            "{path} through {via}"
        );
    }
}
