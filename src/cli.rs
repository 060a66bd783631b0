//! The command line: what clap parses. [`RunArgs::settings`] hands the
//! options to [`crate::settings`], which resolves them with the file into
//! the validated [`Settings`] the agent runs with.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::settings::{Overrides, Settings};

/// Network performance monitoring: every TCP and UDP conversation on this
/// host, watched with eBPF, folded into flows and aligned time windows.
#[derive(Debug, Parser)]
#[command(name = "flowtel", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: print the busiest flows every poll and each window's
    /// totals when it closes. Stops on SIGINT or SIGTERM after a last poll
    /// and the partial window.
    Run(RunArgs),
    /// Check this host: kernel version, BTF, each hook, privileges, the
    /// probe set `run` would use, and whether its programs pass the kernel
    /// verifier. Exits 0 when `run` would work, 1 otherwise.
    Check(CheckArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Watch this host's flows live, full screen: one row per group of
    /// flows, refreshed every poll. Keys: s cycles the sort column, g cycles
    /// the group-by (the given one, destination.address,destination.port,
    /// source.process.name), q, Esc or Ctrl-C quits. Needs a terminal (for
    /// scripts: flowtel run --format json) and the privileges of `run`.
    Top(TopArgs),
}

/// `flowtel config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file and print the effective configuration
    /// (every default filled in, secrets redacted). Exits 2 when the file
    /// is invalid, with FILE:LINE:COLUMN and what to change.
    Check {
        /// The file, e.g. /etc/flowtel/flowtel.yaml.
        file: PathBuf,
    },
}

/// `flowtel check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The probe set to check.
    #[arg(long, value_enum, default_value_t = Probes::Auto)]
    pub probes: Probes,
    /// Also load every other program through the verifier, each on its
    /// own: the fallbacks this kernel would never need.
    #[arg(long)]
    pub all_programs: bool,
    /// A configuration file: with a `processor.kubernetes` section, check
    /// that the Kubernetes API server answers too.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `--probes`: which kernel hooks count sends and receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Probes {
    /// Tracepoints where the kernel has them (6.3+), kprobes otherwise.
    Auto,
    /// The send/recv tracepoints of Linux 6.3+.
    Tracepoint,
    /// kprobes on the kernel's TCP and UDP functions, for older kernels.
    Kprobe,
}

impl From<Probes> for receiver::ProbeSet {
    fn from(probes: Probes) -> receiver::ProbeSet {
        match probes {
            Probes::Auto => receiver::ProbeSet::Auto,
            Probes::Tracepoint => receiver::ProbeSet::Tracepoint,
            Probes::Kprobe => receiver::ProbeSet::Kprobe,
        }
    }
}

/// `flowtel run`. Options given here win over the configuration file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file (see otel-config/flowtel.yaml). Without it,
    /// every setting takes its default.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// How often the kernel's counters are read, e.g. 500ms, 10s
    /// [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub poll_interval: Option<Duration>,

    /// Which kernel hooks count sends and receives [default: auto].
    #[arg(long, value_enum)]
    pub probes: Option<Probes>,

    /// Capacity of the kernel's connection map. Connections beyond it are
    /// not tracked; they are counted and reported as dropped
    /// [default: 65536].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u32>,

    /// Length of the windows flows are summed over, aligned to wall-clock
    /// multiples of it (5m windows start at :00, :05 ...); at least 1s
    /// [default: 5m].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,

    /// How the flows are printed on stdout: a table for people, or JSON lines
    /// for programs. Default: a table, unless windows go to an OTLP backend
    /// (OTEL_EXPORTER_OTLP_ENDPOINT or the file's exporters): then nothing
    /// unless asked.
    #[arg(long, value_enum)]
    pub format: Option<ConsoleFormat>,
}

/// `flowtel top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The configuration file, for its receiver settings and its mappings
    /// (service names and other attributes); its exporters are not used.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// How often the view is refreshed, e.g. 1s, 500ms.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "2s")]
    pub poll_interval: Duration,

    /// The attributes a row is keyed by, one column each, joined by commas.
    /// A flow that no mapping gives a destination.service is shown by its
    /// destination.address in that column, and by its source.address for
    /// source.service; any other attribute a flow lacks shows as "-".
    #[arg(
        long,
        value_name = "ATTRIBUTES",
        value_parser = crate::top::GroupBy::parse,
        default_value = crate::top::DEFAULT_GROUP_BY
    )]
    pub group_by: crate::top::GroupBy,

    /// Only the flows meeting every condition, joined by commas:
    /// attr=value, attr!=value, attr=~regex (found anywhere in the value;
    /// anchor with ^ and $). A flow without the attribute has no value: it
    /// equals nothing and differs from everything. Values cannot contain
    /// commas. The attributes are the flow's own (before the group-by's
    /// address fallback), e.g. destination.port=5432.
    #[arg(long = "where", value_name = "CONDITIONS", value_parser = crate::top::Filter::parse)]
    pub filter: Option<crate::top::Filter>,

    /// The column rows are sorted by, largest first (bytes: sent and
    /// received together).
    #[arg(long, value_enum, default_value_t = crate::top::Sort::Bytes)]
    pub sort: crate::top::Sort,
}

impl TopArgs {
    /// The settings `run` would have with this file and poll interval.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        Overrides {
            config: self.config.clone(),
            poll_interval: Some(self.poll_interval),
            ..Overrides::default()
        }
        .resolve()
    }

    /// How the view starts: grouped, filtered and sorted as asked.
    pub fn view(&self) -> crate::top::View {
        crate::top::View {
            group_by: self.group_by.clone(),
            filter: self.filter.clone().unwrap_or_default(),
            sort: self.sort,
        }
    }
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsoleFormat {
    /// The busiest flows every poll, window totals at each window's close.
    Table,
    /// One JSON object per flow per poll and per window, and one health
    /// object per poll.
    Json,
}

impl RunArgs {
    /// The settings these options and their file resolve to.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        Overrides {
            config: self.config.clone(),
            poll_interval: self.poll_interval,
            probes: self.probes.map(Into::into),
            max_connections: self.max_connections,
            interval: self.interval,
            console: self.format.map(|format| match format {
                ConsoleFormat::Table => exporter::console::Format::Table,
                ConsoleFormat::Json => exporter::console::Format::Json,
            }),
        }
        .resolve()
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(["flowtel", "run"].iter().chain(args))?;
        match cli.command {
            Command::Run(run) => Ok(run),
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults_to_ten_second_polls_five_minute_windows_and_a_table() {
        let settings = run_args(&[]).unwrap().settings().unwrap();
        assert_eq!(settings.receiver.poll_interval, Duration::from_secs(10));
        assert_eq!(settings.processor.interval, Duration::from_secs(300));
        assert_eq!(settings.exporters, exporter::Config::default());
    }

    #[test]
    fn run_takes_human_durations_and_json() {
        let args = [
            "--poll-interval",
            "500ms",
            "--interval",
            "1s",
            "--format",
            "json",
        ];
        let settings = run_args(&args).unwrap().settings().unwrap();
        assert_eq!(settings.receiver.poll_interval, Duration::from_millis(500));
        assert_eq!(settings.processor.interval, Duration::from_secs(1));
        let console = settings.exporters.console.unwrap();
        assert_eq!(console.format, exporter::console::Format::Json);
    }

    #[test]
    fn unparsable_values_are_usage_errors() {
        assert!(run_args(&["--interval", "five minutes"]).is_err());
        assert!(run_args(&["--format", "yaml"]).is_err());
        assert!(run_args(&["--config"]).is_err());
    }

    #[test]
    fn a_window_under_one_second_is_refused_with_the_reason() {
        let error = run_args(&["--interval", "500ms"])
            .unwrap()
            .settings()
            .unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "invalid --interval: the window interval 500ms is shorter than the minimum of 1s"
        );
    }

    #[test]
    fn a_poll_interval_the_receiver_refuses_is_refused_early() {
        let error = run_args(&["--poll-interval", "1ms"])
            .unwrap()
            .settings()
            .unwrap_err();
        assert!(
            format!("{error:#}").starts_with("invalid --poll-interval or --max-connections: "),
            "{error:#}"
        );
    }
}
