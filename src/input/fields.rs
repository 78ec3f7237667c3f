//! One check per field, and the validated order a row becomes: every message
//! names the line and the field, and never repeats a session key.

use super::field::{looks_scientific, Field, Need};
use super::header::Header;
use super::records::RawRow;
use super::session_keys::SessionKeys;
use super::FORMULA_TRIGGERS;
use crate::secret::Secret;
use std::borrow::Cow;
use std::net::IpAddr;

/// A validated order borrowing the row's (trimmed) cells.
#[derive(Clone, Debug)]
pub struct OrderRef<'a> {
    pub row: u64,
    /// v1: the order; v2: the deduction to reverse (pay_bill_no).
    pub bill_no: &'a str,
    pub openid: &'a str,
    pub zone_id: &'a str,
    pub pf: Option<&'a str>,
    pub user_ip: Option<&'a str>,
    pub pay_item: Option<&'a str>,
    /// From the session_key column, else from `--session-keys`.
    pub session_key: Option<&'a str>,
    /// v2: coins to return.
    pub amount: Option<u64>,
    /// v2: the cancellation id (the row's cancel_bill_no, else derived).
    pub cancel_id: Option<Cow<'a, str>>,
    /// The bill_no is WeChat's id of the order (the row gave `wx_order_id`).
    pub wx_order: bool,
    /// A refund's terms (xpay-refund), as the row gives them.
    pub refund_reason: Option<&'a str>,
    pub req_from: Option<&'a str>,
    pub biz_meta: Option<&'a str>,
}

/// A validated order that owns its values (for the live sender's queues).
#[derive(Clone, Debug)]
pub struct Order {
    pub row: u64,
    pub bill_no: String,
    pub openid: String,
    pub zone_id: String,
    pub pf: Option<String>,
    pub user_ip: Option<String>,
    pub pay_item: Option<String>,
    pub session_key: Option<Secret>,
    pub amount: Option<u64>,
    pub cancel_id: Option<String>,
    pub wx_order: bool,
    pub refund_reason: Option<String>,
    pub req_from: Option<String>,
    pub biz_meta: Option<String>,
}

impl Order {
    pub fn as_ref(&self) -> OrderRef<'_> {
        OrderRef {
            row: self.row,
            bill_no: &self.bill_no,
            openid: &self.openid,
            zone_id: &self.zone_id,
            pf: self.pf.as_deref(),
            user_ip: self.user_ip.as_deref(),
            pay_item: self.pay_item.as_deref(),
            session_key: self.session_key.as_ref().map(Secret::expose),
            amount: self.amount,
            cancel_id: self.cancel_id.as_deref().map(Cow::Borrowed),
            wx_order: self.wx_order,
            refund_reason: self.refund_reason.as_deref(),
            req_from: self.req_from.as_deref(),
            biz_meta: self.biz_meta.as_deref(),
        }
    }
}

impl OrderRef<'_> {
    pub fn to_owned(&self) -> Order {
        let own = |v: Option<&str>| v.map(str::to_string);
        Order {
            row: self.row,
            bill_no: self.bill_no.to_string(),
            openid: self.openid.to_string(),
            zone_id: self.zone_id.to_string(),
            pf: own(self.pf),
            user_ip: own(self.user_ip),
            pay_item: own(self.pay_item),
            session_key: self.session_key.map(Secret::new),
            amount: self.amount,
            cancel_id: self.cancel_id.as_deref().map(str::to_string),
            wx_order: self.wx_order,
            refund_reason: own(self.refund_reason),
            req_from: own(self.req_from),
            biz_meta: own(self.biz_meta),
        }
    }
}

pub(super) const BILL_NO_MAX: usize = 63;

/// `str::trim` (Unicode white space, so a full-width space from a Chinese
/// export goes too), skipped for the usual cell that begins and ends with a
/// visible ASCII character: trimming every cell of every row was a twentieth
/// of a large dry run.
pub fn trim(cell: &str) -> &str {
    match cell.as_bytes() {
        [] => cell,
        [first, .., last] | [first @ last] if first.is_ascii_graphic() && last.is_ascii_graphic() => cell,
        _ => cell.trim(),
    }
}

/// The first character of `value` outside the ASCII set `allowed`. Scans
/// bytes against a table, not chars: every allowed character is ASCII, so the
/// first byte that is not allowed starts the offending character.
pub(super) fn bad_char(value: &str, allowed: &ByteSet) -> Option<char> {
    let at = value.bytes().position(|b| !allowed[usize::from(b)])?;
    value[at..].chars().next()
}

/// A set of ASCII bytes as a table: one load per byte of a cell instead of
/// a chain of comparisons.
pub(super) type ByteSet = [bool; 256];

/// ASCII letters and digits, and `extra`.
pub(super) const fn alphanumeric_and(extra: &[u8]) -> ByteSet {
    let mut set = [false; 256];
    let mut b = 0;
    while b < 128 {
        set[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        set[extra[i] as usize] = true;
        i += 1;
    }
    set
}

pub(super) const BILL_NO_CHARS: ByteSet = alphanumeric_and(b"_-|*@");

pub(super) const ID_CHARS: ByteSet = alphanumeric_and(b"_-");

pub(super) const BASE64_CHARS: ByteSet = alphanumeric_and(b"+/=");

/// Checks bill_no against SPEC §1.1: 1–63 characters of `0-9 A-Z a-z _ - | * @`.
pub fn check_bill_no(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("bill_no is empty".into());
    }
    if looks_scientific(v) {
        return Err(format!(
            "bill_no `{v}` is a number a spreadsheet rewrote in scientific notation, so the real order id is lost; \
             re-export the orders with that column formatted as text"
        ));
    }
    if let Some(c) = bad_char(v, &BILL_NO_CHARS) {
        return Err(format!("bill_no `{v}` contains `{c}`; only 0-9 A-Z a-z _ - | * @ are allowed"));
    }
    // Every character passed the ASCII check above, so bytes count characters.
    let n = v.len();
    if n > BILL_NO_MAX {
        return Err(format!("bill_no is {n} characters long; at most {BILL_NO_MAX} are allowed"));
    }
    Ok(())
}

/// An openid: 1-128 characters of `0-9 A-Z a-z _ -`.
pub fn check_openid(v: &str) -> Result<(), String> {
    check_id("openid", v, 128, "")
}

/// A zone id: 1-64 characters of `0-9 A-Z a-z _ -` (`1` without zones).
pub fn check_zone_id(v: &str) -> Result<(), String> {
    check_id("zone_id", v, 64, " (use 1 for a game without zones)")
}

/// A platform: at most 32 characters of `0-9 A-Z a-z _ -`.
pub fn check_pf(v: &str) -> Result<(), String> {
    check_id("pf", v, 32, "")
}

pub(super) fn check_id(field: &str, v: &str, max: usize, hint: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err(format!("{field} is empty{hint}"));
    }
    if let Some(c) = bad_char(v, &ID_CHARS) {
        return Err(format!("{field} `{v}` contains `{c}`; only 0-9 A-Z a-z _ - are allowed"));
    }
    if v.len() > max {
        return Err(format!("{field} is {} characters long; at most {max} are allowed", v.len()));
    }
    Ok(())
}

pub fn check_user_ip(v: &str) -> Result<(), String> {
    v.parse::<IpAddr>().map(|_| ()).map_err(|_| format!("user_ip `{v}` is not an IPv4 or IPv6 address"))
}

pub fn check_pay_item(v: &str) -> Result<(), String> {
    if let Some(c) = v.chars().find(|c| c.is_control()) {
        return Err(format!("pay_item contains the control character U+{:04X}", c as u32));
    }
    if v.starts_with(FORMULA_TRIGGERS) {
        return Err(format!(
            "pay_item `{v}` begins with `{}`, which spreadsheets run as a formula; check the export",
            v.chars().next().unwrap_or(' ')
        ));
    }
    if v.chars().count() > 128 {
        return Err("pay_item is longer than 128 characters".into());
    }
    Ok(())
}

pub fn check_session_key(v: &str) -> Result<(), String> {
    // The value is a secret: the message never repeats it.
    if v.len() > 128 || bad_char(v, &BASE64_CHARS).is_some() {
        return Err("session_key is not a base64 session key (the value is not shown)".into());
    }
    Ok(())
}

/// The outcome of validating one row, before duplicate detection.
#[derive(Debug)]
pub enum Validated<'a> {
    Valid(OrderRef<'a>),
    /// The row is bad. `bill_no` is set when the bill_no itself was valid, so
    /// later rows with the same bill_no are still recognised as duplicates.
    Invalid {
        bill_no: Option<&'a str>,
        message: String,
    },
}

/// Validates one row (pure; safe to run in parallel). Messages name the line
/// and the field. The session key comes from the row, else from `keys`.
pub fn validate<'a>(header: &'a Header, raw: &'a RawRow, keys: &'a SessionKeys) -> Validated<'a> {
    let line = raw.line;
    let invalid = |bill_no, m: String| Validated::Invalid { bill_no, message: format!("{}: {m}", header.place(line)) };
    // A workbook cell the API cannot take: its message names the cell.
    let hazard = |bill_no| raw.hazard.clone().map(|message| Validated::Invalid { bill_no, message });
    // Only what the person sees is sent; a hidden row claims no bill_no, so
    // a visible row of the same order is not taken for its duplicate.
    if raw.hidden {
        let m = "hidden in the workbook (filtered out, or hidden by hand), so it is not sent: unhide it and run it \
                 again if it must be cancelled";
        return invalid(None, m.to_string());
    }
    if raw.record.len() != header.len() {
        let m = format!(
            "the row has {} fields but the header has {} (a missing or extra comma, or an unquoted comma inside a value)",
            raw.record.len(),
            header.len()
        );
        return invalid(None, m);
    }
    let get = |f: Field| header.cell(raw, f);
    let opt = |f: Field| Some(get(f)).filter(|v| !v.is_empty());
    let rules = header.rules();
    // What this run's API declared: its fields, their checks, its own id.
    let spec = rules.api.input();
    // The order: its bill_no, or (an API that takes either) the other id;
    // a row that gives both names it twice.
    let (order_field, bill_no) = header.order_of(raw);
    if let Some(alt) = spec.alt_order.filter(|alt| order_field == Field::BillNo && !get(*alt).is_empty()) {
        let m = format!(
            "the row gives both {} `{bill_no}` and {}: give one of the two, so the order is named once",
            Field::BillNo.name(),
            alt.name()
        );
        return invalid(None, m);
    }
    if let Err(m) = spec.check(order_field, bill_no) {
        // An unusable bill_no cell is read as empty: say why.
        return hazard(None).unwrap_or_else(|| invalid(None, m));
    }
    let cancel_cell = opt(spec.id_field);
    // With an own-id column, duplicates are judged by that id: a row whose
    // id is valid keeps it as its key even when invalid otherwise.
    let key = if header.keyed_by_cancel_id() {
        cancel_cell.filter(|c| spec.check(spec.id_field, c).is_ok())
    } else {
        Some(bill_no)
    };
    if let Some(h) = hazard(key) {
        return h;
    }
    // Every other declared field in its declared order: a required one
    // always (empty is a problem), an optional one when given.
    for f in spec.fields.iter().filter(|f| f.field != Field::BillNo && Some(f.field) != spec.alt_order) {
        let value = if Header::verbatim(f.field) { header.raw_cell(raw, f.field) } else { get(f.field) };
        if f.need == Need::Required || !value.is_empty() {
            if let Some(Err(m)) = f.check.map(|check| check(value)) {
                return invalid(key, m);
            }
        }
    }
    // An API that sends the user's IP: the row's, else the run's.
    let user_ip = opt(Field::UserIp).or(rules.user_ip.as_deref().filter(|_| spec.needs_user_ip));
    if spec.needs_user_ip && user_ip.is_none() {
        let m = "user_ip is empty: this API needs the user's IP; add a user_ip column, or give --user-ip IP for rows \
                 without one";
        return invalid(key, m.to_string());
    }
    // Checked above when the API reads it: digits only.
    let amount = (spec.need(Field::Amount) != Need::Unused).then(|| get(Field::Amount).parse().ok()).flatten();
    let cancel_id = spec.own_id.is_some().then(|| rules.cancel_id(cancel_cell, bill_no, get(Field::Amount)));
    let (openid, zone_id) = (get(Field::Openid), get(Field::ZoneId));
    let (pf, pay_item, session_key) = (opt(Field::Pf), opt(Field::PayItem), opt(Field::SessionKey));
    Validated::Valid(OrderRef {
        row: raw.row,
        bill_no,
        openid,
        zone_id,
        pf,
        user_ip,
        pay_item,
        session_key: session_key.or_else(|| keys.get(openid)),
        amount,
        cancel_id,
        wx_order: order_field != Field::BillNo,
        refund_reason: opt(Field::RefundReason),
        req_from: opt(Field::ReqFrom),
        biz_meta: Some(header.raw_cell(raw, Field::BizMeta)).filter(|v| !v.is_empty()),
    })
}

/// What in-order classification needs to know of a validated row.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// The row's duplicate key, when it is valid: its bill_no (v2: the
    /// pay_bill_no, or the cancellation id when the input has that column).
    pub bill_no: Option<&'a str>,
    /// The validation message, when the row is invalid.
    pub problem: Option<&'a str>,
    pub openid: &'a str,
    pub has_session_key: bool,
}

impl Validated<'_> {
    pub fn facts(&self, header: &Header) -> Facts<'_> {
        match self {
            Validated::Valid(o) => Facts {
                bill_no: if header.keyed_by_cancel_id() { o.cancel_id.as_deref() } else { Some(o.bill_no) },
                problem: None,
                openid: o.openid,
                has_session_key: o.session_key.is_some(),
            },
            Validated::Invalid { bill_no, message } => {
                Facts { bill_no: *bill_no, problem: Some(message), openid: "", has_session_key: false }
            }
        }
    }
}
