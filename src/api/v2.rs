//! Virtual Payment 2.0 cancel (SPEC §1.5): `POST /wxa/game/cancelpay`. All
//! v2 knowledge lives here: the URI, the body and its field order, the two
//! signatures, the cancellation id, the errcode table, the breaker's words,
//! and the checks of the fields only v2 has.
//!
//! The body is signed byte for byte, so it is built here once, as the exact
//! bytes that are sent: `pay_sig` = HMAC-SHA256(AppKey, `URI&BODY`) and
//! `signature` = HMAC-SHA256(session_key, BODY), both lowercase hex. The
//! session key is used as its UTF-8 text (not base64-decoded).

use super::Action;
use crate::category::Category;
use crate::input::field::{looks_scientific, ApiInput, Field, FieldSpec, Need};
use crate::input::{check_openid, check_session_key, check_user_ip, check_zone_id, OrderRef};
use crate::sign::{hmac_hex, Hex64, HmacSha256};
use hmac::Mac;
use sha2::{Digest, Sha256};

/// What v2 reads from an export, in the order its fields are checked.
pub static INPUT: ApiInput = ApiInput {
    fields: &[
        FieldSpec { field: Field::BillNo, need: Need::Required, check: Some(check_pay_bill_no) },
        FieldSpec { field: Field::Openid, need: Need::Required, check: Some(check_openid) },
        FieldSpec { field: Field::ZoneId, need: Need::Required, check: Some(check_zone_id) },
        FieldSpec { field: Field::UserIp, need: Need::Optional, check: Some(check_user_ip) },
        FieldSpec { field: Field::SessionKey, need: Need::Optional, check: Some(check_session_key) },
        FieldSpec { field: Field::CancelBillNo, need: Need::Optional, check: Some(check_cancel_bill_no) },
        FieldSpec { field: Field::Amount, need: Need::Required, check: Some(check_amount_text) },
    ],
    key_names: ["bill_no (the pay_bill_no)", "cancel_bill_no (the cancellation id)"],
    // `signature` is the session key's HMAC over the body.
    needs_user_ip: false,
    needs_session_key: true,
    own_id: Some(cancellation_id),
    other_api: None,
    id_field: Field::CancelBillNo,
    alt_order: None,
};

fn check_pay_bill_no(v: &str) -> Result<(), String> {
    check_bill_no("bill_no", v)
}

fn check_cancel_bill_no(v: &str) -> Result<(), String> {
    check_bill_no("cancel_bill_no", v)
}

fn check_amount_text(v: &str) -> Result<(), String> {
    check_amount(v).map(drop)
}

/// The request path, the same for production and sandbox (`env` decides).
pub const URI: &str = "/wxa/game/cancelpay";

/// The longest bill_no (either kind) v2 takes.
const BILL_NO_MAX: usize = 63;
/// The largest amount taken: JSON numbers are exact up to 2^53.
const AMOUNT_MAX: u64 = (1 << 53) - 1;

/// One v2 cancel, its fields as validated.
#[derive(Clone, Copy, Debug)]
pub struct CancelV2<'a> {
    pub openid: &'a str,
    pub offer_id: &'a str,
    pub ts: u64,
    pub zone_id: &'a str,
    /// 0 production, 1 sandbox.
    pub env: u8,
    pub user_ip: Option<&'a str>,
    /// The deduction to reverse: the row's `bill_no`.
    pub pay_bill_no: &'a str,
    /// This cancellation's own id.
    pub bill_no: &'a str,
    pub amount: u64,
}

/// Appends `v` as a JSON string. Validated values need no escape; anything
/// else is escaped by serde_json, so the body is always valid JSON.
pub(super) fn push_json_str(out: &mut String, v: &str) {
    if v.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f) {
        out.push('"');
        out.push_str(v);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(v).unwrap_or_default());
    }
}

impl<'a> CancelV2<'a> {
    /// The cancel of `order` (validated for v2), sent at `ts`.
    pub fn of(order: &'a OrderRef<'a>, offer_id: &'a str, env: u8, ts: u64) -> CancelV2<'a> {
        CancelV2 {
            openid: order.openid,
            offer_id,
            ts,
            zone_id: order.zone_id,
            env,
            user_ip: order.user_ip,
            pay_bill_no: order.bill_no,
            bill_no: order.cancel_id.as_deref().unwrap_or(""),
            amount: order.amount.unwrap_or(0),
        }
    }
}

impl CancelV2<'_> {
    /// The exact BODY: compact JSON, fields in the order of §1.5, user_ip
    /// left out when empty.
    pub fn body(&self) -> String {
        let mut b = String::with_capacity(224);
        let num = |b: &mut String, n: u64| b.push_str(itoa::Buffer::new().format(n));
        b.push_str("{\"openid\":");
        push_json_str(&mut b, self.openid);
        b.push_str(",\"offer_id\":");
        push_json_str(&mut b, self.offer_id);
        b.push_str(",\"ts\":");
        num(&mut b, self.ts);
        b.push_str(",\"zone_id\":");
        push_json_str(&mut b, self.zone_id);
        b.push_str(",\"env\":");
        num(&mut b, u64::from(self.env));
        if let Some(ip) = self.user_ip.filter(|ip| !ip.is_empty()) {
            b.push_str(",\"user_ip\":");
            push_json_str(&mut b, ip);
        }
        b.push_str(",\"pay_bill_no\":");
        push_json_str(&mut b, self.pay_bill_no);
        b.push_str(",\"bill_no\":");
        push_json_str(&mut b, self.bill_no);
        b.push_str(",\"amount\":");
        num(&mut b, self.amount);
        b.push('}');
        b
    }
}

/// `pay_sig` for one run: the AppKey's HMAC state is keyed once (the key
/// schedule is a third of the work of signing a short body) and cloned per
/// request.
#[derive(Clone)]
pub struct PaySigner {
    mac: HmacSha256,
}

impl PaySigner {
    pub fn new(app_key: &str) -> PaySigner {
        // HMAC takes a key of any length; this cannot fail.
        PaySigner { mac: HmacSha256::new_from_slice(app_key.as_bytes()).expect("HMAC accepts any key length") }
    }

    /// HMAC-SHA256 with the AppKey over `URI&BODY`.
    pub fn sign(&self, body: &str) -> Hex64 {
        self.sign_at(URI, body)
    }

    /// The same over another call's `uri` (xpay signs several).
    pub fn sign_at(&self, uri: &str, body: &str) -> Hex64 {
        let mut mac = self.mac.clone();
        mac.update(uri.as_bytes());
        mac.update(b"&");
        hmac_hex(mac, body.as_bytes())
    }
}

/// `pay_sig`: HMAC-SHA256 with the AppKey over `URI&BODY`.
pub fn pay_sig(app_key: &str, body: &str) -> Hex64 {
    PaySigner::new(app_key).sign(body)
}

/// `signature`: HMAC-SHA256 with the user's session key over BODY.
pub fn signature(session_key: &str, body: &str) -> Hex64 {
    let mac = HmacSha256::new_from_slice(session_key.as_bytes()).expect("HMAC accepts any key length");
    hmac_hex(mac, body.as_bytes())
}

/// The query string after `access_token=TOKEN`.
pub fn query_tail(pay_sig: &Hex64, signature: &Hex64) -> String {
    let (pay_sig, signature) = (pay_sig.as_str(), signature.as_str());
    format!("&signature={signature}&sig_method=hmac_sha256&pay_sig={pay_sig}")
}

/// The derived cancellation id: `mc` + the first 32 lowercase hex digits of
/// SHA-256 of `offer_id|pay_bill_no|amount|tag`. The same on every attempt,
/// resume and dry run; `tag` (`--cancel-tag`) tells a later incident's cancel
/// of the same deduction apart.
pub fn cancellation_id(offer_id: &str, pay_bill_no: &str, amount: &str, tag: &str) -> String {
    let digest = Sha256::new()
        .chain_update(offer_id.as_bytes())
        .chain_update(b"|")
        .chain_update(pay_bill_no.as_bytes())
        .chain_update(b"|")
        .chain_update(amount.as_bytes())
        .chain_update(b"|")
        .chain_update(tag.as_bytes())
        .finalize();
    let mut id = [0u8; 34];
    id[..2].copy_from_slice(b"mc");
    hex::encode_to_slice(&digest[..16], &mut id[2..]).expect("16 bytes make 32 hex digits");
    // Only ASCII was written.
    String::from_utf8_lossy(&id).into_owned()
}

/// The v2 errcode → category table (SPEC §1.5).
pub fn classify_errcode(errcode: i64) -> (Category, Action) {
    use Category::*;
    match errcode {
        0 => (Cancelled, Action::Stop),
        90012 => (AlreadyReturned, Action::Stop),
        90000 => (NotFound, Action::Stop),
        90018 => (ParamError, Action::Stop),
        -1 => (SystemBusy, Action::Retry { slow_down: true }),
        45009 => (RateLimited, Action::Retry { slow_down: true }),
        40001 | 42001 | 40014 => (TokenError, Action::RefreshToken),
        90016 => (SessionExpired, Action::Stop),
        90010 => (SessionKeyError, Action::Stop),
        90011 => (SigError, Action::Breaker),
        _ => (UnknownError, Action::Stop),
    }
}

/// Why the breaker tripped, in words that say what to fix.
pub fn breaker_message(errcode: Option<i64>, threshold: u32, sandbox: bool) -> String {
    let code = errcode.map(|c| c.to_string()).unwrap_or_default();
    format!(
        "WeChat answered {code} (pay_sig wrong) {threshold} times in a row: MIDAS_APP_KEY is not the virtual \
         payment 2.0 AppKey of the {} environment (MP console → virtual payment 2.0 settings){}",
        if sandbox { "sandbox" } else { "production" },
        if sandbox {
            " (the production AppKey used with --sandbox?)"
        } else {
            " (the sandbox AppKey? then add --sandbox)"
        }
    )
}

/// Checks a v2 bill_no (`field` names it in the message): 1-63 characters
/// of `0-9 A-Z a-z _ -`, not starting with `_`.
pub fn check_bill_no(field: &str, v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if looks_scientific(v) {
        return Err(format!(
            "{field} `{v}` is a number a spreadsheet rewrote in scientific notation, so the real id is lost; \
             re-export with that column formatted as text"
        ));
    }
    if let Some(c) = v.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(format!("{field} `{v}` contains `{c}`; virtual payment 2.0 allows only 0-9 A-Z a-z _ -"));
    }
    if v.starts_with('_') {
        return Err(format!("{field} `{v}` starts with `_`, which virtual payment 2.0 does not allow"));
    }
    if v.len() > BILL_NO_MAX {
        return Err(format!("{field} is {} characters long; at most {BILL_NO_MAX} are allowed", v.len()));
    }
    Ok(())
}

/// How amount messages name what is counted.
pub struct AmountWords {
    /// What the column holds, e.g. "the coins to return".
    pub what: &'static str,
    /// Its unit, plural, e.g. "coins".
    pub unit: &'static str,
    /// Why 0 is refused, e.g. "a cancel returns at least 1 coin".
    pub least: &'static str,
}

/// v2's and xpay's coin amounts.
pub const COINS: AmountWords =
    AmountWords { what: "the coins to return", unit: "coins", least: "a cancel returns at least 1 coin" };

/// Checks `amount` of coins (see [`check_amount_of`]).
pub fn check_amount(v: &str) -> Result<u64, String> {
    check_amount_of(v, &COINS)
}

/// Checks `amount`: ASCII digits without sign or leading zero, at least 1.
/// Each usual spreadsheet or finance spelling gets its own message, in the
/// words of what is counted.
pub fn check_amount_of(v: &str, words: &AmountWords) -> Result<u64, String> {
    let fix = format!("write {} as a whole number of digits, e.g. 60", words.what);
    if v.is_empty() {
        return Err(format!("amount is empty: {fix}"));
    }
    if looks_scientific(v) {
        return Err(format!(
            "amount `{v}` is a number a spreadsheet rewrote in scientific notation; re-export the column as text"
        ));
    }
    if v.starts_with(['-', '+']) {
        return Err(format!("amount `{v}` has a sign: {fix}"));
    }
    if v.contains('.') {
        return Err(format!("amount `{v}` has a decimal point: {} are whole numbers; {fix}", words.unit));
    }
    // A leading `'` is how a spreadsheet marks a number typed as text.
    if v.starts_with('\'') {
        return Err(format!(
            "amount `{v}` begins with `'`, the mark a spreadsheet puts before a number typed as text: {fix}"
        ));
    }
    if v.contains([',', '，', '_', ' ', '\u{3000}', '\'']) {
        return Err(format!("amount `{v}` has a thousands separator or space: {fix}"));
    }
    if let Some(c) = v.chars().find(|c| !c.is_ascii_digit()) {
        return Err(format!("amount `{v}` contains `{c}`: {fix}"));
    }
    if v.len() > 1 && v.starts_with('0') {
        return Err(format!("amount `{v}` has a leading zero: {fix}"));
    }
    match v.parse::<u64>() {
        Ok(0) => Err(format!("amount is 0: {}; {fix}", words.least)),
        Ok(n) if n <= AMOUNT_MAX => Ok(n),
        _ => Err(format!("amount `{v}` is too large (at most {AMOUNT_MAX})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example_cancellation_id() {
        assert_eq!(cancellation_id("1450000001", "PAY20261101A", "60", ""), "mce999eb088689e42a652affd7de4c9fc1");
    }

    #[test]
    fn the_official_getbalance_vector_signs_alike() {
        // §1.5: same algorithm, another URI.
        let body = r#"{"offer_id":"12345678","zone_id":"1","openid":"oUrsfxxxxxxxxxx","env":0,"ts":1668136271}"#;
        let mut mac = HmacSha256::new_from_slice(b"12345").unwrap();
        mac.update(b"/wxa/game/getbalance&");
        let pay = hmac_hex(mac, body.as_bytes());
        assert_eq!(pay, "5fc5460b23b2589efb8adbc2cf08d7a9cd8892b33e084249a26455b7880741a8");
        assert_eq!(
            signature("9hAb/NEYUlkaMBEsmFgzig==", body),
            "7ec6d737f118b0c898de39ef1b6b199c48290e699495364fe9d069597a7da125"
        );
    }

    #[test]
    fn the_body_has_the_spec_field_order_and_types() {
        let c = CancelV2 {
            openid: "o1",
            offer_id: "145",
            ts: 1700000000,
            zone_id: "1",
            env: 1,
            user_ip: Some(""),
            pay_bill_no: "P1",
            bill_no: "C1",
            amount: 60,
        };
        assert_eq!(
            c.body(),
            r#"{"openid":"o1","offer_id":"145","ts":1700000000,"zone_id":"1","env":1,"pay_bill_no":"P1","bill_no":"C1","amount":60}"#
        );
        let with_ip = CancelV2 { user_ip: Some("1.2.3.4"), ..c };
        assert!(with_ip.body().contains(r#""env":1,"user_ip":"1.2.3.4","pay_bill_no""#));
    }

    #[test]
    fn amount_rules_name_each_mistake() {
        let table: &[(&str, Result<u64, &str>)] = &[
            ("60", Ok(60)),
            ("1", Ok(1)),
            ("9007199254740991", Ok(9007199254740991)),
            ("", Err("empty")),
            ("60.0", Err("decimal point")),
            ("1,000", Err("thousands separator")),
            // Regression (quoted_amount_called_a_separator).
            ("'60", Err("typed as text")),
            ("1 000", Err("thousands separator")),
            ("¥60", Err("contains `¥`")),
            ("60元", Err("contains `元`")),
            ("-5", Err("sign")),
            ("+5", Err("sign")),
            ("6E+01", Err("scientific notation")),
            ("0", Err("at least 1")),
            ("007", Err("leading zero")),
            ("9007199254740992", Err("too large")),
        ];
        for (v, want) in table {
            match (check_amount(v), want) {
                (Ok(n), Ok(w)) => assert_eq!(n, *w, "{v}"),
                (Err(m), Err(w)) => assert!(m.contains(w) && m.contains("amount"), "{v}: {m}"),
                (got, _) => panic!("{v}: {got:?}"),
            }
        }
    }

    #[test]
    fn v2_bill_no_rules() {
        assert!(check_bill_no("bill_no", "abc_-XYZ09").is_ok());
        assert!(check_bill_no("bill_no", &"x".repeat(63)).is_ok());
        for (v, want) in [
            ("", "empty"),
            ("_abc", "starts with `_`"),
            ("a|b", "contains `|`"),
            ("a*b", "contains `*`"),
            ("a@b", "contains `@`"),
            ("1.23457E+17", "scientific notation"),
            (&"x".repeat(64) as &str, "64 characters"),
        ] {
            let m = check_bill_no("cancel_bill_no", v).unwrap_err();
            assert!(m.contains(want) && m.contains("cancel_bill_no"), "{v}: {m}");
        }
    }

    #[test]
    fn errcode_table() {
        use Category::*;
        for (code, cat) in [
            (0, Cancelled),
            (90012, AlreadyReturned),
            (90000, NotFound),
            (90018, ParamError),
            (90016, SessionExpired),
            (90010, SessionKeyError),
            (90015, UnknownError),
            (90014, UnknownError),
            (90017, UnknownError),
        ] {
            assert_eq!(classify_errcode(code).0, cat, "{code}");
        }
        assert_eq!(classify_errcode(90011), (SigError, Action::Breaker));
        assert_eq!(classify_errcode(-1), (SystemBusy, Action::Retry { slow_down: true }));
        assert_eq!(classify_errcode(45009), (RateLimited, Action::Retry { slow_down: true }));
        assert_eq!(classify_errcode(42001), (TokenError, Action::RefreshToken));
    }
}
