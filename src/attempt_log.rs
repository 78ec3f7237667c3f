//! `--log FILE.jsonl`: one JSON line per request sent (and per pace change
//! and token fetch), for the post-mortem. Each line is written whole with one
//! `write` as soon as it is known, so a `kill -9` loses at most the requests
//! still in flight. No secret, signature or token is ever in it.

use serde::Serialize;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

/// One line of the log.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A request and its answer.
    Request {
        /// UNIX seconds (with milliseconds) when the request left and when its answer came.
        sent: f64,
        answered: f64,
        row: u64,
        bill_no: &'a str,
        attempt: u32,
        /// HTTP status; absent when no response came (timeout, reset).
        http_status: Option<u16>,
        errcode: Option<i64>,
        /// The row's category after this answer (`next_step`: a multi-step
        /// row went on to its next request).
        category: &'a str,
        /// The call: the URI's last part (`cancelpay`, `query_order`, `refund_order`, ...).
        call: &'a str,
        latency_ms: f64,
        /// The pace (requests per second) when the request left.
        pace: f64,
    },
    /// The overload controller changed the pace.
    Pace { at: f64, from: f64, to: f64, why: &'a str },
    /// stable_token was called.
    Token { at: f64, ok: bool, forced: bool },
}

/// The attempt log of one run.
pub struct AttemptLog {
    file: Mutex<std::fs::File>,
}

impl AttemptLog {
    /// Appends to `path` (a resumed run adds to the same log).
    pub fn open(path: &Path) -> anyhow::Result<AttemptLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot open the attempt log --log {}: {e}", path.display()))?;
        Ok(AttemptLog { file: Mutex::new(file) })
    }

    /// Writes one line. A log that cannot be written must not stop the
    /// cancels; the results file is the record.
    pub fn write(&self, event: &Event<'_>) {
        let Ok(mut line) = serde_json::to_vec(event) else { return };
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = f.write_all(&line);
    }
}
