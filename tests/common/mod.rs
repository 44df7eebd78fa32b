//! Shared test harness: runs the real `invited` binary on an ephemeral loopback port with a
//! temporary data directory, and talks to it over real HTTP(S). No mocks.
//!
//! Every test file (and `benches/load.rs`) declares `mod common;`; its parts are submodules:
//! `invites` (the usual end-to-end setup, [`invites::Harness`]; valid invites; answers and
//! their checks), `origin` (the test origin homeserver) and `wire` (independent canonical JSON
//! and X-Matrix signing, a raw HTTP/1.1 client).
#![allow(dead_code)]

pub mod invites;
pub mod origin;
pub mod wire;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary cargo built for these tests (a debug build under `cargo test`).
pub const BIN: &str = env!("CARGO_BIN_EXE_invited");

/// The binary the hostile-federation tests (`tests/abuse.rs`) run: `INVITED_RELEASE_BIN`
/// (`scripts/test.sh` builds the release binary and points it there), so their memory and
/// latency figures are the ones a deployment sees. Unset, they fall back to [`BIN`] and say so.
pub fn release_bin() -> PathBuf {
    match std::env::var_os("INVITED_RELEASE_BIN").filter(|v| !v.is_empty()) {
        Some(bin) => {
            let bin = PathBuf::from(bin);
            assert!(
                bin.is_file(),
                "INVITED_RELEASE_BIN={} is not a file: build it with \
                 `cargo build --release --locked --bin invited`",
                bin.display()
            );
            bin
        }
        None => {
            static NOTE: std::sync::Once = std::sync::Once::new();
            NOTE.call_once(|| {
                eprintln!(
                    "note: INVITED_RELEASE_BIN is not set; running the debug binary {BIN} \
                     (scripts/test.sh sets it to the release build)"
                );
            });
            PathBuf::from(BIN)
        }
    }
}

/// A test certificate authority and certificates it issues (rcgen, generated per test).
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "invited test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn cert_der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// A leaf certificate for these names (DNS names or IP addresses): (cert PEM, key PEM).
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// An HTTP client that does not turn 4xx/5xx into errors, trusting `ca` for HTTPS.
pub fn agent(ca: Option<&TestCa>) -> ureq::Agent {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = ca {
        let cert = ureq::tls::Certificate::from_der(&ca.cert_der()).to_owned();
        tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![cert])));
    }
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .tls_config(tls.build())
        .build()
        .new_agent()
}

/// A running `invited serve`. Killed on drop.
pub struct Invited {
    /// The binary it runs (a restart runs the same one).
    pub bin: PathBuf,
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub tls: bool,
    pub log: Arc<Mutex<String>>,
}

/// Writes `invited.toml` into `dir` with an ephemeral port, `dir/data` as data dir, server
/// name `server_name`, 2 workers, and `extra` TOML appended.
pub fn write_config(dir: &Path, server_name: &str, extra: &str) -> PathBuf {
    write_config_with_workers(dir, server_name, 2, extra)
}

/// [`write_config`] with this many workers.
pub fn write_config_with_workers(
    dir: &Path,
    server_name: &str,
    workers: usize,
    extra: &str,
) -> PathBuf {
    write_config_opt_workers(dir, server_name, Some(workers), extra)
}

/// [`write_config`] with this many workers, or (`None`) invited's default number.
pub fn write_config_opt_workers(
    dir: &Path,
    server_name: &str,
    workers: Option<usize>,
    extra: &str,
) -> PathBuf {
    let path = dir.join("invited.toml");
    let workers = workers.map_or(String::new(), |n| format!("workers = {n}\n"));
    let text = format!(
        "server_name = \"{server_name}\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n{workers}{extra}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

impl Invited {
    /// Starts the binary with `config_path` and waits until it listens.
    pub fn start(config_path: &Path) -> Invited {
        Invited::start_with_env(config_path, &[])
    }

    pub fn start_with_env(config_path: &Path, env: &[(&str, &str)]) -> Invited {
        Invited::start_bin(Path::new(BIN), config_path, env)
    }

    /// [`Invited::start_with_env`] running `bin` (e.g. [`release_bin`]).
    pub fn start_bin(bin: &Path, config_path: &Path, env: &[(&str, &str)]) -> Invited {
        let dir = config_path.parent().unwrap().to_path_buf();
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(config_path)
            .arg("serve")
            .env("RUST_LOG", "info")
            .env_remove("INVITED_CONFIG")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn invited");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(i) = line.find("listening on ") {
                        let rest = &line[i + "listening on ".len()..];
                        let tls = rest.starts_with("https://");
                        let addr = rest
                            .trim_start_matches("https://")
                            .trim_start_matches("http://")
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .to_owned();
                        if let Some(tx) = tx.take() {
                            let _ = tx.send((addr, tls));
                        }
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let (addr, tls) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("invited did not start; log:\n{}", log.lock().unwrap());
            }
        };
        Invited {
            bin: bin.to_path_buf(),
            child,
            addr: addr.parse().expect("listen address in log"),
            dir,
            config_path: config_path.to_path_buf(),
            tls,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the server, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The database, opened read-only for assertions (it never changes or checkpoints the
    /// file, even after a crash), waiting up to 10 s for a lock.
    pub fn db(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_with_flags(
            self.dir.join("data/invited.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn
    }

    /// SIGKILL, and waits for the exit (what dropping it does).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit (at most 20 s).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        signal(self.pid(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the log thread drain.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("invited did not stop on SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Invited {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} {pid}");
}

/// Runs the binary with these arguments and `--config config` (if given).
pub fn run_cli(config: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(args)
        .env_remove("INVITED_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    if let Some(c) = config {
        cmd.current_dir(c.parent().unwrap());
    }
    cmd.output().unwrap()
}

/// [`run_cli`] with `config`, asserting success; returns stdout.
pub fn cli_ok(config: &Path, args: &[&str]) -> String {
    let out = run_cli(Some(config), args);
    assert!(
        out.status.success(),
        "invited {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Sends raw bytes on a new connection and returns everything read until the server closes
/// (or `timeout` passes).
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    out
}

/// A connection to `addr` from the local address `from`, say 127.0.0.2 (all of 127.0.0.0/8
/// is loopback), so that one test can be several clients, each with its own per-address
/// limits.
pub fn connect_from(from: std::net::Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, bind, connect, socket_with};
    let fd = socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    bind(&fd, &SocketAddr::new(from.into(), 0))?;
    connect(&fd, &addr)?;
    Ok(TcpStream::from(fd))
}

/// The status code of the first HTTP response in `raw`.
pub fn status_of(raw: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(raw);
    text.strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
}

/// The Python interpreter of the oracle venv (signedjson, canonicaljson), set up by
/// `scripts/setup-oracles.sh`. Fails the test if missing: an oracle test must never pass
/// without its oracle.
pub fn oracle_python() -> PathBuf {
    if let Ok(p) = std::env::var("INVITED_ORACLE_PYTHON") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/oracle-venv/bin/python");
    assert!(
        p.exists(),
        "the Python oracle is missing: run scripts/setup-oracles.sh (or scripts/test.sh), \
         or set INVITED_ORACLE_PYTHON"
    );
    p
}

/// Runs a Python snippet under the oracle interpreter with `input` on stdin; returns stdout.
pub fn python(script: &str, input: &str) -> String {
    let mut child = Command::new(oracle_python())
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
