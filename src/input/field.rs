//! The vocabulary API modules declare their input in: the order fields an
//! input may carry, how much an API needs each, each field's check, the
//! duplicate key and the operation's own id. A leaf: it names no API.

use std::str::FromStr;

/// The order fields the input may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    BillNo,
    Openid,
    ZoneId,
    SessionKey,
    UserIp,
    PayItem,
    Pf,
    /// v2: coins to return.
    Amount,
    /// v2: the cancellation's own id (else derived, SPEC §1.5).
    CancelBillNo,
    /// WeChat's id of the order: an alternative to bill_no (xpay-refund).
    WxOrderId,
    /// A refund's own id (else derived, SPEC §1.6).
    RefundBillNo,
    /// Why the money goes back (xpay-refund: `0`-`5`).
    RefundReason,
    /// Who asks (xpay-refund: `1`-`3`).
    ReqFrom,
    /// Free text that goes with a refund (xpay-refund).
    BizMeta,
}

/// Whether an API reads a field from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Required,
    Optional,
    /// Not a field of this API: a column of that name is carried through.
    Unused,
}

/// Every field with its column name (and name in `--column`).
pub(super) const NAMES: [(Field, &str); FIELDS] = [
    (Field::BillNo, "bill_no"),
    (Field::Openid, "openid"),
    (Field::ZoneId, "zone_id"),
    (Field::SessionKey, "session_key"),
    (Field::UserIp, "user_ip"),
    (Field::PayItem, "pay_item"),
    (Field::Pf, "pf"),
    (Field::Amount, "amount"),
    (Field::CancelBillNo, "cancel_bill_no"),
    (Field::WxOrderId, "wx_order_id"),
    (Field::RefundBillNo, "refund_bill_no"),
    (Field::RefundReason, "refund_reason"),
    (Field::ReqFrom, "req_from"),
    (Field::BizMeta, "biz_meta"),
];

/// How many fields there are.
pub const FIELDS: usize = 14;

/// A field's check: `Err` says what is wrong, naming the field.
pub type Check = fn(&str) -> Result<(), String>;

/// Derives an operation's own id from (offer_id or appid, the order as
/// given, the amount as given, the tag).
pub type DeriveId = fn(&str, &str, &str, &str) -> String;

/// One field as an API declares it: how much it needs it, and its check.
#[derive(Clone, Copy, Debug)]
pub struct FieldSpec {
    pub field: Field,
    pub need: Need,
    /// `None`: any text (a field read as it is).
    pub check: Option<Check>,
}

/// What an API declares about its input: the API modules fill it in, and
/// `input/` runs what was declared without knowing which API it serves.
/// Adding an API touches `api/` and a registration line, not `input/`.
#[derive(Debug)]
pub struct ApiInput {
    /// Every field the API reads, checked in this order (the first problem
    /// of a row is the one reported); the others are carried through.
    pub fields: &'static [FieldSpec],
    /// How messages name the duplicate key: by bill_no, and by the
    /// operation's own id (when [`ApiInput::own_id`] and its column exist).
    pub key_names: [&'static str; 2],
    /// Every request is signed with the user's session key: a row without
    /// one is not sent, whatever `--mp-sig` says.
    pub needs_session_key: bool,
    /// Every request carries the user's IP: the row's `user_ip`, else the
    /// run's (`--user-ip`); a row with neither is invalid.
    pub needs_user_ip: bool,
    /// The operation's own id, when the API has one: derived from
    /// (offer_id or appid, bill_no, amount, tag) when the row gives none in
    /// [`ApiInput::id_field`]; with that column present, duplicates are
    /// judged by the id.
    pub own_id: Option<DeriveId>,
    /// The column that gives the operation's own id (`cancel_bill_no`,
    /// `refund_bill_no`).
    pub id_field: Field,
    /// A field a row may give instead of bill_no, naming the same order
    /// another way (WeChat's own id); one of the two per row.
    pub alt_order: Option<Field>,
    /// Another API whose exports this API's default run must not take.
    pub other_api: Option<OtherApi>,
}

/// Another API's export, told by its columns.
#[derive(Clone, Copy, Debug)]
pub struct OtherApi {
    /// Columns that together mark it.
    pub columns: &'static [&'static str],
    /// What it is called, e.g. "Virtual Payment 2.0".
    pub what: &'static str,
    /// Its `--api` name.
    pub api: &'static str,
}

impl ApiInput {
    /// How much this API needs `field`.
    pub fn need(&self, field: Field) -> Need {
        self.fields.iter().find(|f| f.field == field).map_or(Need::Unused, |f| f.need)
    }

    /// Runs `field`'s declared check on `value` (no check: fine).
    pub fn check(&self, field: Field, value: &str) -> Result<(), String> {
        match self.fields.iter().find(|f| f.field == field).and_then(|f| f.check) {
            Some(check) => check(value),
            None => Ok(()),
        }
    }
}

/// `1.23457E+17`, `1E+17`, `2.5e-05`: a number a spreadsheet reformatted.
pub fn looks_scientific(v: &str) -> bool {
    // Bytes, not a char pattern: this runs on every bill_no.
    let Some(at) = v.bytes().position(|b| b == b'e' || b == b'E') else { return false };
    let (mantissa, exp) = (&v[..at], &v[at + 1..]);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let exp = exp.strip_prefix(['+', '-']).unwrap_or("");
    digits(int) && digits(frac) && digits(exp)
}

impl FromStr for Field {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        NAMES.iter().find(|(_, name)| name.eq_ignore_ascii_case(s.trim())).map(|(f, _)| *f).ok_or_else(|| {
            let names: Vec<_> = NAMES.iter().map(|(_, n)| *n).collect();
            format!("unknown field `{s}` (known: {})", names.join(", "))
        })
    }
}

impl Field {
    /// The field's column name (and name in `--column`).
    pub fn name(self) -> &'static str {
        NAMES.iter().find(|(f, _)| *f == self).map_or("", |(_, n)| n)
    }
}
