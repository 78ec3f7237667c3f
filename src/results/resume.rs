//! `--resume`: the run's fingerprint beside the results file, and reading an
//! existing results file back to decide which rows are done.
//!
//! "Done" comes from the results file itself, keyed by the `row` column and
//! matched to the input by the row's bill_no, never by position alone: rows
//! finish out of order, and a re-exported file may list them in another.
//! A torn last line (kill -9, power cut) is dropped and its row sent again,
//! which is safe because a repeated cancel answers 90015 (v2: the same
//! cancellation id, from the ids journal, answers 90012). Lines that are not
//! final stay in the file until the row's new line replaces them, so the
//! history of an unknown outcome is never lost.

use crate::files::Staged;
use crate::input::Header;
use crate::results::output::{ends_with_newline, header_row, read_last_lines, unguard, Layout, LineShape, Outcome};
use crate::results::tally::Tally;
use anyhow::{bail, Context as _};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

pub use crate::results::fingerprint::{fingerprint_path, Fingerprint};

pub fn write_fingerprint(output: &Path, fp: &Fingerprint) -> anyhow::Result<()> {
    let path = fingerprint_path(output);
    let mut staged = Staged::beside(&path).with_context(|| format!("cannot write {}", path.display()))?;
    staged.file().write_all(serde_json::to_string_pretty(fp)?.as_bytes())?;
    staged.replace(&path).with_context(|| format!("cannot write {}", path.display()))
}

/// Refuses to resume a results file that belongs to another input or
/// configuration, unless `force`; returns what differs. A different
/// environment is refused even with `force`: a rehearsal's or the sandbox's
/// `cancelled` lines must never become production's record, nor the reverse.
pub fn check_fingerprint(output: &Path, now: &Fingerprint, force: bool) -> anyhow::Result<Vec<String>> {
    let path = fingerprint_path(output);
    let before: Fingerprint = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if force {
                return Ok(vec![format!("{} is missing", path.display())]);
            }
            bail!(
                "{} is missing, so nothing proves {} belongs to this input and configuration; \
                 add --force-resume if you are sure",
                path.display(),
                output.display()
            );
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if before.environment != now.environment {
        bail!(
            "refusing to resume {}: it records a {} run and this is a {} run. Its lines say what happened \
             there, not here; no flag overrides this. Start the {} run with a new -o",
            output.display(),
            before.environment,
            now.environment,
            now.environment
        );
    }
    let mut diffs = Vec::new();
    if before.input_sha256 != now.input_sha256 {
        diffs.push(format!("the input file changed ({} rows then, {} now)", before.rows, now.rows));
    }
    if before.sheet != now.sheet {
        diffs.push(format!("the workbook's sheet was `{}`, now `{}` (--sheet)", before.sheet, now.sheet));
    }
    let (cols_before, cols_now) = (before.columns.join(" "), now.columns.join(" "));
    for (what, a, b) in [
        ("appid", &before.appid, &now.appid),
        ("offer_id", &before.offer_id, &now.offer_id),
        ("pf", &before.pf, &now.pf),
        ("api", &before.api, &now.api),
        ("the column mapping (--column)", &cols_before, &cols_now),
        ("--cancel-tag", &before.cancel_tag, &now.cancel_tag),
    ] {
        if a != b {
            diffs.push(format!("{what} was `{a}`, now `{b}`"));
        }
    }
    // Rows fixed since (invalid_input is final) are never sent by a resume.
    let fixed_rows = if before.input_sha256 != now.input_sha256 {
        format!(
            ". Rows fixed in the export since are final in {0} (invalid_input) and a resume never sends them: \
             take them out with `midas-cancel report {0} --only invalid_input -o fix.csv`, fix them there, and run \
             fix.csv to a new -o",
            output.display()
        )
    } else {
        String::new()
    };
    if !diffs.is_empty() && !force {
        bail!(
            "refusing to resume {}: {}. Resume with the original input and settings, or choose a new -o \
             (--force-resume overrides this check){fixed_rows}",
            output.display(),
            diffs.join("; ")
        );
    }
    if let (Some(first), false) = (diffs.first_mut(), fixed_rows.is_empty()) {
        first.push_str(&fixed_rows);
    }
    Ok(diffs)
}

/// What the existing results file says.
#[derive(Debug)]
pub struct Resumed {
    /// `done[row - 1]`: the row has a final line in the file.
    pub done: Vec<bool>,
    /// Categories of the kept (final) lines.
    pub tally: Tally,
    /// The outcome (and v2 id) of each row whose line is not final: the row
    /// is attempted again, and its new line carries this history on.
    pub unfinished: HashMap<u64, (Outcome, Option<String>)>,
    /// Per row (index row - 1): a digest of the bill_no its line records
    /// (0: no line), so each line is matched to its row by identity.
    bill_nos: Vec<u64>,
    /// A torn last line was dropped.
    pub torn: bool,
    /// The file's layout: new lines are written in it.
    pub layout: Layout,
}

impl Default for Resumed {
    fn default() -> Self {
        Resumed {
            done: Vec::new(),
            tally: Tally::default(),
            unfinished: HashMap::new(),
            bill_nos: Vec::new(),
            torn: false,
            layout: Layout::Live,
        }
    }
}

/// The digest a row's bill_no is compared by.
fn bill_no_digest(bill_no: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bill_no.as_bytes()).max(1)
}

impl Resumed {
    /// Whether the line recorded for `row` (if any) is this bill_no's: a
    /// line matched to a row by number alone would mark a re-exported file's
    /// other order done.
    pub fn same_order(&self, row: u64, bill_no: &str) -> bool {
        match self.bill_nos.get(row as usize - 1) {
            Some(&d) if d != 0 => d == bill_no_digest(bill_no),
            _ => true,
        }
    }
}

/// Reads `output`, keeps one line per row (its final line, else its last:
/// see [`read_last_lines`]), rewrites it atomically with those, and returns
/// what it found with the file reopened for appending. Nothing is dropped
/// but a torn last line and lines a later one replaced. On failure (a full
/// disk) the results file is as it was and no temp file is left behind.
pub fn prepare(output: &Path, header: &Header, total_rows: u64) -> anyhow::Result<(Resumed, File)> {
    let found = compact(output, header, total_rows)?;
    let name = output.display();
    let file = std::fs::OpenOptions::new().append(true).open(output).with_context(|| format!("cannot open {name}"))?;
    Ok((found, file))
}

/// Rewrites `output` with one line per row (see [`prepare`]); also what a
/// resumed run does when it ends, so the file holds one line per row again.
pub fn compact(output: &Path, header: &Header, total_rows: u64) -> anyhow::Result<Resumed> {
    let name = output.display().to_string();
    let mut file = File::open(output).with_context(|| format!("cannot resume: cannot open {name}"))?;
    let ends_with_newline = ends_with_newline(&mut file)?;
    let mut layout = Layout::for_header(header, false);
    let mut expected = header_row(header, layout);
    // Cut before the header line was complete: nothing was sent yet (the
    // header is synced before the first request), so nothing is recorded.
    let header_complete = {
        let mut head = Vec::new();
        (&mut file).take(1 << 20).read_to_end(&mut head)?;
        file.seek(SeekFrom::Start(0))?;
        head.contains(&b'\n')
    };
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(file);
    let mut rec = csv::ByteRecord::new();
    let found_header = match header_complete {
        true => rdr
            .read_byte_record(&mut rec)
            .with_context(|| format!("cannot read {name}"))?
            .then(|| rec.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect::<Vec<_>>()),
        false => Some(expected.clone()),
    };
    // A v2 file written before the id went into the input's own
    // cancel_bill_no column (two such columns) goes on in its own layout.
    if layout == Layout::LiveV2Inline && found_header.as_ref() == Some(&header_row(header, Layout::LiveV2)) {
        layout = Layout::LiveV2;
        expected = header_row(header, layout);
    }
    if found_header.as_ref() != Some(&expected) {
        bail!(
            "cannot resume {name}: its header is not that of a live run over this input \
             (a dry-run file, or another input?); choose a new -o"
        );
    }
    let (row_col, category_col) = layout.row_and_category(expected.len());
    let shape = LineShape { width: expected.len(), row_col, category_col, rows: Some(total_rows) };
    let bill_no_col = bill_no_column(header);
    let mut staged = Staged::beside(output).with_context(|| format!("cannot write beside {name}"))?;
    let mut kept = csv::Writer::from_writer(staged.file());
    kept.write_record(&expected)?;
    let rows = total_rows as usize;
    let mut res = Resumed { done: vec![false; rows], bill_nos: vec![0; rows], layout, ..Resumed::default() };
    if header_complete {
        res.torn = read_last_lines(&mut rdr, &name, ends_with_newline, &shape, |row, category, record| {
            let i = row as usize - 1;
            if category.is_final() {
                res.done[i] = true;
                res.tally.add(category);
            } else {
                res.unfinished.insert(row, layout.recorded(record));
            }
            if bill_no_col.iter().any(Option::is_some) {
                res.bill_nos[i] = bill_no_digest(&recorded_order(&bill_no_col, |c| record.get(c)));
            }
            kept.write_byte_record(record)?;
            Ok(())
        })?;
    }
    kept.flush()?;
    drop(kept);
    staged.replace(output).with_context(|| format!("cannot replace {name}"))?;
    Ok(res)
}

/// Where the order's id is in a results line (the input's columns come
/// first, session_key left out): its bill_no, and the other id an API may
/// take instead (xpay-refund's wx_order_id).
fn bill_no_column(header: &Header) -> [Option<usize>; 2] {
    let at = |field| {
        let col = header.column(field)?;
        header.output_columns().position(|(i, _)| i == col)
    };
    [at(crate::input::Field::BillNo), header.rules().api.input().alt_order.and_then(at)]
}

/// The order a results line records, as [`Header::order_cell`] reads it
/// from the input: the bill_no, else the other id.
fn recorded_order<R: AsRef<[u8]>>(cols: &[Option<usize>; 2], cell_of: impl Fn(usize) -> Option<R>) -> String {
    cols.iter()
        .flatten()
        .map(|&c| {
            let cell = cell_of(c).map(|b| String::from_utf8_lossy(b.as_ref()).into_owned()).unwrap_or_default();
            crate::input::trim(unguard(&cell)).to_string()
        })
        .find(|v| !v.is_empty())
        .unwrap_or_default()
}

/// The order the results file records for `row`, for a message.
pub fn recorded_bill_no(output: &Path, header: &Header, row: u64) -> Option<String> {
    let bill_no_col = bill_no_column(header);
    let layout = Layout::for_header(header, false);
    let (row_col, _) = layout.row_and_category(header_row(header, layout).len());
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_path(output).ok()?;
    let want = row.to_string();
    rdr.records()
        .filter_map(Result::ok)
        .find(|r| r.get(row_col) == Some(want.as_str()))
        .map(|r| recorded_order(&bill_no_col, |c| r.get(c).map(str::to_string)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Header;

    /// Every kill point: a results file cut at any byte keeps exactly the
    /// final lines that were completely written, and never fails.
    #[test]
    fn every_cut_of_a_results_file_resumes() {
        let header = Header::resolve(
            "t",
            &csv::StringRecord::from(vec!["bill_no", "openid", "zone_id", "note"]),
            &[],
            &Default::default(),
        )
        .unwrap();
        let lines = [
            "B1,o1,1,plain,1,cancelled,0,ok,1,1700000000\n",
            "B2,o2,1,\"two\nlines, comma\",2,network_error,,no usable answer,5,1700000001\n",
            "B3,o3,1,,3,already_returned,90015,returned,1,1700000002\n",
            "B4,o4,1,\"quote \"\"x\"\"\",4,cancelled,0,ok,1,1700000003\n",
        ];
        let head = "bill_no,openid,zone_id,note,row,category,errcode,errmsg,attempts,ts\n";
        let full = format!("{head}{}", lines.concat());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        for cut in 0..=full.len() {
            std::fs::write(&path, &full.as_bytes()[..cut]).unwrap();
            let (res, _) = prepare(&path, &header, 4).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            // Expected: the final rows whose whole line (with its end) fits;
            // every whole line is kept, the unfinished one with its history.
            let mut end = head.len();
            let (mut want, mut whole) = (vec![false; 4], 0);
            for (i, l) in lines.iter().enumerate() {
                end += l.len();
                if end <= cut {
                    whole += 1;
                    want[i] = !l.contains("network_error");
                }
            }
            assert_eq!(res.done, want, "cut at {cut}");
            assert_eq!(res.unfinished.len(), whole - want.iter().filter(|&&d| d).count(), "cut at {cut}");
            let kept = std::fs::read_to_string(&path).unwrap();
            assert!(kept.starts_with(head), "cut at {cut}");
            assert_eq!(kept.matches("1700000").count(), whole, "cut at {cut}");
        }
    }

    /// A row's later line replaces its earlier unfinished one; a final line
    /// is never replaced; the earlier outcome is kept as the row's history.
    #[test]
    fn a_later_line_replaces_an_unfinished_one() {
        let header = Header::resolve(
            "t",
            &csv::StringRecord::from(vec!["bill_no", "openid", "zone_id"]),
            &[],
            &Default::default(),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        std::fs::write(
            &path,
            "bill_no,openid,zone_id,row,category,errcode,errmsg,attempts,ts\n\
             B1,o1,1,1,network_error,,timeout,5,1700000000\n\
             B2,o2,1,2,system_busy,-1,busy,5,1700000001\n\
             B1,o1,1,1,cancelled,0,ok,6,1700000002\n",
        )
        .unwrap();
        let (res, _) = prepare(&path, &header, 2).unwrap();
        assert_eq!(res.done, [true, false]);
        let (earlier, _) = &res.unfinished[&2];
        assert_eq!(
            (earlier.category, earlier.attempts, earlier.errcode),
            (crate::category::Category::SystemBusy, 5, Some(-1))
        );
        assert!(res.same_order(1, "B1") && !res.same_order(1, "B2") && res.same_order(2, "B2"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(!text.contains("network_error"), "{text}");
    }
}
