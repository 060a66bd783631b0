//! `flowtel`: the binary that wires the receiver, the processor and the
//! exporters. See ARCHITECTURE.md.

mod agent;
mod check;
mod checkpoint;
mod cli;
mod lock;
mod names;
mod privileges;
mod settings;
mod top;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, ConfigCommand};
use flowtel::config;

/// The exit code of a configuration file that cannot be used (clap uses 2
/// for command-line usage errors too).
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    return_large_buffers_to_the_system();
    let cli = Cli::parse();
    // Log lines would tear top's screen: it shows what matters itself.
    if !matches!(cli.command, Command::Top(_)) {
        init_logging();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("flowtel: error: {}", one_line(&error));
            if error.downcast_ref::<config::ConfigError>().is_some() {
                ExitCode::from(EXIT_BAD_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check(args) => {
            let config = receiver::Config {
                probes: args.probes.into(),
                ..receiver::Config::default()
            };
            let file = match &args.config {
                Some(path) => config::FileConfig::load(path)?,
                None => config::FileConfig::default(),
            };
            let report = check::check(
                &config,
                &exporter::Config::default(),
                &file.processor,
                args.all_programs,
            );
            print!("{}", report.text);
            match report.problem {
                None => Ok(()),
                Some(problem) => Err(anyhow::anyhow!("{problem}")),
            }
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let config = config::FileConfig::load(&file)?;
            println!("# {}: valid; the effective configuration:", file.display());
            print!("{}", config.to_yaml());
            Ok(())
        }
        Command::Run(args) => {
            let settings = args.settings()?;
            runtime()?.block_on(agent::run(settings))
        }
        Command::Top(args) => top::run(args.settings()?, args.view()),
    }
}

/// Each poll holds the connection map's samples for a moment (tens of MiB
/// at 100,000 connections). glibc's malloc raises its mmap threshold after
/// the first such buffer is freed and then keeps the next ones in the heap,
/// so the agent's RSS would stay at its peak between polls. A fixed
/// threshold keeps buffers above 128 KiB mmapped, returned when freed; two
/// arenas are enough for the agent's few threads.
fn return_large_buffers_to_the_system() {
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// The runtime the receiver and the poll loop run on.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // The receiver's ring buffer reader and the poll loop: two workers at
    // most, one on a single-core machine.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("flowtel")
        // Capabilities are per thread: the runtime's threads need none, and
        // must not keep the ones the main thread holds until it has
        // attached the programs.
        .on_thread_start(|| {
            if let Err(error) = privileges::drop_all() {
                tracing::warn!("flowtel: a runtime thread kept its capabilities: {error:#}");
            }
        })
        .enable_all()
        .build()
        .context("could not start the async runtime")
}

/// Logs to stderr; `RUST_LOG` filters, `info` by default.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// The error and its causes on one line, joined with ": ". flowtel's own
/// errors name their cause in their text or as their source, never both;
/// a third-party error that does both has its cause shown once.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string().replace('\n', " ");
        let text = text.trim();
        if text.is_empty() || line.ends_with(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_line_joins_causes_without_repeats() {
        let io = std::io::Error::other("permission denied");
        let repeats = anyhow::Error::new(io).context("loading the eBPF object: permission denied");
        let error = repeats.context("could not start the receiver");
        assert_eq!(
            one_line(&error),
            "could not start the receiver: loading the eBPF object: permission denied"
        );
    }

    #[test]
    fn error_line_is_one_line() {
        let error = anyhow::anyhow!("verifier said:\nR1 invalid mem access\n").context("attaching");
        assert_eq!(
            one_line(&error),
            "attaching: verifier said: R1 invalid mem access"
        );
    }
}
