//! The accept loop survives running out of file descriptors for real. Its own test binary,
//! because lowering RLIMIT_NOFILE affects the whole process.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking
#![allow(unsafe_code)] // setrlimit and raw sockets, to exhaust file descriptors

mod common;

use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::Duration;

use common::*;

fn set_nofile(soft: libc::rlim_t) -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain get/setrlimit on a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let old = lim.rlim_cur;
        lim.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        old
    }
}

fn highest_open_fd() -> libc::rlim_t {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::rlim_t>().ok())
        .max()
        .unwrap()
}

/// A TCP socket created now and connected later, so that connecting needs no new descriptor.
fn unconnected_socket() -> TcpStream {
    // SAFETY: socket(2) returns a new descriptor that we own from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: `fd` is a valid socket nobody else owns.
    unsafe { TcpStream::from_raw_fd(fd) }
}

fn connect_raw(s: &TcpStream, addr: SocketAddrV4) {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid sockaddr_in of the size given.
    let rc = unsafe {
        libc::connect(
            s.as_raw_fd(),
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

#[test]
fn accept_loop_survives_emfile() {
    let (server, _) = TestServer::start(options(test_limits()));
    assert_eq!(server.request(b"GET /before HTTP/1.1\r\n\r\n").status, 200);
    std::thread::sleep(Duration::from_millis(100));
    let SocketAddr::V4(addr) = server.addr else {
        panic!("IPv4 expected")
    };

    let client = unconnected_socket();
    // Use up every descriptor the process may open...
    let old = set_nofile(highest_open_fd() + 4);
    let mut fillers = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        fillers.push(f);
    }
    // ...so that this connection waits in the backlog while accept fails with EMFILE.
    connect_raw(&client, addr);
    std::thread::sleep(Duration::from_millis(500));
    drop(fillers);
    set_nofile(old);

    // The very connection that could not be accepted is served once descriptors are free.
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut c = Client::new(client);
    assert_eq!(c.request(b"GET /after HTTP/1.1\r\n\r\n").status, 200);
    assert_eq!(server.request(b"GET /again HTTP/1.1\r\n\r\n").status, 200);
    server.stop().unwrap();
}
