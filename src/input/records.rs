//! Records with their places: CSV records streamed with the line each starts
//! on (right for CRLF, bare CR, quoted newlines), workbook rows with their
//! spreadsheet row numbers, blank ones skipped.

use super::decode::CountingReader;
use super::header::{ColumnMapping, Header};
use super::{workbook, Field, Input, InputError, Rules};
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

impl Input {
    /// Starts a streaming pass over the records. `progress` counts raw bytes read.
    pub fn rows(
        &self,
        mapping: &[ColumnMapping],
        rules: &Rules,
        progress: Option<Arc<AtomicU64>>,
    ) -> Result<Rows, InputError> {
        if let Some(sheet) = &self.sheet {
            return self.sheet_rows(sheet, mapping, rules, progress);
        }
        let mut f = self.file.try_clone().map_err(|e| self.io_err(e))?;
        f.seek(SeekFrom::Start(self.bom_len)).map_err(|e| self.io_err(e))?;
        let counted = CountingReader { inner: f, count: progress };
        let decoded: Box<dyn Read + Send> = if self.encoding == encoding_rs::UTF_8 {
            Box::new(counted)
        } else {
            Box::new(encoding_rs_io::DecodeReaderBytesBuilder::new().encoding(Some(self.encoding)).build(counted))
        };
        // Line numbers come from the line breaks as they stream past (the
        // stream the CSV reader sees, so its byte offsets apply): the CSV
        // reader's own count misses `\r\n` and bare `\r` line ends.
        let lines = Arc::new(Mutex::new(LineStarts::default()));
        let reader: Box<dyn Read + Send> = Box::new(LineTracking::new(decoded, lines.clone()));
        let mut csv =
            csv::ReaderBuilder::new().has_headers(false).flexible(true).buffer_capacity(1 << 16).from_reader(reader);
        let mut first = csv::StringRecord::new();
        // Blank lines before the header are skipped like any other.
        loop {
            let more = csv.read_record(&mut first).map_err(|e| csv_err(&self.display, &lines, &e))?;
            if !more {
                return Err(InputError::Empty { path: self.display.clone() });
            }
            if !is_blank(&first) {
                break;
            }
        }
        let header = Header::resolve(&self.display, &first, mapping, rules)?;
        Ok(Rows { source: Source::Csv { csv, lines }, header, display: self.display.clone(), row: 0 })
    }

    /// [`Input::rows`] of a workbook's sheet: the first row that is not
    /// blank is the header; it ends at its last named column.
    fn sheet_rows(
        &self,
        sheet: &Arc<workbook::Sheet>,
        mapping: &[ColumnMapping],
        rules: &Rules,
        progress: Option<Arc<AtomicU64>>,
    ) -> Result<Rows, InputError> {
        let mut rows = sheet.rows();
        let mut first = csv::StringRecord::new();
        loop {
            let Some(row) = rows.next_row() else {
                let others = sheet.others.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>();
                let message = match others.is_empty() {
                    true => format!("sheet `{}` is empty: it needs a header row naming the columns", sheet.name),
                    false => format!(
                        "sheet `{}` is empty; choose the sheet with the orders with --sheet NAME (the others: {})",
                        sheet.name,
                        others.join(", ")
                    ),
                };
                return Err(InputError::Workbook { path: self.display.clone(), message });
            };
            if row.is_blank() {
                continue;
            }
            row.texts(&mut first);
            let named = first.iter().enumerate().filter(|(_, c)| !c.trim().is_empty()).last().map_or(0, |(i, _)| i + 1);
            first.truncate(named);
            break;
        }
        let mut header = Header::resolve(&self.display, &first, mapping, rules)?;
        header.sheet = Some(Arc::from(sheet.name.as_str()));
        let fields = (0..header.len()).map(|i| header.field_of(i)).collect();
        if let Some(p) = &progress {
            p.fetch_add(rows.consumed() as u64, Ordering::Relaxed);
        }
        let source = Source::Sheet { rows, fields, progress };
        Ok(Rows { source, header, display: self.display.clone(), row: 0 })
    }
}

/// A CSV error, on the line where it was found.
pub(super) fn csv_err(path: &str, lines: &Mutex<LineStarts>, e: &csv::Error) -> InputError {
    let line = e.position().map_or(0, |p| lock(lines).line_of(p.byte()));
    // csv's message repeats its own (CR-blind) line number; ours is the one given.
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "a field is not valid text in this encoding".to_string(),
        _ => e.to_string(),
    };
    InputError::Csv { path: path.to_string(), line, message }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the physical lines of a stream start: after `\n`, `\r\n` (once)
/// or a bare `\r`. Offsets are dropped once the reader has passed them, so
/// only the read-ahead is held.
#[derive(Default)]
pub(super) struct LineStarts {
    starts: std::collections::VecDeque<u64>,
    /// Line starts already dropped.
    passed: u64,
}

impl LineStarts {
    /// The 1-based line of the byte at `offset`. Offsets must not decrease.
    pub(super) fn line_of(&mut self, offset: u64) -> u64 {
        while self.starts.front().is_some_and(|&s| s <= offset) {
            self.starts.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }
}

/// A reader that notes where lines start in what passes through it. A new
/// line starts right after a `\r`, and right after a `\n` that does not
/// follow a `\r`: so `\r\n` counts once, and its line starts *at* the
/// `\n`, which is where the CSV reader places the next record's start.
pub(super) struct LineTracking<R> {
    inner: R,
    pos: u64,
    /// The last byte read was a `\r`.
    after_cr: bool,
    lines: Arc<Mutex<LineStarts>>,
}

impl<R> LineTracking<R> {
    pub(super) fn new(inner: R, lines: Arc<Mutex<LineStarts>>) -> Self {
        LineTracking { inner, pos: 0, after_cr: false, lines }
    }
}

impl<R: Read> Read for LineTracking<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let chunk = &buf[..n];
        let mut lines = lock(&self.lines);
        for i in memchr::memchr2_iter(b'\r', b'\n', chunk) {
            let follows_cr = if i == 0 { self.after_cr } else { chunk[i - 1] == b'\r' };
            if chunk[i] == b'\r' || !follows_cr {
                lines.starts.push_back(self.pos + i as u64 + 1);
            }
        }
        if let Some(&last) = chunk.last() {
            self.after_cr = last == b'\r';
        }
        self.pos += n as u64;
        Ok(n)
    }
}

pub(super) fn is_blank(rec: &csv::StringRecord) -> bool {
    rec.iter().all(|f| f.trim().is_empty())
}

/// Records of an input, after the header; blank lines are skipped.
pub struct Rows {
    source: Source,
    header: Header,
    display: String,
    row: u64,
}

/// Where the records come from.
pub(super) enum Source {
    Csv {
        csv: csv::Reader<Box<dyn Read + Send>>,
        lines: Arc<Mutex<LineStarts>>,
    },
    Sheet {
        rows: workbook::SheetRows,
        /// The API field of each column, if any.
        fields: Vec<Option<Field>>,
        /// Counts rows read (a sheet's size is its rows).
        progress: Option<Arc<AtomicU64>>,
    },
}

/// One data row as read: its 1-based row number, its line in the file (a
/// workbook: its spreadsheet row) and cells.
#[derive(Clone, Debug, Default)]
pub struct RawRow {
    pub row: u64,
    pub line: u64,
    pub record: csv::StringRecord,
    /// A workbook row: why a cell in an API column cannot be used (a number
    /// that is not an exact id, a date, an error, a formula), with its
    /// address. Such a row is `invalid_input`.
    pub hazard: Option<String>,
    /// A workbook row the person does not see (filtered out, or hidden by
    /// hand): never sent, reported `invalid_input`.
    pub hidden: bool,
}

/// A reusable batch of rows: the records keep their allocations between
/// fills, so the hot path of a large dry run does not allocate per row.
#[derive(Default)]
pub struct RowBatch {
    rows: Vec<RawRow>,
    len: usize,
}

impl RowBatch {
    pub fn rows(&self) -> &[RawRow] {
        &self.rows[..self.len]
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Rows {
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Reads the next data row into `raw` (blank rows skipped); returns
    /// false at the end.
    fn read_row(&mut self, raw: &mut RawRow) -> Result<bool, InputError> {
        let width = self.header.len();
        loop {
            let line = match &mut self.source {
                Source::Csv { csv, lines } => match csv.read_record(&mut raw.record) {
                    Ok(false) => return Ok(false),
                    Ok(true) if is_blank(&raw.record) => continue,
                    Ok(true) => {
                        (raw.hazard, raw.hidden) = (None, false);
                        raw.record.position().map_or(0, |p| lock(lines).line_of(p.byte()))
                    }
                    Err(e) => return Err(csv_err(&self.display, lines, &e)),
                },
                Source::Sheet { rows, fields, progress } => {
                    let Some(row) = rows.next_row() else { return Ok(false) };
                    if let Some(p) = progress {
                        p.fetch_add(1, Ordering::Relaxed);
                    }
                    if row.is_blank() {
                        continue;
                    }
                    raw.hazard = row.read_into(width, fields, &mut raw.record);
                    raw.hidden = row.is_hidden();
                    row.number
                }
            };
            self.row += 1;
            (raw.row, raw.line) = (self.row, line);
            return Ok(true);
        }
    }

    /// Refills `batch` with up to `max` rows; an empty batch means the end.
    pub fn fill(&mut self, batch: &mut RowBatch, max: usize) -> Result<(), InputError> {
        batch.len = 0;
        while batch.len < max {
            if batch.len == batch.rows.len() {
                batch.rows.push(RawRow::default());
            }
            if !self.read_row(&mut batch.rows[batch.len])? {
                break;
            }
            batch.len += 1;
        }
        Ok(())
    }
}

impl Iterator for Rows {
    type Item = Result<RawRow, InputError>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut raw = RawRow::default();
        self.read_row(&mut raw).map(|more| more.then_some(raw)).transpose()
    }
}
