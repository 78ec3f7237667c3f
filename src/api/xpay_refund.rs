//! Mini Program cash refunds (SPEC §1.6, `--api xpay-refund`): what a refund
//! row reads from an export, and the steps it takes. A refund is not one
//! request: `refund_order` only starts it, and the row is done when WeChat's
//! own record of the refund says so. So a row walks through [`Steps`]:
//!
//! 1. `query_order` for the row's refund id: a refund WeChat already knows
//!    (a resumed or repeated run) is only polled, never started again;
//! 2. `query_order` for the paid order: its status and what is left;
//! 3. `refund_order` (`pay_sig` only);
//! 4. `query_order` for the refund id, at 5, 10, 20, 40, 60, 60, ... s
//!    (±10 %), until it completed (status 8) or failed (7), or
//!    `--settle-timeout` leaves it `refund_pending`.
//!
//! The engine sends whatever request [`Steps::request`] names, under the
//! one pace, and hands the answer to [`Steps::read`], which says what comes
//! next. A row waiting for its next step is parked and holds no slot.

use super::v2::{check_amount_of, AmountWords};
use super::xpay::{self, check_order_id, OrderKey, RefundOrder};
use super::{Action, Polling, Reply, Turn};
use crate::category::Category;
use crate::input::field::{ApiInput, Field, FieldSpec, Need};
use crate::input::{check_openid, OrderRef};
use crate::results::output::{Outcome, RefundFacts};
use std::time::{Duration, Instant};

/// What `--api xpay-refund` reads from an export, in the order its fields
/// are checked. The paid order is named by bill_no or by wx_order_id.
pub static INPUT: ApiInput = ApiInput {
    fields: &[
        FieldSpec { field: Field::BillNo, need: Need::Optional, check: Some(check_paid_order_id) },
        FieldSpec { field: Field::WxOrderId, need: Need::Optional, check: Some(check_wx_order_id) },
        FieldSpec { field: Field::Openid, need: Need::Required, check: Some(check_openid) },
        FieldSpec { field: Field::RefundBillNo, need: Need::Optional, check: Some(check_refund_id) },
        FieldSpec { field: Field::Amount, need: Need::Optional, check: Some(check_fee) },
        FieldSpec { field: Field::RefundReason, need: Need::Optional, check: Some(check_refund_reason) },
        FieldSpec { field: Field::ReqFrom, need: Need::Optional, check: Some(check_req_from) },
        FieldSpec { field: Field::BizMeta, need: Need::Optional, check: Some(check_biz_meta) },
    ],
    key_names: ["bill_no (the paid order)", "refund_bill_no (the refund id)"],
    // Every call is signed by the AppKey alone.
    needs_session_key: false,
    needs_user_ip: false,
    own_id: Some(derived_refund_id),
    other_api: None,
    id_field: Field::RefundBillNo,
    alt_order: Some(Field::WxOrderId),
};

fn check_paid_order_id(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("bill_no and wx_order_id are both empty: give the paid order's bill_no (the merchant's \
                    order_id) or its wx_order_id"
            .into());
    }
    check_order_id("bill_no", v)
}

fn check_wx_order_id(v: &str) -> Result<(), String> {
    check_order_id("wx_order_id", v)
}

fn check_refund_id(v: &str) -> Result<(), String> {
    check_order_id("refund_bill_no", v)
}

/// Fen to refund: digits, at least 1 (v2's rule, in fen).
fn check_fee(v: &str) -> Result<(), String> {
    const FEN: AmountWords =
        AmountWords { what: "the fen to refund", unit: "fen", least: "a refund is at least 1 fen" };
    check_amount_of(v, &FEN).map(drop)
}

/// `0`-`5` (WeChat's reasons; 1 is "product problem").
pub fn check_refund_reason(v: &str) -> Result<(), String> {
    match v {
        "0" | "1" | "2" | "3" | "4" | "5" => Ok(()),
        _ => Err(format!(
            "refund_reason `{v}` is not one of 0-5 (0 none, 1 product problem, 2 after-sale, 3 user request, 4 price, \
             5 other)"
        )),
    }
}

/// `1`-`3` (1: refunded by staff).
fn check_req_from(v: &str) -> Result<(), String> {
    match v {
        "1" | "2" | "3" => Ok(()),
        _ => Err(format!("req_from `{v}` is not one of 1-3 (1 staff, 2 user, 3 other)")),
    }
}

/// The longest `biz_meta`, in bytes of UTF-8.
const BIZ_META_MAX: usize = 1024;

fn check_biz_meta(v: &str) -> Result<(), String> {
    match v.len() {
        n if n > BIZ_META_MAX => Err(format!("biz_meta is {n} bytes long; at most {BIZ_META_MAX} are allowed")),
        _ => Ok(()),
    }
}

/// [`xpay::refund_id`] in the shape ids are derived in: no amount is `all`.
fn derived_refund_id(appid: &str, order: &str, amount: &str, tag: &str) -> String {
    xpay::refund_id(appid, order, Some(amount), tag)
}

/// A refund's status in WeChat's record: completed (*unconfirmed*, SPEC §1.6).
pub const STATUS_REFUNDED: i64 = 8;
/// A refund's status in WeChat's record: failed (*unconfirmed*).
pub const STATUS_REFUND_FAILED: i64 = 7;

/// The paid order's statuses no refund can follow: not paid (0, 1), closed (6).
const NOT_REFUNDABLE: [i64; 3] = [0, 1, 6];

/// 268490002: a parameter error, or no such order.
const NO_SUCH_ORDER: i64 = 268_490_002;
/// 268490016: the `left_fee` sent is no longer what is left.
const STALE_LEFT_FEE: i64 = 268_490_016;
/// Times a stale `left_fee` sends the row back to the paid order's query.
const STALE_TRIES: u8 = 3;

/// The poll schedule's longest wait, in units of the first (5 s → 60 s).
const POLL_CAP: u32 = 12;

/// Where a refund row stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// 1: is the row's refund id known to WeChat?
    FindRefund,
    /// 2: what is left of the paid order?
    QueryOrder,
    /// 3: start the refund of what step 2 found.
    Refund,
    /// 4: has it settled? (the `n`th poll of this run, polling since
    /// `since`: the settle timeout counts from it)
    Poll { n: u32, since: Instant },
}

/// One refund row's progress through its steps, and what it learned.
#[derive(Clone, Debug)]
pub struct Steps {
    step: Step,
    stale: u8,
    pub facts: RefundFacts,
}

impl Default for Steps {
    fn default() -> Steps {
        Steps::new()
    }
}

impl Steps {
    pub fn new() -> Steps {
        Steps { step: Step::FindRefund, stale: 0, facts: RefundFacts::default() }
    }

    /// The next request's URI and exact BODY (signed by `pay_sig` alone).
    /// `reason` is `--refund-reason` for rows without a refund_reason.
    pub fn request(&self, order: &OrderRef<'_>, env: u8, reason: &str) -> (&'static str, String) {
        let refund_id = order.cancel_id.as_deref().unwrap_or_default();
        match self.step {
            Step::FindRefund | Step::Poll { .. } => {
                (xpay::QUERY_URI, xpay::query_order_body(order.openid, env, OrderKey::OrderId(refund_id)))
            }
            Step::QueryOrder => Steps::paid_order_query(order, env),
            Step::Refund => {
                let body = RefundOrder {
                    openid: order.openid,
                    order: paid_order(order),
                    refund_order_id: refund_id,
                    left_fee: self.facts.left_fee.unwrap_or(0),
                    refund_fee: self.refund_fee(order),
                    biz_meta: order.biz_meta.unwrap_or_default(),
                    refund_reason: order.refund_reason.unwrap_or(reason),
                    req_from: order.req_from.unwrap_or("1"),
                    env,
                }
                .body();
                (xpay::REFUND_URI, body)
            }
        }
    }

    /// The row's last outcome, settled: once a refund may be under way, an
    /// unfinished row is `refund_pending` (`--resume` polls it, whatever
    /// stopped this run: a busy server, a breaker, an interrupt).
    pub fn finish(&self, outcome: &mut Outcome) {
        if self.refund_started() && !outcome.category.is_final() && outcome.category != Category::RefundPending {
            outcome.errmsg = format!("refund started, not settled: {} [{}]", outcome.category, outcome.errmsg);
            outcome.category = Category::RefundPending;
        }
    }

    /// Whether this row's refund may be under way: it is being polled.
    fn refund_started(&self) -> bool {
        matches!(self.step, Step::Poll { .. })
    }

    /// What this row refunds: its amount, else all that is left.
    fn refund_fee(&self, order: &OrderRef<'_>) -> u64 {
        order.amount.unwrap_or(self.facts.left_fee.unwrap_or(0))
    }

    /// Step 2's request: the paid order's query.
    pub fn paid_order_query(order: &OrderRef<'_>, env: u8) -> (&'static str, String) {
        (xpay::QUERY_URI, xpay::query_order_body(order.openid, env, paid_order(order)))
    }

    /// Reads the answer to [`Steps::request`]'s request for `order`.
    pub fn read(&mut self, reply: &Reply, order: &OrderRef<'_>, polling: &Polling) -> Turn {
        let Reply::Answer { errcode, errmsg, detail, .. } = reply else {
            return self.shared(reply);
        };
        let record = detail.as_deref().and_then(|d| d.get("order")).and_then(|o| o.as_object());
        // A record that says it is a paid order is never this row's refund.
        let paid_record = record.and_then(|r| r.get("order_type")).and_then(serde_json::Value::as_i64) == Some(0);
        let refund_record = record.filter(|_| !paid_record);
        // WeChat knows no refund of this id (yet).
        let no_refund = match *errcode {
            0 => paid_record,
            NO_SUCH_ORDER => says_no_such_order(errmsg),
            _ => false,
        };
        match (self.step, *errcode) {
            (Step::FindRefund | Step::Poll { .. }, 0) if refund_record.is_some() => {
                self.note_refund(refund_record);
                self.settled_or_poll(polling)
            }
            (Step::FindRefund, _) if no_refund => {
                self.go(Step::QueryOrder, "no refund with this id yet: the paid order is next")
            }
            // Not visible yet, though refund_order took it: never a success.
            (Step::Poll { .. }, _) if no_refund => self.settled_or_poll(polling),
            (Step::QueryOrder, 0) => self.read_paid_order(record, order),
            (Step::QueryOrder, NO_SUCH_ORDER) if says_no_such_order(errmsg) => {
                Turn::Settle(Category::NotFound, format!("WeChat has no such paid order ({errmsg})"))
            }
            (Step::Refund, 0 | 268_490_004 | 268_490_014) => {
                if let Some(id) = detail.as_deref().and_then(|d| d.get("refund_wx_order_id")).and_then(|v| v.as_str()) {
                    self.facts.wx_refund_id = Some(id.to_string());
                }
                self.facts.refund_fee = Some(self.refund_fee(order));
                self.start_polling(polling, format!("refund started (refund_order answered {errcode})"))
            }
            (Step::Refund, STALE_LEFT_FEE) if self.stale < STALE_TRIES => {
                self.stale += 1;
                self.go(Step::QueryOrder, "left_fee was stale: the paid order is queried again")
            }
            (Step::Refund, STALE_LEFT_FEE) => Turn::Settle(
                Category::UnknownError,
                format!(
                    "left_fee changed under each of {STALE_TRIES} refunds (268490016): someone else is refunding this \
                     order; `--resume` tries again"
                ),
            ),
            (Step::Refund, 268_490_013) => Turn::Settle(
                Category::NotRefundable,
                format!("the order was redeemed, WeChat will not refund it ({errmsg})"),
            ),
            _ => self.shared(reply),
        }
    }

    /// An answer no step reads itself: the shared errcode table, where an
    /// answer without the record it should carry is an unknown outcome.
    fn shared(&self, reply: &Reply) -> Turn {
        match reply {
            Reply::Answer { errcode: 0, .. } => {
                Turn::Answer(Category::UnknownError, Action::Retry { slow_down: false })
            }
            Reply::Answer { errcode, .. } => {
                let (category, action) = classify_errcode(*errcode);
                // Past step 3 a refund may be under way: never "not started".
                match (category, self.refund_started()) {
                    (Category::ParamError, true) => Turn::Answer(Category::RefundPending, Action::Stop),
                    _ => Turn::Answer(category, action),
                }
            }
            other => {
                let (category, action) = other.classify(super::ApiKind::XpayRefund);
                Turn::Answer(category, action)
            }
        }
    }

    /// Step 2's answer: refund what is left, or say why not.
    fn read_paid_order(
        &mut self,
        record: Option<&serde_json::Map<String, serde_json::Value>>,
        order: &OrderRef<'_>,
    ) -> Turn {
        let int = |k: &str| record.and_then(|r| r.get(k)).and_then(serde_json::Value::as_i64);
        let (Some(status), Some(left_fee)) = (int("status"), int("left_fee").and_then(|f| u64::try_from(f).ok()))
        else {
            return Turn::Answer(Category::UnknownError, Action::Retry { slow_down: false });
        };
        self.facts.left_fee = Some(left_fee);
        if NOT_REFUNDABLE.contains(&status) {
            let what = if status == 6 { "closed" } else { "not paid" };
            return Turn::Settle(Category::NotRefundable, format!("the paid order is {what} (status {status})"));
        }
        if left_fee == 0 {
            return Turn::Settle(Category::AlreadyReturned, "nothing is left to refund (left_fee 0)".to_string());
        }
        if let Some(amount) = order.amount.filter(|a| *a > left_fee) {
            return Turn::Settle(
                Category::ParamError,
                format!("refund exceeds what is left: {left_fee} fen (the row asks {amount})"),
            );
        }
        self.go(Step::Refund, "the paid order has enough left: the refund is next")
    }

    /// What a refund's record says: its status, WeChat's id, its time.
    fn note_refund(&mut self, record: Option<&serde_json::Map<String, serde_json::Value>>) {
        let Some(r) = record else { return };
        self.facts.refund_status = r.get("status").and_then(serde_json::Value::as_i64);
        if let Some(id) = r.get("wx_order_id").and_then(|v| v.as_str()).filter(|s| !s.is_empty()) {
            self.facts.wx_refund_id = Some(id.to_string());
        }
        if let Some(fee) = r.get("refund_fee").or_else(|| r.get("order_fee")).and_then(serde_json::Value::as_u64) {
            self.facts.refund_fee = Some(fee);
        }
        if let Some(t) =
            r.get("update_time").and_then(|v| v.as_i64().map(|n| n.to_string()).or(v.as_str().map(String::from)))
        {
            self.facts.settled_at = Some(t);
        }
    }

    /// After a refund record was read: settled, or poll again.
    fn settled_or_poll(&mut self, polling: &Polling) -> Turn {
        match self.facts.refund_status {
            Some(STATUS_REFUNDED) => {
                Turn::Settle(Category::Refunded, "WeChat's record: refund completed (status 8)".into())
            }
            Some(STATUS_REFUND_FAILED) => Turn::Settle(
                Category::RefundFailed,
                "WeChat's record: refund failed (status 7); another refund needs a new --cancel-tag once the cause is \
                 known"
                    .into(),
            ),
            status => {
                let seen = status.map_or_else(|| "not visible yet".to_string(), |s| format!("status {s}"));
                self.start_polling(polling, format!("refund in progress ({seen})"))
            }
        }
    }

    /// The next poll, or `refund_pending` once the settle timeout is spent.
    fn start_polling(&mut self, polling: &Polling, note: String) -> Turn {
        let (n, since) = match self.step {
            Step::Poll { n, since } => (n + 1, since),
            _ => (0, Instant::now()),
        };
        self.step = Step::Poll { n, since };
        let spent = since.elapsed();
        let Some(left) = polling.settle_timeout.checked_sub(spent).filter(|l| !l.is_zero()) else {
            return Turn::Settle(
                Category::RefundPending,
                format!(
                    "{note}; not settled after {} s (--settle-timeout): `--resume` goes on polling, never refunds again",
                    spent.as_secs()
                ),
            );
        };
        let doubling = 1u32 << n.min(4);
        let wait = polling.first.saturating_mul(doubling.min(POLL_CAP)).mul_f64(0.9 + fastrand::f64() / 5.0);
        let note = format!("{note}; the run stopped before it settled");
        Turn::Next { wait: wait.min(left), meanwhile: Category::RefundPending, note }
    }

    /// On to `step` at once; a run stopped before it sends nothing was
    /// started, so the row is `skipped`.
    fn go(&mut self, step: Step, note: &str) -> Turn {
        self.step = step;
        Turn::Next { wait: Duration::ZERO, meanwhile: Category::Skipped, note: note.to_string() }
    }
}

/// The paid order as the row names it.
fn paid_order<'a>(order: &OrderRef<'a>) -> OrderKey<'a> {
    match order.wx_order {
        true => OrderKey::WxOrderId(order.bill_no),
        false => OrderKey::OrderId(order.bill_no),
    }
}

/// Whether a 268490002's errmsg says "no such order" rather than a
/// parameter error (WeChat's words are not documented; these are the
/// simulator's and the console's).
fn says_no_such_order(errmsg: &str) -> bool {
    let m = errmsg.to_ascii_lowercase();
    ["not exist", "not found", "no such", "不存在"].iter().any(|w| m.contains(w))
}

/// The shared xpay errcode table (SPEC §1.6) for the refund calls.
pub fn classify_errcode(errcode: i64) -> (Category, Action) {
    use Category::*;
    match errcode {
        268_490_001 | NO_SUCH_ORDER => (ParamError, Action::Stop),
        // Signed by the AppKey alone: a refusal is the AppKey's.
        xpay::SIGNATURE_WRONG => (SigError, Action::Breaker),
        268_490_015 => (RateLimited, Action::Retry { slow_down: true }),
        -1 => (SystemBusy, Action::Retry { slow_down: true }),
        40001 | 42001 | 40014 => (TokenError, Action::RefreshToken),
        _ => (UnknownError, Action::Stop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(amount: Option<u64>) -> OrderRef<'static> {
        OrderRef {
            row: 1,
            bill_no: "P1",
            openid: "oA",
            zone_id: "",
            pf: None,
            user_ip: None,
            pay_item: None,
            session_key: None,
            amount,
            cancel_id: Some("mr1".into()),
            wx_order: false,
            refund_reason: None,
            req_from: None,
            biz_meta: None,
        }
    }

    fn answer(errcode: i64, errmsg: &str, body: &str) -> Reply {
        let detail = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(body).ok().map(Box::new);
        Reply::Answer { status: 200, errcode, errmsg: errmsg.into(), detail: detail.filter(|_| errcode == 0) }
    }

    fn quick() -> Polling {
        Polling { first: Duration::from_millis(1), settle_timeout: Duration::from_secs(60) }
    }

    /// A row walked to its polls: found nothing, the order has 500 left, refund taken.
    fn polling(amount: Option<u64>) -> Steps {
        let (mut s, o, p) = (Steps::new(), order(amount), quick());
        s.read(&answer(NO_SUCH_ORDER, "order not exist", ""), &o, &p);
        s.read(&answer(0, "ok", r#"{"order":{"order_type":0,"status":2,"left_fee":500}}"#), &o, &p);
        assert!(matches!(
            s.read(&answer(0, "ok", "{}"), &o, &p),
            Turn::Next { meanwhile: Category::RefundPending, .. }
        ));
        s
    }

    #[test]
    fn only_status_8_as_a_number_is_refunded() {
        let o = order(Some(100));
        for (record, settled) in [
            (r#"{"order":{"order_type":1,"status":8}}"#, Some(Category::Refunded)),
            (r#"{"order":{"order_type":1,"status":7}}"#, Some(Category::RefundFailed)),
            (r#"{"order":{"order_type":1,"status":"8"}}"#, None),
            (r#"{"order":{"order_type":1,"status":9}}"#, None),
            (r#"{"order":{"order_type":1}}"#, None),
            // A paid order's record is never this row's refund.
            (r#"{"order":{"order_type":0,"status":8}}"#, None),
        ] {
            let mut s = polling(Some(100));
            match s.read(&answer(0, "ok", record), &o, &quick()) {
                Turn::Settle(c, _) => assert_eq!(Some(c), settled, "{record}"),
                Turn::Next { meanwhile, .. } => {
                    assert_eq!((settled, meanwhile), (None, Category::RefundPending), "{record}")
                }
                other => panic!("{record}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_answer_without_its_record_is_an_unknown_outcome() {
        let o = order(None);
        let retry = Turn::Answer(Category::UnknownError, Action::Retry { slow_down: false });
        assert_eq!(Steps::new().read(&answer(0, "ok", "{}"), &o, &quick()), retry, "step 1");
        let mut s = Steps::new();
        s.read(&answer(NO_SUCH_ORDER, "order not exist", ""), &o, &quick());
        let no_left_fee = answer(0, "ok", r#"{"order":{"status":2}}"#);
        assert_eq!(s.read(&no_left_fee, &o, &quick()), retry, "step 2 without left_fee");
    }

    #[test]
    fn a_parameter_error_is_not_taken_for_no_such_refund() {
        let o = order(None);
        let turn = Steps::new().read(&answer(NO_SUCH_ORDER, "param error: openid", ""), &o, &quick());
        assert_eq!(turn, Turn::Answer(Category::ParamError, Action::Stop));
        // Once the refund may be under way, never a final "not started".
        let mut s = polling(None);
        let turn = s.read(&answer(NO_SUCH_ORDER, "param error: openid", ""), &o, &quick());
        assert_eq!(turn, Turn::Answer(Category::RefundPending, Action::Stop));
    }

    #[test]
    fn a_refund_without_amount_takes_all_that_is_left() {
        let s = polling(None);
        assert_eq!((s.facts.left_fee, s.facts.refund_fee), (Some(500), Some(500)));
        let (_, body) = Steps { step: Step::Refund, ..s }.request(&order(None), 0, "1");
        assert!(body.contains(r#""left_fee":500,"refund_fee":500"#), "{body}");
    }
}
