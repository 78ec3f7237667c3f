//! Mini Program virtual payment (SPEC §1.6, `/xpay/...`): the wire format of
//! its three calls, `cancel_currency_pay` (`--api xpay`), `query_order` and
//! `refund_order` (`--api xpay-refund`): the exact bodies (compact JSON in the
//! SPEC's field order), `pay_sig` over `URI&BODY`, `signature` over BODY, and
//! the tool's own ids. Every vector of `tests/data/xpay.json` reproduces.
//!
//! `--api xpay` (coin cancels) runs on this module: its input, errcode
//! table and breaker words are here. `--api xpay-refund` (refund, then poll
//! until settled) is not built yet: its bodies and ids are here already.

use super::Action;
use crate::category::Category;
use crate::input::field::{ApiInput, Field, FieldSpec, Need};
use crate::input::{check_openid, check_session_key, check_user_ip};
use crate::sign::{hmac_hex, Hex64, HmacSha256};
use hmac::Mac;
use sha2::{Digest, Sha256};

/// What `--api xpay` reads from an export, in the order its fields are
/// checked. `user_ip` is required by the API: the row's, else `--user-ip`.
pub static INPUT: ApiInput = ApiInput {
    fields: &[
        FieldSpec { field: Field::BillNo, need: Need::Required, check: Some(check_pay_order_id) },
        FieldSpec { field: Field::Openid, need: Need::Required, check: Some(check_openid) },
        FieldSpec { field: Field::UserIp, need: Need::Optional, check: Some(check_user_ip) },
        FieldSpec { field: Field::SessionKey, need: Need::Optional, check: Some(check_session_key) },
        FieldSpec { field: Field::CancelBillNo, need: Need::Optional, check: Some(check_cancel_order_id) },
        FieldSpec { field: Field::Amount, need: Need::Required, check: Some(check_amount) },
    ],
    key_names: ["bill_no (the pay_order_id)", "cancel_bill_no (the cancel's order_id)"],
    // `signature` is the session key's HMAC over the body.
    needs_session_key: true,
    needs_user_ip: true,
    own_id: Some(cancel_id),
    other_api: None,
    id_field: Field::CancelBillNo,
    alt_order: None,
};

/// The longest merchant order id taken (*unconfirmed*: WeChat documents
/// 8-32 characters only for refund ids).
const ORDER_ID_MAX: usize = 64;

/// An xpay order id: 1-64 characters of `0-9 A-Z a-z _ -`.
pub(super) fn check_order_id(field: &str, v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if crate::input::field::looks_scientific(v) {
        return Err(format!(
            "{field} `{v}` is a number a spreadsheet rewrote in scientific notation, so the real id is lost; \
             re-export with that column formatted as text"
        ));
    }
    if let Some(c) = v.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(format!("{field} `{v}` contains `{c}`; virtual payment allows only 0-9 A-Z a-z _ -"));
    }
    if v.len() > ORDER_ID_MAX {
        return Err(format!("{field} is {} characters long; at most {ORDER_ID_MAX} are allowed", v.len()));
    }
    Ok(())
}

fn check_pay_order_id(v: &str) -> Result<(), String> {
    check_order_id("bill_no", v)
}

fn check_cancel_order_id(v: &str) -> Result<(), String> {
    check_order_id("cancel_bill_no", v)
}

/// Coins: digits, at least 1 (v2's rule, with its messages).
fn check_amount(v: &str) -> Result<(), String> {
    super::v2::check_amount(v).map(drop)
}

/// 268490003: a signature was refused (`pay_sig` or `signature`: WeChat's
/// answer does not say which).
pub const SIGNATURE_WRONG: i64 = 268_490_003;

/// The xpay errcode → category table (SPEC §1.6), for `cancel_currency_pay`.
pub fn classify_errcode(errcode: i64) -> (Category, Action) {
    use Category::*;
    match errcode {
        0 => (Cancelled, Action::Stop),
        // The same cancel id again, or the deduction already cancelled.
        268_490_004 | 268_490_005 => (AlreadyReturned, Action::Stop),
        268_490_006 => (ParamError, Action::Stop),
        268_490_001 | 268_490_002 => (ParamError, Action::Stop),
        SIGNATURE_WRONG => (SigError, Action::CheckKey),
        268_490_009 => (SessionExpired, Action::Stop),
        268_490_015 => (RateLimited, Action::Retry { slow_down: true }),
        -1 => (SystemBusy, Action::Retry { slow_down: true }),
        40001 | 42001 | 40014 => (TokenError, Action::RefreshToken),
        _ => (UnknownError, Action::Stop),
    }
}

/// Why the breaker tripped, in words that say what to fix.
pub fn breaker_message(errcode: Option<i64>, threshold: u32, sandbox: bool) -> String {
    let code = errcode.map(|c| c.to_string()).unwrap_or_default();
    format!(
        "WeChat answered {code} (signature wrong) {threshold} times in a row, and a request signed by the AppKey \
         alone was refused too: MIDAS_APP_KEY is not the virtual payment AppKey of the {} environment (MP \
         console → virtual payment → basic settings: 现网AppKey / 沙箱AppKey){}",
        if sandbox { "sandbox" } else { "production" },
        if sandbox {
            " (the production AppKey used with --sandbox?)"
        } else {
            " (the sandbox AppKey? then add --sandbox)"
        }
    )
}

pub const CANCEL_URI: &str = "/xpay/cancel_currency_pay";
pub const QUERY_URI: &str = "/xpay/query_order";
pub const REFUND_URI: &str = "/xpay/refund_order";

/// A compact JSON object written field by field in the order given: strings
/// escaped as serde_json's compact writer does, numbers as digits.
struct Body(String);

impl Body {
    fn new() -> Body {
        let mut body = String::with_capacity(192);
        body.push('{');
        Body(body)
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(key);
        self.0.push_str("\":");
    }

    fn str(mut self, key: &str, value: &str) -> Body {
        self.key(key);
        super::v2::push_json_str(&mut self.0, value);
        self
    }

    fn num(mut self, key: &str, value: u64) -> Body {
        self.key(key);
        self.0.push_str(itoa::Buffer::new().format(value));
        self
    }

    fn done(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// `cancel_currency_pay`: reverse a coin deduction (`pay_order_id`) under
/// this cancel's own `order_id`.
pub struct CancelCurrencyPay<'a> {
    pub openid: &'a str,
    pub env: u8,
    pub user_ip: &'a str,
    pub pay_order_id: &'a str,
    pub order_id: &'a str,
    pub amount: u64,
}

impl CancelCurrencyPay<'_> {
    pub fn body(&self) -> String {
        Body::new()
            .str("openid", self.openid)
            .num("env", u64::from(self.env))
            .str("user_ip", self.user_ip)
            .str("pay_order_id", self.pay_order_id)
            .str("order_id", self.order_id)
            .num("amount", self.amount)
            .done()
    }
}

/// Which order a query or a refund names: the merchant's id, or WeChat's.
#[derive(Clone, Copy, Debug)]
pub enum OrderKey<'a> {
    OrderId(&'a str),
    WxOrderId(&'a str),
}

impl<'a> OrderKey<'a> {
    /// Its field name in a body, and its value.
    fn pair(self) -> (&'static str, &'a str) {
        match self {
            OrderKey::OrderId(v) => ("order_id", v),
            OrderKey::WxOrderId(v) => ("wx_order_id", v),
        }
    }
}

/// `query_order`'s body: a paid order or a refund (by its `order_id`).
pub fn query_order_body(openid: &str, env: u8, order: OrderKey<'_>) -> String {
    let (key, value) = order.pair();
    Body::new().str("openid", openid).num("env", u64::from(env)).str(key, value).done()
}

/// `refund_order`: refund `refund_fee` of what is left (`left_fee`, as
/// query_order reported it) under this refund's own id.
pub struct RefundOrder<'a> {
    pub openid: &'a str,
    pub order: OrderKey<'a>,
    pub refund_order_id: &'a str,
    pub left_fee: u64,
    pub refund_fee: u64,
    pub biz_meta: &'a str,
    pub refund_reason: &'a str,
    pub req_from: &'a str,
    pub env: u8,
}

impl RefundOrder<'_> {
    pub fn body(&self) -> String {
        let (key, value) = self.order.pair();
        Body::new()
            .str("openid", self.openid)
            .str(key, value)
            .str("refund_order_id", self.refund_order_id)
            .num("left_fee", self.left_fee)
            .num("refund_fee", self.refund_fee)
            .str("biz_meta", self.biz_meta)
            .str("refund_reason", self.refund_reason)
            .str("req_from", self.req_from)
            .num("env", u64::from(self.env))
            .done()
    }
}

/// `pay_sig`: HMAC-SHA256 with the AppKey over `URI&BODY`.
pub fn pay_sig(app_key: &str, uri: &str, body: &str) -> Hex64 {
    let mut mac = HmacSha256::new_from_slice(app_key.as_bytes()).expect("HMAC accepts any key length");
    mac.update(uri.as_bytes());
    mac.update(b"&");
    hmac_hex(mac, body.as_bytes())
}

/// `signature`: HMAC-SHA256 with the user's session key (its text) over BODY.
pub fn signature(session_key: &str, body: &str) -> Hex64 {
    let mac = HmacSha256::new_from_slice(session_key.as_bytes()).expect("HMAC accepts any key length");
    hmac_hex(mac, body.as_bytes())
}

/// The tool's own ids: `prefix` + the first 30 lowercase hex digits of
/// SHA-256 of the parts joined with `|` (32 characters in all).
fn own_id(prefix: &str, parts: [&str; 4]) -> String {
    let digest = Sha256::digest(parts.join("|").as_bytes());
    let mut id = String::with_capacity(32);
    id.push_str(prefix);
    id.push_str(&hex::encode(digest)[..30]);
    id
}

/// A coin cancel's own id: `mc` + 30 hex of `appid|pay_order_id|amount|tag`.
pub fn cancel_id(appid: &str, pay_order_id: &str, amount: &str, tag: &str) -> String {
    own_id("mc", [appid, pay_order_id, amount, tag])
}

/// A refund's own id: `mr` + 30 hex of `appid|order|amount-or-all|tag`, the
/// order as the row gives it (bill_no or wx_order_id), `all` without amount.
pub fn refund_id(appid: &str, order: &str, amount: Option<&str>, tag: &str) -> String {
    own_id("mr", [appid, order, amount.filter(|a| !a.is_empty()).unwrap_or("all"), tag])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §1.6's official vector (query_user_balance, a body with spaces,
    /// signed as it is).
    #[test]
    fn the_official_vector() {
        let body = r#"{"openid": "xxx", "user_ip": "127.0.0.1", "env": 0}"#;
        assert_eq!(
            pay_sig("12345", "/xpay/query_user_balance", body).as_str(),
            "c37809f27c6d7fd1837ad2500a04512b66b34fd793a39a385fade56dca89a4b5"
        );
        assert_eq!(
            signature("9hAb/NEYUlkaMBEsmFgzig==", body).as_str(),
            "089d9e8dc5d308977360c4b79ec600a93d736802802a807d634192328032f6c7"
        );
    }
}
