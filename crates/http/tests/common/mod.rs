//! Shared test fixtures: a server on a loopback port, a recording handler, raw and TLS clients,
//! and an rcgen-made certificate authority.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use invited_http::{
    ConnectionCount, ConnectionRefused, EdgeError, Handler, Limits, Request, Response, Server,
    ServerOptions, ShutdownHandle,
};
use rustls::pki_types::{CertificateDer, ServerName};

/// Limits small enough to hit quickly and deadlines short enough for fast tests.
pub fn test_limits() -> Limits {
    Limits {
        max_connections: 64,
        max_connections_per_ip: 64,
        max_head_bytes: 4096,
        max_headers: 16,
        max_target_bytes: 1024,
        max_body_bytes: 64 * 1024,
        max_buffered_body_bytes: 4 * 1024 * 1024,
        request_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        keep_alive_timeout: Duration::from_secs(5),
        first_byte_timeout: Duration::from_secs(5),
        max_requests_per_connection: 100,
        tls_handshake_timeout: Duration::from_secs(5),
        max_queue_wait: Duration::from_secs(5),
    }
}

pub fn options(limits: Limits) -> ServerOptions {
    ServerOptions {
        workers: 2,
        limits,
        tls: None,
    }
}

/// Answers `<method> <target> len=<body length> has_body=<bool> tls=<bool>`; `/panic` panics,
/// `/sleep/<ms>` sleeps first, `/big/<n>` answers `n` bytes. Edge errors answer `edge <status>`.
#[derive(Default)]
pub struct TestHandler {
    pub calls: AtomicUsize,
    pub edge_errors: Mutex<Vec<EdgeError>>,
    /// Connections the edge closed unread, in order.
    pub refused: Mutex<Vec<ConnectionRefused>>,
    /// Told the target of every request as the handler starts on it.
    pub started: Mutex<Option<std::sync::mpsc::Sender<String>>>,
}

impl Handler for TestHandler {
    fn handle(&self, request: &Request) -> Response {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(tx) = &*self.started.lock().unwrap() {
            let _ = tx.send(request.target.clone());
        }
        let path = request.path();
        if path == "/panic" {
            panic!("test handler panics on purpose");
        }
        if let Some(ms) = path.strip_prefix("/sleep/") {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
        }
        if let Some(n) = path.strip_prefix("/big/") {
            return Response {
                status: 200,
                headers: vec![],
                body: vec![b'x'; n.parse().unwrap()],
            };
        }
        let mut body = format!(
            "{} {} len={} has_body={} tls={}",
            request.method,
            request.target,
            request.body.len(),
            request.has_body,
            request.tls
        )
        .into_bytes();
        if !request.body.is_empty() {
            body.extend_from_slice(b" body=");
            body.extend_from_slice(&request.body);
        }
        Response {
            status: 200,
            headers: vec![("Content-Type".to_owned(), "text/plain".to_owned())],
            body,
        }
    }

    fn edge_error(&self, error: &EdgeError) -> Response {
        self.edge_errors.lock().unwrap().push(error.clone());
        Response {
            status: error.status(),
            headers: vec![],
            body: format!("edge {}", error.status()).into_bytes(),
        }
    }

    fn connection_refused(&self, why: ConnectionRefused) {
        self.refused.lock().unwrap().push(why);
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: ShutdownHandle,
    pub connections: ConnectionCount,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl TestServer {
    pub fn start(options: ServerOptions) -> (TestServer, Arc<TestHandler>) {
        let handler = Arc::new(TestHandler::default());
        (TestServer::start_with(options, handler.clone()), handler)
    }

    pub fn start_with(options: ServerOptions, handler: Arc<dyn Handler>) -> TestServer {
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), options).unwrap();
        let addr = server.local_addr();
        let handle = server.shutdown_handle();
        let connections = server.connection_count();
        let thread = std::thread::spawn(move || server.run(handler));
        TestServer {
            addr,
            handle,
            connections,
            thread: Some(thread),
        }
    }

    /// Requests shutdown and waits for `run` to return.
    pub fn stop(mut self) -> io::Result<()> {
        self.handle.shutdown();
        self.thread.take().unwrap().join().unwrap()
    }

    pub fn connect(&self) -> Client<TcpStream> {
        Client::new(connect(self.addr))
    }

    /// One request on a fresh connection.
    pub fn request(&self, raw: &[u8]) -> Resp {
        let mut c = self.connect();
        c.send(raw);
        c.response()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn closes(&self) -> bool {
        self.header("connection") == Some("close")
    }
}

/// A client over any stream, keeping bytes that arrived after the last response.
pub struct Client<S: Read + Write> {
    pub stream: S,
    buf: Vec<u8>,
}

impl<S: Read + Write> Client<S> {
    pub fn new(stream: S) -> Client<S> {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    pub fn request(&mut self, raw: &[u8]) -> Resp {
        self.send(raw);
        self.response()
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one response; panics unless it is well framed with a `Content-Length`.
    pub fn response(&mut self) -> Resp {
        self.try_response().unwrap()
    }

    pub fn try_response(&mut self) -> io::Result<Resp> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = parsed
                .parse(&self.buf)
                .map_err(|e| io::Error::other(e.to_string()))?
            {
                let status = parsed.code.unwrap();
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8(h.value.to_vec()).unwrap(),
                        )
                    })
                    .collect();
                let lengths: Vec<&(String, String)> = headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .collect();
                assert_eq!(lengths.len(), 1, "exactly one Content-Length: {headers:?}");
                let len: usize = lengths[0].1.parse().unwrap();
                while self.buf.len() < head_len + len {
                    if self.fill()? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                let rest = self.buf.split_off(head_len + len);
                let body = self.buf.split_off(head_len);
                self.buf = rest;
                return Ok(Resp {
                    status,
                    headers,
                    body,
                });
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Asserts the server closes the connection without sending anything more.
    pub fn expect_closed(&mut self) {
        assert!(self.buf.is_empty(), "unexpected bytes: {:?}", self.buf);
        match self.fill() {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!(
                "expected the connection to close, got {other:?} {:?}",
                self.buf
            ),
        }
    }
}

/// Asserts the stream is closed by the server (EOF or reset) with no response at all.
pub fn expect_eof(stream: &mut TcpStream) {
    let mut b = [0u8; 1024];
    match stream.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("expected a close without response, got {other:?}"),
    }
}

/// Waits until `f` holds, for at most `limit`.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A test CA and a `localhost` certificate it signed, as PEM files on disk.
pub struct Pki {
    pub ca: CertificateDer<'static>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub dir: PathBuf,
}

pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "invited-http-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "invited-http test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let dir = temp_dir("pki");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, leaf.pem()).unwrap();
    std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();
    Pki {
        ca: ca.der().clone(),
        cert_path,
        key_path,
        dir,
    }
}

impl Pki {
    pub fn server_options(&self, limits: Limits) -> ServerOptions {
        ServerOptions {
            workers: 2,
            limits,
            tls: Some(invited_http::load_tls_config(&self.cert_path, &self.key_path).unwrap()),
        }
    }

    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    pub fn connect(
        &self,
        addr: SocketAddr,
    ) -> Client<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(self.client_config(), name).unwrap();
        Client::new(rustls::StreamOwned::new(conn, connect(addr)))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
