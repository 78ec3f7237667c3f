//! The results file's layouts (SPEC §2 Output, §1.5, §1.6): which columns
//! follow the input's in a live run and a dry run of each API, where `row`
//! and `category` are, and how a layout is told from a header row.

use super::output::{unguard, Outcome, RefundFacts};
use crate::category::Category;
use crate::input::Header;

/// The result columns of a live run, after the input's columns.
pub const LIVE_COLUMNS: [&str; 6] = ["row", "category", "errcode", "errmsg", "attempts", "ts"];
/// The same with `--api v2`: the cancellation id follows `row`.
pub const LIVE_V2_COLUMNS: [&str; 7] = ["row", "cancel_bill_no", "category", "errcode", "errmsg", "attempts", "ts"];
/// The columns of a dry run after `row` and the input's columns.
pub const DRY_COLUMNS: [&str; 4] = ["ts", "sig", "mp_sig", "category"];
/// The same with `--api v2`.
pub const DRY_V2_COLUMNS: [&str; 6] = ["ts", "cancel_bill_no", "body", "pay_sig", "signature", "category"];
/// The same when the input has a cancel_bill_no column, which then holds
/// the id (one `cancel_bill_no` column, not two).
pub const DRY_V2_INLINE_COLUMNS: [&str; 5] = ["ts", "body", "pay_sig", "signature", "category"];
/// A refund's results (`--api xpay-refund`): its id and what WeChat's record
/// says, after `row`.
pub const LIVE_REFUND_COLUMNS: [&str; 12] = [
    "row",
    "refund_bill_no",
    "left_fee",
    "refund_fee",
    "wx_refund_id",
    "refund_status",
    "settled_at",
    "category",
    "errcode",
    "errmsg",
    "attempts",
    "ts",
];
/// [`LIVE_REFUND_COLUMNS`] when the input has a refund_bill_no column,
/// which then holds the id.
pub const LIVE_REFUND_INLINE_COLUMNS: [&str; 11] = [
    "row",
    "left_fee",
    "refund_fee",
    "wx_refund_id",
    "refund_status",
    "settled_at",
    "category",
    "errcode",
    "errmsg",
    "attempts",
    "ts",
];
/// A refund's dry run: its id, and the two queries that can be signed ahead
/// (the refund itself needs WeChat's `left_fee`).
pub const DRY_REFUND_COLUMNS: [&str; 7] = [
    "ts",
    "refund_bill_no",
    "refund_query_body",
    "refund_query_pay_sig",
    "order_query_body",
    "order_query_pay_sig",
    "category",
];
/// [`DRY_REFUND_COLUMNS`] when the input has a refund_bill_no column.
pub const DRY_REFUND_INLINE_COLUMNS: [&str; 6] =
    ["ts", "refund_query_body", "refund_query_pay_sig", "order_query_body", "order_query_pay_sig", "category"];

/// Which of the output layouts a file has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `row`, input columns, ts, sig, mp_sig, category.
    DryRun,
    /// input columns, row, category, errcode, errmsg, attempts, ts.
    Live,
    /// `row`, input columns, ts, cancel_bill_no, body, pay_sig, signature, category.
    DryRunV2,
    /// input columns, row, cancel_bill_no, category, errcode, errmsg, attempts, ts.
    LiveV2,
    /// [`Layout::DryRunV2`] of an input with a cancel_bill_no column: the id
    /// is written in that column.
    DryRunV2Inline,
    /// [`Layout::LiveV2`] of an input with a cancel_bill_no column: the id
    /// is written in that column (the tail is v1's).
    LiveV2Inline,
    /// input columns, then [`LIVE_REFUND_COLUMNS`].
    LiveRefund,
    /// `row`, input columns, then [`DRY_REFUND_COLUMNS`].
    DryRunRefund,
    /// The refund layouts of an input with a refund_bill_no column: the id
    /// is written in that column.
    LiveRefundInline,
    DryRunRefundInline,
}

impl Layout {
    /// The layout of a run over an input with `header`.
    pub fn for_header(header: &Header, dry_run: bool) -> Layout {
        let spec = header.rules().api.input();
        let inline = header.column(spec.id_field).is_some();
        if spec.id_field == crate::input::Field::RefundBillNo {
            return match (dry_run, inline) {
                (true, false) => Layout::DryRunRefund,
                (false, false) => Layout::LiveRefund,
                (true, true) => Layout::DryRunRefundInline,
                (false, true) => Layout::LiveRefundInline,
            };
        }
        // An API with ids of its own (v2, xpay) writes them; its dry run the
        // exact body and both signatures.
        match (spec.own_id.is_some(), dry_run, inline) {
            (false, true, _) => Layout::DryRun,
            (false, false, _) => Layout::Live,
            (true, true, false) => Layout::DryRunV2,
            (true, false, false) => Layout::LiveV2,
            (true, true, true) => Layout::DryRunV2Inline,
            (true, false, true) => Layout::LiveV2Inline,
        }
    }

    /// Whether the id goes into the input's own cancel_bill_no column.
    pub(super) fn id_inline(self) -> bool {
        matches!(
            self,
            Layout::DryRunV2Inline | Layout::LiveV2Inline | Layout::DryRunRefundInline | Layout::LiveRefundInline
        )
    }

    /// Whether lines carry a refund's facts.
    pub fn refunds(self) -> bool {
        matches!(self, Layout::LiveRefund | Layout::LiveRefundInline)
    }

    /// The columns after the input's.
    pub fn tail(self) -> &'static [&'static str] {
        match self {
            Layout::DryRun => &DRY_COLUMNS,
            Layout::Live => &LIVE_COLUMNS,
            Layout::DryRunV2 => &DRY_V2_COLUMNS,
            Layout::LiveV2 => &LIVE_V2_COLUMNS,
            Layout::DryRunV2Inline => &DRY_V2_INLINE_COLUMNS,
            Layout::LiveV2Inline => &LIVE_COLUMNS,
            Layout::LiveRefund => &LIVE_REFUND_COLUMNS,
            Layout::DryRunRefund => &DRY_REFUND_COLUMNS,
            Layout::LiveRefundInline => &LIVE_REFUND_INLINE_COLUMNS,
            Layout::DryRunRefundInline => &DRY_REFUND_INLINE_COLUMNS,
        }
    }

    /// Whether `row` comes first (a dry run) rather than after the input.
    pub fn row_first(self) -> bool {
        matches!(
            self,
            Layout::DryRun
                | Layout::DryRunV2
                | Layout::DryRunV2Inline
                | Layout::DryRunRefund
                | Layout::DryRunRefundInline
        )
    }

    /// Where `row` and `category` are in a line `width` fields wide.
    pub fn row_and_category(self, width: usize) -> (usize, usize) {
        let first = width - self.tail().len();
        let at = |name: &str| first + self.tail().iter().position(|c| *c == name).unwrap_or(0);
        match self.row_first() {
            true => (0, width - 1),
            false => (at("row"), at("category")),
        }
    }

    /// The name of the column that holds a row's own id in this layout.
    pub fn id_column(self) -> &'static str {
        match self {
            Layout::LiveRefund | Layout::DryRunRefund | Layout::LiveRefundInline | Layout::DryRunRefundInline => {
                "refund_bill_no"
            }
            _ => "cancel_bill_no",
        }
    }

    /// What a live line records of its row's outcome, and its cancellation
    /// id (v2), read back for a resumed row's history.
    pub fn recorded(self, rec: &csv::ByteRecord) -> (Outcome, Option<String>) {
        let first = rec.len().saturating_sub(self.tail().len());
        let cell = |name: &str| {
            let at = self.tail().iter().position(|c| *c == name).map(|i| first + i);
            at.and_then(|i| rec.get(i)).map(|b| unguard(&String::from_utf8_lossy(b)).to_string()).unwrap_or_default()
        };
        let category = cell("category").parse().unwrap_or(Category::UnknownError);
        let refund = self.refunds().then(|| {
            Box::new(RefundFacts {
                left_fee: cell("left_fee").parse().ok(),
                refund_fee: cell("refund_fee").parse().ok(),
                wx_refund_id: Some(cell("wx_refund_id")).filter(|c| !c.is_empty()),
                refund_status: cell("refund_status").parse().ok(),
                settled_at: Some(cell("settled_at")).filter(|c| !c.is_empty()),
            })
        });
        let outcome = Outcome {
            category,
            errcode: cell("errcode").parse().ok(),
            errmsg: cell("errmsg"),
            attempts: cell("attempts").parse().unwrap_or(0),
            ts: cell("ts").parse().ok(),
            refund,
        };
        let id = Some(cell(self.id_column())).filter(|c| !c.is_empty());
        (outcome, id)
    }

    /// Recognises the layout from a header row.
    pub fn detect(headers: &[String]) -> Option<Layout> {
        let n = headers.len();
        let ends_with =
            |cols: &[&str]| n >= cols.len() && headers[n - cols.len()..].iter().zip(cols).all(|(a, b)| a == b);
        let row_first = headers.first().is_some_and(|h| h == "row");
        // The longer v2 tails first: they end like nothing of v1's. (A v2
        // file whose input held the ids reads as v1's live layout: the same
        // tail, and the ids are among the input's columns.)
        [
            Layout::LiveRefund,
            Layout::LiveRefundInline,
            Layout::DryRunRefund,
            Layout::DryRunRefundInline,
            Layout::LiveV2,
            Layout::Live,
            Layout::DryRunV2,
            Layout::DryRunV2Inline,
            Layout::DryRun,
        ]
        .into_iter()
        .find(|l| ends_with(l.tail()) && (!l.row_first() || row_first))
    }
}
