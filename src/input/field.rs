//! The order fields an input may carry (the names every API module declares
//! its columns with), and how much a run needs each.

use super::*;

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
}

/// Whether an API reads a field from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Need {
    Required,
    Optional,
    /// Not a field of this API: a column of that name is carried through.
    Unused,
}

pub(super) use Need::{Optional, Required, Unused};

/// Every field with its column name and what v1 and v2 need of it.
pub(super) const FIELDS: [(Field, &str, [Need; 2]); 9] = [
    (Field::BillNo, "bill_no", [Required, Required]),
    (Field::Openid, "openid", [Required, Required]),
    (Field::ZoneId, "zone_id", [Required, Required]),
    (Field::SessionKey, "session_key", [Optional, Optional]),
    (Field::UserIp, "user_ip", [Optional, Optional]),
    (Field::PayItem, "pay_item", [Optional, Unused]),
    (Field::Pf, "pf", [Optional, Unused]),
    (Field::Amount, "amount", [Unused, Required]),
    (Field::CancelBillNo, "cancel_bill_no", [Unused, Optional]),
];

impl FromStr for Field {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FIELDS.iter().find(|(_, name, _)| name.eq_ignore_ascii_case(s.trim())).map(|(f, _, _)| *f).ok_or_else(|| {
            let names: Vec<_> = FIELDS.iter().map(|(_, n, _)| *n).collect();
            format!("unknown field `{s}` (known: {})", names.join(", "))
        })
    }
}

impl Field {
    /// The field's column name (and name in `--column`).
    pub fn name(self) -> &'static str {
        FIELDS.iter().find(|(f, _, _)| *f == self).map_or("", |(_, n, _)| n)
    }
}
