//! A connection map too small for the host's connections (1,000 entries,
//! 5,000 live connections): the connections that do not fit are counted as
//! dropped and reported, the agent keeps running with flat memory, and once
//! room frees up new connections are counted exactly.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use integration::agent::Agent;
use integration::privilege;
use integration::record::Record;
use integration::traffic::tcp;

/// The map's capacity, and how many connections are held open at once
/// (each has two sockets on loopback: ten times the capacity).
const CAPACITY: usize = 1000;
const HELD_OPEN: usize = 5000;

/// Lets this process hold `n` descriptors (10,000 sockets and more).
fn allow_descriptors(n: u64) {
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit reads the struct we own; root may raise the limit.
    let done = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(done, 0, "cannot allow {n} open files");
}

#[test]
fn a_full_map_counts_drops_and_the_agent_keeps_counting() {
    privilege::require_root();
    allow_descriptors(4 * HELD_OPEN as u64);
    let capacity = CAPACITY.to_string();
    let mut agent = Agent::start_with(
        env!("CARGO_BIN_EXE_flowtel"),
        Duration::from_secs(1),
        &["--max-connections", &capacity],
    );

    let listener = TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let server: SocketAddr = listener.local_addr().expect("bound");
    let mut held = Vec::with_capacity(2 * HELD_OPEN);
    for _ in 0..HELD_OPEN {
        held.push(TcpStream::connect(server).expect("connect to the listener"));
        held.push(listener.accept().expect("accept").0);
    }

    // Every socket has one opening (SYN_SENT or SYN_RECV); at most CAPACITY
    // of them fit. Other processes' connections may add to the count.
    let expected_at_least = (2 * HELD_OPEN - CAPACITY) as u64;
    let last_health = |records: &[Record]| records.iter().rev().find_map(Record::as_health);
    agent.wait_until("the dropped connections reported", |records| {
        last_health(records).is_some_and(|h| h.connections_dropped >= expected_at_least)
    });
    let drops = agent.health().last().map_or(0, |h| h.connections_dropped);
    assert!(
        drops >= expected_at_least,
        "{} sockets opened with room for {CAPACITY}: expected at least \
         {expected_at_least} dropped, the agent reported {drops}",
        2 * HELD_OPEN
    );
    let last = agent.health().last().cloned().expect("health records");
    assert_eq!(last.map_capacity, CAPACITY as u64, "{last:?}");
    assert!(last.tracked_connections <= CAPACITY as u64, "{last:?}");

    // Memory stays flat while the map stays full and the polls go on.
    let before = agent.rss_kib();
    agent.wait_polls(10);
    let after = agent.rss_kib();
    println!("agent RSS with a full map: {before} KiB, ten polls later {after} KiB");
    assert!(
        after <= before + before / 10,
        "the agent's memory grew from {before} KiB to {after} KiB"
    );

    // Closing them frees the map; new connections are tracked again, exactly.
    drop(held);
    agent.wait_until("room in the map", |records| {
        last_health(records).is_some_and(|h| h.tracked_connections + 2 <= CAPACITY as u64)
    });
    let truth = tcp::transfer("127.0.0.1".parse().unwrap(), 1 << 20, 64 << 10);
    agent.assert_transfer_counted(&truth);
    assert!(agent.is_running(), "the agent exited: {:?}", agent.stderr());
}
