//! Drains the ring buffer of DNS messages (`dns_events`) and parses each
//! record, at each poll and whenever the kernel wakes the reader: only once
//! a quarter of the ring (about 870 records) is queued, so that a host's
//! lookups cost no wake-up each, and a quiet host none at all. What is read
//! waits in a bounded inbox for the next poll; messages beyond it, and
//! malformed ones, are counted.
//!
//! A TCP record is a segment (the ingress hook) or what one read returned
//! (the receive tracepoint); either may hold the 2-byte length alone, and
//! then the socket's next record in that direction is the message without
//! it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use aya::maps::{MapData, RingBuf};

use foldhash::HashSet;

use super::message::{parse, parse_bare, DnsMessage, MessageKind};
use crate::kernel::abi::{DnsEvent, Record as _, AF_INET, DNS_QUERY, IPPROTO_TCP};
use crate::Transport;

/// Messages held between two polls, at most.
const INBOX_CAPACITY: usize = 200_000;

/// TCP streams whose length came alone and whose message is next, at most
/// (a stream that never sends its message is forgotten when full).
const LENGTHS_ALONE_CAPACITY: usize = 4096;

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
    /// (socket, direction) of TCP records that held only the length.
    lengths_alone: HashSet<(u64, u8)>,
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
            match message(&event, &mut inbox.lengths_alone) {
                Record::Message(_) if inbox.messages.len() >= INBOX_CAPACITY => {
                    inbox.overflowed += 1
                }
                Record::Message(message) => inbox.messages.push(message),
                Record::LengthAlone => {}
                Record::Malformed => inbox.malformed += 1,
            }
        }
    }

    /// Starts the task that drains the ring whenever the kernel wakes it.
    pub fn spawn_reader(&self) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let capture = self.clone();
        crate::kernel::events::spawn_drain(&self.ring, "dns messages", move || capture.drain())
    }
}

/// What one record holds.
enum Record {
    Message(DnsMessage),
    /// A TCP record of the 2-byte length only: its message is next.
    LengthAlone,
    /// Not DNS.
    Malformed,
}

/// The message of one record.
fn message(event: &DnsEvent, lengths_alone: &mut HashSet<(u64, u8)>) -> Record {
    let stream = (event.cookie, event.direction);
    let parsed = if event.protocol != IPPROTO_TCP {
        parse(event.copied(), event.length as usize, Transport::Udp)
    } else if event.length == 2 && event.copied().len() == 2 {
        if lengths_alone.len() >= LENGTHS_ALONE_CAPACITY {
            lengths_alone.clear();
        }
        lengths_alone.insert(stream);
        return Record::LengthAlone;
    } else if lengths_alone.remove(&stream) {
        parse_bare(event.copied(), event.length as usize)
    } else {
        parse(event.copied(), event.length as usize, Transport::Tcp)
    };
    let Ok(content) = parsed else {
        return Record::Malformed;
    };
    let transport = if event.protocol == IPPROTO_TCP {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let kind = if event.direction == DNS_QUERY {
        MessageKind::Query
    } else {
        MessageKind::Answer
    };
    // A query must not claim to be a response and the other way round.
    if content.is_response != (kind == MessageKind::Answer) {
        return Record::Malformed;
    }
    let address = |bytes: &[u8; 16]| -> IpAddr {
        if event.family == AF_INET {
            IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(*bytes)).to_canonical()
        }
    };
    Record::Message(DnsMessage {
        at_ns: event.ktime_ns,
        kind,
        transport,
        socket: event.cookie,
        client: SocketAddr::new(address(&event.client_addr), event.client_port),
        server: SocketAddr::new(address(&event.server_addr), event.server_port),
        netns: event.netns,
        pid: event.pid,
        process_name: Arc::from(crate::process::comm_to_string(&event.comm)),
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::abi::DNS_ANSWER;

    const IPPROTO_UDP: u8 = libc::IPPROTO_UDP as u8;

    /// An answer record of `bytes` as read by the client of socket 7.
    fn answer(protocol: u8, bytes: &[u8]) -> DnsEvent {
        // SAFETY: DnsEvent is plain old data: all zeros is a valid value.
        let mut event: DnsEvent = unsafe { std::mem::zeroed() };
        event.cookie = 7;
        event.protocol = protocol;
        event.direction = DNS_ANSWER;
        event.family = AF_INET;
        event.server_port = 53;
        event.length = bytes.len() as u32;
        event.captured = bytes.len() as u32;
        event.message[..bytes.len()].copy_from_slice(bytes);
        event
    }

    /// An answer to id 0x0102 with no records (NXDOMAIN), 12 bytes.
    const NXDOMAIN: [u8; 12] = [1, 2, 0x81, 0x83, 0, 0, 0, 0, 0, 0, 0, 0];

    fn parsed(record: Record) -> DnsMessage {
        match record {
            Record::Message(message) => message,
            Record::LengthAlone => panic!("a length alone"),
            Record::Malformed => panic!("malformed"),
        }
    }

    #[test]
    fn a_tcp_read_of_the_length_alone_makes_the_next_read_the_bare_message() {
        let mut alone = HashSet::default();
        let length = (NXDOMAIN.len() as u16).to_be_bytes();
        assert!(matches!(
            message(&answer(IPPROTO_TCP, &length), &mut alone),
            Record::LengthAlone
        ));
        let body = parsed(message(&answer(IPPROTO_TCP, &NXDOMAIN), &mut alone));
        assert_eq!(
            (body.content.id, body.content.response_code),
            (0x0102, "NXDOMAIN")
        );
        assert_eq!(body.transport, Transport::Tcp);
        assert!(alone.is_empty(), "the stream's next read is framed again");

        let framed = [length.as_slice(), &NXDOMAIN].concat();
        let whole = parsed(message(&answer(IPPROTO_TCP, &framed), &mut alone));
        assert_eq!(whole.content.id, 0x0102);
        assert_eq!(whole.socket, 7);
    }

    #[test]
    fn a_udp_record_is_never_framed_and_a_short_one_is_malformed() {
        let mut alone = HashSet::default();
        let udp = parsed(message(&answer(IPPROTO_UDP, &NXDOMAIN), &mut alone));
        assert_eq!(udp.transport, Transport::Udp);
        assert!(matches!(
            message(&answer(IPPROTO_UDP, &[0, 12]), &mut alone),
            Record::Malformed
        ));
        assert!(alone.is_empty());
    }
}
