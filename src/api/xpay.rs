//! Mini Program virtual payment (SPEC §1.6, `/xpay/...`): the wire format of
//! its three calls, `cancel_currency_pay` (`--api xpay`), `query_order` and
//! `refund_order` (`--api xpay-refund`): the exact bodies (compact JSON in the
//! SPEC's field order), `pay_sig` over `URI&BODY`, `signature` over BODY, and
//! the tool's own ids. Every vector of `tests/data/xpay.json` reproduces.
//!
//! Not yet wired into `run`: the API's input declaration, its errcode table,
//! the refund's steps and the simulator's routes come next (issue 20).

use crate::sign::{hmac_hex, Hex64, HmacSha256};
use hmac::Mac;
use sha2::{Digest, Sha256};

pub const CANCEL_URI: &str = "/xpay/cancel_currency_pay";
pub const QUERY_URI: &str = "/xpay/query_order";
pub const REFUND_URI: &str = "/xpay/refund_order";

/// A compact JSON object written field by field in the order given: strings
/// escaped as serde_json's compact writer does, numbers as digits.
struct Body(String);

impl Body {
    fn new() -> Body {
        Body(String::from("{"))
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
        self.0.push_str(&serde_json::to_string(value).unwrap_or_default());
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
