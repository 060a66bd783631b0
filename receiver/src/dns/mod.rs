//! DNS messages of the host's clients: copied by the kernel (`bpf-programs/dns.h`),
//! drained from their ring buffer here and parsed, never trusted, into
//! [`DnsMessage`]s that the processor matches into lookups.

mod capture;
mod message;

pub(crate) use capture::DnsCapture;
pub use message::{parse, DnsAnswer, DnsContent, DnsMessage, DnsQuestion, Malformed, MessageKind};
