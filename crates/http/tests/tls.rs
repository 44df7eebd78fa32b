//! TLS with certificates made by rcgen: requests, keep-alive, pipelining, refusals, handshake
//! deadlines, slow handshakes, and `load_tls_config` errors.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use invited_http::{Limits, load_tls_config};

#[test]
fn requests_keep_alive_and_pipelining_over_tls() {
    let pki = pki();
    let (server, _) = TestServer::start(pki.server_options(test_limits()));
    let mut c = pki.connect(server.addr);
    let r = c.request(b"GET /a?b HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(r.text(), "GET /a?b len=0 has_body=false tls=true");
    let r = c.request(b"PUT /p HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody");
    assert_eq!(r.text(), "PUT /p len=4 has_body=true tls=true body=body");
    c.send(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\nConnection: close\r\n\r\n");
    for i in 1..=3 {
        assert_eq!(
            c.response().text(),
            format!("GET /{i} len=0 has_body=false tls=true")
        );
    }
    c.expect_closed();
    assert_eq!(
        c.stream.conn.alpn_protocol(),
        None,
        "client offered no ALPN"
    );
}

#[test]
fn ureq_over_tls() {
    let pki = pki();
    let (server, _) = TestServer::start(pki.server_options(test_limits()));
    let ca = ureq::tls::Certificate::from_der(pki.ca.as_ref()).to_owned();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let url = format!("https://localhost:{}/hello", server.addr.port());
    for _ in 0..2 {
        let body = agent
            .get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        assert_eq!(body, "GET /hello len=0 has_body=false tls=true");
    }
}

#[test]
fn refusals_over_tls() {
    let pki = pki();
    let (server, _) = TestServer::start(pki.server_options(test_limits()));
    let mut c = pki.connect(server.addr);
    c.send(b"PUT / HTTP/1.1\r\nContent-Length: 200000000000\r\n\r\nabc");
    let r = c.response();
    assert_eq!((r.status, r.closes()), (413, true));
    c.expect_closed();

    let mut c = pki.connect(server.addr);
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(5000));
    let _ = c.stream.write_all(big.as_bytes());
    assert_eq!(c.response().status, 431);
    c.expect_closed();
}

#[test]
fn stalled_handshakes_time_out_without_blocking_others() {
    let pki = pki();
    let (server, _) = TestServer::start(pki.server_options(Limits {
        tls_handshake_timeout: Duration::from_secs(1),
        ..test_limits()
    }));
    // Silent, and stuck half way through a ClientHello.
    let mut silent = connect(server.addr);
    let mut partial = connect(server.addr);
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let start = Instant::now();

    // Meanwhile a real client is served at once.
    let mut c = pki.connect(server.addr);
    assert_eq!(c.request(b"GET / HTTP/1.1\r\n\r\n").status, 200);
    assert!(start.elapsed() < Duration::from_millis(900));

    expect_eof(&mut silent);
    expect_eof(&mut partial);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(2000),
        "closed after {elapsed:?}"
    );
}

#[test]
fn trickling_handshakes_do_not_delay_a_normal_client() {
    let pki = pki();
    let (server, _) = TestServer::start(pki.server_options(Limits {
        tls_handshake_timeout: Duration::from_secs(10),
        ..test_limits()
    }));
    let mut slow: Vec<TcpStream> = (0..50).map(|_| connect(server.addr)).collect();
    let hello_start = [
        0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    for byte in &hello_start[..3] {
        for s in &mut slow {
            s.write_all(&[*byte]).unwrap();
        }
        let start = Instant::now();
        let mut c = pki.connect(server.addr);
        assert_eq!(c.request(b"GET / HTTP/1.1\r\n\r\n").status, 200);
        assert!(start.elapsed() < Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn plain_http_on_a_tls_port_is_closed() {
    let pki = pki();
    let (server, handler) = TestServer::start(pki.server_options(test_limits()));
    let mut s = connect(server.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let start = Instant::now();
    // rustls answers with an alert (or nothing) and the server hangs up at once, not at the
    // 5 s handshake deadline.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut rest);
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(!rest.starts_with(b"HTTP/"));
    assert_eq!(handler.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn load_tls_config_names_the_file_and_the_problem() {
    let pki = pki();
    assert!(load_tls_config(&pki.cert_path, &pki.key_path).is_ok());
    let dir = temp_dir("tls-errors");
    let missing = dir.join("missing.pem");
    let err = load_tls_config(&missing, &pki.key_path).unwrap_err();
    assert!(
        err.contains("missing.pem") && err.contains("cannot read"),
        "{err}"
    );
    let err = load_tls_config(&pki.cert_path, &missing).unwrap_err();
    assert!(err.contains("missing.pem") && err.contains("key"), "{err}");

    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "no pem here\n").unwrap();
    let err = load_tls_config(&empty, &pki.key_path).unwrap_err();
    assert!(
        err.contains("empty.pem") && err.contains("no PEM CERTIFICATE"),
        "{err}"
    );
    // A certificate where the key should be.
    let err = load_tls_config(&pki.cert_path, &pki.cert_path).unwrap_err();
    assert!(
        err.contains("cert.pem") && err.contains("no PEM private key"),
        "{err}"
    );

    let broken = dir.join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = load_tls_config(&broken, &pki.key_path).unwrap_err();
    assert!(err.contains("broken.pem"), "{err}");

    // A key that does not belong to the certificate.
    let other = pki_other_key(&dir);
    let err = load_tls_config(&pki.cert_path, &other).unwrap_err();
    assert!(err.contains("cannot be used"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

fn pki_other_key(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("other-key.pem");
    std::fs::write(&path, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    path
}
