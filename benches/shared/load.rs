//! Short TCP connections at a steady rate, and the server that answers
//! them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An echo-once server: reads one request and answers it, then keeps the
/// socket (`keep`: held connections) or closes it. One thread for all: a
/// thread per connection would not scale to 100,000. Checks `stop` after
/// each connection: one more connection wakes it.
pub fn serve(listener: TcpListener, keep: bool, stop: Arc<AtomicBool>) {
    let mut kept = Vec::new();
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(mut stream) = stream else { continue };
        let mut buf = [0u8; 128];
        if let Ok(n) = stream.read(&mut buf) {
            if n > 0 && stream.write_all(&buf[..n]).is_ok() && keep {
                kept.push(stream);
            }
        }
    }
}

/// Opens `rate` short connections per second (100 bytes each way) until
/// `stop`; counts the ones that exchanged their bytes in `done`.
pub fn churn(server: SocketAddr, rate: u64, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = started + interval * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if let Ok(mut stream) = TcpStream::connect(server) {
            let mut buf = [0u8; 100];
            if stream.write_all(&buf).is_ok() && stream.read_exact(&mut buf).is_ok() {
                done.fetch_add(1, Ordering::Relaxed);
            }
        }
        n += 1;
    }
}
