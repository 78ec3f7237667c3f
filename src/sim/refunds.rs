//! The simulator's paid orders and cash refunds (SPEC §1.6,
//! `--api xpay-refund`): `refund_order` (signed by the AppKey alone) starts a
//! refund under its own id, idempotent per that id; the refund stays in
//! progress for [`super::SimConfig::refund_settle`], then completes (status
//! 8) or fails (7) at [`super::SimConfig::refund_fail_rate`]; `query_order`
//! answers a refund by its id and a paid order with its status and
//! `left_fee`. A `stale` order answers its first refund 268490016.

use super::{answer, json, LogEntry, OrderState, Response, State};
use crate::api::xpay;
use crate::api::xpay_refund::{STATUS_REFUNDED, STATUS_REFUND_FAILED};
use std::time::Instant;

/// A refund's status while it is in progress (any but 7 and 8).
const STATUS_REFUNDING: i64 = 5;
/// A paid order's status: paid.
const STATUS_PAID: i64 = 2;

/// One refund as the simulator keeps it.
#[derive(Clone, Debug)]
pub struct Refund {
    fee: u64,
    started: Instant,
    started_unix: u64,
    fails: bool,
    wx_id: String,
}

/// The fields of a refund_order body, typed as §1.6 says.
struct RefundBody {
    env: u64,
    /// The paid order, as the body names it.
    paid: String,
    refund_id: String,
    left_fee: u64,
    refund_fee: u64,
}

fn parse_refund(bytes: &[u8]) -> Result<RefundBody, String> {
    let body = super::JsonBody::parse(bytes)?;
    let (s, n) = (|k: &str| body.str(k), |k: &str| body.num(k));
    s("openid")?;
    for k in ["refund_reason", "req_from"] {
        if !matches!(body.0.get(k), Some(serde_json::Value::String(_))) {
            return Err(format!("{k} must be a string"));
        }
    }
    if !matches!(body.0.get("biz_meta"), Some(serde_json::Value::String(_))) {
        return Err("biz_meta must be a string".into());
    }
    let paid = if body.has("order_id") { s("order_id")? } else { s("wx_order_id")? };
    let env = n("env")?;
    if env > 1 {
        return Err("env must be 0 or 1".into());
    }
    let refund_fee = n("refund_fee")?;
    if refund_fee == 0 {
        return Err("refund_fee must be at least 1".into());
    }
    Ok(RefundBody { env, paid, refund_id: s("refund_order_id")?, left_fee: n("left_fee")?, refund_fee })
}

impl State {
    /// A paid order's status and what is left of it, or the answer that
    /// stands instead (no such order, an injected errcode).
    fn paid_order(&mut self, sandbox: bool, id: &str) -> Result<(i64, u64), Response> {
        let full = self.cfg.v2_remaining;
        match super::order_state(&self.cfg, &mut self.orders, &mut self.sandbox_orders, sandbox, id) {
            OrderState::Unknown => Err(answer(268_490_002, "order not exist")),
            OrderState::Errcode(c) => Err(answer(*c, "simulated error")),
            OrderState::Unpaid => Ok((1, full)),
            OrderState::Closed => Ok((6, 0)),
            OrderState::Cancelled => Ok((STATUS_PAID, 0)),
            OrderState::Remaining(n) => Ok((STATUS_PAID, *n)),
            _ => Ok((STATUS_PAID, full)),
        }
    }

    /// `query_order` of `id`: the refund of that id, else the paid order.
    pub(super) fn query_order(&mut self, sandbox: bool, id: &str) -> Response {
        if let Some(r) = self.refunds.get(&(sandbox, id.to_string())) {
            let settled = r.started.elapsed() >= self.cfg.refund_settle;
            let status = match (settled, r.fails) {
                (false, _) => STATUS_REFUNDING,
                (true, false) => STATUS_REFUNDED,
                (true, true) => STATUS_REFUND_FAILED,
            };
            let update_time = r.started_unix + if settled { self.cfg.refund_settle.as_secs() } else { 0 };
            return json(&serde_json::json!({
                "errcode": 0,
                "errmsg": "ok",
                "order": {
                    "order_id": id,
                    "order_type": 1,
                    "status": status,
                    "order_fee": r.fee,
                    "refund_fee": r.fee,
                    "wx_order_id": r.wx_id,
                    "update_time": update_time,
                },
            }));
        }
        match self.paid_order(sandbox, id) {
            Err(r) => r,
            Ok((status, left_fee)) => json(&serde_json::json!({
                "errcode": 0,
                "errmsg": "ok",
                "order": {
                    "order_id": id,
                    "order_type": 0,
                    "status": status,
                    "order_fee": self.cfg.v2_remaining,
                    "left_fee": left_fee,
                },
            })),
        }
    }

    fn decide_refund(&mut self, query: &str, body: &[u8], parsed: Result<RefundBody, String>) -> Response {
        let b = match parsed {
            Ok(b) => b,
            Err(why) => return answer(268_490_002, &format!("param error: {why}")),
        };
        if let Some(refused) = self.signed_by_app_key(query, xpay::REFUND_URI, b.env, body) {
            return refused;
        }
        let sandbox = b.env == 1;
        if self.refunds.contains_key(&(sandbox, b.refund_id.clone())) {
            return self.deliver(&b.refund_id, answer(268_490_004, "this refund already exists"));
        }
        let (status, left) = match self.paid_order(sandbox, &b.paid) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let state = super::order_state(&self.cfg, &mut self.orders, &mut self.sandbox_orders, sandbox, &b.paid);
        match state {
            OrderState::Confirmed => return answer(268_490_013, "order redeemed, cannot refund"),
            OrderState::Stale => {
                *state = OrderState::Deducted;
                return answer(268_490_016, "left_fee changed");
            }
            _ if status != STATUS_PAID => return answer(268_490_002, "param error: order not paid"),
            _ if b.left_fee != left => return answer(268_490_016, "left_fee changed"),
            _ if b.refund_fee > left => return answer(268_490_002, "param error: refund_fee above left_fee"),
            _ => {}
        }
        let fails = self.rng.f64() < self.cfg.refund_fail_rate;
        if !fails {
            *state =
                if left == b.refund_fee { OrderState::Cancelled } else { OrderState::Remaining(left - b.refund_fee) };
            *self.stats.refunded.entry(b.paid.clone()).or_default() += b.refund_fee;
        }
        let wx_id = format!("wxr{:029}", self.rng.u64(..10u64.pow(18)));
        let refund =
            Refund { fee: b.refund_fee, started: Instant::now(), started_unix: crate::clock::unix_now(), fails, wx_id };
        self.refunds.insert((sandbox, b.refund_id.clone()), refund.clone());
        *self.stats.cancels.entry(b.refund_id.clone()).or_default() += 1;
        let reply = json(&serde_json::json!({
            "errcode": 0,
            "errmsg": "ok",
            "refund_order_id": b.refund_id,
            "refund_wx_order_id": refund.wx_id,
            "pay_order_id": b.paid,
        }));
        self.deliver(&b.refund_id, reply)
    }

    /// `refund_order`: starts a refund (pay_sig only).
    pub(super) fn refund_xpay(&mut self, query: &str, body: &[u8], arrived: Instant, started: Instant) -> Response {
        let token = super::query_param(query, "access_token").unwrap_or("");
        let parsed = parse_refund(body);
        let now = crate::clock::unix_now();
        let seen = parsed.as_ref().ok().map(|b| (b.refund_id.as_str(), now));
        let sandbox = parsed.as_ref().is_ok_and(|b| b.env == 1);
        let entry = LogEntry::arrived(arrived, started, sandbox, seen, false).of_call("refund_order");
        let response = match self.gate(token, arrived) {
            Some(r) => super::xpay::xpay_limit(r),
            None => self.decide_refund(query, body, parsed),
        };
        self.log(entry.answered(&response));
        response
    }
}
