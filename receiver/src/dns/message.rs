//! One DNS message as the client's socket saw it, and its parser: any byte
//! string gives either a [`DnsContent`] or a [`Malformed`] reason, never a
//! panic (the `dns` fuzz target holds it to that).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Header, Message, MessageType, Query};
use hickory_proto::rr::{RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::Transport;

/// CNAMEs followed from the question to its addresses, at most.
const MAX_CNAME_CHAIN: usize = 8;

/// Whether a message left the client or reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Sent by the client to the DNS port.
    Query,
    /// Received by the client from the DNS port.
    Answer,
}

/// A DNS message seen at a client socket of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMessage {
    /// CLOCK_MONOTONIC, in nanoseconds, when the packet passed the hook
    /// (a query) or the client read it (an answer, on Linux 6.3+).
    pub at_ns: u64,
    pub kind: MessageKind,
    pub transport: Transport,
    /// The client socket's cookie: what a query and its answer share.
    pub socket: u64,
    /// The client's end (this host's socket); for an answer read through
    /// an unbound socket, its port on the unspecified address.
    pub client: SocketAddr,
    /// The DNS server's end.
    pub server: SocketAddr,
    /// The client's network namespace (inode); 0 for answers, which the
    /// kernel sees in softirq: they take their query's.
    pub netns: u32,
    /// The sending process (queries only; 0 for answers).
    pub pid: u32,
    /// The sending task's name (queries only).
    pub process_name: Arc<str>,
    /// The parsed message.
    pub content: DnsContent,
}

/// What flowtel reads of a DNS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsContent {
    /// The transaction id.
    pub id: u16,
    /// Whether the header says response (QR bit).
    pub is_response: bool,
    /// The first question, if any.
    pub question: Option<DnsQuestion>,
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, `REFUSED` ... (responses).
    pub response_code: &'static str,
    /// The addresses the answer gives for the question's name (through its
    /// CNAMEs), each with the least TTL on its chain, in seconds.
    pub answers: Vec<DnsAnswer>,
    /// The message was longer than what the kernel copied: its header and
    /// question were read, its answers not.
    pub cut: bool,
}

/// The question of a message: its name (lower case, without the final
/// dot) and type (`A`, `AAAA`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsQuestion {
    pub name: Arc<str>,
    pub record_type: Arc<str>,
}

/// An address the answer gives for the question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsAnswer {
    pub address: IpAddr,
    pub ttl_secs: u32,
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("shorter than a DNS header")]
    Short,
    #[error("not a DNS message: {0}")]
    Invalid(String),
}

/// Parses what the kernel copied of one message: `payload` is the start of
/// the transport's payload (for TCP with its 2-byte length), `length` that
/// payload's length in the packet (more than `payload` holds when the copy
/// was cut).
pub fn parse(payload: &[u8], length: usize, transport: Transport) -> Result<DnsContent, Malformed> {
    match transport {
        Transport::Udp => parse_bare(payload, length),
        Transport::Tcp => {
            let [high, low, rest @ ..] = payload else {
                return Err(Malformed::Short);
            };
            let declared = usize::from(u16::from_be_bytes([*high, *low]));
            parse_whole_or_head(&rest[..declared.min(rest.len())], rest.len() >= declared)
        }
    }
}

/// Parses a message without a TCP length in front: a UDP payload, or the
/// TCP read that followed the one that took the length alone.
pub fn parse_bare(payload: &[u8], length: usize) -> Result<DnsContent, Malformed> {
    parse_whole_or_head(payload, payload.len() >= length)
}

fn parse_whole_or_head(message: &[u8], whole: bool) -> Result<DnsContent, Malformed> {
    if message.len() < 12 {
        return Err(Malformed::Short);
    }
    if whole {
        let parsed = Message::from_vec(message).map_err(|e| Malformed::Invalid(e.to_string()))?;
        return Ok(content(&parsed));
    }
    head_only(message)
}

/// The header and first question of a message whose rest was not copied.
fn head_only(message: &[u8]) -> Result<DnsContent, Malformed> {
    let mut decoder = BinDecoder::new(message);
    let header = Header::read(&mut decoder).map_err(|e| Malformed::Invalid(e.to_string()))?;
    let question = if header.query_count() > 0 {
        let query = Query::read(&mut decoder).map_err(|e| Malformed::Invalid(e.to_string()))?;
        Some(question(&query))
    } else {
        None
    };
    Ok(DnsContent {
        id: header.id(),
        is_response: header.message_type() == MessageType::Response,
        question,
        response_code: response_code(header.response_code().into()),
        answers: Vec::new(),
        cut: true,
    })
}

fn content(message: &Message) -> DnsContent {
    let question = message.queries().first().map(question);
    let answers = message
        .queries()
        .first()
        .map(|query| addresses(message, query))
        .unwrap_or_default();
    DnsContent {
        id: message.id(),
        is_response: message.message_type() == MessageType::Response,
        question,
        response_code: response_code(message.response_code().into()),
        answers,
        cut: false,
    }
}

fn question(query: &Query) -> DnsQuestion {
    DnsQuestion {
        name: Arc::from(name_text(query.name())),
        record_type: Arc::from(query.query_type().to_string()),
    }
}

/// A name as flowtel shows it: lower case, no final dot.
fn name_text(name: &hickory_proto::rr::Name) -> String {
    let mut text = name.to_ascii().to_ascii_lowercase();
    if text.len() > 1 && text.ends_with('.') {
        text.pop();
    }
    text
}

/// The A and AAAA records for the question's name, following its CNAMEs
/// (at most [`MAX_CNAME_CHAIN`], so a loop of them ends).
fn addresses(message: &Message, query: &Query) -> Vec<DnsAnswer> {
    if !matches!(query.query_type(), RecordType::A | RecordType::AAAA) {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut name = query.name().clone();
    let mut chain_ttl = u32::MAX;
    for _ in 0..=MAX_CNAME_CHAIN {
        let mut next = None;
        for record in message.answers() {
            if record.name() != &name {
                continue;
            }
            let ttl = record.ttl().min(chain_ttl);
            match record.data() {
                RData::A(a) => found.push(DnsAnswer {
                    address: IpAddr::V4(a.0),
                    ttl_secs: ttl,
                }),
                RData::AAAA(aaaa) => found.push(DnsAnswer {
                    address: IpAddr::V6(aaaa.0),
                    ttl_secs: ttl,
                }),
                RData::CNAME(target) if next.is_none() => next = Some((target.0.clone(), ttl)),
                _ => {}
            }
        }
        match next {
            Some((target, ttl)) if found.is_empty() => {
                name = target;
                chain_ttl = ttl;
            }
            _ => break,
        }
    }
    found
}

/// The mnemonic of a response code (RFC 6895), `RCODE<n>` for others.
pub fn response_code(code: u16) -> &'static str {
    const NAMES: [&str; 11] = [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
        "NXRRSET", "NOTAUTH", "NOTZONE",
    ];
    match NAMES.get(usize::from(code)) {
        Some(name) => name,
        None if code == 16 => "BADVERS",
        None => "RCODE_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;

    fn answer(name: &str, records: Vec<Record>) -> Vec<u8> {
        let mut message = Message::new();
        message
            .set_id(0x1234)
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_response_code(ResponseCode::NoError)
            .add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A))
            .add_answers(records);
        message.to_vec().unwrap()
    }

    fn a(name: &str, ttl: u32, ip: [u8; 4]) -> Record {
        Record::from_rdata(
            Name::from_str(name).unwrap(),
            ttl,
            RData::A(A::from(std::net::Ipv4Addr::from(ip))),
        )
    }

    fn cname(name: &str, ttl: u32, target: &str) -> Record {
        let target = Name::from_str(target).unwrap();
        Record::from_rdata(
            Name::from_str(name).unwrap(),
            ttl,
            RData::CNAME(CNAME(target)),
        )
    }

    #[test]
    fn an_answer_gives_its_addresses_through_the_cname_chain_with_the_least_ttl() {
        let bytes = answer(
            "WWW.Example.com.",
            vec![
                cname("www.example.com.", 30, "edge.cdn.net."),
                a("edge.cdn.net.", 300, [192, 0, 2, 7]),
                a("other.net.", 300, [192, 0, 2, 8]),
            ],
        );
        let content = parse(&bytes, bytes.len(), Transport::Udp).unwrap();
        assert_eq!(content.id, 0x1234);
        assert!(content.is_response);
        assert_eq!(content.response_code, "NOERROR");
        let question = content.question.unwrap();
        assert_eq!(&*question.name, "www.example.com");
        assert_eq!(&*question.record_type, "A");
        assert_eq!(
            content.answers,
            vec![DnsAnswer {
                address: "192.0.2.7".parse().unwrap(),
                ttl_secs: 30
            }]
        );
    }

    #[test]
    fn a_cname_loop_ends() {
        let bytes = answer(
            "a.example.",
            vec![
                cname("a.example.", 5, "b.example."),
                cname("b.example.", 5, "a.example."),
            ],
        );
        let content = parse(&bytes, bytes.len(), Transport::Udp).unwrap();
        assert!(content.answers.is_empty());
    }

    #[test]
    fn tcp_messages_carry_their_length_and_a_cut_copy_keeps_the_question() {
        let bytes = answer("cut.example.", vec![a("cut.example.", 60, [10, 0, 0, 1])]);
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        let whole = parse(&framed, framed.len(), Transport::Tcp).unwrap();
        assert_eq!(whole.answers.len(), 1);
        assert!(!whole.cut);
        let cut = parse(&framed[..framed.len() - 4], framed.len(), Transport::Tcp).unwrap();
        assert!(cut.cut);
        assert!(cut.answers.is_empty());
        assert_eq!(&*cut.question.unwrap().name, "cut.example");
    }

    #[test]
    fn garbage_wrong_counts_and_compression_loops_are_malformed() {
        assert_eq!(parse(&[0; 5], 5, Transport::Udp), Err(Malformed::Short));
        assert_eq!(parse(&[0], 1, Transport::Tcp), Err(Malformed::Short));
        // Header claims one question, none follows.
        let mut wrong = [0u8; 12];
        wrong[5] = 1;
        assert!(matches!(
            parse(&wrong, 12, Transport::Udp),
            Err(Malformed::Invalid(_))
        ));
        // A question whose name is a pointer to itself.
        let mut looped = wrong.to_vec();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(matches!(
            parse(&looped, looped.len(), Transport::Udp),
            Err(Malformed::Invalid(_))
        ));
        assert!(parse(&looped, looped.len() + 100, Transport::Udp).is_err());
    }

    #[test]
    fn response_codes_by_mnemonic() {
        assert_eq!(response_code(0), "NOERROR");
        assert_eq!(response_code(2), "SERVFAIL");
        assert_eq!(response_code(3), "NXDOMAIN");
        assert_eq!(response_code(5), "REFUSED");
        assert_eq!(response_code(12), "RCODE_OTHER");
    }
}
