//! Progress bars on stderr (indicatif) for the phases of a run that take more than a moment:
//! connecting, timed load, draining. Each bar polls its figures (atomic counters the scenario
//! keeps anyway) ten times a second from a thread of its own, so scenario code only creates and drops bars.
//!
//! Bars are off unless the caller turns them on ([`crate::scenario::Target::progress`]; the
//! command line does, tests do not), and indicatif's stderr target draws nothing when stderr is
//! not a terminal, so piped output, `--json` files and test logs never hold bar residue. A bar
//! clears itself when dropped: the table that follows on stdout starts on a clean line.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

use crate::human;

/// How often a bar polls its figures and redraws.
const TICK: Duration = Duration::from_millis(100);

/// Width of the phase label before each bar.
const LABEL: &str = "{prefix:>12.bold}";

/// One bar; cleared when dropped.
pub struct Progress {
    bar: Option<ProgressBar>,
    ticker: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Progress {
    /// No bar at all.
    pub fn hidden() -> Progress {
        Progress {
            bar: None,
            ticker: None,
        }
    }

    /// A bar over `total` steps (connections, transactions...). `poll` gives the steps done
    /// and a message (e.g. failures so far).
    pub fn steps(
        on: bool,
        label: &str,
        total: u64,
        poll: impl Fn() -> (u64, String) + Send + 'static,
    ) -> Progress {
        let template =
            format!("{LABEL} [{{wide_bar}}] {{human_pos}}/{{human_len}} {{msg}} ({{elapsed}})");
        Progress::start(on, label, Some(total), &template, move |bar| {
            let (pos, msg) = poll();
            bar.set_message(msg);
            bar.set_position(pos);
        })
    }

    /// A bar over a fixed time: `3.2 s / 10 s`, with `poll`'s live counter.
    pub fn timed(
        on: bool,
        label: &str,
        total: Duration,
        poll: impl Fn() -> String + Send + 'static,
    ) -> Progress {
        let total_ms = total.as_millis().max(1) as u64;
        let started = Instant::now();
        let template = format!("{LABEL} [{{wide_bar}}] {{clock}} {{msg}}");
        Progress::start(on, label, Some(total_ms), &template, move |bar| {
            bar.set_message(poll());
            bar.set_position((started.elapsed().as_millis() as u64).min(total_ms));
        })
    }

    /// A spinner for a phase of unknown length (preloading, draining), with `poll`'s message.
    pub fn spinner(on: bool, label: &str, poll: impl Fn() -> String + Send + 'static) -> Progress {
        let template = format!("{LABEL} {{spinner}} {{msg}} ({{elapsed}})");
        Progress::start(on, label, None, &template, move |bar| {
            bar.set_message(poll());
        })
    }

    fn start(
        on: bool,
        label: &str,
        len: Option<u64>,
        template: &str,
        update: impl Fn(&ProgressBar) + Send + 'static,
    ) -> Progress {
        if !on {
            return Progress::hidden();
        }
        let bar = match len {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new_spinner(),
        };
        // The default draw target: stderr, hidden when stderr is not a terminal.
        if bar.is_hidden() {
            return Progress::hidden();
        }
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("clock", clock)
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        update(&bar);
        // A thread, not a task: the parent of worker processes has no runtime, and a busy
        // runtime must not freeze the bar. Dropping `stop` ends it at once.
        let (stop, stopped) = mpsc::channel::<()>();
        let ticking = bar.clone();
        let ticker = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                update(&ticking);
                ticking.tick();
            }
        });
        Progress {
            bar: Some(bar),
            ticker: Some((stop, ticker)),
        }
    }

    /// Whether a bar is drawn.
    pub fn is_visible(&self) -> bool {
        self.bar.is_some()
    }
}

/// `{clock}`: a timed bar's position and length (milliseconds) as `3.2 s / 10 s`.
fn clock(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = w.write_str(&clock_text(state.pos(), state.len().unwrap_or(0)));
}

/// `3.2 s / 5.0 s`; whole seconds once the total reaches ten, so the figure does not jitter.
fn clock_text(elapsed_ms: u64, total_ms: u64) -> String {
    let elapsed = elapsed_ms as f64 / 1000.0;
    let total = total_ms as f64 / 1000.0;
    let now = if total >= 10.0 {
        format!("{:.0} s", elapsed.floor())
    } else {
        format!("{elapsed:.1} s")
    };
    format!("{now} / {}", human::duration(total))
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.ticker.take() {
            drop(stop);
            let _ = thread.join();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_off_unless_asked() {
        assert!(!Progress::steps(false, "connect", 10, || (1, String::new())).is_visible());
        assert!(!Progress::timed(false, "edit", Duration::from_secs(1), String::new).is_visible());
        assert!(!Progress::spinner(false, "drain", String::new).is_visible());
    }

    #[test]
    fn the_clock_shows_elapsed_over_total() {
        assert_eq!(clock_text(3_240, 5_000), "3.2 s / 5.0 s");
        assert_eq!(clock_text(3_250, 10_000), "3 s / 10 s");
        assert_eq!(clock_text(0, 60_000), "0 s / 1 min");
        assert_eq!(clock_text(150, 500), "0.1 s / 500 ms");
    }
}
