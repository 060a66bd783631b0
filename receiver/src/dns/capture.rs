//! Drains the ring buffer of DNS messages (`dns_events`) and parses each
//! record, at each poll and whenever the kernel wakes the reader: only once
//! a quarter of the ring (about 870 records) is queued, so that a host's
//! lookups cost no wake-up each, and a quiet host none at all. What is read
//! waits in a bounded inbox for the next poll; messages beyond it, and
//! malformed ones, are counted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use aya::maps::{MapData, RingBuf};

use super::message::{parse, DnsMessage, MessageKind};
use crate::kernel::abi::{DnsEvent, Record as _, AF_INET, DNS_QUERY, IPPROTO_TCP};
use crate::Transport;

/// Messages held between two polls, at most.
const INBOX_CAPACITY: usize = 200_000;

/// The DNS ring buffer, what was read from it and what was lost.
#[derive(Clone)]
pub struct DnsCapture {
    ring: Arc<Mutex<RingBuf<MapData>>>,
    inbox: Arc<Mutex<Inbox>>,
}

/// What the drain has read and not yet handed over, and its losses
/// (cumulative).
#[derive(Default)]
struct Inbox {
    messages: Vec<DnsMessage>,
    malformed: u64,
    overflowed: u64,
}

/// What a poll takes: the messages since the last one and the losses so far.
pub(crate) struct Taken {
    pub messages: Vec<DnsMessage>,
    pub malformed: u64,
    pub overflowed: u64,
}

impl DnsCapture {
    pub fn new(ring: RingBuf<MapData>) -> DnsCapture {
        DnsCapture {
            ring: Arc::new(Mutex::new(ring)),
            inbox: Arc::default(),
        }
    }

    /// Everything the kernel has written up to now.
    pub fn take(&self) -> Taken {
        self.drain();
        let mut inbox = self.inbox.lock().expect("dns inbox poisoned");
        Taken {
            messages: std::mem::take(&mut inbox.messages),
            malformed: inbox.malformed,
            overflowed: inbox.overflowed,
        }
    }

    fn drain(&self) {
        let mut ring = self.ring.lock().expect("dns ring buffer poisoned");
        let mut inbox = self.inbox.lock().expect("dns inbox poisoned");
        while let Some(record) = ring.next() {
            let Some(event) = DnsEvent::from_bytes(&record) else {
                inbox.malformed += 1;
                continue;
            };
            drop(record);
            match message(&event) {
                Some(_) if inbox.messages.len() >= INBOX_CAPACITY => inbox.overflowed += 1,
                Some(message) => inbox.messages.push(message),
                None => inbox.malformed += 1,
            }
        }
    }

    /// Starts the task that drains the ring whenever the kernel wakes it.
    pub fn spawn_reader(&self) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let capture = self.clone();
        crate::kernel::events::spawn_drain(&self.ring, "dns messages", move || capture.drain())
    }
}

/// The message of one record; None when it is not DNS.
fn message(event: &DnsEvent) -> Option<DnsMessage> {
    let transport = if event.protocol == IPPROTO_TCP {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let content = parse(event.copied(), event.length as usize, transport).ok()?;
    let kind = if event.direction == DNS_QUERY {
        MessageKind::Query
    } else {
        MessageKind::Answer
    };
    // A query must not claim to be a response and the other way round.
    if content.is_response != (kind == MessageKind::Answer) {
        return None;
    }
    let address = |bytes: &[u8; 16]| -> IpAddr {
        if event.family == AF_INET {
            IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(*bytes)).to_canonical()
        }
    };
    Some(DnsMessage {
        at_ns: event.ktime_ns,
        kind,
        transport,
        client: SocketAddr::new(address(&event.client_addr), event.client_port),
        server: SocketAddr::new(address(&event.server_addr), event.server_port),
        netns: event.netns,
        pid: event.pid,
        process_name: Arc::from(crate::process::comm_to_string(&event.comm)),
        content,
    })
}
