//! The ids journal, `OUTPUT.ids.csv`: one id per operation, written ahead
//! (SPEC "Behaviour under stress").
//!
//! A cancellation id (v2) is what makes a cancel idempotent at WeChat: the
//! same id twice answers "already processed", a second id cancels the same
//! deduction again. Deriving the id afresh in every run is how money went
//! out twice: an amount edited before `--resume`, a tag changed with
//! `--force-resume`. So the id of every row is appended here, and synced,
//! before the row's first request leaves; from then on a row whose bill_no,
//! amount, tag or id no longer matches what was recorded is refused, never
//! given a second id. Rows are recorded in groups (one sync per group) by
//! the feeder, before it hands them to the workers.
//!
//! The file is CSV, `row,bill_no,amount,cancel_tag,cancel_bill_no`, one line
//! per row sent, for people too: it says which id went out for which row.

use anyhow::{bail, Context as _};
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

const HEADER: [&str; 5] = ["row", "bill_no", "amount", "cancel_tag", "cancel_bill_no"];

/// `OUTPUT.ids.csv`, beside the results file.
pub fn journal_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".ids.csv");
    PathBuf::from(name)
}

/// Why the journal at `output`'s name is never replaced: it records what an
/// earlier run into that name sent.
pub fn taken(output: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} already exists: it records the cancellation ids an earlier run into {} sent, and is never replaced. \
         Continue that run with --resume, or choose another -o name",
        journal_path(output).display(),
        output.display()
    )
}

/// What is recorded for one row: the operation and its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub row: u64,
    pub bill_no: &'a str,
    /// The amount as sent (`None`: all that is left).
    pub amount: Option<u64>,
    pub tag: &'a str,
    pub id: &'a str,
}

impl Entry<'_> {
    fn digest(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut digits = itoa::Buffer::new();
        let amount = self.amount.map_or("", |a| digits.format(a));
        for part in [self.bill_no, amount, self.tag, self.id] {
            h.update(part.as_bytes());
            h.update(&[0]);
        }
        // 0 marks "nothing recorded".
        h.digest().max(1)
    }
}

/// The journal of one results file, open for appending.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Per row (index row - 1): the digest of its entry (0: none) and where
    /// its line starts, to quote it when a row no longer matches.
    recorded: Vec<(u64, u64)>,
    len: u64,
}

impl Journal {
    /// A new journal for a fresh results file. One that exists already
    /// belongs to an earlier run into this name and is never replaced.
    pub fn create(output: &Path) -> anyhow::Result<Journal> {
        let path = journal_path(output);
        let mut file = crate::files::create_new(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => taken(output),
            _ => anyhow::anyhow!("cannot create {}: {e}", path.display()),
        })?;
        let mut head = csv::Writer::from_writer(Vec::new());
        head.write_record(HEADER)?;
        let head = head.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
        file.write_all(&head)?;
        file.sync_all().with_context(|| format!("cannot sync {}", path.display()))?;
        crate::files::sync_dir(&path);
        Ok(Journal { file, path, recorded: Vec::new(), len: head.len() as u64 })
    }

    /// The journal of a results file being resumed: read back (a torn last
    /// line, never synced and so never sent, is cut off), or created when
    /// the file has none (an earlier version, or v1 resumed as v2).
    pub fn open(output: &Path) -> anyhow::Result<Journal> {
        let path = journal_path(output);
        let opened = std::fs::OpenOptions::new().read(true).append(true).custom_flags_nofollow().open(&path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Journal::create(output),
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        anyhow::ensure!(
            file.metadata()?.is_file(),
            "{} is not a regular file: move it away, then resume",
            path.display()
        );
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            file.set_len(whole as u64)?;
            file.sync_all()?;
        }
        let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(&bytes[..whole]);
        let name = path.display().to_string();
        let headers = rdr.headers().with_context(|| format!("cannot read {name}"))?.clone();
        if whole > 0 && headers.iter().collect::<Vec<_>>() != HEADER {
            bail!("{name} is not a midas-cancel ids journal (its header is not {}): move it away", HEADER.join(","));
        }
        let mut recorded = Vec::new();
        let mut rec = csv::StringRecord::new();
        loop {
            let at = rdr.position().byte();
            if !rdr.read_record(&mut rec).with_context(|| format!("{name} is damaged"))? {
                break;
            }
            let line = rec.position().map_or(0, |p| p.line());
            let row: u64 = match (rec.len(), rec[0].parse()) {
                (5, Ok(r)) if r > 0 => r,
                _ => bail!("{name} line {line} is damaged; move the file away, or repair that line"),
            };
            let amount = match &rec[2] {
                "" => None,
                a => Some(a.parse().map_err(|_| anyhow::anyhow!("{name} line {line} has a damaged amount"))?),
            };
            let entry = Entry { row, bill_no: &rec[1], amount, tag: &rec[3], id: &rec[4] };
            let i = row as usize - 1;
            if recorded.len() <= i {
                recorded.resize(i + 1, (0, 0));
            }
            // The first id recorded for a row is its id.
            if recorded[i].0 == 0 {
                recorded[i] = (entry.digest(), at);
            }
        }
        file.seek(SeekFrom::End(0))?;
        Ok(Journal { file, path, recorded, len: whole as u64 })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `row` has an id recorded.
    pub fn has(&self, row: u64) -> bool {
        self.recorded.get(row as usize - 1).is_some_and(|r| r.0 != 0)
    }

    /// Checks a row about to be sent against what was recorded for it:
    /// `Ok` when nothing was, or the very same; else a message naming what
    /// changed.
    pub fn check(&self, entry: &Entry<'_>) -> anyhow::Result<Result<(), String>> {
        let Some(&(digest, at)) = self.recorded.get(entry.row as usize - 1).filter(|r| r.0 != 0) else {
            return Ok(Ok(()));
        };
        if digest == entry.digest() {
            return Ok(Ok(()));
        }
        let was = self.line_at(at)?;
        let get = |i: usize| was.get(i).unwrap_or("").to_string();
        let (bill_no, amount, tag, id) = (get(1), get(2), get(3), get(4));
        let mut changed = Vec::new();
        if bill_no != entry.bill_no {
            changed.push(format!("bill_no was `{bill_no}`, now `{}`", entry.bill_no));
        }
        let now = entry.amount.map(|a| a.to_string()).unwrap_or_default();
        if amount != now {
            changed.push(format!("amount was `{amount}`, now `{now}`"));
        }
        if tag != entry.tag {
            changed.push(format!("--cancel-tag was `{tag}`, now `{}`", entry.tag));
        }
        if id != entry.id && changed.is_empty() {
            changed.push(format!("its cancel_bill_no was `{id}`, now `{}`", entry.id));
        }
        Ok(Err(format!(
            "row {}: cancellation id `{id}` was recorded for it and sent; since then {}",
            entry.row,
            changed.join(", ")
        )))
    }

    fn line_at(&self, at: u64) -> anyhow::Result<csv::StringRecord> {
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(at))?;
        let mut rdr = csv::ReaderBuilder::new().has_headers(false).from_reader(f);
        let mut rec = csv::StringRecord::new();
        rdr.read_record(&mut rec)?;
        Ok(rec)
    }

    /// Appends the entries of rows not yet recorded and syncs them: when
    /// this returns, their ids are on disk and the rows may be sent.
    pub fn record<'a>(&mut self, entries: impl IntoIterator<Item = Entry<'a>>) -> anyhow::Result<()> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut added = Vec::new();
        for e in entries {
            if self.has(e.row) {
                continue;
            }
            let at = self.len + w.get_ref().len() as u64;
            let mut digits = itoa::Buffer::new();
            let amount = e.amount.map(|a| a.to_string()).unwrap_or_default();
            w.write_record([digits.format(e.row), e.bill_no, &amount, e.tag, e.id])?;
            w.flush()?;
            added.push((e.row, e.digest(), at));
        }
        if added.is_empty() {
            return Ok(());
        }
        let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
        let name = self.path.display();
        self.file.write_all(&bytes).with_context(|| format!("cannot write {name}"))?;
        self.file.sync_data().with_context(|| format!("cannot sync {name}"))?;
        self.len += bytes.len() as u64;
        for (row, digest, at) in added {
            let i = row as usize - 1;
            if self.recorded.len() <= i {
                self.recorded.resize(i + 1, (0, 0));
            }
            self.recorded[i] = (digest, at);
        }
        Ok(())
    }
}

/// `O_NOFOLLOW` for the journal: a symlink planted at its name is refused
/// rather than followed into someone else's file.
trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt as _;
        self.custom_flags(libc::O_NOFOLLOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(row: u64, amount: &str, id: &'a str) -> Entry<'a> {
        Entry { row, bill_no: "P1", amount: Some(amount.parse().unwrap()), tag: "", id }
    }

    #[test]
    fn an_id_once_recorded_is_the_rows_id() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.csv");
        let mut j = Journal::create(&out).unwrap();
        j.record([entry(2, "60", "mcA")]).unwrap();
        drop(j);
        let j = Journal::open(&out).unwrap();
        assert!(j.has(2) && !j.has(1));
        assert_eq!(j.check(&entry(2, "60", "mcA")).unwrap(), Ok(()));
        assert_eq!(j.check(&entry(1, "50", "mcB")).unwrap(), Ok(()), "row 1 has nothing recorded");
        let e = j.check(&entry(2, "50", "mcB")).unwrap().unwrap_err();
        assert!(e.contains("mcA") && e.contains("amount was `60`, now `50`"), "{e}");
        assert!(Journal::create(&out).unwrap_err().to_string().contains("already exists"));
    }

    #[test]
    fn a_torn_last_line_was_never_sent_and_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.csv");
        let mut j = Journal::create(&out).unwrap();
        j.record([entry(1, "60", "mcA")]).unwrap();
        drop(j);
        let path = journal_path(&out);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("2,P2,7");
        std::fs::write(&path, &text).unwrap();
        let mut j = Journal::open(&out).unwrap();
        assert!(j.has(1) && !j.has(2));
        j.record([entry(2, "70", "mcC")]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("1,P1,60,,mcA\n2,P1,70,,mcC\n"), "{text}");
    }
}
