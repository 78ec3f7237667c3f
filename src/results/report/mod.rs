//! Summaries: counting outcomes per category, reading a results file back
//! (`midas-cancel report`, and the end-of-run summary, so the two always
//! agree), totals of a money column, and the verdict.

use crate::category::Category;
use crate::exit::Exit;
use crate::results::output::{
    ends_with_newline, read_last_lines, unguard, Layout, LineShape, DRY_COLUMNS, LIVE_COLUMNS,
};
use crate::results::tally::Tally;
use anyhow::{bail, Context as _};
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

pub mod html;
mod timeline;
pub mod xlsx;

impl Tally {
    /// A table: category, rows, what to do next (as `report` prints it).
    pub fn table(&self) -> String {
        Summary { tally: self.clone(), ..Summary::default() }.table()
    }
}

/// Which layout a results file has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    Live,
    DryRun,
}

/// Where the category, row and input columns are in a results file.
#[derive(Clone, Debug)]
pub struct Columns {
    pub kind: Kind,
    pub headers: Vec<String>,
    pub row: usize,
    pub category: usize,
    /// The input's columns, in order.
    pub input: std::ops::Range<usize>,
    pub layout: Layout,
}

impl Columns {
    /// Recognises the layout (v1 or v2, live or dry run) from the header row.
    pub fn detect(headers: &[String]) -> Option<Columns> {
        let layout = Layout::detect(headers)?;
        let n = headers.len();
        let first = n - layout.tail().len();
        let (row, category) = layout.row_and_category(n);
        let (kind, input) = if layout.row_first() { (Kind::DryRun, 1..first) } else { (Kind::Live, 0..first) };
        Some(Columns { kind, headers: headers.to_vec(), row, category, input, layout })
    }

    /// The results' own money columns (a refund's fees).
    pub fn money(&self) -> impl Iterator<Item = usize> + '_ {
        (self.input.end..self.headers.len()).filter(|&i| MONEY_RESULTS.contains(&self.headers[i].as_str()))
    }

    /// The column `--sum NAME` totals: an input column, else one of the
    /// results' money columns.
    pub fn sum_column(&self, name: &str) -> Option<usize> {
        self.input.clone().chain(self.money()).find(|&i| self.headers[i] == name)
    }
}

/// Totals of one numeric column, per category.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sums {
    pub column: String,
    pub by_category: BTreeMap<String, Decimal>,
    pub total: Decimal,
    /// Cells that were not numbers (not counted).
    pub unparsable: u64,
}

/// Everything a summary says.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub kind: Kind,
    pub tally: Tally,
    pub sums: Option<Sums>,
    /// Rows of the input not yet in the file (a run in progress or cut short),
    /// when the run fingerprint says how many there are.
    pub missing: Option<u64>,
    /// A torn last line was ignored.
    pub torn: bool,
}

impl Summary {
    /// The verdict, as an exit status: 0 when every row is done, 3 when rows
    /// were never attempted (skipped or missing), else 1.
    pub fn verdict(&self) -> Exit {
        let ok = |c: Category| if self.kind == Kind::DryRun { c == Category::Signed } else { c.is_success() };
        if self.tally.get(Category::Skipped) > 0 || self.missing.unwrap_or(0) > 0 {
            Exit::Stopped
        } else if self.tally.all_in(ok) {
            Exit::Done
        } else {
            Exit::Attention
        }
    }

    fn verdict_word(&self) -> &'static str {
        match self.verdict() {
            Exit::Done => "done",
            Exit::Stopped => "incomplete",
            _ => "needs_attention",
        }
    }

    /// The table of categories, rows, sums and next steps.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let sum_head = self.sums.as_ref().map(|m| format!(" {:>14}", format!("Σ {}", m.column))).unwrap_or_default();
        let _ = writeln!(s, "{:<20} {:>9}{sum_head}  next step", "category", "rows");
        let sum_of = |c: Category| -> String {
            self.sums
                .as_ref()
                .map(|m| format!(" {:>14}", m.by_category.get(c.as_str()).copied().unwrap_or_default()))
                .unwrap_or_default()
        };
        for (c, n) in self.tally.nonzero() {
            let _ = writeln!(s, "{:<20} {:>9}{}  {}", c.as_str(), n, sum_of(c), c.advice());
        }
        let total_sum = self.sums.as_ref().map(|m| format!(" {:>14}", m.total)).unwrap_or_default();
        let _ = write!(s, "{:<20} {:>9}{total_sum}", "total", self.tally.total());
        if let Some(m) = self.missing.filter(|&m| m > 0) {
            let _ = write!(
                s,
                "\n{:<20} {:>9}  not in the file yet (run in progress or cut short): `--resume` sends them",
                "missing", m
            );
        }
        if let Some(m) = self.sums.as_ref().filter(|m| m.unparsable > 0) {
            let _ = write!(s, "\n{} cell(s) of {} were not numbers and are not in the sums", m.unparsable, m.column);
        }
        s
    }

    /// The machine-readable summary (`report --json`).
    pub fn json(&self) -> serde_json::Value {
        let counts: BTreeMap<&str, u64> = self.tally.nonzero().map(|(c, n)| (c.as_str(), n)).collect();
        serde_json::json!({
            "kind": self.kind,
            "rows": self.tally.total(),
            "missing": self.missing,
            "counts": counts,
            "sums": self.sums,
            "torn_last_line": self.torn,
            "verdict": self.verdict_word(),
            "exit_code": self.verdict() as i32,
        })
    }
}

/// A results file opened for reading, past its header.
struct Opened {
    rdr: csv::Reader<std::fs::File>,
    cols: Columns,
    name: String,
    ends_with_newline: bool,
    /// The run's fingerprint, when it has one (live runs).
    fingerprint: Option<crate::results::fingerprint::Fingerprint>,
}

impl Opened {
    /// Reads the line of every row (see [`read_last_lines`]) as its
    /// category and record; returns whether a torn last line was skipped.
    /// Lines are judged as `--resume` judges them.
    fn lines(
        &mut self,
        mut keep: impl FnMut(Category, &csv::ByteRecord) -> anyhow::Result<()>,
    ) -> anyhow::Result<bool> {
        let shape = LineShape {
            width: self.cols.headers.len(),
            row_col: self.cols.row,
            category_col: self.cols.category,
            rows: self.fingerprint.as_ref().map(|f| f.rows),
        };
        read_last_lines(&mut self.rdr, &self.name, self.ends_with_newline, &shape, |_, c, rec| keep(c, rec))
    }
}

/// Opens a results file and recognises its layout.
fn open(path: &Path) -> anyhow::Result<Opened> {
    let name = path.display().to_string();
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {name}"))?;
    let ends_with_newline = ends_with_newline(&mut file).with_context(|| format!("cannot read {name}"))?;
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(file);
    let headers: Vec<String> = rdr.headers()?.iter().map(|h| unguard(h).to_string()).collect();
    let Some(cols) = Columns::detect(&headers) else {
        bail!(
            "{} is not a midas-cancel results file: its header must end with {} (or, for a dry run, {})",
            path.display(),
            LIVE_COLUMNS.join(","),
            DRY_COLUMNS.join(",")
        );
    };
    let fingerprint = match cols.kind {
        Kind::Live => crate::results::fingerprint::load(path),
        Kind::DryRun => None,
    };
    Ok(Opened { rdr, cols, name, ends_with_newline, fingerprint })
}

/// Parses a money-like cell exactly ("600", "12.50", a guarded "'-3").
fn parse_amount(cell: &str) -> Option<Decimal> {
    unguard(cell.trim()).parse::<Decimal>().ok()
}

/// The results columns `--sum` may name besides the input's: money.
const MONEY_RESULTS: [&str; 2] = ["refund_fee", "left_fee"];

/// Summarises a results file, streaming; `sum` names a column to total (a
/// refund's results total `refund_fee` unless told otherwise).
pub fn summarize(path: &Path, sum: Option<&str>) -> anyhow::Result<Summary> {
    let mut file = open(path)?;
    let cols = &file.cols;
    let sum = sum.or(cols.layout.refunds().then_some("refund_fee"));
    let sum_col = match sum {
        Some(name) => Some(cols.sum_column(name).with_context(|| {
            format!(
                "--sum {name}: no such input column in {}; it has: {}",
                path.display(),
                cols.headers[cols.input.clone()].join(", ")
            )
        })?),
        None => None,
    };
    let mut summary = Summary { kind: cols.kind, ..Summary::default() };
    let mut sums = sum.map(|c| Sums { column: c.to_string(), ..Sums::default() });
    let from_results = sum_col.is_some_and(|i| !cols.input.contains(&i));
    summary.torn = file.lines(|c, rec| {
        summary.tally.add(c);
        if let (Some(s), Some(i)) = (sums.as_mut(), sum_col) {
            match std::str::from_utf8(rec.get(i).unwrap_or(b"")).ok().and_then(parse_amount) {
                Some(v) => {
                    *s.by_category.entry(c.as_str().to_string()).or_default() += v;
                    s.total += v;
                }
                // A refund not made (not found, not refundable) has no fee.
                None if from_results && rec.get(i).is_some_and(<[u8]>::is_empty) => {}
                None => s.unparsable += 1,
            }
        }
        Ok(())
    })?;
    summary.sums = sums;
    summary.missing = file.fingerprint.as_ref().map(|fp| fp.rows.saturating_sub(summary.tally.total()));
    Ok(summary)
}

/// The columns `report --only` writes: the input's, and the id each row was
/// sent with (the results' `cancel_bill_no` or `refund_bill_no`), so that
/// running them again reuses that id instead of deriving another.
struct OnlyColumns {
    pub headers: Vec<String>,
    /// Where each written cell comes from in a results line.
    sources: Vec<usize>,
    /// The results' id column, and the written column it fills.
    id: Option<(usize, usize)>,
}

impl OnlyColumns {
    fn of(file: &Opened) -> OnlyColumns {
        let cols = &file.cols;
        let input = cols.input.clone();
        let mut headers: Vec<String> = cols.headers[input.clone()].to_vec();
        let mut sources: Vec<usize> = input.clone().collect();
        let id_name = cols.layout.id_column();
        let results_id = (input.end..cols.headers.len()).find(|&i| cols.headers[i] == id_name);
        let id = results_id.map(|from| {
            // The input's own id column (by name, or as mapped with
            // --column), else a new one.
            let mapped = file.fingerprint.iter().flat_map(|f| &f.columns).find_map(|m| {
                m.split_once('=').filter(|(field, _)| *field == id_name).map(|(_, header)| header.to_string())
            });
            let name = mapped.as_deref().unwrap_or(id_name);
            match headers.iter().position(|h| h.eq_ignore_ascii_case(name)) {
                Some(at) => (from, at),
                None => {
                    headers.push(id_name.into());
                    sources.push(from);
                    (from, headers.len() - 1)
                }
            }
        });
        OnlyColumns { headers, sources, id }
    }

    /// The written cells of one results line (as stored: guarded).
    fn cells<'r>(&self, rec: &'r csv::ByteRecord) -> impl Iterator<Item = &'r str> + use<'_, 'r> {
        let text = |i: usize| std::str::from_utf8(rec.get(i).unwrap_or(b"")).unwrap_or("");
        self.sources.iter().enumerate().map(move |(at, &from)| match self.id {
            // The recorded id wins over the input's cell: it is what was sent.
            Some((id, to)) if to == at && !text(id).is_empty() => text(id),
            _ => text(from),
        })
    }
}

/// Writes the input columns of rows in `categories` as a CSV that `run` takes
/// back (pass-through cells un-guarded, results columns dropped but the id
/// each row was sent with); with `bom`, for Excel: a UTF-8 byte-order mark
/// first, and cells (the header too) left guarded.
pub fn write_only(
    path: &Path,
    categories: &[Category],
    bom: bool,
    mut out: impl std::io::Write,
) -> anyhow::Result<u64> {
    let mut file = open(path)?;
    let only = OnlyColumns::of(&file);
    if bom {
        out.write_all("\u{feff}".as_bytes())?;
    }
    let mut w = csv::Writer::from_writer(out);
    // For Excel, cells stay guarded as in the results file (and the header
    // is guarded too): a double-click must not run a formula.
    let guarded = |h: &str| if bom { crate::results::output::guard(h).into_owned() } else { h.to_string() };
    w.write_record(only.headers.iter().map(|h| guarded(h)))?;
    let mut n = 0;
    file.lines(|c, rec| {
        if categories.contains(&c) {
            w.write_record(only.cells(rec).map(|cell| if bom { cell } else { unguard(cell) }))?;
            n += 1;
        }
        Ok(())
    })?;
    w.flush()?;
    Ok(n)
}
