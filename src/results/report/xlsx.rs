//! Workbooks for finance (`report --xlsx`, `report --only -o FILE.xlsx`) and
//! CSV that Excel opens right (`--excel-csv`). The results CSV stays the
//! journal; these are read-only views of it, written with rust_xlsxwriter.
//!
//! Every cell is written as text: no formula can run and no guard quote is
//! needed, so cells are un-guarded first; a bill_no stays its digits.

use super::{open, Kind, Opened, Summary};
use crate::category::Category;
use crate::results::output::unguard;
use anyhow::Context as _;
use rust_xlsxwriter::{ExcelDateTime, Format, Workbook, Worksheet};
use std::borrow::Cow;
use std::path::Path;

/// Rows a worksheet holds, its header row included.
const SHEET_ROWS: usize = 1_048_576;
/// Columns a worksheet holds.
const SHEET_COLUMNS: usize = 16_384;
/// Column widths, in characters.
const MIN_WIDTH: usize = 6;
const MAX_WIDTH: usize = 60;

/// The lines of a results file, in input row order (held as the compact
/// records the reader gives, about a line's bytes each).
fn lines_in_row_order(file: &mut Opened, keep: impl Fn(Category) -> bool) -> anyhow::Result<Vec<csv::ByteRecord>> {
    let row_col = file.cols.row;
    let mut lines = Vec::new();
    file.lines(|category, rec| {
        if keep(category) {
            let row = std::str::from_utf8(rec.get(row_col).unwrap_or(b"")).ok().and_then(|r| r.parse().ok());
            lines.push((row.unwrap_or(u64::MAX), rec.clone()));
        }
        Ok(())
    })?;
    // A live run writes lines as rows finish; finance reads them in input order.
    lines.sort_by_key(|(row, _)| *row);
    if lines.len() >= SHEET_ROWS {
        anyhow::bail!(
            "{} rows do not fit in one worksheet (at most {}); use the CSV, or narrow with --only",
            lines.len(),
            SHEET_ROWS - 1
        );
    }
    Ok(lines.into_iter().map(|(_, rec)| rec).collect())
}

/// A results cell as text, its formula guard undone.
fn results_cell(rec: &csv::ByteRecord, i: usize) -> Cow<'_, str> {
    match String::from_utf8_lossy(rec.get(i).unwrap_or(b"")) {
        Cow::Borrowed(s) => Cow::Borrowed(unguard(s)),
        Cow::Owned(s) => Cow::Owned(unguard(&s).to_string()),
    }
}

/// Writes a header row and `rows` rows of text cells (`cell(row, column)`)
/// to `sheet`: header frozen, autofilter on, each column as wide as its
/// widest cell (within bounds). Widths are measured first, so that a sheet
/// in constant-memory mode gets them before its rows.
fn write_table<'a>(
    sheet: &mut Worksheet,
    headers: &[String],
    rows: usize,
    numeric: &[usize],
    cell: impl Fn(usize, usize) -> Cow<'a, str>,
) -> anyhow::Result<()> {
    if headers.len() > SHEET_COLUMNS {
        anyhow::bail!(
            "{} columns do not fit in a worksheet (at most {SHEET_COLUMNS}); use the results CSV",
            headers.len()
        );
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| display_width(h)).collect();
    for r in 0..rows {
        for (c, w) in widths.iter_mut().enumerate() {
            *w = (*w).max(display_width(&cell(r, c)));
        }
    }
    for (c, w) in widths.iter().enumerate() {
        sheet.set_column_width(col(c), w.clamp(&MIN_WIDTH, &MAX_WIDTH).to_owned() as f64 + 1.0)?;
    }
    sheet.set_freeze_panes(1, 0)?;
    if !headers.is_empty() {
        sheet.autofilter(0, 0, rows as u32, col(headers.len() - 1))?;
    }
    // Printed: landscape, as wide as one page, the header on every page.
    sheet.set_landscape();
    sheet.set_print_fit_to_pages(1, 0);
    sheet.set_repeat_rows(0, 0)?;
    let bold = Format::new().set_bold();
    for (c, h) in headers.iter().enumerate() {
        sheet.write_string_with_format(0, col(c), h, &bold)?;
    }
    for r in 0..rows {
        for c in 0..headers.len() {
            let text = cell(r, c);
            let row = r as u32 + 1;
            // Counts and sums are number cells, so that SUM totals them;
            // everything else (ids above all) stays text.
            let number = numeric.contains(&c).then(|| number_of(&text)).flatten();
            let written = match number {
                Some(n) => sheet.write_number(row, col(c), n).map(|_| ()),
                None if text.is_empty() => Ok(()),
                None => sheet.write_string(row, col(c), text).map(|_| ()),
            };
            if let Err(e) = written {
                return Err(cell_error(sheet, row, c, e));
            }
        }
    }
    Ok(())
}

/// A count or an amount as a number: plain decimal digits (a sign, a point),
/// exact in a double; anything else stays text.
fn number_of(text: &str) -> Option<f64> {
    use rust_decimal::prelude::ToPrimitive as _;
    let d: rust_decimal::Decimal = unguard(text.trim()).parse().ok()?;
    let f = d.to_f64()?;
    (f.abs() < 1e15).then_some(f)
}

/// A cell that cannot be written, named by its address.
fn cell_error(sheet: &Worksheet, row: u32, c: usize, e: rust_xlsxwriter::XlsxError) -> anyhow::Error {
    let at = format!("{}!{}", sheet.name(), rust_xlsxwriter::utility::row_col_to_cell(row, col(c)));
    match e {
        rust_xlsxwriter::XlsxError::MaxStringLengthExceeded => anyhow::anyhow!(
            "{at}: the cell is longer than the 32,767 characters a workbook cell holds; the results CSV has it whole \
             (use the CSV, or leave that column out of the export)"
        ),
        e => anyhow::anyhow!("{at}: {e}"),
    }
}

fn col(c: usize) -> u16 {
    u16::try_from(c).unwrap_or(u16::MAX)
}

/// Characters, with CJK ones counted twice (they are twice as wide).
fn display_width(s: &str) -> usize {
    s.chars().map(|c| if u32::from(c) >= 0x1100 { 2 } else { 1 }).sum()
}

/// `report RESULTS --xlsx OUT`: a Summary sheet and a Results sheet.
/// `summary` is the file's (from `report::summarize`), read once by the caller.
pub fn write_report(results: &Path, summary: &Summary, out: &mut std::fs::File) -> anyhow::Result<u64> {
    let mut file = open(results)?;
    let lines = lines_in_row_order(&mut file, |_| true)?;
    let mut book = Workbook::new();

    let mut table: Vec<Vec<String>> = Vec::new();
    let mut headers = vec!["category".to_string(), "rows".to_string()];
    if let Some(s) = &summary.sums {
        headers.push(format!("sum of {}", s.column));
    }
    headers.push("next step".to_string());
    let sum_of = |c: &str| summary.sums.as_ref().map(|s| s.by_category.get(c).copied().unwrap_or_default().to_string());
    for (c, n) in summary.tally.nonzero() {
        let mut line = vec![c.as_str().to_string(), n.to_string()];
        line.extend(sum_of(c.as_str()));
        line.push(c.advice().to_string());
        table.push(line);
    }
    let mut total = vec!["total".to_string(), summary.tally.total().to_string()];
    total.extend(summary.sums.as_ref().map(|s| s.total.to_string()));
    total.push(String::new());
    table.push(total);
    if let Some(m) = summary.missing.filter(|&m| m > 0) {
        table.push(vec!["missing".into(), m.to_string(), "not in the file yet: `--resume` sends them".into()]);
    }
    // A 0 in the sums must not read as "nothing" when cells were skipped.
    let mut notes = Vec::new();
    if let Some(s) = summary.sums.as_ref().filter(|s| s.unparsable > 0) {
        notes.push(format!("{} cell(s) of {} were not numbers and are not in the sums", s.unparsable, s.column));
    }

    let sheet = book.add_worksheet().set_name("Summary")?;
    let cell = |r: usize, c: usize| Cow::Borrowed(table[r].get(c).map_or("", String::as_str));
    // rows, and the sum when there is one.
    let numeric: Vec<usize> = if summary.sums.is_some() { vec![1, 2] } else { vec![1] };
    write_table(sheet, &headers, table.len(), &numeric, cell)?;
    let below = table.len() as u32 + 1;
    for (i, note) in notes.iter().enumerate() {
        sheet.write_string(below + i as u32, 0, note)?;
    }
    // Below the table: what the run was, one fact a row.
    let time = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    for (i, (what, value)) in about(&file, &lines, summary).into_iter().enumerate() {
        let r = below + notes.len() as u32 + 1 + i as u32;
        sheet.write_string(r, 0, what)?;
        match value {
            Fact::Text(t) => sheet.write_string(r, 1, t)?,
            Fact::Number(n) => sheet.write_number(r, 1, n as f64)?,
            Fact::Time(t) => sheet.write_datetime_with_format(r, 1, ExcelDateTime::from_timestamp(t)?, &time)?,
        };
    }
    sheet.set_column_width(0, 24)?;
    sheet.set_column_width(1, 20)?;
    let sheet = book.add_worksheet_with_constant_memory()?.set_name("Results")?;
    // The --sum column and a refund's fees are money: numbers, so that
    // finance can total them.
    let cols = &file.cols;
    let sum_col: Vec<usize> = summary
        .sums
        .as_ref()
        .and_then(|s| cols.sum_column(&s.column))
        .into_iter()
        .chain(cols.money().filter(|_| cols.layout.refunds()))
        .collect();
    write_table(sheet, &file.cols.headers, lines.len(), &sum_col, |r, c| results_cell(&lines[r], c))?;
    book.save_to_writer(out).context("cannot write the workbook")?;
    Ok(lines.len() as u64)
}

/// One fact about the run on the Summary sheet.
enum Fact {
    Text(String),
    Number(u64),
    /// A Unix time, written as a date cell (UTC).
    Time(i64),
}

/// What the Summary sheet says about the run, as (what, value).
fn about(file: &Opened, lines: &[csv::ByteRecord], summary: &Summary) -> Vec<(&'static str, Fact)> {
    let column = |name: &str| file.cols.headers.iter().rposition(|h| h == name);
    let text = |s: &str| Fact::Text(s.to_string());
    let mut about = vec![
        ("results file", text(&file.name)),
        ("kind", text(if summary.kind == Kind::DryRun { "dry run (nothing sent)" } else { "live run" })),
        ("verdict", text(summary.verdict_word())),
    ];
    if let Some(fp) = &file.fingerprint {
        about.push(("environment", text(&fp.environment)));
        about.push(("appid", text(&fp.appid)));
        if !fp.offer_id.is_empty() {
            about.push(("offer_id", text(&fp.offer_id)));
        }
        about.push(("api", text(&fp.api)));
        about.push(("input rows", Fact::Number(fp.rows)));
        if !fp.sheet.is_empty() {
            about.push(("input sheet", text(&fp.sheet)));
        }
        about.push(("input sha256", text(&fp.input_sha256)));
    }
    let ts: Vec<i64> =
        column("ts").map_or_else(Vec::new, |i| lines.iter().filter_map(|l| results_cell(l, i).parse().ok()).collect());
    if let (Some(&first), Some(&last)) = (ts.iter().min(), ts.iter().max()) {
        about.push(("first request (UTC)", Fact::Time(first)));
        about.push(("last request (UTC)", Fact::Time(last)));
    }
    if let Some(i) = column("attempts").filter(|_| summary.kind == Kind::Live) {
        let attempts: u64 = lines.iter().filter_map(|l| results_cell(l, i).parse::<u64>().ok()).sum();
        let sent = lines.iter().filter(|l| results_cell(l, i).parse::<u64>().is_ok_and(|a| a > 0)).count();
        about.push(("requests sent", Fact::Number(attempts)));
        about.push(("rows sent at least once", Fact::Number(sent as u64)));
    }
    about
}

/// `report --only CATS -o FILE.xlsx`: the input columns of those rows, in
/// input order, as a workbook `run` takes back.
pub fn write_only(results: &Path, categories: &[Category], out: &mut std::fs::File) -> anyhow::Result<u64> {
    let mut file = open(results)?;
    let only = super::OnlyColumns::of(&file);
    let lines = lines_in_row_order(&mut file, |c| categories.contains(&c))?;
    let cells: Vec<Vec<&str>> = lines.iter().map(|rec| only.cells(rec).map(unguard).collect()).collect();
    let mut book = Workbook::new();
    let sheet = book.add_worksheet_with_constant_memory()?.set_name("Orders")?;
    write_table(sheet, &only.headers, lines.len(), &[], |r, c| Cow::Borrowed(cells[r][c]))?;
    book.save_to_writer(out).context("cannot write the workbook")?;
    Ok(lines.len() as u64)
}
