//! The results file (SPEC §2 Output): the CSV-injection guard, the writer
//! of its lines (in the layouts of [`super::layout`]) and the one reader of
//! them. One line per input row.

use crate::category::Category;
use crate::input::{Header, RawRow, FORMULA_TRIGGERS};
use crate::sign::Hex64;
use std::borrow::Cow;
use std::io::Write;

pub use super::layout::*;

/// Neutralises a cell a spreadsheet would run as a formula (OWASP CSV
/// injection): a cell that begins with `=`, `+`, `-`, `@`, tab or carriage
/// return gets a leading `'`. Applied to every cell written, API columns
/// included (a bill_no `-A1*B1` passes its character check).
///
/// Two refinements keep it exact and lossless: a plain number (`-1`, `+3`,
/// `-2.5`) is a number to a spreadsheet, not a formula, and stays as it is;
/// a cell that already begins with `'`s before a trigger gets one more, so
/// [`unguard`] gives back exactly the original.
pub fn guard(cell: &str) -> Cow<'_, str> {
    // The usual cell, at once: one that begins with a letter or digit.
    if cell.as_bytes().first().is_none_or(u8::is_ascii_alphanumeric) {
        return Cow::Borrowed(cell);
    }
    if cell.trim_start_matches('\'').starts_with(FORMULA_TRIGGERS) && !is_plain_number(cell) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// Undoes [`guard`]; every reader of a results file calls it on every cell.
pub fn unguard(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.trim_start_matches('\'').starts_with(FORMULA_TRIGGERS) => rest,
        _ => cell,
    }
}

/// An optional sign, digits, and an optional fraction.
fn is_plain_number(cell: &str) -> bool {
    let unsigned = cell.strip_prefix(['-', '+']).unwrap_or(cell);
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(int) && digits(frac)
}

/// The full header row of a results file for an input header.
pub fn header_row(header: &Header, layout: Layout) -> Vec<String> {
    let inputs = header.output_columns().map(|(_, n)| guard(n).into_owned());
    let tail = layout.tail().iter().map(|c| c.to_string());
    if layout.row_first() {
        std::iter::once("row".to_string()).chain(inputs).chain(tail).collect()
    } else {
        inputs.chain(tail).collect()
    }
}

/// What happened to one row in a live run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub category: Category,
    /// WeChat's errcode; `None` when no answer was had.
    pub errcode: Option<i64>,
    pub errmsg: String,
    pub attempts: u32,
    /// `ts` of the last attempt.
    pub ts: Option<u64>,
    /// A refund's facts (`--api xpay-refund`).
    pub refund: Option<Box<RefundFacts>>,
}

/// What a refund row learned of WeChat's records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefundFacts {
    /// What was left of the paid order before the refund (fen).
    pub left_fee: Option<u64>,
    /// What was refunded (fen).
    pub refund_fee: Option<u64>,
    /// WeChat's id of the refund.
    pub wx_refund_id: Option<String>,
    /// The refund's last status seen.
    pub refund_status: Option<i64>,
    /// The refund record's `update_time` when it settled.
    pub settled_at: Option<String>,
}

impl RefundFacts {
    /// These facts, each filled from `earlier` where this run learned none.
    fn or(self, earlier: &RefundFacts) -> RefundFacts {
        RefundFacts {
            left_fee: self.left_fee.or(earlier.left_fee),
            refund_fee: self.refund_fee.or(earlier.refund_fee),
            wx_refund_id: self.wx_refund_id.or_else(|| earlier.wx_refund_id.clone()),
            refund_status: self.refund_status.or(earlier.refund_status),
            settled_at: self.settled_at.or_else(|| earlier.settled_at.clone()),
        }
    }
}

impl Outcome {
    /// An outcome for a row that was never sent.
    pub fn unsent(category: Category, errmsg: impl Into<String>) -> Self {
        Outcome { category, errcode: None, errmsg: errmsg.into(), attempts: 0, ts: None, refund: None }
    }

    /// A row never attempted because the run was stopped.
    pub fn skipped() -> Self {
        Outcome::unsent(Category::Skipped, "not attempted: the run was stopped")
    }

    /// This run's outcome of a row that an earlier run left unfinished
    /// (`earlier`): attempts add up, and what the earlier run learned (an
    /// unknown outcome's errcode and message) stays in the line.
    pub fn after(self, earlier: &Outcome) -> Outcome {
        let code = earlier.errcode.map_or_else(|| "none".to_string(), |c| c.to_string());
        let errmsg = format!(
            "{} [earlier: {} after {} attempt(s), errcode {code}: {}]",
            self.errmsg,
            earlier.category.as_str(),
            earlier.attempts,
            earlier.errmsg
        );
        let refund = match (self.refund, &earlier.refund) {
            (Some(now), Some(then)) => Some(Box::new(now.or(then))),
            (now, then) => now.or_else(|| then.clone()),
        };
        Outcome {
            attempts: self.attempts + earlier.attempts,
            ts: self.ts.or(earlier.ts),
            errmsg,
            category: self.category,
            errcode: self.errcode,
            refund,
        }
    }
}

/// What a dry run produced for one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrySigned {
    pub category: Category,
    pub ts: Option<u64>,
    pub sig: Option<Hex64>,
    pub mp_sig: Option<Hex64>,
    /// v2 only.
    pub v2: Option<Box<DryV2>>,
}

/// What a v2 dry run writes beyond the category.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DryV2 {
    pub cancel_bill_no: String,
    /// Empty when the row was not signed.
    pub body: String,
    pub pay_sig: Option<Hex64>,
    pub signature: Option<Hex64>,
    /// A refund's dry run: the paid order's query (step 2) and its pay_sig;
    /// `body`/`pay_sig` then hold the refund id's query (step 1).
    pub order_body: String,
    pub order_pay_sig: Option<Hex64>,
}

impl DrySigned {
    /// A row that was not signed (invalid, a duplicate, no session key).
    pub fn unsigned(category: Category) -> DrySigned {
        DrySigned { category, ts: None, sig: None, mp_sig: None, v2: None }
    }
}

/// Writes results rows to any writer (a file, or a buffer in tests).
pub struct ResultsWriter<W: Write> {
    csv: csv::Writer<W>,
    header: Header,
    layout: Layout,
    /// The input column that holds the id, in an inline layout.
    id_col: Option<usize>,
}

impl<W: Write> ResultsWriter<W> {
    /// Starts a results file: writes the header row when `write_header`.
    pub fn new(inner: W, header: &Header, layout: Layout, write_header: bool) -> csv::Result<Self> {
        let mut csv = csv::WriterBuilder::new().buffer_capacity(1 << 16).from_writer(inner);
        if write_header {
            csv.write_record(header_row(header, layout))?;
        }
        Ok(ResultsWriter::with(csv, header, layout))
    }

    /// An encoder of lines into memory (no header row), for the parallel
    /// stage of a dry run; [`ResultsWriter::encoded_len`] marks where each
    /// line ends.
    pub fn encoder(inner: W, header: &Header, layout: Layout) -> Self {
        let csv = csv::WriterBuilder::new().buffer_capacity(1 << 12).from_writer(inner);
        ResultsWriter::with(csv, header, layout)
    }

    fn with(csv: csv::Writer<W>, header: &Header, layout: Layout) -> Self {
        let id_col = if layout.id_inline() { header.column(header.rules().api.input().id_field) } else { None };
        ResultsWriter { csv, header: header.clone(), layout, id_col }
    }

    /// Writes the input's cells, each guarded: API columns of a valid row
    /// trimmed (the value that was signed), every other cell as it was.
    /// Missing cells of a short row are written empty.
    fn write_input_cells(&mut self, raw: &RawRow, valid: bool, id: Option<&str>) -> csv::Result<()> {
        for (i, _) in self.header.output_columns() {
            let cell = raw.record.get(i).unwrap_or("");
            // An inline layout's id column holds the id that was (or would
            // be) sent, derived when the cell was blank.
            let cell = match id.filter(|id| !id.is_empty()) {
                Some(id) if self.id_col == Some(i) => id,
                _ => cell,
            };
            let trimmed = self.header.field_of(i).is_some_and(|f| !Header::verbatim(f));
            let cell = if valid && trimmed { crate::input::trim(cell) } else { cell };
            self.csv.write_field(guard(cell).as_ref())?;
        }
        Ok(())
    }

    /// One dry-run line; `valid` says whether the row passed validation.
    pub fn write_dry(&mut self, raw: &RawRow, valid: bool, signed: &DrySigned) -> csv::Result<()> {
        debug_assert!(self.layout.row_first());
        let mut num = itoa::Buffer::new();
        self.csv.write_field(num.format(raw.row))?;
        let empty = DryV2::default();
        let v2 = signed.v2.as_deref().unwrap_or(&empty);
        self.write_input_cells(raw, valid, Some(&v2.cancel_bill_no))?;
        self.csv.write_field(signed.ts.map_or("", |t| num.format(t)))?;
        if matches!(self.layout, Layout::DryRunRefund | Layout::DryRunRefundInline) {
            // The id, then each query's JSON body and hex pay_sig.
            if self.layout == Layout::DryRunRefund {
                self.csv.write_field(guard(&v2.cancel_bill_no).as_ref())?;
            }
            self.csv.write_field(&v2.body)?;
            self.csv.write_field(v2.pay_sig.as_ref().map_or("", Hex64::as_str))?;
            self.csv.write_field(&v2.order_body)?;
            self.csv.write_field(v2.order_pay_sig.as_ref().map_or("", Hex64::as_str))?;
        } else if matches!(self.layout, Layout::DryRunV2 | Layout::DryRunV2Inline) {
            if self.layout == Layout::DryRunV2 {
                self.csv.write_field(guard(&v2.cancel_bill_no).as_ref())?;
            }
            // JSON (it begins with `{`) and hex: never a formula.
            self.csv.write_field(&v2.body)?;
            self.csv.write_field(v2.pay_sig.as_ref().map_or("", Hex64::as_str))?;
            self.csv.write_field(v2.signature.as_ref().map_or("", Hex64::as_str))?;
        } else {
            self.csv.write_field(signed.sig.as_ref().map_or("", Hex64::as_str))?;
            self.csv.write_field(signed.mp_sig.as_ref().map_or("", Hex64::as_str))?;
        }
        self.csv.write_field(signed.category.as_str())?;
        self.csv.write_record(None::<&[u8]>)
    }

    /// One live-run line; `valid` says whether the row passed validation;
    /// `cancel_bill_no` is written in the v2 layout.
    pub fn write_live(
        &mut self,
        raw: &RawRow,
        valid: bool,
        cancel_bill_no: Option<&str>,
        outcome: &Outcome,
    ) -> csv::Result<()> {
        debug_assert!(!self.layout.row_first());
        let mut num = itoa::Buffer::new();
        self.write_input_cells(raw, valid, cancel_bill_no)?;
        self.csv.write_field(num.format(raw.row))?;
        if matches!(self.layout, Layout::LiveV2 | Layout::LiveRefund) {
            self.csv.write_field(guard(cancel_bill_no.unwrap_or("")).as_ref())?;
        }
        if self.layout.refunds() {
            let facts = outcome.refund.as_deref().cloned().unwrap_or_default();
            let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
            self.csv.write_field(n(facts.left_fee))?;
            self.csv.write_field(n(facts.refund_fee))?;
            self.csv.write_field(guard(facts.wx_refund_id.as_deref().unwrap_or("")).as_ref())?;
            self.csv.write_field(facts.refund_status.map(|s| s.to_string()).unwrap_or_default())?;
            self.csv.write_field(guard(facts.settled_at.as_deref().unwrap_or("")).as_ref())?;
        }
        self.csv.write_field(outcome.category.as_str())?;
        self.csv.write_field(outcome.errcode.map_or("", |c| num.format(c)))?;
        self.csv.write_field(guard(&outcome.errmsg).as_ref())?;
        self.csv.write_field(num.format(outcome.attempts))?;
        self.csv.write_field(outcome.ts.map_or("", |t| num.format(t)))?;
        self.csv.write_record(None::<&[u8]>)
    }

    /// Pushes buffered lines to the operating system.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.csv.flush()
    }

    pub fn get_ref(&self) -> &W {
        self.csv.get_ref()
    }
}

impl ResultsWriter<&mut Vec<u8>> {
    /// How many bytes were encoded so far, every line written included.
    pub fn encoded_len(&mut self) -> std::io::Result<usize> {
        self.csv.flush()?;
        Ok(self.csv.get_ref().len())
    }
}

/// Whether the file's last byte is a line end: a last line without one was
/// cut mid-write, even when what is left of it still parses.
pub fn ends_with_newline(file: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    let at = file.stream_position()?;
    let mut last = [0u8; 1];
    file.seek(SeekFrom::End(-1))?;
    file.read_exact(&mut last)?;
    file.seek(SeekFrom::Start(at))?;
    Ok(last[0] == b'\n')
}

/// Where a results line's own columns are, and how many input rows there
/// are (when known): what it takes to judge a line.
#[derive(Clone, Copy, Debug)]
pub struct LineShape {
    pub width: usize,
    pub row_col: usize,
    pub category_col: usize,
    /// Rows of the input, from the run's fingerprint.
    pub rows: Option<u64>,
}

impl LineShape {
    /// The row and category of a results line, or why it is damaged. The
    /// one judge of a line, for `--resume`, `report` and `--only` alike.
    pub fn judge(&self, rec: &csv::ByteRecord) -> Result<(u64, Category), String> {
        if rec.len() != self.width {
            return Err(format!("{} fields instead of {}", rec.len(), self.width));
        }
        let text = |i: usize| std::str::from_utf8(rec.get(i).unwrap_or(b"")).map_err(|_| "not UTF-8".to_string());
        let category = text(self.category_col)?.parse().map_err(|e: crate::category::UnknownCategory| e.to_string())?;
        match (text(self.row_col)?.parse::<u64>(), self.rows) {
            (Ok(row), Some(total)) if !(1..=total).contains(&row) => {
                Err(format!("row {row} is not in the input (1..={total})"))
            }
            (Ok(0), None) => Err("row 0 is not a row number".to_string()),
            (Ok(row), _) => Ok((row, category)),
            (Err(_), _) => Err("bad row number".to_string()),
        }
    }
}

/// The one reader of a results file's lines after its header, for resume,
/// `report` and the end-of-run summary alike. Each line is judged by
/// `judge` once the next read tells whether it was the last, then handed to
/// `keep`. The last line is a torn tail, skipped, when the file does not end
/// with a line end, when it does not pass `judge`, or when unreadable bytes
/// follow it; a run killed mid-write leaves exactly that. Any other line that
/// does not pass is damage, and an error naming it. Returns whether a torn
/// tail was skipped.
pub fn read_results<R: std::io::Read, T>(
    rdr: &mut csv::Reader<R>,
    name: &str,
    ends_with_newline: bool,
    mut judge: impl FnMut(&csv::ByteRecord) -> Result<T, String>,
    mut keep: impl FnMut(T, &csv::ByteRecord) -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let mut rec = csv::ByteRecord::new();
    let mut pending: Option<(u64, Result<T, String>, csv::ByteRecord)> = None;
    let mut torn = false;
    loop {
        let next = rdr.read_byte_record(&mut rec);
        let last = !matches!(next, Ok(true));
        if let Some((line, judged, record)) = pending.take() {
            match judged {
                _ if last && !ends_with_newline => torn = true,
                Ok(t) => keep(t, &record)?,
                Err(_) if last => torn = true,
                Err(why) => {
                    anyhow::bail!("{name} line {line} is damaged ({why}); move the file away, or repair that line")
                }
            }
        }
        match next {
            Ok(true) => {
                let line = rec.position().map_or(0, |p| p.line());
                pending = Some((line, judge(&rec), rec.clone()));
            }
            Ok(false) => return Ok(torn),
            // Unreadable bytes can only be a torn tail.
            Err(_) => return Ok(true),
        }
    }
}

/// [`read_results`] with one line per row: a row's line may be followed by
/// a later one for the same row (a resumed run appends the row's new line
/// and compacts the file only when it ends; a kill in between leaves both).
/// The row's first final line stands; else its last line. Two passes over
/// the file, so that nothing but a line number per row is held: the first
/// chooses each row's line, the second hands the chosen ones to `keep`, in
/// file order.
pub fn read_last_lines<R: std::io::Read + std::io::Seek>(
    rdr: &mut csv::Reader<R>,
    name: &str,
    ends_with_newline: bool,
    shape: &LineShape,
    mut keep: impl FnMut(u64, Category, &csv::ByteRecord) -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let start = rdr.position().clone();
    // Row → (ordinal of its chosen line, whether that line is final).
    let mut chosen: std::collections::HashMap<u64, (u64, bool)> = Default::default();
    let mut ordinal = 0u64;
    let judge = |rec: &csv::ByteRecord| shape.judge(rec);
    let torn = read_results(rdr, name, ends_with_newline, judge, |(row, category), _| {
        let slot = chosen.entry(row).or_insert((ordinal, category.is_final()));
        if !slot.1 {
            *slot = (ordinal, category.is_final());
        }
        ordinal += 1;
        Ok(())
    })?;
    rdr.seek(start)?;
    let mut ordinal = 0u64;
    read_results(rdr, name, ends_with_newline, judge, |(row, category), record| {
        let this = ordinal;
        ordinal += 1;
        match chosen.get(&row) {
            Some((at, _)) if *at == this => keep(row, category, record),
            _ => Ok(()),
        }
    })?;
    Ok(torn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_prefixes_formula_triggers_only() {
        for c in ["=1+1", "+A1", "-A1*B1", "@A1", "@SUM(A1)", "\tx", "\rx", "-1+2", "'=x", "''-A1", "-", "+"] {
            assert_eq!(guard(c), format!("'{c}"), "{c:?}");
            assert_eq!(unguard(&guard(c)), c, "{c:?}");
        }
        for c in ["1", "-1", "+3", "-2.5", "a=b", "", "'quoted", "''", "B-1"] {
            assert_eq!(guard(c), c, "{c:?}");
            assert_eq!(unguard(c), c, "{c:?}");
        }
    }
}
