//! Result categories: the one place that knows each category's name, whether
//! it is final (`--resume` will not touch the row again), whether it counts as
//! a success, and what the operator should do about it (SPEC §1.3).

use std::fmt;
use std::str::FromStr;

/// What happened to one input row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Cancelled,
    AlreadyReturned,
    AlreadyConfirmed,
    NotFound,
    ParamError,
    SystemBusy,
    Processing,
    RateLimited,
    TokenError,
    SessionExpired,
    MpSigError,
    /// v2: `signature` refused (90010): a wrong or stale session key.
    SessionKeyError,
    SigError,
    NoPermission,
    UnknownError,
    InvalidInput,
    Duplicate,
    MissingSessionKey,
    NetworkError,
    Skipped,
    Signed,
    /// xpay-refund: WeChat's record says the refund completed (status 8).
    Refunded,
    /// xpay-refund: WeChat's record says the refund failed (status 7).
    RefundFailed,
    /// xpay-refund: the refund was started and had not settled when
    /// `--settle-timeout` passed; `--resume` polls it, never refunds again.
    RefundPending,
    /// xpay-refund: the order cannot be refunded (not paid, closed, or
    /// redeemed).
    NotRefundable,
}

/// Every category, in the order summaries list them.
pub const ALL: [Category; 25] = [
    Category::Cancelled,
    Category::Refunded,
    Category::AlreadyReturned,
    Category::RefundFailed,
    Category::NotRefundable,
    Category::AlreadyConfirmed,
    Category::NotFound,
    Category::ParamError,
    Category::InvalidInput,
    Category::Duplicate,
    Category::SystemBusy,
    Category::Processing,
    Category::RateLimited,
    Category::TokenError,
    Category::SessionExpired,
    Category::MpSigError,
    Category::SessionKeyError,
    Category::SigError,
    Category::NoPermission,
    Category::UnknownError,
    Category::MissingSessionKey,
    Category::NetworkError,
    Category::RefundPending,
    Category::Skipped,
    Category::Signed,
];

impl Category {
    /// The name written in the results file.
    pub fn as_str(self) -> &'static str {
        use Category::*;
        match self {
            Cancelled => "cancelled",
            AlreadyReturned => "already_returned",
            AlreadyConfirmed => "already_confirmed",
            NotFound => "not_found",
            ParamError => "param_error",
            SystemBusy => "system_busy",
            Processing => "processing",
            RateLimited => "rate_limited",
            TokenError => "token_error",
            SessionExpired => "session_expired",
            MpSigError => "mp_sig_error",
            SessionKeyError => "session_key_error",
            SigError => "sig_error",
            NoPermission => "no_permission",
            UnknownError => "unknown_error",
            InvalidInput => "invalid_input",
            Duplicate => "duplicate",
            MissingSessionKey => "missing_session_key",
            NetworkError => "network_error",
            Skipped => "skipped",
            Signed => "signed",
            Refunded => "refunded",
            RefundFailed => "refund_failed",
            RefundPending => "refund_pending",
            NotRefundable => "not_refundable",
        }
    }

    /// Final rows are never attempted again by `--resume`.
    pub fn is_final(self) -> bool {
        use Category::*;
        matches!(
            self,
            Cancelled
                | AlreadyReturned
                | AlreadyConfirmed
                | NotFound
                | ParamError
                | InvalidInput
                | Duplicate
                | Refunded
                | RefundFailed
                | NotRefundable
        )
    }

    /// Rows whose coins (or cash) are back with the user: the only "nothing
    /// to do" outcomes of a live run (exit status 0 needs every row to be
    /// one of these).
    pub fn is_success(self) -> bool {
        matches!(self, Category::Cancelled | Category::AlreadyReturned | Category::Refunded)
    }

    /// What the operator should do about rows in this category.
    pub fn advice(self) -> &'static str {
        use Category::*;
        match self {
            Cancelled => "done: coins returned",
            AlreadyReturned => "done: the order had already been returned (or an earlier attempt did it)",
            AlreadyConfirmed => "cancel cannot return these coins: handle these orders by another channel (refund/compensation)",
            NotFound => "Midas has no such order: check bill_no, appid, offer_id and --sandbox against the export",
            ParamError => "WeChat rejected the parameters: check zone_id, pf and openid of these rows, fix the input and run them again",
            InvalidInput => "the row failed validation (errmsg names the line and field): take these rows out with `report RESULTS --only invalid_input -o fix.csv`, fix them there, and run fix.csv to a new -o",
            Duplicate => "nothing to do: only the first row with this bill_no (v2: pay_bill_no, or cancellation id) is sent",
            SystemBusy => "WeChat was busy: `--resume` retries them (perhaps with a lower --rate)",
            Processing => "the order was still processing: `--resume` later retries them",
            RateLimited => "WeChat's frequency limit: `--resume` with a lower --rate",
            TokenError => "the access token was rejected: set WECHAT_APP_SECRET (or a fresh WECHAT_ACCESS_TOKEN), then `--resume`",
            SessionExpired => "the user's session expired: supply fresh session keys (--session-keys) or send without mp_sig (--mp-sig never), then `--resume`",
            MpSigError => "mp_sig was refused: the session keys are stale or missing; supply fresh ones (or --mp-sig never), then `--resume`",
            SessionKeyError => "v2 `signature` was refused: the user's session key is wrong or stale; collect fresh session keys (--session-keys), then `--resume`",
            SigError => "the signature was refused: MIDAS_APP_KEY is not the key of this environment (the sandbox key in production, or the production key with --sandbox); fix it, then `--resume`",
            NoPermission => "this appid/offer_id may not call cancelpay: check the Mini Game's payment settings, then `--resume`",
            UnknownError => "an errcode this tool does not know: read errmsg; `--resume` retries them",
            MissingSessionKey => "no session key for the user: supply one (--session-keys; v2 signs every request with it, v1 can send without mp_sig under --mp-sig auto), then `--resume`",
            NetworkError => "outcome unknown (no usable answer): `--resume` re-sends them safely; a repeat answers already_returned",
            Skipped => "never attempted (the run was stopped): `--resume` sends them",
            Signed => "dry run: signed, nothing sent",
            Refunded => "done: WeChat's record says the refund completed (settled_at is its time)",
            RefundFailed => "WeChat's record says the refund failed: find out why (MP console, the order), then refund again with a new --cancel-tag (a new refund id)",
            RefundPending => "the refund was started and had not settled within --settle-timeout: `--resume` goes on polling it and never refunds it again",
            NotRefundable => "WeChat will not refund this order (not paid, closed, or already redeemed): handle it by another channel",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the categories.
#[derive(Debug, thiserror::Error)]
#[error("unknown category `{0}` (known: {list})", list = ALL.map(Category::as_str).join(", "))]
pub struct UnknownCategory(pub String);

impl clap::ValueEnum for Category {
    fn value_variants<'a>() -> &'a [Self] {
        &ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

impl FromStr for Category {
    type Err = UnknownCategory;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| UnknownCategory(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in ALL {
            assert_eq!(c.as_str().parse::<Category>().unwrap(), c);
        }
        assert!("nope".parse::<Category>().is_err());
    }

    #[test]
    fn final_set_matches_spec() {
        let finals: Vec<_> = ALL.into_iter().filter(|c| c.is_final()).map(Category::as_str).collect();
        assert_eq!(
            finals,
            [
                "cancelled",
                "refunded",
                "already_returned",
                "refund_failed",
                "not_refundable",
                "already_confirmed",
                "not_found",
                "param_error",
                "invalid_input",
                "duplicate",
            ]
        );
    }
}
