//! Hand-made connection samples for the unit tests.

use std::sync::Arc;

use receiver::{
    CloseError, ConnectionId, ConnectionSample, ConnectionState, Counters, Direction, ProcessInfo,
    Transport,
};

/// Counters with `sent`/`received` bytes and one packet per 10 bytes.
pub fn counters(sent: u64, received: u64) -> Counters {
    Counters {
        bytes_sent: sent,
        bytes_received: received,
        packets_sent: sent.div_ceil(10),
        packets_received: received.div_ceil(10),
        retransmits: 0,
    }
}

/// An established outgoing TCP connection from curl to 10.0.0.2:80, open.
pub fn open(cookie: u64, counters: Counters) -> ConnectionSample {
    ConnectionSample {
        id: ConnectionId {
            socket_cookie: cookie,
            peer: None,
            first_seen_ns: 1_000,
        },
        netns: 4026531840,
        transport: Transport::Tcp,
        local: "10.0.0.1:40000".parse().unwrap(),
        remote: "10.0.0.2:80".parse().unwrap(),
        direction: Direction::Outgoing,
        process: Arc::new(ProcessInfo {
            pid: 123,
            name: "curl".into(),
            container_id: None,
            pod_uid: None,
        }),
        counters,
        rtt: None,
        seen_opening: true,
        established: true,
        state: ConnectionState::Open,
        translation: Default::default(),
    }
}

/// The same connection's closing sample.
pub fn closed(cookie: u64, counters: Counters, error: Option<CloseError>) -> ConnectionSample {
    ConnectionSample {
        state: ConnectionState::Closed { error },
        ..open(cookie, counters)
    }
}
