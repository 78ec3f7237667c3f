//! `--resume`: the run's fingerprint beside the results file, and reading an
//! existing results file back to decide which rows are done.
//!
//! "Done" comes from the results file itself, keyed by the `row` column, never
//! from a position: rows finish out of order. A torn last line (kill -9, power
//! cut) is dropped and its row sent again, which is safe because a repeated
//! cancel answers 90015.

use crate::input::Header;
use crate::results::output::{ends_with_newline, header_row, read_results, Layout, LineShape};
use crate::results::tally::Tally;
use anyhow::{bail, Context as _};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub use crate::results::fingerprint::{fingerprint_path, Fingerprint};

/// Syncs a directory so a rename in it survives a power cut.
fn sync_dir(path: &Path) {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Moves a written and synced temp file over `path` (atomic on POSIX).
fn commit(tmp: &Path, path: &Path) -> anyhow::Result<()> {
    std::fs::rename(tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    sync_dir(path);
    Ok(())
}

pub fn write_fingerprint(output: &Path, fp: &Fingerprint) -> anyhow::Result<()> {
    let path = fingerprint_path(output);
    let tmp = tmp_path(&path);
    let mut f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(fp)?.as_bytes())?;
    f.sync_all()?;
    commit(&tmp, &path)
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
    if !diffs.is_empty() && !force {
        bail!(
            "refusing to resume {}: {}. Resume with the original input and settings, or choose a new -o \
             (--force-resume overrides this check)",
            output.display(),
            diffs.join("; ")
        );
    }
    Ok(diffs)
}

/// What the existing results file says.
#[derive(Debug, Default)]
pub struct Resumed {
    /// `done[row - 1]`: the row has a final line in the file.
    pub done: Vec<bool>,
    /// Categories of the kept (final) lines.
    pub tally: Tally,
    /// Non-final lines dropped (their rows are attempted again).
    pub retried: u64,
    /// A torn last line was dropped.
    pub torn: bool,
}

/// Reads `output`, keeps its final lines, rewrites it atomically with only
/// those (streaming: nothing but a bit per row is held), and returns what it
/// found with the file reopened for appending. On failure (a full disk) the
/// results file is as it was and no temp file is left behind.
pub fn prepare(output: &Path, header: &Header, total_rows: u64) -> anyhow::Result<(Resumed, File)> {
    let found = rewrite_final_lines(output, header, total_rows);
    if found.is_err() {
        let _ = std::fs::remove_file(tmp_path(output));
    }
    let found = found?;
    let name = output.display();
    let file = std::fs::OpenOptions::new().append(true).open(output).with_context(|| format!("cannot open {name}"))?;
    Ok((found, file))
}

fn rewrite_final_lines(output: &Path, header: &Header, total_rows: u64) -> anyhow::Result<Resumed> {
    let name = output.display().to_string();
    let mut file = File::open(output).with_context(|| format!("cannot resume: cannot open {name}"))?;
    let ends_with_newline = ends_with_newline(&mut file)?;
    let layout = Layout::new(header.rules().api, false);
    let expected = header_row(header, layout);
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
    if header_complete
        && (!rdr.read_byte_record(&mut rec).with_context(|| format!("cannot read {name}"))?
            || rec.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect::<Vec<_>>() != expected)
    {
        bail!(
            "cannot resume {name}: its header is not that of a live run over this input \
             (a dry-run file, or another input?); choose a new -o"
        );
    }
    let (row_col, category_col) = layout.row_and_category(expected.len());
    let shape = LineShape { width: expected.len(), row_col, category_col, rows: Some(total_rows) };
    let tmp = tmp_path(output);
    let mut kept =
        csv::Writer::from_writer(File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?);
    kept.write_record(&expected)?;
    let mut res = Resumed { done: vec![false; total_rows as usize], ..Resumed::default() };
    if header_complete {
        let judge = |rec: &csv::ByteRecord| shape.judge(rec);
        res.torn = read_results(&mut rdr, &name, ends_with_newline, judge, |(row, category), record| {
            if !category.is_final() {
                res.retried += 1;
            } else if !std::mem::replace(&mut res.done[row as usize - 1], true) {
                res.tally.add(category);
                kept.write_byte_record(record)?;
            }
            Ok(())
        })?;
    }
    let mut f = kept.into_inner().map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    f.flush()?;
    f.sync_all()?;
    commit(&tmp, output)?;
    Ok(res)
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
            // Expected: the final rows whose whole line (with its end) fits.
            let mut end = head.len();
            let mut want = vec![false; 4];
            for (i, l) in lines.iter().enumerate() {
                end += l.len();
                if end <= cut && !l.contains("network_error") {
                    want[i] = true;
                }
            }
            assert_eq!(res.done, want, "cut at {cut}");
            let kept = std::fs::read_to_string(&path).unwrap();
            assert!(kept.starts_with(head), "cut at {cut}");
            assert_eq!(kept.matches("1700000").count(), want.iter().filter(|&&d| d).count(), "cut at {cut}");
        }
    }
}
