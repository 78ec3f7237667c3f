//! The one place that talks to the operator on stderr: progress (a bar on a
//! terminal, periodic plain lines otherwise, nothing with `--quiet`), notices
//! and warnings. Library code never prints directly.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::IsTerminal;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Writes `text` to stderr: the one exit for the process's messages (stop
/// reasons, breaker texts, errors, panics), so each passes the process's
/// redactor and no path can skip it. A stderr that is closed or full (`2>&1
/// | head`) is ignored, never a panic: a write error here must not stop
/// workers whose requests are already sent from recording their answers.
pub fn to_stderr(text: std::fmt::Arguments<'_>) {
    let text = crate::secret::Redactor::process().redact(&text.to_string());
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// [`to_stderr`] with a line end.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::reporter::to_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// How often plain progress lines are written when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

pub struct Reporter {
    quiet: bool,
    terminal: bool,
    bar: Mutex<Option<ProgressBar>>,
    plain_last: Mutex<Option<Instant>>,
    unit: Mutex<&'static str>,
}

impl Reporter {
    /// A reporter for this process's stderr.
    pub fn stderr(quiet: bool) -> Reporter {
        let terminal = std::io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
        Reporter { quiet, terminal, bar: Mutex::new(None), plain_last: Mutex::new(None), unit: Mutex::new("rows") }
    }

    /// Whether a human is watching stderr.
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// Prints a line above the progress display (never suppressed: these are
    /// messages the operator must see).
    pub fn notice(&self, msg: &str) {
        match self.bar.lock().expect("reporter lock").as_ref() {
            Some(bar) => bar.suspend(|| crate::say!("{msg}")),
            None => crate::say!("{msg}"),
        }
    }

    /// Informational line, dropped with `--quiet`.
    pub fn info(&self, msg: &str) {
        if !self.quiet {
            self.notice(msg);
        }
    }

    /// Starts a progress display counting `total` units (`bytes` or rows).
    pub fn start_progress(&self, total: u64, bytes: bool) {
        *self.unit.lock().expect("reporter lock") = if bytes { "bytes read" } else { "rows" };
        if bytes {
            // A dry run is seconds long: its first plain line comes after
            // the first 10 s, not as a lone `progress: 851968/10884688`.
            *self.plain_last.lock().expect("reporter lock") = Some(Instant::now());
        }
        if self.quiet || !self.terminal {
            return;
        }
        let template = if bytes {
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta}) {msg}"
        } else {
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows ({rate}, ETA {eta}) {msg}"
        };
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(8));
        let style = ProgressStyle::with_template(template).expect("valid template").with_key(
            "rate",
            |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", s.per_sec());
            },
        );
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(250));
        *self.bar.lock().expect("reporter lock") = Some(bar);
    }

    /// Moves the progress display; `status` is a short live summary.
    pub fn progress(&self, position: u64, total: u64, status: &str) {
        if self.quiet {
            return;
        }
        if let Some(bar) = self.bar.lock().expect("reporter lock").as_ref() {
            bar.set_position(position);
            bar.set_message(status.to_string());
            return;
        }
        if self.terminal {
            return;
        }
        let mut last = self.plain_last.lock().expect("reporter lock");
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= PLAIN_EVERY) {
            *last = Some(now);
            let unit = *self.unit.lock().expect("reporter lock");
            crate::say!("progress: {position}/{total} {unit}{}{status}", if status.is_empty() { "" } else { " · " });
        }
    }

    /// Removes the progress display.
    pub fn finish_progress(&self) {
        if let Some(bar) = self.bar.lock().expect("reporter lock").take() {
            bar.finish_and_clear();
        }
    }
}
