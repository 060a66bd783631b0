//! A prefork server: one process listens, another accepts and serves. The
//! connection's server end belongs to the process that holds it, not to the
//! listener's, once a poll has seen it; its bytes stay exact.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use integration::agent::Agent;
use integration::privilege;
use integration::record::FlowFilter;

const REQUEST: usize = 2000;
const REPLY: usize = 30_000;

/// In a forked child: accept one connection on `listener`, hold it until a
/// byte arrives on `go` (the parent sends it once a poll has seen the
/// connection), read the request to EOF, write the reply, exit. Only
/// async-signal-safe calls: the parent has threads.
fn serve_once_in_child(listener: i32, go: i32) -> i32 {
    // SAFETY: the child runs only the raw syscalls below, then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid > 0 {
        return pid;
    }
    // SAFETY: plain syscalls on descriptors this child owns; buffers are on
    // its stack and the lengths are theirs.
    unsafe {
        let fd = libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut());
        if fd < 0 {
            libc::_exit(2);
        }
        let mut buffer = [0u8; 4096];
        if libc::read(go, buffer.as_mut_ptr().cast(), 1) != 1 {
            libc::_exit(5);
        }
        loop {
            let n = libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len());
            if n == 0 {
                break;
            }
            if n < 0 {
                libc::_exit(3);
            }
        }
        let reply = [5u8; REPLY];
        let mut written = 0;
        while written < REPLY {
            let n = libc::write(fd, reply[written..].as_ptr().cast(), REPLY - written);
            if n <= 0 {
                libc::_exit(4);
            }
            written += n as usize;
        }
        libc::close(fd);
        libc::_exit(0);
    }
}

#[test]
fn a_connection_served_by_a_forked_worker_belongs_to_the_worker() {
    privilege::require_root();
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("bound").port();
    let mut go = [0; 2];
    // SAFETY: pipe writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe(go.as_mut_ptr()) }, 0, "pipe");
    let worker = serve_once_in_child(listener.as_raw_fd(), go[0]);

    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    client.write_all(&[1u8; REQUEST]).expect("request");
    client.shutdown(Shutdown::Write).expect("shutdown");
    let served = FlowFilter::any()
        .pid(worker as u32)
        .tcp()
        .incoming()
        .source_port(port);
    agent.wait_until("a poll with the worker's connection", |records| {
        records
            .iter()
            .any(|r| r.as_poll().is_some_and(|f| served.matches(&f.attributes)))
    });
    // SAFETY: a one-byte write from a live buffer to our pipe.
    assert_eq!(unsafe { libc::write(go[1], [1u8].as_ptr().cast(), 1) }, 1);
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).expect("reply");
    assert_eq!(reply.len(), REPLY);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(worker, &mut status, 0) };
    assert_eq!(status, 0, "the worker failed");
    agent.assert_ends_counted(&[(&served, REPLY as u64, REQUEST as u64)]);
    let by_listener = agent.sum(
        &FlowFilter::this_process()
            .tcp()
            .incoming()
            .source_port(port),
    );
    assert_eq!(
        (by_listener.bytes_sent, by_listener.bytes_received),
        (0, 0),
        "no byte of the served connection is the listener's"
    );
}
