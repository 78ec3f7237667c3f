//! Reading an order export: encoding detection, CSV parsing, workbooks
//! ([`workbook`]), column mapping, row validation and duplicate detection
//! (SPEC §2 Input).
//!
//! A CSV file is streamed record by record and never held in memory. Before
//! the first record is handed out, [`Input::open`] scans the raw bytes once to
//! settle the encoding, so undecodable bytes stop the run before anything is
//! produced or sent. A workbook's sheet is parsed whole when it is opened.

mod sheet_xml;
pub mod workbook;

use crate::api::{self, v2, ApiKind};
use crate::category::Category;
use crate::secret::Secret;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The order fields the input may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    BillNo,
    Openid,
    ZoneId,
    SessionKey,
    UserIp,
    PayItem,
    Pf,
    /// v2: coins to return.
    Amount,
    /// v2: the cancellation's own id (else derived, SPEC §1.5).
    CancelBillNo,
}

/// Whether an API reads a field from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
    /// Not a field of this API: a column of that name is carried through.
    Unused,
}
use Need::{Optional, Required, Unused};

/// Every field with its column name and what v1 and v2 need of it.
const FIELDS: [(Field, &str, [Need; 2]); 9] = [
    (Field::BillNo, "bill_no", [Required, Required]),
    (Field::Openid, "openid", [Required, Required]),
    (Field::ZoneId, "zone_id", [Required, Required]),
    (Field::SessionKey, "session_key", [Optional, Optional]),
    (Field::UserIp, "user_ip", [Optional, Optional]),
    (Field::PayItem, "pay_item", [Optional, Unused]),
    (Field::Pf, "pf", [Optional, Unused]),
    (Field::Amount, "amount", [Unused, Required]),
    (Field::CancelBillNo, "cancel_bill_no", [Unused, Optional]),
];

/// What validation and duplicate detection need to know of the run: the API
/// and, for v2's derived cancellation ids, the offer_id and `--cancel-tag`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub api: ApiKind,
    /// Whether the API was named (`--api`, config `api`) rather than the
    /// default: only the default gives way to "this looks like another API's
    /// export".
    pub api_named: bool,
    pub offer_id: String,
    pub cancel_tag: String,
}

impl Rules {
    /// A v2 row's cancellation id: its `cancel_bill_no` cell when given,
    /// else derived from the deduction and amount (SPEC §1.5).
    pub fn cancel_id<'a>(&self, given: Option<&'a str>, bill_no: &str, amount: &str) -> Cow<'a, str> {
        match given {
            Some(c) => Cow::Borrowed(c),
            None => Cow::Owned(v2::cancellation_id(&self.offer_id, bill_no, amount, &self.cancel_tag)),
        }
    }
}

impl FromStr for Field {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FIELDS.iter().find(|(_, name, _)| name.eq_ignore_ascii_case(s.trim())).map(|(f, _, _)| *f).ok_or_else(|| {
            let names: Vec<_> = FIELDS.iter().map(|(_, n, _)| *n).collect();
            format!("unknown field `{s}` (known: {})", names.join(", "))
        })
    }
}

/// One `--column FIELD=HEADER` mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnMapping {
    pub field: Field,
    pub header: String,
}

impl Field {
    /// The field's column name (and name in `--column`).
    pub fn name(self) -> &'static str {
        FIELDS.iter().find(|(f, _, _)| *f == self).map_or("", |(_, n, _)| n)
    }
}

impl fmt::Display for ColumnMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.field.name(), self.header)
    }
}

impl FromStr for ColumnMapping {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (field, header) =
            s.split_once('=').ok_or_else(|| format!("`{s}` is not FIELD=HEADER (for example bill_no=订单号)"))?;
        let header = header.trim();
        if header.is_empty() {
            return Err(format!("`{s}` names no header after `=`"));
        }
        Ok(ColumnMapping { field: field.parse()?, header: header.to_string() })
    }
}

/// `--encoding`: the input's character encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingName {
    #[value(name = "utf-8", alias = "utf8")]
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    Gbk,
    Gb18030,
}

/// A file the input cannot be read from; every message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    // `error`, not `source`: the message already carries the OS error, and
    // a source would print it a second time in the error chain.
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: io::Error },
    #[error(
        "cannot keep a private copy of {path} in the temp directory {tmp} (a live run sends only the rows it \
         checked, from that copy): {error}. Free some space there, or point TMPDIR at a directory with room"
    )]
    Snapshot { path: String, tmp: String, error: io::Error },
    #[error("{path} is empty: it needs a header row naming the columns bill_no, openid and zone_id")]
    Empty { path: String },
    #[error("{path} is UTF-16 text (Excel's \"Unicode Text\"); save it as \"CSV UTF-8\" (or CSV) and run again")]
    Utf16 { path: String },
    #[error(
        "{path} is not a CSV file: it is {what}. Open it in Excel (or LibreOffice) and save it as \
         \"CSV UTF-8 (Comma delimited)\", then run with that file"
    )]
    NotCsv { path: String, what: &'static str },
    #[error(
        "{path} has bytes that are not valid {tried} at line {line} (byte offset {offset}); \
         re-save the file as \"CSV UTF-8\", or name its encoding with --encoding utf-8|gbk|gb18030"
    )]
    Undecodable { path: String, tried: &'static str, line: u64, offset: u64 },
    #[error(
        "{path} is a midas-cancel results file, not an orders export (its header has the columns {columns}): \
         run it as input and finished rows would be sent again. To send some of its rows again, take them out \
         with `midas-cancel report {path} --only CATEGORY -o retry.csv` and run retry.csv"
    )]
    ResultsFile { path: String, columns: String },
    #[error(
        "{path} looks like a Virtual Payment 2.0 export (its header has the columns amount and cancel_bill_no), \
         and this run speaks the v1 API, where those columns would be carried and not sent: add --api v2 (or \
         api = \"v2\" in the config file). If it really is a v1 export, say so with --api v1"
    )]
    LooksLikeV2 { path: String },
    #[error(
        "{path} mixes encodings: it is UTF-8, but line {line} is not (byte offset {offset}; GBK pasted into a \
         UTF-8 file?). Read as one encoding, the other lines' Chinese would be garbled, so nothing is read: fix \
         that line (re-type it, or re-export the whole file as \"CSV UTF-8\")"
    )]
    MixedEncodings { path: String, line: u64, offset: u64 },
    #[error(
        "{path}: the header row lacks the required column(s) {missing}; it has: {found}. \
         Is the header row missing? Otherwise map your exporter's names, e.g. --column bill_no=订单号"
    )]
    MissingColumns { path: String, missing: String, found: String },
    #[error("{path}: columns `{first}` and `{second}` both provide {field}; keep one, or pick one with --column {field}=HEADER")]
    AmbiguousColumn { path: String, field: &'static str, first: String, second: String },
    #[error("{path}: --column {field}={header} names a header that is not in the file; it has: {found}")]
    MappedColumnMissing { path: String, field: &'static str, header: String, found: String },
    #[error(
        "{path}: --column {mapping} maps a field the {api} API does not use; remove it (or choose the other --api)"
    )]
    UnusedMapping { path: String, mapping: String, api: &'static str },
    #[error("{path} line {line}: {message}")]
    Csv { path: String, line: u64, message: String },
    #[error("{path}: {message}")]
    Workbook { path: String, message: String },
    #[error("--sheet {sheet}: {path} is a CSV file, not a workbook; leave --sheet out")]
    SheetOfCsv { path: String, sheet: String },
}

/// An order export opened for (possibly several) streaming passes.
pub struct Input {
    display: String,
    file: File,
    encoding: &'static encoding_rs::Encoding,
    bom_len: u64,
    size: u64,
    sha256: Option<String>,
    /// The sheet read, when the input is a workbook.
    sheet: Option<Arc<workbook::Sheet>>,
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Input").field("path", &self.display).field("encoding", &self.encoding.name()).finish()
    }
}

impl Input {
    /// Opens `path` (`-` for standard input) and settles its encoding.
    ///
    /// With `snapshot` (a live run), every later pass reads a private copy
    /// taken now, whose SHA-256 is the run's fingerprint: the rows sent are
    /// the rows checked, byte for byte, even if the file is appended to or
    /// edited while the run goes on. Standard input is always copied (so it
    /// can be read more than once). The copy is an unlinked temp file: it
    /// may hold session keys, and it vanishes with the process, kill -9
    /// included.
    /// A workbook (recognised by its content) is read whole; `sheet` names
    /// the sheet to read (default: the first).
    pub fn open(
        path: &Path,
        encoding: Option<EncodingName>,
        sheet: Option<&str>,
        snapshot: bool,
    ) -> Result<Input, InputError> {
        let is_stdin = path.as_os_str() == "-";
        let display = if is_stdin { "standard input".to_string() } else { path.display().to_string() };
        let io_err = |error| InputError::Io { path: display.clone(), error };
        let copy_err = |e: CopyError| match e {
            CopyError::Read(error) => InputError::Io { path: display.clone(), error },
            CopyError::Write(error) => {
                InputError::Snapshot { path: display.clone(), tmp: std::env::temp_dir().display().to_string(), error }
            }
        };
        let (file, sha256) = match (is_stdin, snapshot) {
            (true, _) => private_copy(io::stdin().lock(), snapshot).map_err(copy_err)?,
            (false, true) => private_copy(File::open(path).map_err(io_err)?, true).map_err(copy_err)?,
            (false, false) => (File::open(path).map_err(io_err)?, None),
        };
        let mut input = Input { display, file, encoding: encoding_rs::UTF_8, bom_len: 0, size: 0, sha256, sheet: None };
        let head = input.head()?;
        if workbook_magic(&head) {
            input.read_workbook(sheet)?;
            return Ok(input);
        }
        if let Some(sheet) = sheet {
            return Err(InputError::SheetOfCsv { path: input.display.clone(), sheet: sheet.to_string() });
        }
        input.scan(&head, encoding)?;
        Ok(input)
    }

    /// How the input is named in messages.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Size in bytes of the raw file, or rows of a workbook's sheet
    /// (progress is measured against it).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// What was read: the encoding of a CSV file, or the workbook's format
    /// and sheet.
    pub fn kind(&self) -> String {
        match &self.sheet {
            Some(s) => format!("{}, sheet `{}`", s.format, s.name),
            None => format!("encoding {}", self.encoding.name()),
        }
    }

    /// The sheet read, when the input is a workbook.
    pub fn sheet_name(&self) -> Option<&str> {
        self.sheet.as_deref().map(|s| s.name.as_str())
    }

    /// The file's first bytes (up to 8): what kind of file it is.
    fn head(&self) -> Result<Vec<u8>, InputError> {
        let mut head = [0u8; 8];
        let mut f = self.file.try_clone().map_err(|e| self.io_err(e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| self.io_err(e))?;
        let n = read_up_to(&mut f, &mut head).map_err(|e| self.io_err(e))?;
        Ok(head[..n].to_vec())
    }

    /// Reads the input as a workbook (its first bytes said it is one).
    fn read_workbook(&mut self, sheet: Option<&str>) -> Result<(), InputError> {
        let mut bytes = Vec::new();
        let mut f = self.file.try_clone().map_err(|e| self.io_err(e))?;
        f.seek(SeekFrom::Start(0)).and_then(|_| f.read_to_end(&mut bytes)).map_err(|e| self.io_err(e))?;
        let sheet = workbook::Sheet::read(bytes, sheet)
            .map_err(|message| InputError::Workbook { path: self.display.clone(), message })?;
        self.size = sheet.height() as u64;
        self.sheet = Some(Arc::new(sheet));
        Ok(())
    }

    /// SHA-256 of the raw bytes of the snapshot, when one was taken.
    pub fn sha256(&self) -> Option<&str> {
        self.sha256.as_deref()
    }

    fn io_err(&self, source: io::Error) -> InputError {
        InputError::Io { path: self.display.clone(), error: source }
    }

    /// One pass over the raw bytes: BOM, encoding validity, size.
    fn scan(&mut self, head: &[u8], named: Option<EncodingName>) -> Result<(), InputError> {
        if head.is_empty() {
            return Err(InputError::Empty { path: self.display.clone() });
        }
        if let Some(what) = not_csv(head) {
            return Err(InputError::NotCsv { path: self.display.clone(), what });
        }
        if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) || looks_utf16(head) {
            return Err(InputError::Utf16 { path: self.display.clone() });
        }
        let has_bom = head.starts_with(&[0xEF, 0xBB, 0xBF]);
        let candidates: &[&'static encoding_rs::Encoding] = match (named, has_bom) {
            (Some(EncodingName::Utf8), _) | (None, true) => &[encoding_rs::UTF_8],
            // GBK is a subset of GB18030 and WHATWG decodes both the same way.
            (Some(EncodingName::Gbk | EncodingName::Gb18030), _) => &[encoding_rs::GB18030],
            (None, false) => &[encoding_rs::UTF_8, encoding_rs::GB18030],
        };
        let mut last_failure = None;
        for &enc in candidates {
            match self.check_decodes(enc) {
                // Not UTF-8 as a whole, but with UTF-8 text in it: a file of
                // mixed encodings, which no single decoding reads right.
                Ok(()) if enc != encoding_rs::UTF_8 && candidates.len() > 1 => {
                    if let Some(offset) = self.mixed_utf8()? {
                        let line = self.line_at(offset)?;
                        return Err(InputError::MixedEncodings { path: self.display.clone(), line, offset });
                    }
                    self.encoding = enc;
                    self.bom_len = 0;
                    return Ok(());
                }
                Ok(()) => {
                    self.encoding = enc;
                    self.bom_len = if has_bom && enc == encoding_rs::UTF_8 { 3 } else { 0 };
                    return Ok(());
                }
                Err(e @ InputError::Undecodable { .. }) => last_failure = Some(e),
                Err(e) => return Err(e),
            }
        }
        let mut e = last_failure.expect("at least one candidate encoding");
        if let InputError::Undecodable { tried, .. } = &mut e {
            if candidates.len() > 1 {
                *tried = "UTF-8 or GBK/GB18030";
            }
        }
        Err(e)
    }

    /// Decodes the whole file without replacement; fails at the first bad byte.
    fn check_decodes(&mut self, enc: &'static encoding_rs::Encoding) -> Result<(), InputError> {
        let mut f = self.file.try_clone().map_err(|e| self.io_err(e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| self.io_err(e))?;
        let mut check: Box<ChunkCheck> =
            if enc == encoding_rs::UTF_8 { Box::new(utf8_checker()) } else { Box::new(decoder_checker(enc)) };
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| self.io_err(e))?;
            let chunk = &buf[..n];
            if let Some(at) = check(chunk, n == 0) {
                // `at` may point into bytes carried from the previous chunk.
                let offset = offset + at.min(chunk.len()) as u64;
                return Err(InputError::Undecodable {
                    path: self.display.clone(),
                    tried: if enc == encoding_rs::UTF_8 { "UTF-8" } else { "GBK/GB18030" },
                    line: self.line_at(offset)?,
                    offset,
                });
            }
            offset += n as u64;
            if n == 0 {
                break;
            }
        }
        self.size = offset;
        Ok(())
    }

    /// Where the first line that is not UTF-8 starts, when the file also has
    /// a line of UTF-8 text beyond ASCII: GBK text is almost never valid
    /// UTF-8 (its bytes rarely fall into UTF-8's lead-and-continuation
    /// pattern), so a line that is tells the file was UTF-8 to begin with.
    fn mixed_utf8(&self) -> Result<Option<u64>, InputError> {
        let mut f = self.file.try_clone().map_err(|e| self.io_err(e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| self.io_err(e))?;
        let mut reader = io::BufReader::with_capacity(1 << 20, f);
        let (mut line, mut offset) = (Vec::new(), 0u64);
        let (mut utf8_text, mut first_bad) = (false, None);
        loop {
            line.clear();
            let n = io::BufRead::read_until(&mut reader, b'\n', &mut line).map_err(|e| self.io_err(e))?;
            if n == 0 {
                break;
            }
            if !line.is_ascii() {
                match std::str::from_utf8(&line) {
                    Ok(_) => utf8_text = true,
                    Err(e) => {
                        first_bad.get_or_insert(offset + e.valid_up_to() as u64);
                    }
                }
            }
            if utf8_text && first_bad.is_some() {
                return Ok(first_bad);
            }
            offset += n as u64;
        }
        Ok(None)
    }

    /// The line of the byte at `offset`. Counted only for an error message:
    /// counting newlines on every pass was most of the cost of the scan.
    fn line_at(&self, offset: u64) -> Result<u64, InputError> {
        let mut f = self.file.try_clone().map_err(|e| self.io_err(e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| self.io_err(e))?;
        let lines = Arc::new(Mutex::new(LineStarts::default()));
        let mut tracked = LineTracking::new(f.take(offset), lines.clone());
        io::copy(&mut tracked, &mut io::sink()).map_err(|e| self.io_err(e))?;
        let line = lock(&lines).line_of(offset);
        Ok(line)
    }

    /// Warnings about the input as a whole: in a workbook, id columns with
    /// numbers in them (`0012` typed as a number is 12; nobody can tell the
    /// zeros were there, so the operator is told to look).
    pub fn warnings(&self, header: &Header) -> Vec<String> {
        let Some(sheet) = &self.sheet else { return Vec::new() };
        [Field::BillNo, Field::Openid, Field::ZoneId, Field::CancelBillNo]
            .into_iter()
            .filter_map(|field| {
                let n = sheet.numbers_in_column(header.column(field)?);
                (n > 0).then(|| {
                    format!(
                        "warning: {}: {n} cell(s) of {} are numbers, not text; ids with leading zeros (0012) have lost \
                         them (12) and would cancel the wrong orders: format the column as Text in the source and \
                         export again, unless these ids never start with 0",
                        sheet.name,
                        field.name()
                    )
                })
            })
            .collect()
    }

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
fn csv_err(path: &str, lines: &Mutex<LineStarts>, e: &csv::Error) -> InputError {
    let line = e.position().map_or(0, |p| lock(lines).line_of(p.byte()));
    // csv's message repeats its own (CR-blind) line number; ours is the one given.
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "a field is not valid text in this encoding".to_string(),
        _ => e.to_string(),
    };
    InputError::Csv { path: path.to_string(), line, message }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the physical lines of a stream start: after `\n`, `\r\n` (once)
/// or a bare `\r`. Offsets are dropped once the reader has passed them, so
/// only the read-ahead is held.
#[derive(Default)]
struct LineStarts {
    starts: std::collections::VecDeque<u64>,
    /// Line starts already dropped.
    passed: u64,
}

impl LineStarts {
    /// The 1-based line of the byte at `offset`. Offsets must not decrease.
    fn line_of(&mut self, offset: u64) -> u64 {
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
struct LineTracking<R> {
    inner: R,
    pos: u64,
    /// The last byte read was a `\r`.
    after_cr: bool,
    lines: Arc<Mutex<LineStarts>>,
}

impl<R> LineTracking<R> {
    fn new(inner: R, lines: Arc<Mutex<LineStarts>>) -> Self {
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

/// Which side of a copy failed.
enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// What a file is, judged by its first bytes, when it is a common kind that
/// is not CSV text.
fn not_csv(head: &[u8]) -> Option<&'static str> {
    let kinds: [(&[u8], &str); 3] = [
        (b"%PDF", "a PDF document"),
        (b"\x1F\x8B", "a gzip-compressed file (unpack it first)"),
        (b"{\\rtf", "an RTF document"),
    ];
    kinds.iter().find(|(magic, _)| head.starts_with(magic)).map(|(_, what)| *what)
}

/// A ZIP archive (.xlsx, .xlsb, .ods) or an OLE compound file (.xls): read
/// as a workbook, whatever the file's name.
fn workbook_magic(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04") || head.starts_with(b"\xD0\xCF\x11\xE0")
}

/// UTF-16 text without a byte-order mark: ASCII with a zero byte beside
/// every character.
fn looks_utf16(head: &[u8]) -> bool {
    head.len() >= 4 && head.chunks(2).all(|p| p.len() == 2 && ((p[0] == 0) != (p[1] == 0)))
}

/// Copies `src` into an unlinked temp file (hashing it when `hash`), and
/// returns the copy rewound with the hash.
fn private_copy(mut src: impl Read, hash: bool) -> Result<(File, Option<String>), CopyError> {
    let mut copy = tempfile::tempfile().map_err(CopyError::Write)?;
    let mut hasher = hash.then(Sha256::new);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
        io::Write::write_all(&mut copy, &buf[..n]).map_err(CopyError::Write)?;
    }
    copy.seek(SeekFrom::Start(0)).map_err(CopyError::Write)?;
    Ok((copy, hasher.map(|h| hex::encode(h.finalize()))))
}

/// Checks the next chunk of raw bytes (`true` on the last call); returns the
/// offset of the first undecodable byte in the chunk.
type ChunkCheck = dyn FnMut(&[u8], bool) -> Option<usize>;

/// A chunked UTF-8 validator: returns the offset (in the chunk) of the first
/// invalid byte. A sequence cut by the chunk boundary is carried over.
fn utf8_checker() -> impl FnMut(&[u8], bool) -> Option<usize> {
    let mut carry: Vec<u8> = Vec::new();
    move |chunk, last| {
        let mut joined;
        let data: &[u8] = if carry.is_empty() {
            chunk
        } else {
            joined = std::mem::take(&mut carry);
            joined.extend_from_slice(chunk);
            &joined
        };
        let skew = data.len() - chunk.len();
        match std::str::from_utf8(data) {
            Ok(_) => None,
            Err(e) if e.error_len().is_none() && !last => {
                carry = data[e.valid_up_to()..].to_vec();
                None
            }
            Err(e) => Some(e.valid_up_to().saturating_sub(skew)),
        }
    }
}

/// A chunked decoder check for other encodings (GB18030).
fn decoder_checker(enc: &'static encoding_rs::Encoding) -> impl FnMut(&[u8], bool) -> Option<usize> {
    let mut decoder = enc.new_decoder_without_bom_handling();
    let mut out = vec![0u8; 1 << 16];
    move |mut chunk, last| {
        let mut consumed = 0;
        loop {
            let (result, read, _) = decoder.decode_to_utf8_without_replacement(chunk, &mut out, last);
            match result {
                encoding_rs::DecoderResult::InputEmpty => return None,
                encoding_rs::DecoderResult::OutputFull => {}
                encoding_rs::DecoderResult::Malformed(bad, _) => return Some(consumed + read - bad as usize),
            }
            consumed += read;
            chunk = &chunk[read..];
        }
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

struct CountingReader {
    inner: File,
    count: Option<Arc<AtomicU64>>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(c) = &self.count {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

fn is_blank(rec: &csv::StringRecord) -> bool {
    rec.iter().all(|f| f.trim().is_empty())
}

/// The input's header: its column names and where each order field is.
#[derive(Clone, Debug)]
pub struct Header {
    names: Vec<String>,
    index: [Option<usize>; 9],
    rules: Arc<Rules>,
    /// The sheet's name, when the input is a workbook: messages then name
    /// spreadsheet rows, not lines.
    sheet: Option<Arc<str>>,
}

impl Header {
    pub fn resolve(
        path: &str,
        rec: &csv::StringRecord,
        mapping: &[ColumnMapping],
        rules: &Rules,
    ) -> Result<Header, InputError> {
        let names: Vec<String> = rec.iter().map(|n| header_name(n).to_string()).collect();
        let found = || names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        let has = |name: &str| names.iter().any(|n| loose_name(n) == loose_name(name));
        // A results file (live or dry run) fed back as input: its finished
        // rows would be sent again, and it has two `category` columns' worth
        // of confusion. `report --only` is the way back.
        let results_marks: Vec<&str> = ["row", "category", "errcode", "errmsg", "attempts", "sig", "pay_sig"]
            .into_iter()
            .filter(|c| has(c))
            .collect();
        if has("row") && has("category") && results_marks.len() >= 3 {
            return Err(InputError::ResultsFile { path: path.to_string(), columns: results_marks.join(", ") });
        }
        if rules.api == ApiKind::V1 && !rules.api_named && has("amount") && has("cancel_bill_no") {
            return Err(InputError::LooksLikeV2 { path: path.to_string() });
        }
        let mut index = [None; 9];
        let api = rules.api as usize;
        for (field, name, need) in FIELDS {
            if need[api] == Unused {
                if let Some(m) = mapping.iter().find(|m| m.field == field) {
                    return Err(InputError::UnusedMapping {
                        path: path.to_string(),
                        mapping: m.to_string(),
                        api: rules.api.name(),
                    });
                }
                continue;
            }
            let mapped: Vec<&ColumnMapping> = mapping.iter().filter(|m| m.field == field).collect();
            let wanted: &str = match mapped.last() {
                Some(m) => &m.header,
                None => name,
            };
            // A field's own name matches however an exporter spells it
            // (`sessionKey`, `Session-Key`, `session key`): a session key under
            // another spelling must never be carried into the results as a
            // plain column. A `--column` header matches as given.
            let matches = |name: &str| match mapped.is_empty() {
                true => loose_name(name) == loose_name(wanted),
                false => name.eq_ignore_ascii_case(wanted),
            };
            let hits: Vec<usize> = (0..names.len()).filter(|&i| matches(&names[i])).collect();
            match hits.as_slice() {
                [] if !mapped.is_empty() => {
                    return Err(InputError::MappedColumnMissing {
                        path: path.to_string(),
                        field: name,
                        header: wanted.to_string(),
                        found: found(),
                    })
                }
                [] => {}
                [i] => index[field as usize] = Some(*i),
                [a, b, ..] => {
                    return Err(InputError::AmbiguousColumn {
                        path: path.to_string(),
                        field: name,
                        first: names[*a].clone(),
                        second: names[*b].clone(),
                    })
                }
            }
        }
        // A column mapped onto a field must not also be claimed by another one.
        for (a, ia) in index.iter().enumerate() {
            for (b, ib) in index.iter().enumerate().skip(a + 1) {
                if let (Some(x), Some(y)) = (ia, ib) {
                    if x == y {
                        return Err(InputError::AmbiguousColumn {
                            path: path.to_string(),
                            field: FIELDS[b].1,
                            first: FIELDS[a].1.to_string(),
                            second: names[*x].clone(),
                        });
                    }
                }
            }
        }
        let missing: Vec<&str> = FIELDS
            .iter()
            .filter(|(f, _, need)| need[api] == Required && index[*f as usize].is_none())
            .map(|(_, n, _)| *n)
            .collect();
        if !missing.is_empty() {
            return Err(InputError::MissingColumns {
                path: path.to_string(),
                missing: missing.join(", "),
                found: found(),
            });
        }
        Ok(Header { names, index, rules: Arc::new(rules.clone()), sheet: None })
    }

    /// Where a row is, for messages: `line 17` of a CSV file, `Sheet1
    /// row 17` of a workbook.
    pub fn place(&self, line: u64) -> String {
        place(self.sheet.as_deref(), line)
    }

    /// The run's rules this header was resolved for.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// v2 with a cancel_bill_no column: duplicates are judged by the
    /// cancellation id rather than by the deduction (SPEC §2 Output).
    pub fn keyed_by_cancel_id(&self) -> bool {
        self.rules.api == ApiKind::V2 && self.column(Field::CancelBillNo).is_some()
    }

    /// How messages name the duplicate key.
    pub fn key_name(&self) -> &'static str {
        match (self.rules.api, self.keyed_by_cancel_id()) {
            (ApiKind::V1, _) => "bill_no",
            (ApiKind::V2, false) => "bill_no (the pay_bill_no)",
            (ApiKind::V2, true) => "cancel_bill_no (the cancellation id)",
        }
    }

    /// v2: the cancellation id of a row that is not sent (a duplicate, no
    /// session key, invalid otherwise), when its cells give one, so that
    /// the results file names it all the same.
    pub fn cancel_id_of(&self, raw: &RawRow) -> Option<String> {
        if self.rules.api != ApiKind::V2 {
            return None;
        }
        let cell = |f| self.cell(raw, f);
        let given = Some(cell(Field::CancelBillNo)).filter(|c| !c.is_empty());
        let (bill_no, amount) = (cell(Field::BillNo), cell(Field::Amount));
        // A derived id needs a valid bill_no and amount; a given one is as given.
        let derivable = v2::check_bill_no("bill_no", bill_no).is_ok() && v2::check_amount(amount).is_ok();
        (given.is_some() || derivable).then(|| self.rules.cancel_id(given, bill_no, amount).into_owned())
    }

    /// Whether every row needs a session key to be sent.
    pub fn needs_session_key(&self) -> bool {
        self.rules.api == ApiKind::V2
    }

    /// Where `field` is, if the input has it.
    pub fn column(&self, field: Field) -> Option<usize> {
        self.index[field as usize]
    }

    /// The trimmed value of `field` in `raw`; empty when the column or the
    /// cell is missing.
    pub fn cell<'a>(&self, raw: &'a RawRow, field: Field) -> &'a str {
        self.column(field).and_then(|i| raw.record.get(i)).map_or("", trim)
    }

    /// Number of columns in the header row.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when the header has no columns (never, for a resolved header).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The order field a column provides, if any.
    pub fn field_of(&self, col: usize) -> Option<Field> {
        FIELDS.iter().map(|(f, _, _)| *f).find(|&f| self.index[f as usize] == Some(col))
    }

    /// The input columns that appear in the output (every one but session_key),
    /// as (index, name).
    pub fn output_columns(&self) -> impl Iterator<Item = (usize, &str)> {
        let sk = self.column(Field::SessionKey);
        self.names.iter().enumerate().filter(move |(i, _)| Some(*i) != sk).map(|(i, n)| (i, n.as_str()))
    }
}

/// Records of an input, after the header; blank lines are skipped.
pub struct Rows {
    source: Source,
    header: Header,
    display: String,
    row: u64,
}

/// Where the records come from.
enum Source {
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

/// A validated order borrowing the row's (trimmed) cells.
#[derive(Clone, Debug)]
pub struct OrderRef<'a> {
    pub row: u64,
    /// v1: the order; v2: the deduction to reverse (pay_bill_no).
    pub bill_no: &'a str,
    pub openid: &'a str,
    pub zone_id: &'a str,
    pub pf: Option<&'a str>,
    pub user_ip: Option<&'a str>,
    pub pay_item: Option<&'a str>,
    /// From the session_key column, else from `--session-keys`.
    pub session_key: Option<&'a str>,
    /// v2: coins to return.
    pub amount: Option<u64>,
    /// v2: the cancellation id (the row's cancel_bill_no, else derived).
    pub cancel_id: Option<Cow<'a, str>>,
}

/// A validated order that owns its values (for the live sender's queues).
#[derive(Clone, Debug)]
pub struct Order {
    pub row: u64,
    pub bill_no: String,
    pub openid: String,
    pub zone_id: String,
    pub pf: Option<String>,
    pub user_ip: Option<String>,
    pub pay_item: Option<String>,
    pub session_key: Option<Secret>,
    pub amount: Option<u64>,
    pub cancel_id: Option<String>,
}

impl Order {
    pub fn as_ref(&self) -> OrderRef<'_> {
        OrderRef {
            row: self.row,
            bill_no: &self.bill_no,
            openid: &self.openid,
            zone_id: &self.zone_id,
            pf: self.pf.as_deref(),
            user_ip: self.user_ip.as_deref(),
            pay_item: self.pay_item.as_deref(),
            session_key: self.session_key.as_ref().map(Secret::expose),
            amount: self.amount,
            cancel_id: self.cancel_id.as_deref().map(Cow::Borrowed),
        }
    }
}

impl OrderRef<'_> {
    pub fn to_owned(&self) -> Order {
        let own = |v: Option<&str>| v.map(str::to_string);
        Order {
            row: self.row,
            bill_no: self.bill_no.to_string(),
            openid: self.openid.to_string(),
            zone_id: self.zone_id.to_string(),
            pf: own(self.pf),
            user_ip: own(self.user_ip),
            pay_item: own(self.pay_item),
            session_key: self.session_key.map(Secret::new),
            amount: self.amount,
            cancel_id: self.cancel_id.as_deref().map(str::to_string),
        }
    }

    /// The v2 request for this order, sent at `ts`.
    pub fn v2<'b>(&'b self, rules: &'b Rules, env: u8, ts: u64) -> v2::CancelV2<'b> {
        v2::CancelV2 {
            openid: self.openid,
            offer_id: &rules.offer_id,
            ts,
            zone_id: self.zone_id,
            env,
            user_ip: self.user_ip,
            pay_bill_no: self.bill_no,
            bill_no: self.cancel_id.as_deref().unwrap_or(""),
            amount: self.amount.unwrap_or(0),
        }
    }
}

/// How the input is read, resolved from flags, config file and files
/// (`config` builds it): shared by `run`, `check` and the dry run.
#[derive(Clone)]
pub struct InputConfig {
    pub path: PathBuf,
    /// The input, opened and scanned (encoding, size and, when asked for,
    /// its SHA-256): a bad file is refused here, before anything else.
    pub opened: Arc<Input>,
    pub columns: Vec<ColumnMapping>,
    pub session_keys: Arc<SessionKeys>,
    pub mp_sig: MpSigMode,
    /// The API and what v2's derived cancellation ids are made of.
    pub rules: Rules,
}

/// `line N`, or `SHEET row N` in a workbook.
fn place(sheet: Option<&str>, line: u64) -> String {
    match sheet {
        Some(s) => format!("{s} row {line}"),
        None => format!("line {line}"),
    }
}

/// Cells that spreadsheets run as formulas when a cell begins with them.
pub const FORMULA_TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

const BILL_NO_MAX: usize = 63;

/// A header cell as a column name: trimmed, without a byte-order mark that
/// a spreadsheet left on the first one.
fn header_name(cell: &str) -> &str {
    cell.trim().trim_start_matches('\u{feff}')
}

/// `str::trim` (Unicode white space, so a full-width space from a Chinese
/// export goes too), skipped for the usual cell that begins and ends with a
/// visible ASCII character: trimming every cell of every row was a twentieth
/// of a large dry run.
pub fn trim(cell: &str) -> &str {
    match cell.as_bytes() {
        [] => cell,
        [first, .., last] | [first @ last] if first.is_ascii_graphic() && last.is_ascii_graphic() => cell,
        _ => cell.trim(),
    }
}

/// The first character of `value` outside the ASCII set `allowed`. Scans
/// bytes against a table, not chars: every allowed character is ASCII, so the
/// first byte that is not allowed starts the offending character.
fn bad_char(value: &str, allowed: &ByteSet) -> Option<char> {
    let at = value.bytes().position(|b| !allowed[usize::from(b)])?;
    value[at..].chars().next()
}

/// A set of ASCII bytes as a table: one load per byte of a cell instead of
/// a chain of comparisons.
type ByteSet = [bool; 256];

/// ASCII letters and digits, and `extra`.
const fn alphanumeric_and(extra: &[u8]) -> ByteSet {
    let mut set = [false; 256];
    let mut b = 0;
    while b < 128 {
        set[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        set[extra[i] as usize] = true;
        i += 1;
    }
    set
}

const BILL_NO_CHARS: ByteSet = alphanumeric_and(b"_-|*@");
const ID_CHARS: ByteSet = alphanumeric_and(b"_-");
const BASE64_CHARS: ByteSet = alphanumeric_and(b"+/=");

/// Checks bill_no against SPEC §1.1: 1–63 characters of `0-9 A-Z a-z _ - | * @`.
pub fn check_bill_no(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("bill_no is empty".into());
    }
    if api::looks_scientific(v) {
        return Err(format!(
            "bill_no `{v}` is a number a spreadsheet rewrote in scientific notation, so the real order id is lost; \
             re-export the orders with that column formatted as text"
        ));
    }
    if let Some(c) = bad_char(v, &BILL_NO_CHARS) {
        return Err(format!("bill_no `{v}` contains `{c}`; only 0-9 A-Z a-z _ - | * @ are allowed"));
    }
    // Every character passed the ASCII check above, so bytes count characters.
    let n = v.len();
    if n > BILL_NO_MAX {
        return Err(format!("bill_no is {n} characters long; at most {BILL_NO_MAX} are allowed"));
    }
    Ok(())
}

fn check_id(field: &str, v: &str, max: usize, hint: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err(format!("{field} is empty{hint}"));
    }
    if let Some(c) = bad_char(v, &ID_CHARS) {
        return Err(format!("{field} `{v}` contains `{c}`; only 0-9 A-Z a-z _ - are allowed"));
    }
    if v.len() > max {
        return Err(format!("{field} is {} characters long; at most {max} are allowed", v.len()));
    }
    Ok(())
}

fn check_user_ip(v: &str) -> Result<(), String> {
    v.parse::<IpAddr>().map(|_| ()).map_err(|_| format!("user_ip `{v}` is not an IPv4 or IPv6 address"))
}

fn check_pay_item(v: &str) -> Result<(), String> {
    if let Some(c) = v.chars().find(|c| c.is_control()) {
        return Err(format!("pay_item contains the control character U+{:04X}", c as u32));
    }
    if v.starts_with(FORMULA_TRIGGERS) {
        return Err(format!(
            "pay_item `{v}` begins with `{}`, which spreadsheets run as a formula; check the export",
            v.chars().next().unwrap_or(' ')
        ));
    }
    if v.chars().count() > 128 {
        return Err("pay_item is longer than 128 characters".into());
    }
    Ok(())
}

fn check_session_key(v: &str) -> Result<(), String> {
    // The value is a secret: the message never repeats it.
    if v.len() > 128 || bad_char(v, &BASE64_CHARS).is_some() {
        return Err("session_key is not a base64 session key (the value is not shown)".into());
    }
    Ok(())
}

/// The outcome of validating one row, before duplicate detection.
#[derive(Debug)]
pub enum Validated<'a> {
    Valid(OrderRef<'a>),
    /// The row is bad. `bill_no` is set when the bill_no itself was valid, so
    /// later rows with the same bill_no are still recognised as duplicates.
    Invalid {
        bill_no: Option<&'a str>,
        message: String,
    },
}

/// Validates one row (pure; safe to run in parallel). Messages name the line
/// and the field. The session key comes from the row, else from `keys`.
pub fn validate<'a>(header: &Header, raw: &'a RawRow, keys: &'a SessionKeys) -> Validated<'a> {
    let line = raw.line;
    let invalid = |bill_no, m: String| Validated::Invalid { bill_no, message: format!("{}: {m}", header.place(line)) };
    // A workbook cell the API cannot take: its message names the cell.
    let hazard = |bill_no| raw.hazard.clone().map(|message| Validated::Invalid { bill_no, message });
    // Only what the person sees is sent; a hidden row claims no bill_no, so
    // a visible row of the same order is not taken for its duplicate.
    if raw.hidden {
        let m = "hidden in the workbook (filtered out, or hidden by hand), so it is not sent: unhide it and run it \
                 again if it must be cancelled";
        return invalid(None, m.to_string());
    }
    if raw.record.len() != header.len() {
        let m = format!(
            "the row has {} fields but the header has {} (a missing or extra comma, or an unquoted comma inside a value)",
            raw.record.len(),
            header.len()
        );
        return invalid(None, m);
    }
    let get = |f: Field| header.cell(raw, f);
    let opt = |f: Field| Some(get(f)).filter(|v| !v.is_empty());
    let rules = header.rules();
    let v2 = rules.api == ApiKind::V2;
    let bill_no = get(Field::BillNo);
    let checked = if v2 { v2::check_bill_no("bill_no", bill_no) } else { check_bill_no(bill_no) };
    if let Err(m) = checked {
        // An unusable bill_no cell is read as empty: say why.
        return hazard(None).unwrap_or_else(|| invalid(None, m));
    }
    let (openid, zone_id) = (get(Field::Openid), get(Field::ZoneId));
    let (pf, user_ip, pay_item, session_key) =
        (opt(Field::Pf), opt(Field::UserIp), opt(Field::PayItem), opt(Field::SessionKey));
    let cancel_cell = opt(Field::CancelBillNo);
    // With a cancel_bill_no column, v2 duplicates are judged by that id: a
    // row whose id is valid keeps it as its key even when invalid otherwise.
    let key = if header.keyed_by_cancel_id() {
        cancel_cell.filter(|c| v2::check_bill_no("cancel_bill_no", c).is_ok())
    } else {
        Some(bill_no)
    };
    if let Some(h) = hazard(key) {
        return h;
    }
    let problem = check_id("openid", openid, 128, "")
        .and_then(|()| check_id("zone_id", zone_id, 64, " (use 1 for a game without zones)"))
        .and_then(|()| pf.map_or(Ok(()), |v| check_id("pf", v, 32, "")))
        .and_then(|()| user_ip.map_or(Ok(()), check_user_ip))
        .and_then(|()| pay_item.map_or(Ok(()), check_pay_item))
        .and_then(|()| session_key.map_or(Ok(()), check_session_key))
        .and_then(|()| cancel_cell.map_or(Ok(()), |c| v2::check_bill_no("cancel_bill_no", c)));
    let amount = match problem.and_then(|()| if v2 { v2::check_amount(get(Field::Amount)).map(Some) } else { Ok(None) })
    {
        Ok(a) => a,
        Err(m) => return invalid(key, m),
    };
    let cancel_id = v2.then(|| rules.cancel_id(cancel_cell, bill_no, get(Field::Amount)));
    Validated::Valid(OrderRef {
        row: raw.row,
        bill_no,
        openid,
        zone_id,
        pf,
        user_ip,
        pay_item,
        session_key: session_key.or_else(|| keys.get(openid)),
        amount,
        cancel_id,
    })
}

/// What in-order classification needs to know of a validated row.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// The row's duplicate key, when it is valid: its bill_no (v2: the
    /// pay_bill_no, or the cancellation id when the input has that column).
    pub bill_no: Option<&'a str>,
    /// The validation message, when the row is invalid.
    pub problem: Option<&'a str>,
    pub openid: &'a str,
    pub has_session_key: bool,
}

impl Validated<'_> {
    pub fn facts(&self, header: &Header) -> Facts<'_> {
        match self {
            Validated::Valid(o) => Facts {
                bill_no: if header.keyed_by_cancel_id() { o.cancel_id.as_deref() } else { Some(o.bill_no) },
                problem: None,
                openid: o.openid,
                has_session_key: o.session_key.is_some(),
            },
            Validated::Invalid { bill_no, message } => {
                Facts { bill_no: *bill_no, problem: Some(message), openid: "", has_session_key: false }
            }
        }
    }
}

/// `--mp-sig`: when to send `mp_sig` (SPEC §1.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MpSigMode {
    /// Send mp_sig when the row's session key is known.
    #[default]
    Auto,
    /// Every row needs a session key; rows without one are not sent.
    Always,
    /// Never send mp_sig.
    Never,
}

impl MpSigMode {
    /// The access token and session key to compute `mp_sig` with, when this
    /// mode sends it and both are at hand.
    pub fn inputs<'a>(self, token: Option<&'a Secret>, session_key: Option<&'a str>) -> Option<(&'a str, &'a str)> {
        match (self, token, session_key) {
            (MpSigMode::Never, _, _) => None,
            (_, Some(t), Some(k)) => Some((t.expose(), k)),
            _ => None,
        }
    }
}

/// 128-bit fingerprint of a string, for compact sets keyed by ids.
fn fingerprint(s: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(s.as_bytes())
}

/// Hashes a key that is already a fingerprint by taking 64 of its bits:
/// hashing it again (SipHash) cost more than the rest of a lookup.
#[derive(Default)]
struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-integer keys; fold them in so it stays correct.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type FingerprintBuild = std::hash::BuildHasherDefault<FingerprintHasher>;

/// A session key as stored: WeChat's are 24 base64 characters and are kept
/// inline (one cache miss per lookup instead of two); others are boxed.
enum StoredKey {
    Standard([u8; 24]),
    Other(Box<str>),
}

impl StoredKey {
    fn new(key: &str) -> StoredKey {
        match <[u8; 24]>::try_from(key.as_bytes()) {
            Ok(k) => StoredKey::Standard(k),
            Err(_) => StoredKey::Other(key.into()),
        }
    }
    fn as_str(&self) -> &str {
        match self {
            // Only built from a &str, so always UTF-8.
            StoredKey::Standard(k) => std::str::from_utf8(k).unwrap_or(""),
            StoredKey::Other(k) => k,
        }
    }
}

/// A header name compared loosely: case, `_`, `-`, `.` and white space aside.
fn loose_name(name: &str) -> String {
    name.chars().filter(|c| !matches!(c, '_' | '-' | '.') && !c.is_whitespace()).flat_map(char::to_lowercase).collect()
}

/// Session keys from `--session-keys FILE` (CSV `openid,session_key`), keyed
/// by a fingerprint of the openid to keep a few million users small.
#[derive(Default)]
pub struct SessionKeys(HashMap<u128, StoredKey, FingerprintBuild>);

impl SessionKeys {
    pub fn load(path: &Path) -> anyhow::Result<SessionKeys> {
        use anyhow::Context as _;
        let ctx = || format!("session keys file {}", path.display());
        // Read once, whole: a FIFO or /dev/stdin cannot be read twice (the
        // line count below used to open the file a second time).
        let bytes = std::fs::read(path).with_context(ctx)?;
        let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(&bytes[..]);
        let headers = rdr.headers().with_context(ctx)?.clone();
        let pos = |name: &str| headers.iter().position(|h| loose_name(header_name(h)) == loose_name(name));
        let (Some(o), Some(k)) = (pos("openid"), pos("session_key")) else {
            anyhow::bail!("{}: the header row must name the columns openid and session_key", ctx());
        };
        // Sized up front from a count of the lines (a quick pass): growing
        // the table step by step cost a third of loading a quarter of a
        // million keys.
        let lines = memchr::memchr_iter(b'\n', &bytes).count();
        let mut map = HashMap::with_capacity_and_hasher(lines, Default::default());
        let mut rec = csv::ByteRecord::new();
        // Inserted a few thousand at a time, in a loop of nothing else, so
        // the CPU overlaps the inserts' cache misses (as with duplicates).
        let mut pending = Vec::with_capacity(4096);
        while rdr.read_byte_record(&mut rec).with_context(ctx)? {
            let line = rec.position().map_or(0, |p| p.line());
            let cell = |i: usize| std::str::from_utf8(rec.get(i).unwrap_or(b"")).map(trim);
            let (Ok(openid), Ok(key)) = (cell(o), cell(k)) else {
                anyhow::bail!("{} line {line}: not valid UTF-8", ctx());
            };
            if key.is_empty() {
                continue;
            }
            check_session_key(key).map_err(|m| anyhow::anyhow!("{} line {line}: {m}", ctx()))?;
            pending.push((fingerprint(openid), StoredKey::new(key)));
            if pending.len() == pending.capacity() {
                map.extend(pending.drain(..));
            }
        }
        // In file order, so a later line for the same openid still wins.
        map.extend(pending);
        Ok(SessionKeys(map))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, openid: &str) -> Option<&str> {
        self.0.get(&fingerprint(openid)).map(StoredKey::as_str)
    }
}

/// One remembered bill_no: 96 bits of its fingerprint and its first row, in 16
/// bytes, so a million rows cost ~20-40 bytes each in the set. Equality and
/// hash look at the fingerprint only; a false match needs a 96-bit collision.
#[derive(Clone, Copy, Debug)]
struct Seen {
    hi: u64,
    lo: u32,
    row: u32,
}

impl Seen {
    fn new(bill_no: &str, row: u64) -> Seen {
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
    Ready(Order),
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
                "{}: no session key for openid `{}` (virtual payment 2.0 signs every request with it)",
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
                Validated::Valid(o) => Verdict::Ready(o.to_owned()),
                Validated::Invalid { .. } => unreachable!("an invalid row is never sent"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(cols: &[&str]) -> Header {
        Header::resolve("t", &csv::StringRecord::from(cols.to_vec()), &[], &Rules::default()).unwrap()
    }

    fn raw(row: u64, cells: &[&str]) -> RawRow {
        RawRow { row, line: row + 1, record: csv::StringRecord::from(cells.to_vec()), hazard: None, hidden: false }
    }

    fn message(v: Validated<'_>) -> String {
        match v {
            Validated::Invalid { message, .. } => message,
            Validated::Valid(o) => panic!("expected invalid, got {o:?}"),
        }
    }

    /// A reader that hands out `n` bytes at a time.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(self.0.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn line_starts_survive_any_chunking() {
        // a \r\n b \r c \n d \r\n \r\n e: lines 1, 2, 3, 4, (5 empty), 6
        let text = b"a\r\nb\rc\nd\r\n\r\ne";
        for chunk in [1, 2, 3, 5, 64] {
            let lines = Arc::new(Mutex::new(LineStarts::default()));
            io::copy(&mut LineTracking::new(Trickle(text, chunk), lines.clone()), &mut io::sink()).unwrap();
            let mut l = lock(&lines);
            let got: Vec<u64> = [0, 3, 5, 7, 12].iter().map(|&o| l.line_of(o)).collect();
            assert_eq!(got, [1, 2, 3, 4, 6], "chunks of {chunk}");
        }
    }

    #[test]
    fn trim_removes_unicode_white_space_and_keeps_the_rest() {
        let table = [
            ("b1", "b1"),
            ("x", "x"),
            ("", ""),
            (" ", ""),
            (" b1\t", "b1"),
            ("\u{3000}b1\u{3000}", "b1"),
            ("b 1", "b 1"),
            ("订单", "订单"),
            (" 订单 ", "订单"),
        ];
        for (cell, want) in table {
            assert_eq!(trim(cell), want, "{cell:?}");
        }
    }

    #[test]
    fn bill_no_rules() {
        let table: &[(&str, Option<&str>)] = &[
            ("abc_-|*@XYZ09", None),
            ("", Some("empty")),
            ("1.23457E+17", Some("scientific notation")),
            ("1E+17", Some("scientific notation")),
            ("2.5e-05", Some("scientific notation")),
            ("has space", Some("contains ` `")),
            ("订单", Some("contains `订`")),
            ("ab订单", Some("contains `订`")),
            ("a.b", Some("contains `.`")),
            (&"x".repeat(64), Some("64 characters")),
        ];
        assert!(check_bill_no(&"x".repeat(63)).is_ok());
        for (v, want) in table {
            match (check_bill_no(v), want) {
                (Ok(()), None) => {}
                (Err(m), Some(w)) => assert!(m.contains(w), "{v}: {m}"),
                (got, _) => panic!("{v}: {got:?}"),
            }
        }
    }

    #[test]
    fn field_rules_name_the_line_and_field() {
        let h = header(&["bill_no", "openid", "zone_id", "user_ip", "pay_item", "pf", "session_key"]);
        let cases: &[(&[&str], &str)] = &[
            (&["b1", "", "1", "", "", "", ""], "line 2: openid is empty"),
            (&["b1", "o p", "1", "", "", "", ""], "openid `o p` contains ` `"),
            (&["b1", "o", "", "", "", "", ""], "zone_id is empty"),
            (&["b1", "o", "1.0", "", "", "", ""], "zone_id `1.0` contains `.`"),
            (&["b1", "o", "1", "300.1.1.1", "", "", ""], "user_ip `300.1.1.1`"),
            (&["b1", "o", "1", "", "=cmd", "", ""], "pay_item `=cmd` begins with `=`"),
            (&["b1", "o", "1", "", "", "and roid", ""], "pf `and roid`"),
            (&["b1", "o", "1", "", "", "", "not base64!"], "session_key is not"),
            (&["b1", "o", "1"], "3 fields but the header has 7"),
            (&["b1", "o", "1", "", "", "", "", "extra"], "8 fields but the header has 7"),
        ];
        for (cells, want) in cases {
            let m = message(validate(&h, &raw(1, cells), &SessionKeys::default()));
            assert!(m.contains(want), "{cells:?}: {m}");
        }
    }

    #[test]
    fn session_key_never_echoed() {
        let h = header(&["bill_no", "openid", "zone_id", "session_key"]);
        let r = raw(1, &["b", "o", "1", "SeCrEt!!"]);
        let m = message(validate(&h, &r, &SessionKeys::default()));
        assert!(!m.contains("SeCrEt"));
    }

    #[test]
    fn values_are_trimmed_and_empty_optionals_dropped() {
        let h = header(&["bill_no", "openid", "zone_id", "user_ip", "pay_item"]);
        let r = raw(1, &[" b1 ", "\to\t", " 3_99 ", "  ", " 金币 "]);
        match validate(&h, &r, &SessionKeys::default()) {
            Validated::Valid(o) => {
                assert_eq!((o.bill_no, o.openid, o.zone_id), ("b1", "o", "3_99"));
                assert_eq!(o.user_ip, None);
                assert_eq!(o.pay_item, Some("金币"));
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn first_bill_no_wins_even_when_its_row_is_invalid() {
        let h = header(&["bill_no", "openid", "zone_id"]);
        let mut c = Classifier::new(MpSigMode::Auto);
        let k = SessionKeys::default();
        let v1 = c.classify(&h, &raw(1, &["b1", "", "1"]), &k);
        let v2 = c.classify(&h, &raw(2, &["b1", "o", "1"]), &k);
        let v3 = c.classify(&h, &raw(3, &["b2", "o", "1"]), &k);
        assert!(matches!(v1, Verdict::Rejected { category: Category::InvalidInput, .. }));
        match v2 {
            Verdict::Rejected { category: Category::Duplicate, message, valid } => {
                assert!(message.contains("row 1") && valid)
            }
            v => panic!("{v:?}"),
        }
        assert!(matches!(v3, Verdict::Ready(_)));
    }

    #[test]
    fn the_later_key_of_an_openid_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.csv");
        // Past the loader's insert batch, so the order across batches counts.
        let mut text = String::from("openid,session_key\no1,Zmlyc3Q=\n");
        for i in 0..5000 {
            text.push_str(&format!("u{i},a2V5{i}\n"));
        }
        text.push_str("o1,bGF0ZXI=\n");
        std::fs::write(&path, text).unwrap();
        let keys = SessionKeys::load(&path).unwrap();
        assert_eq!(keys.get("o1"), Some("bGF0ZXI="));
        assert_eq!(keys.get("u4999"), Some("a2V54999"));
        assert_eq!(keys.get("nobody"), None);
    }

    #[test]
    fn a_batch_is_decided_as_row_by_row() {
        let facts = |bill_no, problem, has_session_key| Facts { bill_no, problem, openid: "o", has_session_key };
        // Duplicates inside a batch, across batches, of an invalid first row.
        let batches: [&[(u64, u64, Facts<'_>)]; 2] = [
            &[
                (1, 2, facts(Some("b1"), None, true)),
                (2, 3, facts(Some("b2"), Some("line 3: bad"), false)),
                (3, 4, facts(Some("b1"), None, true)),
                (4, 5, facts(None, Some("line 5: bad bill_no"), false)),
            ],
            &[
                (5, 6, facts(Some("b2"), None, false)),
                (6, 7, facts(Some("b1"), None, true)),
                (7, 8, facts(Some("b3"), None, false)),
            ],
        ];
        for mode in [MpSigMode::Auto, MpSigMode::Always] {
            let (mut one, mut batched) = (Classifier::new(mode), Classifier::new(mode));
            for batch in batches {
                let want: Vec<_> = batch.iter().map(|&(row, line, f)| one.decide(row, line, f)).collect();
                assert_eq!(batched.decide_batch(batch), want);
            }
        }
        let mut c = Classifier::new(MpSigMode::Auto);
        let got: Vec<_> = batches.iter().flat_map(|b| c.decide_batch(b)).map(|d| d.map(|(c, _)| c)).collect();
        let dup = Some(Category::Duplicate);
        let bad = Some(Category::InvalidInput);
        assert_eq!(got, [None, bad, dup, bad, dup, dup, None]);
    }

    #[test]
    fn mp_sig_always_needs_a_session_key() {
        let h = header(&["bill_no", "openid", "zone_id"]);
        let k = SessionKeys::default();
        let mut c = Classifier::new(MpSigMode::Always);
        assert!(matches!(
            c.classify(&h, &raw(1, &["b1", "o", "1"]), &k),
            Verdict::Rejected { category: Category::MissingSessionKey, .. }
        ));
        let mut c = Classifier::new(MpSigMode::Auto);
        assert!(matches!(c.classify(&h, &raw(1, &["b1", "o", "1"]), &k), Verdict::Ready(_)));
    }

    #[test]
    fn header_mapping_and_errors() {
        let rec = csv::StringRecord::from(vec!["订单号", "OpenID", "zone_id", "amount"]);
        let map = vec!["bill_no=订单号".parse::<ColumnMapping>().unwrap()];
        let h = Header::resolve("t", &rec, &map, &Rules::default()).unwrap();
        assert_eq!(h.column(Field::BillNo), Some(0));
        assert_eq!(h.column(Field::Openid), Some(1), "header names match case-insensitively");
        let e = Header::resolve("t", &rec, &[], &Rules::default()).unwrap_err().to_string();
        assert!(e.contains("bill_no") && e.contains("--column"), "{e}");
        let bad = vec!["bill_no=nope".parse::<ColumnMapping>().unwrap()];
        assert!(Header::resolve("t", &rec, &bad, &Rules::default()).unwrap_err().to_string().contains("nope"));
        assert!("bogus=x".parse::<ColumnMapping>().is_err());
        assert!("bill_no".parse::<ColumnMapping>().is_err());
    }
}
