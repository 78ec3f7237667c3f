//! The simulator's v1 route (`/cgi-bin/midas/cancelpay`, and the sandbox's):
//! the body as WeChat types it, `sig` and `mp_sig` checked with the v1
//! signer, and the order states a v1 cancel meets.

use super::{answer, picked, query_param, LogEntry, OrderState, Response, SessionPolicy, State};
use crate::input::check_bill_no;
use crate::sign::{CancelParams, Signer};
use std::time::Instant;

/// The fields of a cancelpay body, typed as WeChat expects them.
struct Body {
    openid: String,
    appid: String,
    offer_id: String,
    ts: u64,
    zone_id: String,
    pf: String,
    bill_no: String,
    user_ip: Option<String>,
    pay_item: Option<String>,
    sig: String,
    mp_sig: Option<String>,
}

fn parse_body(bytes: &[u8]) -> Result<Body, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| "body is not JSON".to_string())?;
    let s = |k: &str| match v.get(k) {
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        None => Ok(None),
        Some(_) => Err(format!("{k} must be a string")),
    };
    let req = |k: &str| s(k)?.filter(|v| !v.is_empty()).ok_or_else(|| format!("{k} missing"));
    let ts = match v.get("ts") {
        Some(serde_json::Value::Number(n)) => n.as_u64().ok_or("ts must be a whole number")?,
        Some(_) => return Err("ts must be a number".into()),
        None => return Err("ts missing".into()),
    };
    Ok(Body {
        openid: req("openid")?,
        appid: req("appid")?,
        offer_id: req("offer_id")?,
        ts,
        zone_id: req("zone_id")?,
        pf: req("pf")?,
        bill_no: req("bill_no")?,
        user_ip: s("user_ip")?,
        pay_item: s("pay_item")?,
        sig: req("sig")?,
        mp_sig: s("mp_sig")?,
    })
}

impl State {
    pub(super) fn cancel(
        &mut self,
        sandbox: bool,
        query: &str,
        body: &[u8],
        arrived: Instant,
        started: Instant,
    ) -> Response {
        let token = query_param(query, "access_token").unwrap_or("");
        let parsed = parse_body(body);
        let seen = parsed.as_ref().ok().map(|b| (b.bill_no.as_str(), b.ts));
        let mp_sig = parsed.as_ref().is_ok_and(|b| b.mp_sig.is_some());
        let entry = LogEntry::arrived(arrived, started, sandbox, seen, mp_sig);
        let response = self.decide(sandbox, token, query, parsed, arrived);
        self.log(entry.answered(&response));
        response
    }

    fn decide(
        &mut self,
        sandbox: bool,
        token: &str,
        query: &str,
        body: Result<Body, String>,
        arrived: Instant,
    ) -> Response {
        if let Some(r) = self.gate(token, arrived) {
            return r;
        }
        let faults = self.cfg.faults.clone();
        let body = match body {
            Ok(b) => b,
            Err(why) => return answer(90018, &format!("invalid param: {why}")),
        };
        if check_bill_no(&body.bill_no).is_err() {
            return answer(90018, "invalid param: bill_no");
        }
        let params = CancelParams {
            openid: &body.openid,
            appid: &body.appid,
            offer_id: &body.offer_id,
            ts: body.ts,
            zone_id: &body.zone_id,
            pf: &body.pf,
            bill_no: &body.bill_no,
            user_ip: body.user_ip.as_deref(),
            pay_item: body.pay_item.as_deref(),
        };
        let key = if sandbox { &self.cfg.sandbox_app_key } else { &self.cfg.app_key };
        let signer = Signer::new(key, sandbox);
        if signer.sig(&params) != body.sig.as_str() {
            return answer(90011, "sig error");
        }
        let session_key = self.cfg.session_keys.get(&body.openid);
        match (&body.mp_sig, session_key, self.cfg.sessions) {
            (Some(mp), Some(k), _) if signer.mp_sig(&params, &body.sig, token, k) != mp.as_str() => {
                return answer(90009, "mp_sig error")
            }
            (Some(_), None, SessionPolicy::Strict) | (None, _, SessionPolicy::Strict) => {
                return answer(90010, "user not login or session expired")
            }
            _ => {}
        }
        if picked(&body.bill_no, faults.processing_share) {
            return answer(90016, "order is processing");
        }
        let state = super::order_state(&self.cfg, &mut self.orders, &mut self.sandbox_orders, sandbox, &body.bill_no);
        let reply = match state {
            OrderState::Deducted => {
                *state = OrderState::Cancelled;
                *self.stats.cancels.entry(body.bill_no.clone()).or_default() += 1;
                answer(0, "ok")
            }
            OrderState::Cancelled => answer(90015, "order has been returned"),
            OrderState::Confirmed => answer(90014, "order has been paid and confirmed"),
            OrderState::Processing(n) => {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    *state = OrderState::Deducted;
                }
                answer(90016, "order is processing")
            }
            // Refund-only states: no coin deduction of that id.
            OrderState::Unknown | OrderState::Unpaid | OrderState::Closed | OrderState::Stale => {
                answer(90000, "order not exist")
            }
            OrderState::Errcode(c) => answer(*c, "simulated error"),
            OrderState::Echo => answer(90013, &format!("echo: {query} {}", self.cfg.echo)),
            OrderState::Remaining(_) => answer(90018, "invalid param: a v2 deduction cancelled with v1"),
        };
        self.deliver(&body.bill_no, reply)
    }
}
