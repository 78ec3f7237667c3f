//! The simulator's Virtual Payment 2.0 route (`/wxa/game/cancelpay`, SPEC
//! §1.5): the typed JSON body, `pay_sig` and `signature`, per-deduction
//! remaining amounts, partial cancels and idempotency per cancellation id.

use super::{answer, query_param, LogEntry, OrderState, Response, SessionPolicy, State};
use crate::api::v2;
use std::time::Instant;

/// The fields of a v2 cancel body, typed as §1.5 says (strings, and `ts`,
/// `env`, `amount` as JSON numbers).
struct BodyV2 {
    openid: String,
    ts: u64,
    env: u64,
    pay_bill_no: String,
    bill_no: String,
    amount: u64,
}

fn parse_body_v2(bytes: &[u8]) -> Result<BodyV2, String> {
    let body = super::JsonBody::parse(bytes)?;
    let (s, n) = (|k: &str| body.str(k), |k: &str| body.num(k));
    s("offer_id")?;
    s("zone_id")?;
    if body.has("user_ip") {
        s("user_ip")?;
    }
    for k in ["appid", "pf", "pay_item", "sig", "mp_sig"] {
        if body.has(k) {
            return Err(format!("{k} is not a v2 field"));
        }
    }
    let env = n("env")?;
    if env > 1 {
        return Err("env must be 0 or 1".into());
    }
    let amount = n("amount")?;
    if amount == 0 {
        return Err("amount must be at least 1".into());
    }
    Ok(BodyV2 {
        openid: s("openid")?,
        ts: n("ts")?,
        env,
        pay_bill_no: s("pay_bill_no")?,
        bill_no: s("bill_no")?,
        amount,
    })
}

impl State {
    /// A Virtual Payment 2.0 cancel (SPEC §1.5), after [`State::gate`].
    fn decide_v2(&mut self, query: &str, body: &[u8], parsed: Result<BodyV2, String>) -> Response {
        let param = |name: &str| query_param(query, name);
        let b = match parsed {
            Ok(b) => b,
            Err(why) => return answer(90018, &format!("invalid param: {why}")),
        };
        if param("sig_method") != Some("hmac_sha256") {
            return answer(90018, "invalid param: sig_method");
        }
        for (name, v) in [("pay_bill_no", &b.pay_bill_no), ("bill_no", &b.bill_no)] {
            if v2::check_bill_no(name, v).is_err() {
                return answer(90018, &format!("invalid param: {name}"));
            }
        }
        let key = if b.env == 1 { &self.cfg.sandbox_app_key } else { &self.cfg.app_key };
        let text = String::from_utf8_lossy(body);
        if param("pay_sig") != Some(v2::pay_sig(key, &text).as_str()) {
            return answer(90011, "pay_sig error");
        }
        // Like v1's mp_sig: checked when the user's session key is known;
        // an unknown user's session has expired only with --strict-sessions.
        match self.cfg.session_keys.get(&b.openid) {
            None if self.cfg.sessions == SessionPolicy::Strict => return answer(90016, "session key expired"),
            None => {}
            Some(k) if param("signature") != Some(v2::signature(k, &text).as_str()) => {
                return answer(90010, "signature error")
            }
            Some(_) => {}
        }
        if self.cancellations.contains_key(&b.bill_no) {
            return self.deliver(&b.bill_no, answer(90012, "this cancellation was already processed"));
        }
        let sandbox = b.env == 1;
        let state =
            super::order_state(&self.cfg, &mut self.orders, &mut self.sandbox_orders, sandbox, &b.pay_bill_no).clone();
        let reply = match state {
            OrderState::Unknown => answer(90000, "pay_bill_no not exist"),
            OrderState::Errcode(c) => answer(c, "simulated error"),
            OrderState::Echo => answer(90013, &format!("echo: {query} {}", self.cfg.echo)),
            _ => match self.take_coins(sandbox, &b.pay_bill_no, &b.bill_no, b.amount) {
                Ok(()) => answer(0, "ok"),
                Err(left) => answer(90018, &format!("invalid param: amount {} above the {left} left", b.amount)),
            },
        };
        self.deliver(&b.bill_no, reply)
    }

    pub(super) fn cancel_v2(&mut self, query: &str, body: &[u8], arrived: Instant, started: Instant) -> Response {
        let token = query_param(query, "access_token").unwrap_or("");
        let parsed = parse_body_v2(body);
        let seen = parsed.as_ref().ok().map(|b| (b.bill_no.as_str(), b.ts));
        let sandbox = parsed.as_ref().is_ok_and(|b| b.env == 1);
        let entry = LogEntry::arrived(arrived, started, sandbox, seen, true);
        let response = match self.gate(token, arrived) {
            Some(r) => r,
            None => self.decide_v2(query, body, parsed),
        };
        self.log(entry.answered(&response));
        response
    }
}
