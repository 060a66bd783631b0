//! The agent's loop: kernel maps -> receiver -> processor -> exporter, with
//! a poll every poll interval and exactly at every window boundary, and a
//! clean stop on SIGINT/SIGTERM/SIGHUP.

use std::time::SystemTime;

use anyhow::Context as _;
use exporter::Exporter;
use processor::Processor;
use receiver::Receiver;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::checkpoint::{Saved, Store};
use crate::settings::Settings;

/// Runs the agent until SIGINT, SIGTERM or SIGHUP. Must run inside a tokio
/// runtime.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    // Listen before saying we are watching, so that a signal sent right
    // after the readiness line is not fatal.
    let mut stop =
        StopSignals::listen().context("could not listen for SIGINT, SIGTERM and SIGHUP")?;
    // Before the pins are adopted: one agent per state and pin directory.
    let _lock = match &settings.receiver.persistence {
        Some(persistence) => Some(crate::lock::acquire(persistence)?),
        None => None,
    };
    let store = settings
        .receiver
        .persistence
        .as_ref()
        .map(|p| Store::new(&p.state_dir));
    let saved = store.as_ref().and_then(Store::load);
    if let Some(store) = &store {
        store.clean_leftovers();
    }
    let mut receiver =
        Receiver::start_resuming(&settings.receiver, saved.as_ref().map(|s| s.conns_map_id))
            .context("could not start the receiver")?;
    crate::privileges::drop_after_attach(receiver.reads_need_privilege())?;
    let started = SystemTime::now();
    let mut processor = match saved {
        Some(saved) if receiver.resumed() => {
            tracing::info!(
                "flowtel: continuing the previous agent's counters ({} connections, checkpoint at {})",
                saved.checkpoint.counted.len(),
                humantime::format_rfc3339_millis(saved.checkpoint.at),
            );
            Processor::resume(settings.processor.clone(), started, saved.checkpoint)?
        }
        _ => Processor::new(settings.processor.clone(), started)?,
    };
    let names = crate::names::EndNameSources::start(&settings.processor, &mut processor).await?;
    let mut checkpoints = store.map(|store| Checkpoints {
        store,
        conns_map_id: receiver.conns_map_id(),
        failing: None,
        log: exporter::LogLimit::default(),
    });
    // With persistence, the export queues are kept on disk too, so that a
    // window the checkpoint counts as exported is never only in memory.
    let state_dir = settings
        .receiver
        .persistence
        .as_ref()
        .map(|p| p.state_dir.as_path());
    let plan = exporter::otlp::OtlpEnv::from_process()
        .and_then(|env| settings.exporters.plan_with_state(&env, state_dir))
        .context("invalid exporter settings")?;
    let mut exporter = exporter::Fanout::start(&plan, std::io::stdout())
        .context("could not start the exporters")?;
    let poll_interval = settings.receiver.poll_interval;
    tracing::info!(
        "flowtel: watching TCP and UDP flows; polling every {}, {} windows ({} probes)",
        humantime::format_duration(poll_interval),
        humantime::format_duration(processor.interval()),
        format!("{:?}", receiver.probe_set()).to_lowercase(),
    );

    let mut next_poll = started + poll_interval;
    loop {
        // Poll at each window boundary too, so that every delta belongs to
        // exactly one window.
        let due = next_poll.min(processor.window_end());
        let stopping = tokio::select! {
            () = sleep_until(due) => None,
            name = stop.recv() => Some(name),
        };
        if let Some(name) = stopping {
            tracing::info!("flowtel: {name}: last poll, then the partial window");
        }
        let now = poll(
            &mut receiver,
            &mut processor,
            &mut exporter,
            &names,
            checkpoints.as_mut(),
        )?;
        next_poll = now + poll_interval;
        if stopping.is_some() {
            let partial = processor.flush(now);
            exporter
                .export_window(&partial)
                .context("could not export the last window")?;
            exporter.close().context("could not finish exporting")?;
            if let Some(checkpoints) = &mut checkpoints {
                checkpoints.save(&processor, now);
                checkpoints.say_if_lost();
            }
            tracing::info!("flowtel: stopped");
            return Ok(());
        }
    }
}

/// One poll through the pipeline; returns the poll's time.
fn poll(
    receiver: &mut Receiver,
    processor: &mut Processor,
    exporter: &mut impl Exporter,
    names: &crate::names::EndNameSources,
    checkpoints: Option<&mut Checkpoints>,
) -> anyhow::Result<SystemTime> {
    let mut poll = receiver
        .poll()
        .context("could not read the connection counters")?;
    names.add_health(&mut poll.health);
    let processing = std::time::Instant::now();
    let now = poll.at.unwrap_or_else(SystemTime::now);
    let report = processor.ingest(&poll, now);
    if report.counter_resets > 0 {
        tracing::warn!(
            samples = report.counter_resets,
            "connection counters went backwards; counted as restarted from zero"
        );
    }
    tracing::debug!(
        "flowtel: poll read {} connections and {} quiet ones in {:?}, processed in {:?}",
        poll.samples.len(),
        poll.quiet.len(),
        poll.health.poll_duration,
        processing.elapsed(),
    );
    exporter
        .export_poll(&report)
        .context("could not export the flows")?;
    if let Some(window) = processor.close_window(now) {
        exporter
            .export_window(&window)
            .context("could not export the window")?;
        if let Some(checkpoints) = checkpoints {
            checkpoints.save(processor, now);
        }
    }
    Ok(now)
}

/// Where checkpoints go, the pinned map they belong to, and whether the
/// last save failed.
struct Checkpoints {
    store: Store,
    conns_map_id: Option<u32>,
    /// Failed saves in a row, the last one's error, and whether the
    /// failure was logged.
    failing: Option<(u64, String, bool)>,
    /// How often a failing save is logged.
    log: exporter::LogLimit,
}

impl Checkpoints {
    /// Saves what `processor` has counted up to `now`. Called after each
    /// window is handed to the exporters, which have written it to their
    /// queue directories by then: a later agent recounts what came after,
    /// never what went before, and sends what is still queued.
    ///
    /// A failure (a full or read-only state directory) never stops the
    /// counting: it is counted, logged when it starts (at most once in
    /// [`exporter::LogLimit::QUIET`]), and the older checkpoint is removed,
    /// so that a restart meanwhile starts afresh (losing the gap) instead of
    /// counting again what was exported after it. The next window tries
    /// again.
    fn save(&mut self, processor: &Processor, now: SystemTime) {
        let Some(conns_map_id) = self.conns_map_id else {
            return;
        };
        let saved = self.store.save(&Saved {
            conns_map_id,
            checkpoint: processor.checkpoint(now),
        });
        match (saved, self.failing.take()) {
            (Ok(()), Some((failures, _, true))) => tracing::info!(
                "flowtel: the checkpoint is written again, after {failures} failed saves"
            ),
            (Ok(()), _) => {}
            (Err(error), failing) => {
                let removed = self.store.discard();
                let (failures, logged) = match failing {
                    Some((n, _, logged)) => (n + 1, logged),
                    None => (1, false),
                };
                let logged = logged || (failures == 1 && self.log.allow());
                if failures == 1 && logged {
                    let older = match removed {
                        Ok(()) => "the older checkpoint was removed, so a restart meanwhile starts afresh rather than count twice".to_owned(),
                        Err(e) => format!("the older checkpoint could not be removed either ({e}): a restart meanwhile would count again what was exported since"),
                    };
                    tracing::warn!(
                        "flowtel: {error:#}; {older}; counting goes on and the checkpoint is tried again at each window (free space in or fix {})",
                        self.store.dir().display()
                    );
                }
                self.failing = Some((failures, format!("{error:#}"), logged));
            }
        }
    }

    /// At the stop: says what a missing checkpoint loses.
    fn say_if_lost(&self) {
        if let Some((failures, error, _)) = &self.failing {
            tracing::warn!(
                "flowtel: stopped without a checkpoint ({failures} failed saves, the last: {error}): the next agent starts afresh, and what moves until it starts is not counted"
            );
        }
    }
}

/// Sleeps until the wall clock reads `t`. Timers run on the monotonic
/// clock, so this checks the wall clock again on waking: windows are
/// aligned to wall-clock time.
async fn sleep_until(t: SystemTime) {
    while let Ok(left) = t.duration_since(SystemTime::now()) {
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left).await;
    }
}

/// SIGINT, SIGTERM and SIGHUP: each stops the agent gracefully (the last
/// poll, the open window flushed). SIGHUP is not a reload: a terminal that
/// closes, or a supervisor that sends it, never kills the agent with its
/// open window.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl StopSignals {
    fn listen() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for any; returns its name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}
