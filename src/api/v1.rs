//! The v1 cancel API (SPEC §1.1-1.3): `/cgi-bin/midas/cancelpay` and its
//! sandbox path. Its signing (the sorted-field `sig` and `mp_sig`) lives in
//! [`crate::sign`]; here are its input, its errcode table and its breaker's
//! words.

use super::Action;
use crate::category::Category;
use crate::input::field::{ApiInput, Field, FieldSpec, Need, OtherApi};
use crate::input::{
    check_bill_no, check_openid, check_pay_item, check_pf, check_session_key, check_user_ip, check_zone_id,
};

/// What v1 reads from an export, in the order its fields are checked.
pub static INPUT: ApiInput = ApiInput {
    fields: &[
        FieldSpec { field: Field::BillNo, need: Need::Required, check: Some(check_bill_no) },
        FieldSpec { field: Field::Openid, need: Need::Required, check: Some(check_openid) },
        FieldSpec { field: Field::ZoneId, need: Need::Required, check: Some(check_zone_id) },
        FieldSpec { field: Field::Pf, need: Need::Optional, check: Some(check_pf) },
        FieldSpec { field: Field::UserIp, need: Need::Optional, check: Some(check_user_ip) },
        FieldSpec { field: Field::PayItem, need: Need::Optional, check: Some(check_pay_item) },
        FieldSpec { field: Field::SessionKey, need: Need::Optional, check: Some(check_session_key) },
    ],
    // The order is the key: a repeat answers 90015.
    key_names: ["bill_no", "bill_no"],
    needs_user_ip: false,
    needs_session_key: false,
    own_id: None,
    other_api: Some(OtherApi { columns: &["amount", "cancel_bill_no"], what: "Virtual Payment 2.0", api: "v2" }),
    id_field: Field::CancelBillNo,
    alt_order: None,
};

/// The category and next action for a WeChat errcode: the one copy of the
/// SPEC's errcode table.
pub fn classify_errcode(errcode: i64) -> (Category, Action) {
    use Category::*;
    match errcode {
        0 => (Cancelled, Action::Stop),
        90015 => (AlreadyReturned, Action::Stop),
        90014 => (AlreadyConfirmed, Action::Stop),
        90000 => (NotFound, Action::Stop),
        90018 => (ParamError, Action::Stop),
        -1 => (SystemBusy, Action::Retry { slow_down: true }),
        90016 => (Processing, Action::Retry { slow_down: false }),
        45009 => (RateLimited, Action::Retry { slow_down: true }),
        40001 | 42001 | 40014 => (TokenError, Action::RefreshToken),
        90010 => (SessionExpired, Action::Stop),
        90009 => (MpSigError, Action::Stop),
        90011 => (SigError, Action::Breaker),
        90017 => (NoPermission, Action::Breaker),
        _ => (UnknownError, Action::Stop),
    }
}

/// The message that explains a breaker answer.
pub fn breaker_message(category: Category, errcode: Option<i64>, threshold: u32, sandbox: bool) -> String {
    let code = errcode.map(|c| c.to_string()).unwrap_or_default();
    match category {
        Category::SigError => format!(
            "WeChat answered {code} (sig wrong) {threshold} times in a row: MIDAS_APP_KEY is not the {} app key{}",
            if sandbox { "sandbox" } else { "production" },
            if sandbox {
                " (a production key used with --sandbox?)"
            } else {
                " (the sandbox key used in production? then add --sandbox, or export the production key)"
            }
        ),
        _ => format!(
            "WeChat answered {code} (no permission) {threshold} times in a row: this appid/offer_id may not call \
             cancelpay; check --appid, --offer-id and the Mini Game's virtual-payment settings"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Category::*;

    #[test]
    fn errcode_table() {
        let table: &[(i64, Category, Action)] = &[
            (0, Cancelled, Action::Stop),
            (90015, AlreadyReturned, Action::Stop),
            (90014, AlreadyConfirmed, Action::Stop),
            (90000, NotFound, Action::Stop),
            (90018, ParamError, Action::Stop),
            (-1, SystemBusy, Action::Retry { slow_down: true }),
            (90016, Processing, Action::Retry { slow_down: false }),
            (45009, RateLimited, Action::Retry { slow_down: true }),
            (40001, TokenError, Action::RefreshToken),
            (42001, TokenError, Action::RefreshToken),
            (40014, TokenError, Action::RefreshToken),
            (90010, SessionExpired, Action::Stop),
            (90009, MpSigError, Action::Stop),
            (90011, SigError, Action::Breaker),
            (90017, NoPermission, Action::Breaker),
            (90012, UnknownError, Action::Stop),
            (40013, UnknownError, Action::Stop),
        ];
        for &(code, cat, action) in table {
            assert_eq!(classify_errcode(code), (cat, action), "errcode {code}");
        }
    }
}
