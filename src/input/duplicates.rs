//! In-order classification: the first row of a duplicate key wins (even an
//! invalid one), and the session-key rule of the run.

use super::fields::{validate, Facts, Order, Validated};
use super::header::Header;
use super::place;
use super::records::RawRow;
use super::session_keys::{fingerprint, FingerprintBuild, MpSigMode, SessionKeys};
use crate::category::Category;
use std::sync::Arc;

/// One remembered bill_no: 96 bits of its fingerprint and its first row, in 16
/// bytes, so a million rows cost ~20-40 bytes each in the set. Equality and
/// hash look at the fingerprint only; a false match needs a 96-bit collision.
#[derive(Clone, Copy, Debug)]
pub(super) struct Seen {
    hi: u64,
    lo: u32,
    row: u32,
}

impl Seen {
    pub(super) fn new(bill_no: &str, row: u64) -> Seen {
        let fp = fingerprint(bill_no);
        Seen { hi: (fp >> 64) as u64, lo: fp as u32, row: u32::try_from(row).unwrap_or(u32::MAX) }
    }
}

impl PartialEq for Seen {
    fn eq(&self, other: &Self) -> bool {
        (self.hi, self.lo) == (other.hi, other.lo)
    }
}

impl Eq for Seen {}

impl std::hash::Hash for Seen {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hi);
    }
}

/// What to do with one row.
#[derive(Debug)]
pub enum Verdict {
    /// Valid, first of its bill_no, and sendable under the `--mp-sig` mode.
    Ready(Box<Order>),
    /// Not to be sent: invalid_input, duplicate or missing_session_key.
    /// `valid` says whether the row itself passed validation (its API columns
    /// are then written verbatim).
    Rejected { category: Category, message: String, valid: bool },
}

/// The in-order part of classification: duplicate detection (first row wins)
/// and the session-key rule of `--mp-sig`.
pub struct Classifier {
    seen: std::collections::HashSet<Seen, FingerprintBuild>,
    mp_sig: MpSigMode,
    /// How messages name the duplicate key.
    key_name: &'static str,
    /// v2: every row needs a session key, whatever `--mp-sig` says.
    needs_session_key: bool,
    /// A workbook's sheet, for messages.
    sheet: Option<Arc<str>>,
}

impl Classifier {
    /// A v1 classifier (tests); runs use [`Classifier::for_run`].
    pub fn new(mp_sig: MpSigMode) -> Self {
        Classifier { seen: Default::default(), mp_sig, key_name: "bill_no", needs_session_key: false, sheet: None }
    }

    /// The classifier of a run over an input with `header`.
    pub fn for_run(mp_sig: MpSigMode, header: &Header) -> Self {
        Classifier {
            key_name: header.key_name(),
            needs_session_key: header.needs_session_key(),
            sheet: header.sheet.clone(),
            ..Self::new(mp_sig)
        }
    }

    /// Makes room at once for the rows of an `input_size`-byte file, judged
    /// from how many bytes the rows up to `latest` took. Growing the set step
    /// by step moved every entry again at each doubling (a cache miss each)
    /// and for a moment held the old table and the new. An estimate that
    /// runs high costs only memory, so it is capped at one row per 32 bytes.
    pub fn reserve_for(&mut self, input_size: u64, latest: &RawRow) {
        let Some(start) = latest.record.position().map(|p| p.byte()).filter(|&b| b > 0) else { return };
        let rows = (input_size.saturating_mul(latest.row) / start).min(input_size / 32);
        self.seen.reserve(usize::try_from(rows).unwrap_or(0).saturating_sub(self.seen.len()));
    }

    fn place(&self, line: u64) -> String {
        place(self.sheet.as_deref(), line)
    }

    /// Decides a validated row; `None` means "send it". Rows must come in
    /// input order.
    pub fn decide(&mut self, row: u64, line: u64, facts: Facts<'_>) -> Option<(Category, String)> {
        let seen = facts.bill_no.map(|b| Seen::new(b, row));
        // One probe for the usual new bill_no; a second (in `judge`) only for
        // a duplicate.
        let fresh = seen.is_none_or(|s| self.seen.insert(s));
        self.judge(line, facts, seen.filter(|_| !fresh))
    }

    /// [`Classifier::decide`] for a batch of `(row, line, facts)` in input
    /// order, with the same answers. The set's inserts run in a loop of
    /// their own, so the CPU overlaps their cache misses; one insert between
    /// two rows' other work waited for each miss alone.
    pub fn decide_batch(&mut self, rows: &[(u64, u64, Facts<'_>)]) -> Vec<Option<(Category, String)>> {
        let seen: Vec<Option<Seen>> = rows.iter().map(|(row, _, f)| f.bill_no.map(|b| Seen::new(b, *row))).collect();
        let fresh: Vec<bool> = seen.iter().map(|s| s.is_none_or(|s| self.seen.insert(s))).collect();
        rows.iter()
            .zip(seen.into_iter().zip(fresh))
            .map(|(&(_, line, facts), (seen, fresh))| self.judge(line, facts, seen.filter(|_| !fresh)))
            .collect()
    }

    /// The decision once the bill_no went into the set; `duplicate` is the
    /// row's own entry when its bill_no was already there.
    fn judge(&self, line: u64, facts: Facts<'_>, duplicate: Option<Seen>) -> Option<(Category, String)> {
        if let (Some(seen), Some(b)) = (duplicate, facts.bill_no) {
            let first = self.seen.get(&seen).map_or(0, |s| s.row);
            let m = format!(
                "{}: {} `{b}` already appeared on row {first}; only that row is sent",
                self.place(line),
                self.key_name
            );
            return Some((Category::Duplicate, m));
        }
        if let Some(m) = facts.problem {
            return Some((Category::InvalidInput, m.to_string()));
        }
        if self.needs_session_key && !facts.has_session_key {
            let m = format!(
                "{}: no session key for openid `{}` (this API signs every request with the user's session key)",
                self.place(line),
                facts.openid
            );
            return Some((Category::MissingSessionKey, m));
        }
        if self.mp_sig == MpSigMode::Always && !facts.has_session_key {
            let m = format!(
                "{}: no session key for openid `{}` (--mp-sig always needs one)",
                self.place(line),
                facts.openid
            );
            return Some((Category::MissingSessionKey, m));
        }
        None
    }

    /// Validates and decides one row.
    pub fn classify(&mut self, header: &Header, raw: &RawRow, keys: &SessionKeys) -> Verdict {
        let v = validate(header, raw, keys);
        match self.decide(raw.row, raw.line, v.facts(header)) {
            Some((category, message)) => {
                Verdict::Rejected { category, message, valid: matches!(v, Validated::Valid(_)) }
            }
            None => match v {
                Validated::Valid(o) => Verdict::Ready(Box::new(o.to_owned())),
                Validated::Invalid { .. } => unreachable!("an invalid row is never sent"),
            },
        }
    }
}
