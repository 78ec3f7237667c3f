//! The simulator's Mini Program virtual payment routes (SPEC §1.6):
//! `/xpay/cancel_currency_pay` (coin deductions with what is left, cancels
//! idempotent per their own order_id, both signatures answered with one
//! errcode, 268490003, as WeChat does) and `/xpay/query_order` (signed by the
//! AppKey alone: what the tool asks to tell a wrong AppKey from a stale
//! session key, and what a refund row asks at each step; the records it
//! answers from are in [`super::refunds`]).

use super::{answer, query_param, LogEntry, OrderState, Response, SessionPolicy, State};
use crate::api::xpay;
use std::time::Instant;

/// The fields of a cancel_currency_pay body, typed as §1.6 says.
struct Cancel {
    openid: String,
    env: u64,
    pay_order_id: String,
    order_id: String,
    amount: u64,
}

fn parse_cancel(bytes: &[u8]) -> Result<Cancel, String> {
    let body = super::JsonBody::parse(bytes)?;
    let (s, n) = (|k: &str| body.str(k), |k: &str| body.num(k));
    s("user_ip")?;
    let env = n("env")?;
    if env > 1 {
        return Err("env must be 0 or 1".into());
    }
    let amount = n("amount")?;
    if amount == 0 {
        return Err("amount must be at least 1".into());
    }
    Ok(Cancel { openid: s("openid")?, env, pay_order_id: s("pay_order_id")?, order_id: s("order_id")?, amount })
}

/// The frequency limit in xpay's words.
pub(super) fn xpay_limit(r: Response) -> Response {
    match &r {
        Response::Json(200, text) if text.contains("\"errcode\":45009") => answer(268_490_015, "frequency limit"),
        _ => r,
    }
}

impl State {
    fn decide_xpay_cancel(&mut self, query: &str, body: &[u8], parsed: Result<Cancel, String>) -> Response {
        let b = match parsed {
            Ok(b) => b,
            Err(why) => return answer(268_490_002, &format!("param error: {why}")),
        };
        let key = if b.env == 1 { &self.cfg.sandbox_app_key } else { &self.cfg.app_key };
        let text = String::from_utf8_lossy(body);
        if query_param(query, "pay_sig") != Some(xpay::pay_sig(key, xpay::CANCEL_URI, &text).as_str()) {
            return answer(xpay::SIGNATURE_WRONG, "signature error");
        }
        // Checked when the user's session key is known; WeChat answers a
        // wrong one with the same errcode as a wrong pay_sig.
        match self.cfg.session_keys.get(&b.openid) {
            None if self.cfg.sessions == SessionPolicy::Strict => return answer(268_490_009, "session key expired"),
            None => {}
            Some(k) if query_param(query, "signature") != Some(xpay::signature(k, &text).as_str()) => {
                return answer(xpay::SIGNATURE_WRONG, "signature error")
            }
            Some(_) => {}
        }
        if self.cancellations.contains_key(&b.order_id) {
            return self.deliver(&b.order_id, answer(268_490_004, "this operation already succeeded"));
        }
        let sandbox = b.env == 1;
        let state =
            super::order_state(&self.cfg, &mut self.orders, &mut self.sandbox_orders, sandbox, &b.pay_order_id).clone();
        let reply = match state {
            OrderState::Unknown => answer(268_490_002, "no such order"),
            OrderState::Errcode(c) => answer(c, "simulated error"),
            OrderState::Cancelled => answer(268_490_005, "already cancelled"),
            _ => match self.take_coins(sandbox, &b.pay_order_id, &b.order_id, b.amount) {
                Ok(()) => answer(0, "ok"),
                Err(left) => answer(268_490_006, &format!("amount {} above the {left} left", b.amount)),
            },
        };
        self.deliver(&b.order_id, reply)
    }

    pub(super) fn cancel_xpay(&mut self, query: &str, body: &[u8], arrived: Instant, started: Instant) -> Response {
        let token = query_param(query, "access_token").unwrap_or("");
        let parsed = parse_cancel(body);
        let now = crate::clock::unix_now();
        let seen = parsed.as_ref().ok().map(|b| (b.order_id.as_str(), now));
        let sandbox = parsed.as_ref().is_ok_and(|b| b.env == 1);
        let entry = LogEntry::arrived(arrived, started, sandbox, seen, true);
        let response = match self.gate(token, arrived) {
            Some(r) => xpay_limit(r),
            None => self.decide_xpay_cancel(query, body, parsed),
        };
        self.log(entry.answered(&response));
        response
    }

    /// `query_order`, signed by the AppKey alone: a refund by its id, else
    /// a paid (or deducted) order by `order_id` or `wx_order_id`.
    pub(super) fn query_xpay(&mut self, query: &str, body: &[u8], arrived: Instant, started: Instant) -> Response {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let env = v.get("env").and_then(serde_json::Value::as_u64).unwrap_or(0);
        let id = ["order_id", "wx_order_id"].iter().find_map(|k| v.get(*k).and_then(serde_json::Value::as_str));
        let entry = LogEntry::arrived(arrived, started, env == 1, id.map(|i| (i, crate::clock::unix_now())), false)
            .of_call("query_order");
        let token = query_param(query, "access_token").unwrap_or("");
        let response = match self.gate(token, arrived) {
            Some(r) => xpay_limit(r),
            None => self.signed_by_app_key(query, xpay::QUERY_URI, env, body).unwrap_or_else(|| {
                let Some(id) = id.filter(|i| !i.is_empty()) else {
                    return answer(268_490_002, "param error: order_id or wx_order_id missing");
                };
                // A proxy that repeats what it got, token and pay_sig included.
                if self.cfg.orders.get(id).unwrap_or(&self.cfg.default_state) == &OrderState::Echo {
                    return answer(268_490_002, &format!("order not exist (echo: {query} {})", self.cfg.echo));
                }
                self.query_order(env == 1, id)
            }),
        };
        self.log(entry.answered(&response));
        response
    }

    /// `Some(268490003)` unless `pay_sig` is the AppKey's of `env` over `URI&BODY`.
    pub(super) fn signed_by_app_key(&self, query: &str, uri: &str, env: u64, body: &[u8]) -> Option<Response> {
        let key = if env == 1 { &self.cfg.sandbox_app_key } else { &self.cfg.app_key };
        let text = String::from_utf8_lossy(body);
        (query_param(query, "pay_sig") != Some(xpay::pay_sig(key, uri, &text).as_str()))
            .then(|| answer(xpay::SIGNATURE_WRONG, "signature error"))
    }
}
