//! TCP traffic: one long transfer each way, many short connections, and a
//! connection attempt that is refused.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{pattern, IO_TIMEOUT};
use crate::netns::NetNs;

/// What one TCP transfer really moved, counted by the sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// The server's (listening) port.
    pub server_port: u16,
    /// The client's ephemeral port.
    pub client_port: u16,
    /// Bytes the client wrote.
    pub client_sent: u64,
    /// Bytes the client read.
    pub client_received: u64,
    /// Bytes the server wrote.
    pub server_sent: u64,
    /// Bytes the server read.
    pub server_received: u64,
    /// The client socket's `tcpi_total_retrans` (segments it retransmitted),
    /// read after the server's EOF, when the client has nothing left to send.
    pub client_total_retrans: u32,
}

/// A connected pair on IPv4 loopback, in the calling thread's network
/// namespace: (client, server), held open for the test to move bytes on.
pub fn loopback_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let client = connect(listener.local_addr().expect("bound"));
    let server = accept(&listener);
    (client, server)
}

/// Moves exactly `bytes` from `writer` to `reader`, both ends of one open
/// connection, leaving it open. Panics if a socket call fails.
pub fn exchange(writer: &mut TcpStream, reader: &mut TcpStream, bytes: usize) {
    let data = pattern(bytes);
    let mut received = vec![0u8; bytes];
    std::thread::scope(|scope| {
        scope.spawn(|| writer.write_all(&data).expect("write"));
        reader.read_exact(&mut received).expect("read");
    });
}

/// One connection from a client to a server listening on `server_ip`: the
/// client writes `upload` bytes and shuts its side down, the server reads to
/// EOF, writes `download` bytes and closes, the client reads to EOF and
/// closes. Panics if any socket call fails.
pub fn transfer(server_ip: IpAddr, upload: usize, download: usize) -> Transfer {
    transfer_between(None, None, server_ip, upload, download)
}

/// [`transfer`], with the client and the server each in a network namespace
/// (`None`: this process's own).
pub fn transfer_between(
    client_ns: Option<&NetNs>,
    server_ns: Option<&NetNs>,
    server_ip: IpAddr,
    upload: usize,
    download: usize,
) -> Transfer {
    let listen = SocketAddr::new(server_ip, 0);
    let dial = move |port| SocketAddr::new(server_ip, port);
    transfer_through(client_ns, server_ns, listen, dial, upload, download)
}

/// [`transfer_between`], with the server listening on `listen` and the
/// client connecting to `dial(listening port)`: another address where NAT
/// sends the connection on.
pub fn transfer_through(
    client_ns: Option<&NetNs>,
    server_ns: Option<&NetNs>,
    listen: SocketAddr,
    dial: impl FnOnce(u16) -> SocketAddr + Send + 'static,
    upload: usize,
    download: usize,
) -> Transfer {
    let (port_tx, port_rx) = mpsc::channel();
    let server = spawn_in(server_ns, move || {
        let listener =
            TcpListener::bind(listen).unwrap_or_else(|e| panic!("cannot listen on {listen}: {e}"));
        port_tx
            .send(listener.local_addr().expect("bound").port())
            .expect("the test waits for the port");
        let mut stream = accept(&listener);
        let received = read_to_end(&mut stream);
        let sent = write_all(&mut stream, download);
        (received, sent)
    });
    let Ok(server_port) = port_rx.recv_timeout(IO_TIMEOUT) else {
        join(server);
        panic!("the server did not start listening");
    };

    let client = spawn_in(client_ns, move || {
        let mut stream = connect(dial(server_port));
        let client_port = stream.local_addr().expect("connected").port();
        let sent = write_all(&mut stream, upload);
        stream.shutdown(Shutdown::Write).expect("shutdown(Write)");
        let received = read_to_end(&mut stream);
        (client_port, sent, received, total_retrans(&stream))
    });

    let (client_port, client_sent, client_received, client_total_retrans) = join(client);
    let (server_received, server_sent) = join(server);
    Transfer {
        server_port,
        client_port,
        client_sent,
        client_received,
        server_sent,
        server_received,
        client_total_retrans,
    }
}

/// What a run of short connections really moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortConnections {
    /// The server's port.
    pub server_port: u16,
    /// Connections completed.
    pub connections: u64,
    /// Bytes all clients wrote.
    pub client_sent: u64,
    /// Bytes all clients read.
    pub client_received: u64,
    /// Bytes the server wrote.
    pub server_sent: u64,
    /// Bytes the server read.
    pub server_received: u64,
    /// From the first connect to the last close.
    pub elapsed: Duration,
}

/// `count` connections one after another to a server on `server_ip`: each
/// client connects, writes `size` bytes, the server reads them, writes
/// `size` bytes back and closes, the client reads to EOF and closes.
pub fn short_connections(server_ip: IpAddr, count: u64, size: usize) -> ShortConnections {
    let listener = TcpListener::bind((server_ip, 0))
        .unwrap_or_else(|e| panic!("cannot listen on {server_ip}: {e}"));
    let server_port = listener.local_addr().expect("bound").port();
    let server = std::thread::spawn(move || {
        let (mut received, mut sent) = (0, 0);
        let mut request = vec![0; size];
        let reply = pattern(size);
        for _ in 0..count {
            let mut stream = accept(&listener);
            stream.read_exact(&mut request).expect("read a request");
            received += size as u64;
            stream.write_all(&reply).expect("write a reply");
            sent += size as u64;
        }
        (received, sent)
    });

    let started = Instant::now();
    let (mut client_sent, mut client_received) = (0, 0);
    let request = pattern(size);
    for _ in 0..count {
        let mut stream = connect(SocketAddr::new(server_ip, server_port));
        stream.write_all(&request).expect("write a request");
        client_sent += size as u64;
        client_received += read_to_end(&mut stream);
    }
    let elapsed = started.elapsed();
    let (server_received, server_sent) = join(server);
    ShortConnections {
        server_port,
        connections: count,
        client_sent,
        client_received,
        server_sent,
        server_received,
        elapsed,
    }
}

/// A connection that keeps sending until it is dropped: for views that
/// refresh every poll and need a flow that is active in each. The client
/// runs on a thread named `client_thread` (at most 15 bytes: it is the
/// kernel's `comm` of the connection, its `source.process.name`).
pub struct Steady {
    /// The server's (listening) port.
    pub server_port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    client: Option<JoinHandle<u64>>,
    server: Option<JoinHandle<u64>>,
}

impl Steady {
    /// How long a steady connection sends at most, should nothing stop it.
    pub const LIMIT: Duration = Duration::from_secs(120);

    /// Listens on `server_ip`, connects from a thread named `client_thread`
    /// and sends 64 KiB about every 10 ms until dropped (or [`Steady::LIMIT`]).
    pub fn start(server_ip: IpAddr, client_thread: &str) -> Steady {
        assert!(client_thread.len() <= 15, "a comm has at most 15 bytes");
        let listener = TcpListener::bind((server_ip, 0))
            .unwrap_or_else(|e| panic!("cannot listen on {server_ip}: {e}"));
        let server_port = listener.local_addr().expect("bound").port();
        let server = std::thread::spawn(move || read_to_end(&mut accept(&listener)));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let client = std::thread::Builder::new()
            .name(client_thread.to_owned())
            .spawn(move || {
                let mut stream = connect(SocketAddr::new(server_ip, server_port));
                let started = Instant::now();
                let mut sent = 0;
                while !stopped.load(std::sync::atomic::Ordering::Relaxed)
                    && started.elapsed() < Steady::LIMIT
                {
                    sent += write_all(&mut stream, 64 * 1024);
                    std::thread::sleep(Duration::from_millis(10));
                }
                sent
            })
            .expect("spawn the client thread");
        Steady {
            server_port,
            stop,
            client: Some(client),
            server: Some(server),
        }
    }

    /// Stops sending, closes both ends and returns the bytes the client
    /// sent and the server received.
    pub fn stop(mut self) -> (u64, u64) {
        self.finish()
    }

    fn finish(&mut self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // The client's stream closes as its thread ends; the server reads
        // to that EOF.
        let sent = self.client.take().map_or(0, join);
        let received = self.server.take().map_or(0, join);
        (sent, received)
    }
}

impl Drop for Steady {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if !std::thread::panicking() {
            self.finish();
        }
    }
}

/// Connects to a port on `ip` where nothing listens (one just released) and
/// returns that port. Panics unless the attempt fails with ECONNREFUSED.
pub fn connect_refused(ip: IpAddr) -> u16 {
    let port = TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("cannot bind on {ip}: {e}"))
        .port();
    // The listener is closed here: the port is free and nothing answers.
    match TcpStream::connect_timeout(&SocketAddr::new(ip, port), IO_TIMEOUT) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => port,
        Err(e) => {
            panic!("connecting to the closed port {ip}:{port} failed with {e}, not ECONNREFUSED")
        }
        Ok(_) => panic!("connecting to the closed port {ip}:{port} succeeded"),
    }
}

/// The kernel's count of segments this socket retransmitted
/// (`TCP_INFO.tcpi_total_retrans`).
pub fn total_retrans(stream: &TcpStream) -> u32 {
    // SAFETY: tcp_info is plain integers, for which all zeroes is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `info`, which outlives the
    // call; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(
        rc,
        0,
        "getsockopt(TCP_INFO): {}",
        io::Error::last_os_error()
    );
    info.tcpi_total_retrans
}

/// Runs `f` on a new thread, inside `ns` if given.
fn spawn_in<T, F>(ns: Option<&NetNs>, f: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match ns {
        Some(ns) => ns.spawn(f),
        None => std::thread::spawn(f),
    }
}

/// Joins a thread, passing its panic on.
fn join<T>(handle: JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    set_timeouts(&stream);
    stream
}

/// Accepts one connection, waiting at most [`IO_TIMEOUT`].
fn accept(listener: &TcpListener) -> TcpStream {
    let mut pollfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, which outlives the call.
    let ready = unsafe { libc::poll(&mut pollfd, 1, IO_TIMEOUT.as_millis() as libc::c_int) };
    assert!(
        ready == 1,
        "no connection arrived within {IO_TIMEOUT:?} ({})",
        io::Error::last_os_error()
    );
    let (stream, _) = listener.accept().expect("accept");
    set_timeouts(&stream);
    stream
}

fn set_timeouts(stream: &TcpStream) {
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set a read timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("set a write timeout");
}

/// Writes `len` bytes and returns how many were written (all of them).
fn write_all(stream: &mut TcpStream, len: usize) -> u64 {
    let chunk = pattern(64 * 1024);
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        stream.write_all(&chunk[..n]).expect("write");
        left -= n;
    }
    len as u64
}

/// Reads until EOF and returns how many bytes came.
fn read_to_end(stream: &mut TcpStream) -> u64 {
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read after {total} bytes: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_counts_both_ways() {
        let t = transfer("127.0.0.1".parse().unwrap(), 3 << 20, 100_000);
        assert_eq!((t.client_sent, t.server_received), (3 << 20, 3 << 20));
        assert_eq!((t.server_sent, t.client_received), (100_000, 100_000));
        assert_ne!(t.server_port, t.client_port);
    }

    #[test]
    fn a_transfer_works_over_ipv6() {
        let t = transfer("::1".parse().unwrap(), 1000, 0);
        assert_eq!((t.client_sent, t.server_received), (1000, 1000));
        assert_eq!(t.client_received, 0);
    }

    #[test]
    fn short_connections_count_every_byte() {
        let s = short_connections("127.0.0.1".parse().unwrap(), 50, 1024);
        assert_eq!(s.connections, 50);
        assert_eq!((s.client_sent, s.server_received), (50 * 1024, 50 * 1024));
        assert_eq!((s.server_sent, s.client_received), (50 * 1024, 50 * 1024));
    }

    #[test]
    fn a_closed_port_refuses() {
        assert_ne!(connect_refused("127.0.0.1".parse().unwrap()), 0);
    }
}
