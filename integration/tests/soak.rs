//! Ten minutes of 2,000 short TCP connections a second: the agent keeps
//! up (every byte of every connection counted), and its resident memory at
//! the end is within 10 % of what it was after the first minute.
//!
//! `FLOWTEL_SOAK_SECS` shortens the run for local experiments; CI runs the
//! full ten minutes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use integration::agent::Agent;
use integration::privilege;
use integration::record::FlowFilter;

const CONNECTIONS_PER_SECOND: u64 = 2000;
const REQUEST: usize = 100;
const CLIENT_THREADS: u64 = 4;

fn soak_duration() -> Duration {
    let secs = std::env::var("FLOWTEL_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    Duration::from_secs(secs)
}

/// A server that reads each connection's request and closes it first (so
/// TIME_WAIT stays on the server's side and client ports recycle).
fn serve(listener: TcpListener, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    thread::spawn(move || {
        let mut received = 0u64;
        let mut buf = [0u8; REQUEST];
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut socket, _)) => {
                    socket.set_nonblocking(false).expect("blocking socket");
                    socket.read_exact(&mut buf).expect("read a request");
                    received += REQUEST as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_micros(200));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
        received
    })
}

/// Clients opening connections at a steady total rate until `deadline`.
fn clients(port: u16, deadline: Instant, sent: Arc<AtomicU64>) -> Vec<thread::JoinHandle<()>> {
    (0..CLIENT_THREADS)
        .map(|_| {
            let sent = Arc::clone(&sent);
            thread::spawn(move || {
                let per_thread = CONNECTIONS_PER_SECOND / CLIENT_THREADS;
                let gap = Duration::from_secs(1) / per_thread as u32;
                let mut next = Instant::now();
                let request = [0x42u8; REQUEST];
                while Instant::now() < deadline {
                    let mut socket = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                    socket.write_all(&request).expect("write a request");
                    // Wait for the server's close, so that it closes first.
                    let mut rest = [0u8; 1];
                    let _ = socket.read(&mut rest);
                    sent.fetch_add(REQUEST as u64, Ordering::Relaxed);
                    next += gap;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                }
            })
        })
        .collect()
}

#[test]
fn ten_minutes_of_churn_keep_memory_flat_and_every_byte_counted() {
    privilege::require_root();
    let duration = soak_duration();
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve(listener, Arc::clone(&stop));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let load = clients(port, started + duration, Arc::clone(&sent));

    let first_minute = (duration / 10).min(Duration::from_secs(60));
    thread::sleep(first_minute);
    let rss_early = agent.rss_kib();
    for handle in load {
        handle.join().expect("client thread");
    }
    let rss_late = agent.rss_kib();
    stop.store(true, Ordering::Relaxed);
    let received = server.join().expect("server thread");
    let sent = sent.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(received, sent);

    let client = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_port(port);
    let counted = agent.wait_for_totals(&client, |t| t.bytes_sent >= sent);
    let connections = sent / REQUEST as u64;
    println!(
        "{connections} connections in {elapsed:.0} s ({:.0}/s); agent RSS {rss_early} KiB after {} s, {rss_late} KiB at the end",
        connections as f64 / elapsed,
        first_minute.as_secs()
    );
    assert_eq!(counted.bytes_sent, sent, "every byte of every connection");
    assert_eq!(counted.connections_opened, connections);
    assert!(
        connections as f64 / elapsed >= 0.9 * CONNECTIONS_PER_SECOND as f64,
        "the load fell short of {CONNECTIONS_PER_SECOND}/s"
    );
    assert!(
        rss_late <= rss_early + rss_early / 10,
        "the agent's memory grew from {rss_early} KiB to {rss_late} KiB"
    );
    assert!(agent.is_running(), "the agent exited: {:?}", agent.stderr());
}
