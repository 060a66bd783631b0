//! Mapping rules from the fuzzer applied to flows from the fuzzer: naming,
//! selecting and capping series never panics and never loses a byte.
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use flowtel::config::FileConfig;
use libfuzzer_sys::fuzz_target;
use receiver::{
    ConnectionId, ConnectionSample, ConnectionState, Counters, Direction, Poll, PortFacts,
    ProcessInfo, Translation, Transport,
};

/// Reads the fuzzer's bytes one field at a time, zeros when they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn address(&mut self) -> IpAddr {
        if self.u8() % 4 == 0 {
            let mut octets = [0u8; 16];
            octets.iter_mut().for_each(|o| *o = self.u8());
            IpAddr::V6(Ipv6Addr::from(octets))
        } else {
            IpAddr::V4(Ipv4Addr::new(self.u8(), self.u8(), self.u8(), self.u8()))
        }
    }
    fn name(&mut self) -> String {
        let len = usize::from(self.u8() % 16);
        (0..len)
            .map(|_| char::from(b'a' + self.u8() % 26))
            .collect()
    }
}

fuzz_target!(|data: &[u8]| {
    // The rules: a YAML processor section up to the first NUL byte.
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let Ok(rules) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let Ok(file) = FileConfig::parse(Path::new("fuzz.yaml"), rules, HashMap::new()) else {
        return;
    };
    let mut config = file.processor;
    config.interval = Duration::from_secs(60);
    let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let Ok(mut processor) = processor::Processor::new(config, start) else {
        return;
    };

    // The flows: the rest of the bytes.
    let mut bytes = Bytes(data.get(split + 1..).unwrap_or(&[]));
    let mut samples = Vec::new();
    let mut total = 0u64;
    for cookie in 0..u64::from(bytes.u8() % 32) {
        let sent = u64::from(bytes.u16());
        total += sent;
        samples.push(ConnectionSample {
            id: ConnectionId {
                socket_cookie: cookie,
                peer: None,
                first_seen_ns: 1,
            },
            netns: u32::from(bytes.u8()),
            transport: if bytes.u8() % 2 == 0 {
                Transport::Tcp
            } else {
                Transport::Udp
            },
            local: (bytes.address(), bytes.u16()).into(),
            remote: (bytes.address(), bytes.u16()).into(),
            direction: match bytes.u8() % 3 {
                0 => Direction::Outgoing,
                1 => Direction::Incoming,
                _ => Direction::Unknown,
            },
            process: Arc::new(ProcessInfo {
                pid: u32::from(bytes.u16()),
                name: bytes.name(),
                container_id: Some(bytes.name()).filter(|n| !n.is_empty()),
                pod_uid: None,
            }),
            counters: Counters {
                bytes_sent: sent,
                ..Counters::default()
            },
            rtt: None,
            seen_opening: true,
            established: true,
            state: ConnectionState::Open,
            // Some translated, so that the mappings of a NAT'd peer are fuzzed too.
            translation: Some(Box::new(Translation {
                destination: (bytes.u8() % 2 == 0).then(|| (bytes.address(), bytes.u16()).into()),
                source: None,
            })),
        });
    }
    let poll = Poll {
        at: None,
        samples,
        ports: PortFacts::default(),
        ..Poll::default()
    };
    processor.ingest(&poll, start + Duration::from_secs(1));
    let window = processor.flush(start + Duration::from_secs(2));
    let windowed: u64 = window.series.iter().map(|s| s.stats.bytes_sent).sum();
    assert_eq!(windowed, total, "bytes lost or doubled by the mappings");
});
