//! Injected faults: busy answers, 5xx, dropped and bogus replies, orders
//! that stay processing, a session-key policy; all seeded, so reproducible.

use super::server::Response;
use super::state::State;
use std::time::Duration;

/// Injected faults.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Delay before every answer.
    pub latency: Duration,
    /// Share of cancels answered -1 (system busy), not processed.
    pub busy_rate: f64,
    /// Share of cancels answered HTTP 502, not processed.
    pub error_rate: f64,
    /// Share of cancels processed but never answered (the client times out).
    pub drop_rate: f64,
    /// WeChat's frequency limit: more cancels than this in any second get 45009.
    pub frequency_limit: Option<u32>,
    /// Share of cancels processed but answered HTTP 200 with [`Faults::bogus_body`]
    /// (a proxy's answer without an errcode).
    pub bogus_rate: f64,
    /// The body of a bogus answer [default: `{}`].
    pub bogus_body: Option<String>,
    /// Answer every request (cancelpay and stable_token) with HTTP 307 to this URL.
    pub redirect_to: Option<String>,
    /// Share of cancels answered HTTP 429, not processed.
    pub throttle_rate: f64,
    /// Share of orders (chosen by a hash of the bill_no, so the same ones
    /// every time) that answer 90016 (processing) on every try.
    pub processing_share: f64,
    /// Process every order's (v2: cancellation's) first cancel but never
    /// answer it: the client's re-send must learn the outcome.
    pub drop_first: bool,
}

/// Whether `bill_no` is one of the `share` of orders picked by its hash.
pub fn picked(bill_no: &str, share: f64) -> bool {
    share > 0.0 && (xxhash_rust::xxh3::xxh3_64(bill_no.as_bytes()) % 10_000) < (share * 10_000.0) as u64
}

/// How the simulator treats mp_sig.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionPolicy {
    /// mp_sig optional; checked when the user's session key is known.
    Lenient,
    /// mp_sig required (90010 without it); unknown users' sessions are expired.
    Strict,
}

impl State {
    /// What every processed cancel of `key` may meet last: a lost or
    /// mangled reply.
    pub(super) fn deliver(&mut self, key: &str, reply: Response) -> Response {
        if self.cfg.faults.drop_first && self.dropped.insert(key.to_string()) {
            return Response::Drop;
        }
        if self.rng.f64() < self.cfg.faults.drop_rate {
            return Response::Drop;
        }
        if self.rng.f64() < self.cfg.faults.bogus_rate {
            return Response::Json(200, self.cfg.faults.bogus_body.clone().unwrap_or_else(|| "{}".into()));
        }
        reply
    }
}
