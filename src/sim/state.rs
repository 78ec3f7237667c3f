//! The simulator's memory: order states (production and sandbox apart),
//! what it has seen (the log and its statistics), the state behind the lock.

use super::server::Response;
use super::tokens::Issued;
use super::SimConfig;
use crate::api::Answer;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

/// The state of one order on the simulated Midas side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderState {
    /// Coins deducted: a cancel succeeds (0) and returns them.
    Deducted,
    /// Already returned: 90015.
    Cancelled,
    /// Paid and confirmed: 90014.
    Confirmed,
    /// 90016 for this many more attempts, then deducted.
    Processing(u32),
    /// No such order: 90000.
    Unknown,
    /// Always answers this errcode (to rehearse any category).
    Errcode(i64),
    /// v2: a deduction with this many coins left to return.
    Remaining(u64),
    /// Answers errcode 90013 with an errmsg that echoes the request's query
    /// string and [`SimConfig::echo`], like a proxy that repeats what it got.
    Echo,
    /// xpay-refund: an order not paid yet (status 1).
    Unpaid,
    /// xpay-refund: a closed order (status 6).
    Closed,
    /// xpay-refund: a paid order whose first refund is answered 268490016
    /// (`left_fee` stale), then paid as any other.
    Stale,
}

impl FromStr for OrderState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Ok(match s {
            "deducted" => OrderState::Deducted,
            "cancelled" | "returned" => OrderState::Cancelled,
            "confirmed" => OrderState::Confirmed,
            "processing" => OrderState::Processing(2),
            "unknown" => OrderState::Unknown,
            "echo" => OrderState::Echo,
            "unpaid" => OrderState::Unpaid,
            "closed" => OrderState::Closed,
            "stale" => OrderState::Stale,
            _ => {
                if let Some(n) = s.strip_prefix("processing:") {
                    OrderState::Processing(n.parse().map_err(|_| format!("bad count in `{s}`"))?)
                } else if let Some(n) = s.strip_prefix("remaining:") {
                    OrderState::Remaining(n.parse().map_err(|_| format!("bad amount in `{s}`"))?)
                } else if let Some(c) = s.strip_prefix("errcode:") {
                    OrderState::Errcode(c.parse().map_err(|_| format!("bad errcode in `{s}`"))?)
                } else {
                    return Err(format!(
                        "unknown order state `{s}` (deducted, cancelled, confirmed, processing[:N], unknown, errcode:N, echo, remaining:N, unpaid, closed, stale)"
                    ));
                }
            }
        })
    }
}

/// Loads `bill_no,state` rows.
pub fn load_orders(path: &Path) -> anyhow::Result<HashMap<String, OrderState>> {
    use anyhow::Context as _;
    let mut rdr =
        csv::ReaderBuilder::new().trim(csv::Trim::All).from_path(path).with_context(|| path.display().to_string())?;
    let mut orders = HashMap::new();
    for rec in rdr.records() {
        let rec = rec.with_context(|| path.display().to_string())?;
        let state = rec.get(1).unwrap_or("deducted").parse().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        orders.insert(rec.get(0).unwrap_or("").to_string(), state);
    }
    Ok(orders)
}

/// One cancelpay request as the simulator saw it.
#[derive(Clone, Debug, Serialize)]
pub struct LogEntry {
    /// Arrival, seconds since the simulator started.
    pub at: f64,
    pub sandbox: bool,
    pub bill_no: String,
    /// Arrival time minus the request's ts, in seconds.
    pub ts_lag: Option<f64>,
    pub mp_sig: bool,
    /// HTTP status sent (0 when the reply was dropped).
    pub status: u16,
    pub errcode: Option<i64>,
    /// Which call: `cancel` (every cancel API), `query_order`, `refund_order`.
    pub call: &'static str,
}

impl LogEntry {
    /// A cancel's entry as it arrived, before it is answered: the parts of
    /// its body that parsed (`bill_no`, `ts`).
    pub(super) fn arrived(
        at: Instant,
        started: Instant,
        sandbox: bool,
        parsed: Option<(&str, u64)>,
        mp_sig: bool,
    ) -> LogEntry {
        LogEntry {
            at: at.duration_since(started).as_secs_f64(),
            sandbox,
            bill_no: parsed.map(|(b, _)| b.to_string()).unwrap_or_default(),
            ts_lag: parsed.map(|(_, ts)| crate::clock::unix_now_f64() - ts as f64),
            mp_sig,
            status: 200,
            errcode: None,
            call: "cancel",
        }
    }

    /// The entry of another call than a cancel.
    pub(super) fn of_call(mut self, call: &'static str) -> LogEntry {
        self.call = call;
        self
    }

    /// The entry with the HTTP status and errcode of `response` (status 0:
    /// never answered).
    pub(super) fn answered(mut self, response: &Response) -> LogEntry {
        (self.status, self.errcode) = match response {
            Response::Json(status, text) => (*status, serde_json::from_str::<Answer>(text).ok().map(|a| a.errcode)),
            Response::Redirect(_) => (307, None),
            Response::Drop => (0, None),
        };
        self
    }
}

/// What the simulator has seen.
#[derive(Clone, Debug, Default)]
pub struct SimStats {
    pub log: Vec<LogEntry>,
    /// Successful cancels (errcode 0) per bill_no.
    pub cancels: HashMap<String, u32>,
    pub stable_token_calls: u64,
    pub force_refreshes: u64,
    /// Calls of the forbidden `GET /cgi-bin/token`.
    pub get_token_calls: u64,
    /// Every request that arrived, as `METHOD path` (cancels and tokens alike).
    pub requests: Vec<String>,
    /// The most cancel requests being handled at once (arrived, not yet answered).
    pub max_in_flight: usize,
    /// With `keep_log`: every xpay request as (URI, BODY, pay_sig).
    pub bodies: Vec<(String, String, String)>,
    /// xpay-refund: fen refunded per paid order (refunds that completed or
    /// are under way; a failed one moved nothing).
    pub refunded: HashMap<String, u64>,
}

impl SimStats {
    /// Arrival times of the cancel requests, sorted.
    pub fn arrivals(&self) -> Vec<f64> {
        let mut at: Vec<f64> = self.log.iter().map(|e| e.at).collect();
        at.sort_by(f64::total_cmp);
        at
    }

    /// The most cancel requests that arrived in any sliding one-second window.
    pub fn busiest_second(&self) -> usize {
        let at = self.arrivals();
        let mut end = 0;
        (0..at.len())
            .map(|start| {
                while end < at.len() && at[end] < at[start] + 1.0 {
                    end += 1;
                }
                end - start
            })
            .max()
            .unwrap_or(0)
    }

    /// True when every bill_no in `expected` was cancelled exactly once and
    /// no other order was.
    pub fn cancelled_once(&self, expected: usize) -> bool {
        self.cancels.len() == expected && self.cancels.values().all(|&n| n == 1)
    }
}

/// The state of order `bill_no` in production or the sandbox (kept apart),
/// from the maps of [`State`] (borrowed apart from its other fields).
pub(super) fn order_state<'a>(
    cfg: &SimConfig,
    orders: &'a mut HashMap<String, OrderState>,
    sandbox_orders: &'a mut HashMap<String, OrderState>,
    sandbox: bool,
    bill_no: &str,
) -> &'a mut OrderState {
    let start = cfg.orders.get(bill_no).unwrap_or(&cfg.default_state).clone();
    let orders = if sandbox { sandbox_orders } else { orders };
    orders.entry(bill_no.to_string()).or_insert(start)
}

pub(super) struct State {
    pub(super) cfg: SimConfig,
    pub(super) orders: HashMap<String, OrderState>,
    /// The sandbox's own orders: a sandbox cancel never changes production's
    /// (each starts from the configured state, or the default).
    pub(super) sandbox_orders: HashMap<String, OrderState>,
    pub(super) tokens: HashMap<String, Issued>,
    pub(super) current: Option<(String, Instant)>,
    pub(super) window: VecDeque<Instant>,
    pub(super) stats: SimStats,
    pub(super) rng: fastrand::Rng,
    pub(super) generation: u64,
    pub(super) log_file: Option<std::fs::File>,
    pub(super) in_flight: usize,
    /// v2: cancellation ids processed, with their amounts.
    pub(super) cancellations: HashMap<String, u64>,
    /// Keys whose first answer was dropped (`drop_first`).
    pub(super) dropped: std::collections::HashSet<String>,
    /// xpay-refund: refunds by (sandbox, refund id).
    pub(super) refunds: HashMap<(bool, String), super::refunds::Refund>,
}

impl State {
    /// A coin cancel (v2, xpay): takes `amount` off the deduction `pay_id`
    /// (untouched, it holds `v2_remaining`; cancelled or confirmed, none)
    /// and records the cancel under its own `id`; `Err` with what is left
    /// when the amount is more. A balance taken to 0 is `Cancelled`.
    pub(super) fn take_coins(&mut self, sandbox: bool, pay_id: &str, id: &str, amount: u64) -> Result<(), u64> {
        let full = self.cfg.v2_remaining;
        let state = order_state(&self.cfg, &mut self.orders, &mut self.sandbox_orders, sandbox, pay_id);
        let left = match state {
            OrderState::Remaining(n) => *n,
            OrderState::Cancelled | OrderState::Confirmed => 0,
            _ => full,
        };
        if amount > left {
            return Err(left);
        }
        *state = if left == amount { OrderState::Cancelled } else { OrderState::Remaining(left - amount) };
        self.cancellations.insert(id.to_string(), amount);
        *self.stats.cancels.entry(id.to_string()).or_default() += 1;
        Ok(())
    }
}

impl State {
    pub(super) fn log(&mut self, entry: LogEntry) {
        if let Some(f) = self.log_file.as_mut() {
            let _ = writeln!(f, "{}", serde_json::to_string(&entry).expect("serialisable"));
        }
        if self.cfg.keep_log {
            self.stats.log.push(entry);
        }
    }
}
