//! Queries matched with their answers by transaction id, client socket,
//! server and transport (the socket, not its address: an answer read
//! through an unbound socket knows no local address), into [`DnsLookup`]s; a query unanswered
//! for the timeout is a lookup too, with outcome [`TIMEOUT`]. The table of
//! queries awaiting an answer is bounded: beyond it queries are counted,
//! not matched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use foldhash::HashMap;
use receiver::{DnsMessage, DnsQuestion, MessageKind, Transport};

use super::NameCache;

/// The outcome of a query that got no answer in time.
pub const TIMEOUT: &str = "timeout";

/// One lookup, answered or timed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsLookup {
    /// UDP or TCP.
    pub transport: Transport,
    /// The client's end (this host's socket).
    pub client: SocketAddr,
    /// The DNS server asked.
    pub server: SocketAddr,
    /// The network namespace of the client.
    pub netns: u32,
    /// The client's process name (the querying task's).
    pub process_name: Arc<str>,
    /// The query's question.
    pub question: Option<DnsQuestion>,
    /// The answer's response code (`NOERROR`, `NXDOMAIN` ...) or [`TIMEOUT`].
    pub outcome: &'static str,
    /// From the query to the answer, for answered lookups.
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Transaction {
    id: u16,
    /// The client socket's cookie.
    socket: u64,
    server: SocketAddr,
    transport: Transport,
}

#[derive(Debug)]
struct Pending {
    at_ns: u64,
    client: SocketAddr,
    netns: u32,
    process_name: Arc<str>,
    question: Option<DnsQuestion>,
}

impl Pending {
    /// The lookup this query ends as.
    fn finish(
        self,
        transaction: Transaction,
        outcome: &'static str,
        duration: Option<Duration>,
    ) -> DnsLookup {
        DnsLookup {
            transport: transaction.transport,
            client: self.client,
            server: transaction.server,
            netns: self.netns,
            process_name: self.process_name,
            question: self.question,
            outcome,
            duration,
        }
    }
}

/// The queries awaiting their answer.
#[derive(Debug)]
pub struct Lookups {
    pending: HashMap<Transaction, Pending>,
    max_pending: usize,
    timeout: Duration,
    /// Queries not matched because the table was full (cumulative).
    pub overflowed: u64,
    /// Answers to no query seen (cumulative): to a query sent before the
    /// agent started, one already timed out, or a spoofed one.
    pub unmatched: u64,
}

impl Lookups {
    /// An empty table of at most `max_pending` queries, each waiting at
    /// most `timeout`.
    pub fn new(max_pending: usize, timeout: Duration) -> Lookups {
        Lookups {
            pending: HashMap::default(),
            max_pending,
            timeout,
            overflowed: 0,
            unmatched: 0,
        }
    }

    /// Queries awaiting their answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Matches `messages` (in the order the kernel saw them), teaches
    /// `names` what the answers say, and hands each finished lookup to
    /// `done`; then times out the queries older than the timeout at
    /// `now_ns` (CLOCK_MONOTONIC).
    pub fn observe(
        &mut self,
        messages: &[DnsMessage],
        now_ns: u64,
        names: &mut NameCache,
        mut done: impl FnMut(DnsLookup),
    ) {
        let timeout_ns = u64::try_from(self.timeout.as_nanos()).unwrap_or(u64::MAX);
        for message in messages {
            let transaction = Transaction {
                id: message.content.id,
                socket: message.socket,
                server: message.server,
                transport: message.transport,
            };
            match message.kind {
                MessageKind::Query => {
                    // A retry with the same id is the same lookup.
                    if self.pending.contains_key(&transaction) {
                        continue;
                    }
                    if self.pending.len() >= self.max_pending {
                        self.overflowed += 1;
                        continue;
                    }
                    let pending = Pending {
                        at_ns: message.at_ns,
                        client: message.client,
                        netns: message.netns,
                        process_name: Arc::clone(&message.process_name),
                        question: message.content.question.clone(),
                    };
                    self.pending.insert(transaction, pending);
                }
                MessageKind::Answer => {
                    let Some(query) = self.pending.remove(&transaction) else {
                        self.unmatched += 1;
                        continue;
                    };
                    let took_ns = message.at_ns.saturating_sub(query.at_ns);
                    let late = took_ns >= timeout_ns;
                    if !late {
                        if let Some(question) = &query.question {
                            names.learn(
                                query.netns,
                                &question.name,
                                &message.content.answers,
                                message.at_ns,
                            );
                        }
                    }
                    done(match late {
                        true => query.finish(transaction, TIMEOUT, None),
                        false => query.finish(
                            transaction,
                            message.content.response_code,
                            Some(Duration::from_nanos(took_ns)),
                        ),
                    });
                }
            }
        }
        let expired: Vec<Transaction> = self
            .pending
            .iter()
            .filter(|(_, query)| now_ns.saturating_sub(query.at_ns) >= timeout_ns)
            .map(|(transaction, _)| transaction.clone())
            .collect();
        for transaction in expired {
            let query = self.pending.remove(&transaction).expect("just found");
            done(query.finish(transaction, TIMEOUT, None));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use receiver::{DnsAnswer, DnsContent};

    use super::*;

    pub(crate) fn message(
        kind: MessageKind,
        id: u16,
        at_ms: u64,
        code: &'static str,
    ) -> DnsMessage {
        DnsMessage {
            at_ns: at_ms * 1_000_000,
            kind,
            transport: Transport::Udp,
            socket: 4242,
            client: "10.0.0.1:40000".parse().unwrap(),
            server: "10.0.0.53:53".parse().unwrap(),
            netns: if kind == MessageKind::Query { 7 } else { 0 },
            pid: 1,
            process_name: Arc::from("dig"),
            content: DnsContent {
                id,
                is_response: kind == MessageKind::Answer,
                question: Some(DnsQuestion {
                    name: Arc::from("example.com"),
                    record_type: Arc::from("A"),
                }),
                response_code: code,
                answers: vec![DnsAnswer {
                    address: "192.0.2.1".parse().unwrap(),
                    ttl_secs: 60,
                }],
                cut: false,
            },
        }
    }

    fn run(lookups: &mut Lookups, messages: &[DnsMessage], now_ms: u64) -> Vec<DnsLookup> {
        let mut names = NameCache::new(16);
        let mut out = Vec::new();
        lookups.observe(messages, now_ms * 1_000_000, &mut names, |l| out.push(l));
        out
    }

    #[test]
    fn an_answer_ends_its_query_with_the_time_between() {
        let mut lookups = Lookups::new(8, Duration::from_secs(15));
        let done = run(
            &mut lookups,
            &[
                message(MessageKind::Query, 1, 100, ""),
                message(MessageKind::Query, 1, 150, ""),
                message(MessageKind::Answer, 1, 103, "NXDOMAIN"),
                message(MessageKind::Answer, 9, 103, "NOERROR"),
            ],
            200,
        );
        assert_eq!(done.len(), 1, "a retry is the same lookup: {done:?}");
        assert_eq!(done[0].outcome, "NXDOMAIN");
        assert_eq!(done[0].duration, Some(Duration::from_millis(3)));
        assert_eq!(done[0].netns, 7, "the query's namespace");
        assert_eq!(lookups.unmatched, 1);
        assert_eq!(lookups.pending(), 0);
    }

    #[test]
    fn a_query_unanswered_for_the_timeout_is_a_timeout_and_a_full_table_counts() {
        let mut lookups = Lookups::new(2, Duration::from_secs(1));
        let queries: Vec<DnsMessage> = (0..3)
            .map(|id| message(MessageKind::Query, id, 0, ""))
            .collect();
        assert!(run(&mut lookups, &queries, 999).is_empty());
        assert_eq!(lookups.overflowed, 1);
        let late = run(
            &mut lookups,
            &[message(MessageKind::Answer, 0, 1500, "NOERROR")],
            1000,
        );
        assert_eq!(late.len(), 2);
        assert!(late
            .iter()
            .all(|l| l.outcome == TIMEOUT && l.duration.is_none()));
    }
}
