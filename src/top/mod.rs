//! `flowtel top`: this host's flows, live and full screen, grouped and
//! filtered like a query. It runs the receiver and a processor itself (like
//! `run`, without exporters), and every poll shows the flows of that poll.

mod query;
mod view;

use std::io::{IsTerminal as _, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use processor::Processor;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::Terminal;
use receiver::Receiver;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

pub use query::{Filter, GroupBy, Sort, DEFAULT_GROUP_BY};

use crate::settings::Settings;

/// What `top` says, and exits 1 with, when its output is not a terminal.
pub const NOT_A_TERMINAL: &str = "top needs a terminal; for scripts use flowtel run --format json";

/// How the view starts: `--group-by`, `--where`, `--sort`.
#[derive(Debug, Clone)]
pub struct View {
    pub group_by: GroupBy,
    pub filter: Filter,
    pub sort: Sort,
}

/// Runs `flowtel top` until `q`, Esc, Ctrl-C, SIGTERM or SIGHUP.
pub fn run(settings: Settings, view: View) -> anyhow::Result<()> {
    // Before anything is loaded into the kernel.
    if !std::io::stdout().is_terminal() {
        anyhow::bail!(NOT_A_TERMINAL);
    }
    let state = view::State::new(
        view.group_by,
        view.filter,
        view.sort,
        settings.receiver.poll_interval,
    );
    crate::runtime()?.block_on(watch(settings, state))
}

/// The loop: a poll every poll interval, a redraw after each poll and key.
async fn watch(settings: Settings, mut state: view::State) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("could not listen for SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).context("could not listen for SIGHUP")?;
    let mut receiver =
        Receiver::start(&settings.receiver).context("could not start the receiver")?;
    crate::privileges::drop_after_attach(receiver.reads_need_privilege())?;
    let mut processor = Processor::new(settings.processor.clone(), SystemTime::now())?;
    let _names = crate::names::EndNameSources::start(&settings.processor, &mut processor).await?;

    let mut screen = Screen::enter().context("could not set up the terminal")?;
    let mut keys = read_keys();
    let period = settings.receiver.poll_interval;
    let mut polls = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    polls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        screen
            .terminal
            .draw(|frame| state.draw(frame))
            .context("could not draw on the terminal")?;
        tokio::select! {
            _ = polls.tick() => {
                let poll = receiver
                    .poll()
                    .context("could not read the connection counters")?;
                let now = poll.at.unwrap_or_else(SystemTime::now);
                let report = processor.ingest(&poll, now);
                // top shows polls; the windows are only let go.
                let _ = processor.close_window(now);
                state.on_poll(&report, processor.resolver());
            }
            key = keys.recv() => match key {
                Some(Key::Sort) => state.next_sort(),
                Some(Key::GroupBy) => state.next_group_by(),
                Some(Key::Redraw) => {}
                Some(Key::Quit) | None => return Ok(()),
            },
            _ = terminate.recv() => return Ok(()),
            _ = hangup.recv() => return Ok(()),
        }
    }
}

/// What a key press or terminal event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Sort,
    GroupBy,
    Quit,
    /// A resize, or a key that does nothing.
    Redraw,
}

impl Key {
    fn of(event: &Event) -> Option<Key> {
        match event {
            Event::Key(KeyEvent {
                code,
                modifiers,
                kind: KeyEventKind::Press,
                ..
            }) => Some(match code {
                KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Key::Quit,
                KeyCode::Char('q') | KeyCode::Esc => Key::Quit,
                KeyCode::Char('s') => Key::Sort,
                KeyCode::Char('g') => Key::GroupBy,
                _ => return None,
            }),
            Event::Resize(..) => Some(Key::Redraw),
            _ => None,
        }
    }
}

/// Reads the terminal's events on a thread of its own, which ends once the
/// loop has stopped listening (or the terminal cannot be read: then the
/// channel closes and top quits).
fn read_keys() -> mpsc::UnboundedReceiver<Key> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("flowtel-keys".into())
        .spawn(move || {
            while !tx.is_closed() {
                match event::poll(Duration::from_millis(100)) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(_) => return,
                }
                let Ok(event) = event::read() else { return };
                if let Some(key) = Key::of(&event) {
                    if tx.send(key).is_err() {
                        return;
                    }
                }
            }
        })
        .expect("could not start the key reader thread");
    rx
}

/// Whether the terminal is in top's mode (raw, alternate screen): what the
/// panic hook checks before restoring it.
static ENTERED: AtomicBool = AtomicBool::new(false);

/// The terminal in raw mode on the alternate screen; restored on drop, and
/// by a panic hook on a panic (before its message is printed).
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    fn enter() -> anyhow::Result<Screen> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        ENTERED.store(true, Ordering::SeqCst);
        let entered = (|| {
            terminal::enable_raw_mode()?;
            execute!(std::io::stdout(), terminal::EnterAlternateScreen)?;
            let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
            terminal.clear()?;
            Ok::<_, std::io::Error>(terminal)
        })();
        match entered {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                restore();
                Err(e.into())
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Raw mode off, the alternate screen left, the cursor shown; once.
fn restore() {
    if ENTERED.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(
            std::io::stdout(),
            terminal::LeaveAlternateScreen,
            cursor::Show
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> Option<Key> {
        Key::of(&Event::Key(KeyEvent::new(code, modifiers)))
    }

    #[test]
    fn keys_map_to_actions() {
        let none = KeyModifiers::NONE;
        assert_eq!(key(KeyCode::Char('q'), none), Some(Key::Quit));
        assert_eq!(key(KeyCode::Esc, none), Some(Key::Quit));
        assert_eq!(
            key(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Some(Key::Quit)
        );
        assert_eq!(key(KeyCode::Char('c'), none), None);
        assert_eq!(key(KeyCode::Char('s'), none), Some(Key::Sort));
        assert_eq!(key(KeyCode::Char('g'), none), Some(Key::GroupBy));
        assert_eq!(Key::of(&Event::Resize(80, 24)), Some(Key::Redraw));
    }
}
