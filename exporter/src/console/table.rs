//! The terminal view: the busiest flows of every poll, and the totals of
//! every window, clearly marked.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

use processor::{Attributes, FlowStats, PollReport, WindowReport};

use super::units::{bits_per_second, bytes, duration, end_label, rtt_text, timestamp};
use crate::{Error, Exporter};

/// How many flows a table shows; the rest are summed up in one line.
const TOP: usize = 20;

/// Writes human-readable tables to `W`, flushing after each report.
#[derive(Debug)]
pub struct Table<W> {
    out: W,
    /// The receiver's loss counters at the last poll, to say when they grow.
    losses_seen: (u64, u64),
}

impl<W: Write> Table<W> {
    /// Writes to `out`.
    pub fn new(out: W) -> Table<W> {
        Table {
            out,
            losses_seen: (0, 0),
        }
    }

    /// The writer back, for tests.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn write_out(&mut self, text: &str) -> Result<(), Error> {
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(Error::Console)
    }
}

impl<W: Write> Exporter for Table<W> {
    fn export_poll(&mut self, report: &PollReport) -> Result<(), Error> {
        let mut text = String::new();
        let period = report.duration();
        let _ = write!(
            text,
            "-- {} .. {} ({}): ",
            timestamp(report.start),
            timestamp(report.end),
            duration(period)
        );
        match report.flows.len() {
            0 => text.push_str("no active flows\n"),
            1 => text.push_str("1 active flow\n"),
            n => {
                let _ = writeln!(text, "{n} active flows");
            }
        }
        if !report.flows.is_empty() {
            let rows = report
                .flows
                .iter()
                .map(|f| (Cow::Owned(f.key.attributes()), &f.stats));
            render(&mut text, rows.collect(), period, Columns::Poll);
        }
        let health = &report.health;
        let losses = (health.connections_dropped, health.untracked_events);
        if losses.0 > self.losses_seen.0 || losses.1 > self.losses_seen.1 {
            let _ = writeln!(
                text,
                "!! receiver: the connection map is full ({}/{} entries): {} new connections \
                 and {} events on other sockets not counted; {} and {} since start",
                health.tracked_connections,
                health.map_capacity,
                losses.0 - self.losses_seen.0,
                losses.1 - self.losses_seen.1,
                losses.0,
                losses.1,
            );
        }
        self.losses_seen = losses;
        self.write_out(&text)
    }

    fn export_window(&mut self, report: &WindowReport) -> Result<(), Error> {
        let mut text = String::new();
        let period = report.duration();
        let mut total = FlowStats::default();
        for series in &report.series {
            total.merge(&series.stats);
        }
        let _ = writeln!(
            text,
            "== WINDOW TOTALS {} .. {} ({}): {} series, {} sent, {} received, {} ==",
            timestamp(report.start),
            timestamp(report.end),
            duration(period),
            report.series.len(),
            bytes(total.bytes_sent),
            bytes(total.bytes_received),
            bits_per_second(total.bandwidth_bps(period)),
        );
        if report.overflowed_series > 0 {
            let _ = writeln!(
                text,
                "!! {} series over processor.max_series were summed into the flowtel.overflow series",
                report.overflowed_series
            );
        }
        if !report.series.is_empty() {
            let rows = report
                .series
                .iter()
                .map(|s| (Cow::Borrowed(&s.attributes), &s.stats));
            render(&mut text, rows.collect(), period, Columns::Window(total));
        }
        super::dns::table(&mut text, &report.dns);
        text.push_str("== END OF WINDOW ==\n");
        self.write_out(&text)
    }
}

enum Columns {
    /// Traffic only.
    Poll,
    /// Traffic, connection churn and RTT, and a total row.
    Window(FlowStats),
}

/// Appends the table of the `TOP` busiest flows (or series) to `text`.
fn render(
    text: &mut String,
    mut busiest: Vec<(Cow<'_, Attributes>, &FlowStats)>,
    period: Duration,
    columns: Columns,
) {
    busiest.sort_by_key(|(_, stats)| std::cmp::Reverse(stats.bytes()));

    let mut header = vec![
        "SOURCE",
        "",
        "DESTINATION",
        "PROTO",
        "PROCESS",
        "SENT",
        "RECV",
        "BANDWIDTH",
        "RETRANS",
    ];
    let window = matches!(columns, Columns::Window(_));
    if window {
        header.extend(["OPENED", "CLOSED", "FAILED", "RTT"]);
    }
    // Right-align the numbers.
    let right = |column: usize| column >= 5;

    let mut rows: Vec<Vec<String>> = Vec::with_capacity(TOP + 2);
    for (attributes, stats) in busiest.iter().take(TOP) {
        let text_of = |name| attributes.get(name).map(ToString::to_string);
        let process = match (
            text_of("source.process.name"),
            text_of("source.process.pid"),
        ) {
            (Some(name), Some(pid)) => format!("{name}/{pid}"),
            (Some(name), None) => name,
            (None, Some(pid)) => pid,
            (None, None) => "-".to_owned(),
        };
        let mut row = vec![
            end_label(attributes, "source"),
            "->".to_owned(),
            end_label(attributes, "destination"),
            text_of("network.transport").unwrap_or_else(|| "*".to_owned()),
            process,
        ];
        traffic(&mut row, stats, period);
        if window {
            churn(&mut row, stats);
        }
        rows.push(row);
    }
    if busiest.len() > TOP {
        let mut rest = FlowStats::default();
        for (_, stats) in &busiest[TOP..] {
            rest.merge(stats);
        }
        let mut row = vec![
            format!("({} more flows)", busiest.len() - TOP),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ];
        traffic(&mut row, &rest, period);
        if window {
            churn(&mut row, &rest);
        }
        rows.push(row);
    }
    if let Columns::Window(total) = columns {
        let mut row = vec![
            "TOTAL".to_owned(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ];
        traffic(&mut row, &total, period);
        churn(&mut row, &total);
        rows.push(row);
    }

    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (column, cell) in cells.enumerate() {
            if column > 0 {
                out.push_str("  ");
            }
            let width = widths[column];
            if right(column) {
                let _ = write!(out, "{cell:>width$}");
            } else {
                let _ = write!(out, "{cell:<width$}");
            }
        }
        text.push_str(out.trim_end());
        text.push('\n');
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
}

fn traffic(row: &mut Vec<String>, stats: &FlowStats, period: Duration) {
    row.extend([
        bytes(stats.bytes_sent),
        bytes(stats.bytes_received),
        bits_per_second(stats.bandwidth_bps(period)),
        stats.retransmits.to_string(),
    ]);
}

fn churn(row: &mut Vec<String>, stats: &FlowStats) {
    row.extend([
        stats.connections_opened.to_string(),
        stats.connections_closed.to_string(),
        stats.connections_failed.total().to_string(),
        match stats.rtt.mean() {
            Some(rtt) => rtt_text(rtt),
            None => "-".to_owned(),
        },
    ]);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{SystemTime, UNIX_EPOCH};

    use health::PollHealth;
    use processor::{Flow, FlowKey, NetworkType};
    use receiver::{Direction, ProcessInfo, Transport};

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_704_110_400 + secs)
    }

    fn flow(port: Option<u16>, sent: u64, received: u64) -> Flow {
        Flow {
            key: FlowKey {
                transport: Transport::Tcp,
                network_type: NetworkType::Ipv4,
                netns: 1,
                direction: Direction::Outgoing,
                source_address: "10.0.0.1".parse().unwrap(),
                source_port: None,
                source_process: Arc::new(ProcessInfo {
                    pid: 123,
                    name: "curl".into(),
                    container_id: None,
                    pod_uid: None,
                }),
                destination_address: "10.0.0.2".parse().unwrap(),
                destination_port: port,
                translation: Default::default(),
                destination_domain: None,
            },
            stats: FlowStats {
                bytes_sent: sent,
                bytes_received: received,
                retransmits: 2,
                ..FlowStats::default()
            },
        }
    }

    fn poll(flows: Vec<Flow>, health: PollHealth) -> PollReport {
        PollReport {
            start: at(0),
            end: at(10),
            flows,
            health,
            counter_resets: 0,
            dns_lookups: 0,
            dns_health: Default::default(),
        }
    }

    fn export_polls(reports: &[PollReport]) -> String {
        let mut table = Table::new(Vec::new());
        for report in reports {
            table.export_poll(report).unwrap();
        }
        String::from_utf8(table.into_inner()).unwrap()
    }

    #[test]
    fn poll_table_shows_header_columns_and_human_units() {
        let text = export_polls(&[poll(
            vec![flow(Some(80), 2048, 10 * 1024 * 1024 + 1)],
            PollHealth::default(),
        )]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "-- 2024-01-01T12:00:00.000Z .. 2024-01-01T12:00:10.000Z (10s): 1 active flow"
        );
        assert_eq!(
            lines[1],
            "SOURCE          DESTINATION  PROTO  PROCESS      SENT      RECV   BANDWIDTH  RETRANS"
        );
        assert_eq!(
            lines[2],
            "10.0.0.1:*  ->  10.0.0.2:80  tcp    curl/123  2.0 KiB  10.0 MiB  8.4 Mbit/s        2"
        );
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn poll_table_shows_only_the_busiest_twenty() {
        let flows = (1..=25)
            .map(|p| flow(Some(p), u64::from(p) * 100, 0))
            .collect();
        let text = export_polls(&[poll(flows, PollHealth::default())]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2 + 20 + 1);
        assert!(lines[2].contains("10.0.0.2:25"), "{}", lines[2]);
        assert!(lines[22].starts_with("(5 more flows)"), "{}", lines[22]);
    }

    #[test]
    fn empty_poll_is_one_line() {
        let text = export_polls(&[poll(vec![], PollHealth::default())]);
        assert!(text.ends_with("(10s): no active flows\n"), "{text}");
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn dropped_connections_are_reported_when_they_grow() {
        let full = |dropped, untracked| PollHealth {
            connections_dropped: dropped,
            untracked_events: untracked,
            close_events_deferred: 0,
            tracked_connections: 64,
            map_capacity: 64,
            ..PollHealth::default()
        };
        let text = export_polls(&[
            poll(vec![], full(0, 0)),
            poll(vec![], full(3, 0)),
            poll(vec![], full(3, 0)),
            poll(vec![], full(5, 0)),
            poll(vec![], full(5, 4)),
        ]);
        let warnings: Vec<&str> = text.lines().filter(|l| l.starts_with("!!")).collect();
        assert_eq!(
            warnings,
            [
                "!! receiver: the connection map is full (64/64 entries): 3 new connections and 0 events on other sockets not counted; 3 and 0 since start",
                "!! receiver: the connection map is full (64/64 entries): 2 new connections and 0 events on other sockets not counted; 5 and 0 since start",
                "!! receiver: the connection map is full (64/64 entries): 0 new connections and 4 events on other sockets not counted; 5 and 4 since start",
            ]
        );
    }

    #[test]
    fn window_totals_are_clearly_marked_with_a_total_row() {
        let mut a = flow(Some(80), 1000, 3000);
        a.stats.connections_opened = 3;
        a.stats.connections_closed = 2;
        a.stats.connections_failed.refused = 1;
        let b = flow(None, 24, 0);
        let report = WindowReport {
            start: at(0),
            end: at(300),
            series: [b, a].into_iter().map(processor::Series::from).collect(),
            overflowed_series: 0,
            dns: Vec::new(),
            overflowed_dns_series: 0,
        };
        let mut table = Table::new(Vec::new());
        table.export_window(&report).unwrap();
        let text = String::from_utf8(table.into_inner()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "== WINDOW TOTALS 2024-01-01T12:00:00.000Z .. 2024-01-01T12:05:00.000Z (5m): \
             2 series, 1.0 KiB sent, 2.9 KiB received, 107 bit/s =="
        );
        assert!(lines[1].starts_with("SOURCE"));
        assert!(
            lines[1].ends_with("OPENED  CLOSED  FAILED  RTT"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("10.0.0.2:80"),
            "busiest first: {}",
            lines[2]
        );
        assert!(
            lines[3].contains("10.0.0.2:*"),
            "collapsed port: {}",
            lines[3]
        );
        assert!(lines[4].starts_with("TOTAL"));
        assert!(lines[4].ends_with("3       2       1    -"), "{}", lines[4]);
        assert_eq!(lines[5], "== END OF WINDOW ==");
    }

    #[test]
    fn rtt_reads_in_us_or_ms() {
        assert_eq!(rtt_text(Duration::from_micros(87)), "87us");
        assert_eq!(rtt_text(Duration::from_micros(1234)), "1.2ms");
        assert_eq!(rtt_text(Duration::from_millis(310)), "310ms");
    }
}
