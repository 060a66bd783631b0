//! What `flowtel top` shows: the state of the view (the last poll's flows,
//! the group-by, the filter, the sort) and how it is drawn.

use std::time::{Duration, SystemTime};

use exporter::console::units::{bytes, rtt_text};
use processor::{Attributes, FlowStats, PollReport, Resolver};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row as TableRow, Table};
use ratatui::Frame;

use super::query::{self, Filter, GroupBy, Row, Sort};

/// The widest a group-by column gets (container ids are 64 characters).
const MAX_GROUP_WIDTH: usize = 40;

/// The counter columns: header, width, and the sorts that highlight it.
const COLUMNS: [(&str, u16, &[Sort]); 6] = [
    ("SENT", 10, &[Sort::Sent, Sort::Bytes]),
    ("RECV", 10, &[Sort::Received, Sort::Bytes]),
    ("BANDWIDTH", 12, &[Sort::Bandwidth]),
    ("RETRANS", 8, &[Sort::Retransmits]),
    ("RTT", 8, &[Sort::Rtt]),
    ("CONNS", 6, &[Sort::Connections]),
];

/// The last poll, resolved and filtered.
#[derive(Debug, Clone)]
pub struct LastPoll {
    /// When it read the kernel.
    pub at: SystemTime,
    /// Since the poll before it.
    pub period: Duration,
    /// Every flow active in the period.
    pub total_flows: usize,
    /// The flows that passed the filter, with all their attributes.
    pub flows: Vec<(Attributes, FlowStats)>,
}

/// Everything on the screen.
#[derive(Debug)]
pub struct State {
    presets: Vec<GroupBy>,
    preset: usize,
    filter: Filter,
    sort: Sort,
    poll_interval: Duration,
    last: Option<LastPoll>,
}

impl State {
    /// A view with no poll yet.
    pub fn new(group_by: GroupBy, filter: Filter, sort: Sort, poll_interval: Duration) -> State {
        State {
            presets: group_by.presets(),
            preset: 0,
            filter,
            sort,
            poll_interval,
            last: None,
        }
    }

    /// Takes a poll: resolves each flow's attributes with `resolver` and
    /// keeps the flows that pass the filter.
    pub fn on_poll(&mut self, report: &PollReport, resolver: &Resolver) {
        let flows = report
            .flows
            .iter()
            .map(|flow| (resolver.attributes(&flow.key), flow.stats))
            .filter(|(attributes, _)| self.filter.matches(attributes))
            .collect();
        self.last = Some(LastPoll {
            at: report.end,
            period: report.duration(),
            total_flows: report.flows.len(),
            flows,
        });
    }

    /// The `s` key: the next sort column.
    pub fn next_sort(&mut self) {
        self.sort = self.sort.next();
    }

    /// The `g` key: the next group-by preset.
    pub fn next_group_by(&mut self) {
        self.preset = (self.preset + 1) % self.presets.len();
    }

    fn group_by(&self) -> &GroupBy {
        &self.presets[self.preset]
    }

    /// The rows of the last poll, grouped and sorted.
    pub fn rows(&self) -> Vec<Row> {
        match &self.last {
            Some(last) => query::rows(&last.flows, self.group_by(), self.sort),
            None => Vec::new(),
        }
    }

    /// Draws the header, the table and the keys.
    pub fn draw(&self, frame: &mut Frame) {
        let [header, table, keys] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Min(1),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        let rows = self.rows();
        frame.render_widget(Paragraph::new(self.header(rows.len())), header);
        self.draw_table(frame, table, &rows);
        frame.render_widget(
            Paragraph::new("s: sort column   g: group-by   q: quit")
                .style(Style::new().add_modifier(Modifier::DIM)),
            keys,
        );
    }

    fn header(&self, rows: usize) -> Vec<Line<'static>> {
        let query = format!(
            "flowtel top   group by: {}   where: {}   sort: {}",
            self.group_by(),
            self.filter,
            self.sort.name()
        );
        let poll = match &self.last {
            None => format!(
                "waiting for the first poll (every {})",
                humantime::format_duration(self.poll_interval)
            ),
            Some(last) => format!(
                "poll at {} over {}   flows: {} ({} matching)   rows: {}",
                humantime::format_rfc3339_seconds(last.at),
                exporter::console::units::duration(last.period),
                last.total_flows,
                last.flows.len(),
                rows
            ),
        };
        vec![
            Line::styled(query, Style::new().add_modifier(Modifier::BOLD)),
            Line::from(poll),
        ]
    }

    fn draw_table(&self, frame: &mut Frame, area: Rect, rows: &[Row]) {
        let names = self.group_by().names();
        let group_widths = names.iter().enumerate().map(|(i, name)| {
            let widest = rows.iter().map(|r| r.key[i].chars().count());
            let width = widest.chain([name.len()]).max().unwrap_or(0);
            Constraint::Length(width.min(MAX_GROUP_WIDTH) as u16)
        });
        let widths: Vec<Constraint> = group_widths
            .chain(COLUMNS.iter().map(|&(_, w, _)| Constraint::Length(w)))
            .collect();

        let header = names
            .iter()
            .map(|name| Cell::from(name.to_uppercase()))
            .chain(COLUMNS.iter().map(|&(title, _, sorts)| {
                let cell = Cell::from(Line::from(title).right_aligned());
                if sorts.contains(&self.sort) {
                    cell.style(Style::new().add_modifier(Modifier::REVERSED))
                } else {
                    cell
                }
            }));
        let period = self.last.as_ref().map_or(Duration::ZERO, |l| l.period);
        let body = rows.iter().map(|row| {
            let counters = counters(row, period)
                .into_iter()
                .map(|text| Cell::from(Line::from(text).right_aligned()));
            TableRow::new(
                row.key
                    .iter()
                    .map(|v| Cell::from(v.as_str()))
                    .chain(counters),
            )
        });
        let table = Table::new(body, widths)
            .header(TableRow::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
            .column_spacing(2);
        frame.render_widget(table, area);
        if rows.is_empty() && self.last.is_some() {
            let [_, below] =
                Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
            frame.render_widget(
                Paragraph::new(format!("no flows of {} in the last poll", self.filter)),
                below,
            );
        }
    }
}

/// The counter columns of a row, as in [`COLUMNS`].
fn counters(row: &Row, period: Duration) -> [String; 6] {
    [
        bytes(row.stats.bytes_sent),
        bytes(row.stats.bytes_received),
        format!("{}/s", bytes(row.bandwidth(period).round() as u64)),
        row.stats.retransmits.to_string(),
        row.stats
            .rtt
            .mean()
            .map_or_else(|| "-".to_owned(), rtt_text),
        row.stats.connections_opened.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::UNIX_EPOCH;

    use health::PollHealth;
    use processor::{Flow, FlowKey, NetworkType};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use receiver::{Direction, ProcessInfo, Transport};

    use super::*;

    fn report() -> PollReport {
        let key = FlowKey {
            transport: Transport::Tcp,
            network_type: NetworkType::Ipv4,
            netns: 1,
            direction: Direction::Outgoing,
            source_address: "127.0.0.1".parse().unwrap(),
            source_port: None,
            source_process: Arc::new(ProcessInfo {
                pid: 42,
                name: "curl".into(),
                container_id: None,
                pod_uid: None,
            }),
            destination_address: "10.1.2.3".parse().unwrap(),
            destination_port: Some(443),
            translation: Default::default(),
            destination_domain: None,
        };
        let stats = FlowStats {
            bytes_sent: 4096,
            bytes_received: 2 << 20,
            retransmits: 3,
            connections_opened: 2,
            ..FlowStats::default()
        };
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        PollReport {
            start,
            end: start + Duration::from_secs(2),
            flows: vec![Flow { key, stats }],
            health: PollHealth::default(),
            counter_resets: 0,
            dns_lookups: 0,
            dns_health: Default::default(),
        }
    }

    fn screen(state: &State) -> String {
        let mut terminal = Terminal::new(TestBackend::new(120, 8)).unwrap();
        terminal.draw(|frame| state.draw(frame)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..buffer.area.height)
            .map(|y| {
                let line: String = (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect();
                line.trim_end().to_owned() + "\n"
            })
            .collect()
    }

    #[test]
    fn shows_the_query_the_counts_and_a_row_per_group() {
        let mut state = State::new(
            GroupBy::default(),
            Filter::default(),
            Sort::Bytes,
            Duration::from_secs(2),
        );
        assert!(screen(&state).contains("waiting for the first poll (every 2s)"));
        state.on_poll(&report(), &Resolver::default());
        let text = screen(&state);
        assert!(
            text.contains("group by: source.process.name,destination.service"),
            "{text}"
        );
        assert!(text.contains("where: all flows   sort: bytes"), "{text}");
        assert!(text.contains("flows: 1 (1 matching)   rows: 1"), "{text}");
        assert!(text.contains("SOURCE.PROCESS.NAME"), "{text}");
        // No service: the destination's address stands in.
        let row = text.lines().find(|l| l.starts_with("curl")).expect(&text);
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["curl", "10.1.2.3", "4.0", "KiB", "2.0", "MiB", "1.0", "MiB/s", "3", "-", "2"],
            "{text}"
        );
    }

    #[test]
    fn keys_change_the_grouping_and_the_sort() {
        let filter = Filter::parse("destination.port!=443").unwrap();
        let mut state = State::new(
            GroupBy::default(),
            filter,
            Sort::Bytes,
            Duration::from_secs(2),
        );
        state.on_poll(&report(), &Resolver::default());
        let text = screen(&state);
        assert!(text.contains("flows: 1 (0 matching)   rows: 0"), "{text}");
        assert!(text.contains("no flows of destination.port!=443"), "{text}");

        let mut state = State::new(
            GroupBy::default(),
            Filter::default(),
            Sort::Bytes,
            Duration::from_secs(2),
        );
        state.on_poll(&report(), &Resolver::default());
        state.next_group_by();
        state.next_sort();
        let text = screen(&state);
        assert!(
            text.contains("group by: destination.address,destination.port"),
            "{text}"
        );
        assert!(text.contains("sort: sent"), "{text}");
        assert_eq!(state.rows()[0].key, ["10.1.2.3", "443"]);
        state.next_group_by();
        state.next_group_by();
        assert_eq!(state.group_by(), &GroupBy::default());
    }
}
