//! Reading an order export: encoding detection, CSV parsing, column mapping,
//! row validation and duplicate detection (SPEC §2 Input).
//!
//! The file is streamed record by record and never held in memory. Before the
//! first record is handed out, [`Input::open`] scans the raw bytes once to
//! settle the encoding, so undecodable bytes stop the run before anything is
//! produced or sent.

use crate::category::Category;
use crate::secret::Secret;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
}

/// Every field with its column name and whether the input must have it.
const FIELDS: [(Field, &str, bool); 7] = [
    (Field::BillNo, "bill_no", true),
    (Field::Openid, "openid", true),
    (Field::ZoneId, "zone_id", true),
    (Field::SessionKey, "session_key", false),
    (Field::UserIp, "user_ip", false),
    (Field::PayItem, "pay_item", false),
    (Field::Pf, "pf", false),
];

impl Field {
    pub fn name(self) -> &'static str {
        FIELDS[self as usize].1
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
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path} is empty: it needs a header row naming the columns bill_no, openid and zone_id")]
    Empty { path: String },
    #[error("{path} is UTF-16 text (Excel's \"Unicode Text\"); save it as \"CSV UTF-8\" (or CSV) and run again")]
    Utf16 { path: String },
    #[error(
        "{path} has bytes that are not valid {tried} at line {line} (byte offset {offset}); \
         re-save the file as \"CSV UTF-8\", or name its encoding with --encoding utf-8|gbk|gb18030"
    )]
    Undecodable { path: String, tried: &'static str, line: u64, offset: u64 },
    #[error(
        "{path}: the header row lacks the required column(s) {missing}; it has: {found}. \
         Is the header row missing? Otherwise map your exporter's names, e.g. --column bill_no=订单号"
    )]
    MissingColumns { path: String, missing: String, found: String },
    #[error("{path}: columns `{first}` and `{second}` both provide {field}; keep one, or pick one with --column {field}=HEADER")]
    AmbiguousColumn { path: String, field: &'static str, first: String, second: String },
    #[error("{path}: --column {field}={header} names a header that is not in the file; it has: {found}")]
    MappedColumnMissing { path: String, field: &'static str, header: String, found: String },
    #[error("{path} line {line}: {message}")]
    Csv { path: String, line: u64, message: String },
}

/// An order export opened for (possibly several) streaming passes.
pub struct Input {
    display: String,
    file: File,
    encoding: &'static encoding_rs::Encoding,
    bom_len: u64,
    size: u64,
    sha256: Option<String>,
    // Holds standard input spooled to disk, so it can be read twice.
    _spool: Option<tempfile::NamedTempFile>,
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Input").field("path", &self.display).field("encoding", &self.encoding.name()).finish()
    }
}

impl Input {
    /// Opens `path` (`-` for standard input), settles its encoding and, when
    /// `fingerprint` is set, hashes its bytes (for `--resume`'s input check).
    pub fn open(path: &Path, encoding: Option<EncodingName>, fingerprint: bool) -> Result<Input, InputError> {
        let is_stdin = path.as_os_str() == "-";
        let display = if is_stdin { "standard input".to_string() } else { path.display().to_string() };
        let io_err = |source| InputError::Io { path: display.clone(), source };
        let (file, spool) = if is_stdin {
            // Spooled so that validation can finish before anything is sent.
            let mut spool = tempfile::NamedTempFile::new().map_err(io_err)?;
            io::copy(&mut io::stdin().lock(), spool.as_file_mut()).map_err(io_err)?;
            (spool.reopen().map_err(io_err)?, Some(spool))
        } else {
            (File::open(path).map_err(io_err)?, None)
        };
        let mut input =
            Input { display, file, encoding: encoding_rs::UTF_8, bom_len: 0, size: 0, sha256: None, _spool: spool };
        input.scan(encoding, fingerprint)?;
        Ok(input)
    }

    /// How the input is named in messages.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Size in bytes of the raw file (progress is measured against it).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The encoding in use.
    pub fn encoding_name(&self) -> &'static str {
        self.encoding.name()
    }

    /// SHA-256 of the raw bytes, when asked for at open.
    pub fn sha256(&self) -> Option<&str> {
        self.sha256.as_deref()
    }

    fn io_err(&self, source: io::Error) -> InputError {
        InputError::Io { path: self.display.clone(), source }
    }

    /// One pass over the raw bytes: BOM, encoding validity, size, hash.
    fn scan(&mut self, named: Option<EncodingName>, fingerprint: bool) -> Result<(), InputError> {
        let mut head = [0u8; 3];
        let mut f = self.file.try_clone().map_err(|e| self.io_err(e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| self.io_err(e))?;
        let n = read_up_to(&mut f, &mut head).map_err(|e| self.io_err(e))?;
        if n == 0 {
            return Err(InputError::Empty { path: self.display.clone() });
        }
        if head[..n.min(2)] == [0xFF, 0xFE] || head[..n.min(2)] == [0xFE, 0xFF] {
            return Err(InputError::Utf16 { path: self.display.clone() });
        }
        let has_bom = head[..n] == [0xEF, 0xBB, 0xBF];
        let candidates: &[&'static encoding_rs::Encoding] = match (named, has_bom) {
            (Some(EncodingName::Utf8), _) | (None, true) => &[encoding_rs::UTF_8],
            // GBK is a subset of GB18030 and WHATWG decodes both the same way.
            (Some(EncodingName::Gbk | EncodingName::Gb18030), _) => &[encoding_rs::GB18030],
            (None, false) => &[encoding_rs::UTF_8, encoding_rs::GB18030],
        };
        let mut last_failure = None;
        for (i, &enc) in candidates.iter().enumerate() {
            // Hash on the first pass only; a retry reads the same bytes.
            match self.check_decodes(enc, fingerprint && i == 0) {
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
    fn check_decodes(&mut self, enc: &'static encoding_rs::Encoding, fingerprint: bool) -> Result<(), InputError> {
        let mut f = self.file.try_clone().map_err(|e| self.io_err(e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| self.io_err(e))?;
        let mut decoder = enc.new_decoder_without_bom_handling();
        let mut hasher = fingerprint.then(Sha256::new);
        let mut buf = vec![0u8; 1 << 20];
        let mut out = vec![0u8; (1 << 20) * 3 + 16];
        let (mut offset, mut line) = (0u64, 1u64);
        loop {
            let n = f.read(&mut buf).map_err(|e| self.io_err(e))?;
            let last = n == 0;
            if let Some(h) = hasher.as_mut() {
                h.update(&buf[..n]);
            }
            let mut chunk = &buf[..n];
            loop {
                let (result, read, _written) = decoder.decode_to_utf8_without_replacement(chunk, &mut out, last);
                match result {
                    encoding_rs::DecoderResult::InputEmpty => break,
                    encoding_rs::DecoderResult::OutputFull => {}
                    encoding_rs::DecoderResult::Malformed(bad, _) => {
                        let at = read - bad as usize;
                        let newlines = chunk[..at].iter().filter(|&&b| b == b'\n').count() as u64;
                        return Err(InputError::Undecodable {
                            path: self.display.clone(),
                            tried: if enc == encoding_rs::UTF_8 { "UTF-8" } else { "GBK/GB18030" },
                            line: line + newlines,
                            offset: offset + at as u64,
                        });
                    }
                }
                line += chunk[..read].iter().filter(|&&b| b == b'\n').count() as u64;
                offset += read as u64;
                chunk = &chunk[read..];
            }
            line += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
            offset += chunk.len() as u64;
            if last {
                break;
            }
        }
        self.size = offset;
        if let Some(h) = hasher {
            self.sha256 = Some(hex::encode(h.finalize()));
        }
        Ok(())
    }

    /// Starts a streaming pass over the records. `progress` counts raw bytes read.
    pub fn rows(&self, mapping: &[ColumnMapping], progress: Option<Arc<AtomicU64>>) -> Result<Rows, InputError> {
        let mut f = self.file.try_clone().map_err(|e| self.io_err(e))?;
        f.seek(SeekFrom::Start(self.bom_len)).map_err(|e| self.io_err(e))?;
        let counted = CountingReader { inner: f, count: progress };
        let reader: Box<dyn Read + Send> = if self.encoding == encoding_rs::UTF_8 {
            Box::new(counted)
        } else {
            Box::new(encoding_rs_io::DecodeReaderBytesBuilder::new().encoding(Some(self.encoding)).build(counted))
        };
        let mut csv =
            csv::ReaderBuilder::new().has_headers(false).flexible(true).buffer_capacity(1 << 16).from_reader(reader);
        let mut first = csv::StringRecord::new();
        // Blank lines before the header are skipped like any other.
        loop {
            let more = csv.read_record(&mut first).map_err(|e| self.csv_err(&e))?;
            if !more {
                return Err(InputError::Empty { path: self.display.clone() });
            }
            if !is_blank(&first) {
                break;
            }
        }
        let header = Header::resolve(&self.display, &first, mapping)?;
        Ok(Rows { csv, header, display: self.display.clone(), row: 0, record: csv::StringRecord::new() })
    }

    fn csv_err(&self, e: &csv::Error) -> InputError {
        let line = e.position().map(|p| p.line()).unwrap_or(0);
        InputError::Csv { path: self.display.clone(), line, message: e.to_string() }
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
    index: [Option<usize>; 7],
}

impl Header {
    fn resolve(path: &str, rec: &csv::StringRecord, mapping: &[ColumnMapping]) -> Result<Header, InputError> {
        let names: Vec<String> = rec.iter().map(|n| n.trim().trim_start_matches('\u{feff}').to_string()).collect();
        let found = || names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        let mut index = [None; 7];
        for (field, name, _) in FIELDS {
            let mapped: Vec<&ColumnMapping> = mapping.iter().filter(|m| m.field == field).collect();
            let wanted: &str = match mapped.last() {
                Some(m) => &m.header,
                None => name,
            };
            let hits: Vec<usize> = (0..names.len()).filter(|&i| names[i].eq_ignore_ascii_case(wanted)).collect();
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
        let missing: Vec<&str> =
            FIELDS.iter().filter(|(f, _, req)| *req && index[*f as usize].is_none()).map(|(_, n, _)| *n).collect();
        if !missing.is_empty() {
            return Err(InputError::MissingColumns {
                path: path.to_string(),
                missing: missing.join(", "),
                found: found(),
            });
        }
        Ok(Header { names, index })
    }

    /// Where `field` is, if the input has it.
    pub fn column(&self, field: Field) -> Option<usize> {
        self.index[field as usize]
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
    csv: csv::Reader<Box<dyn Read + Send>>,
    header: Header,
    display: String,
    row: u64,
    record: csv::StringRecord,
}

/// One data row as read: its 1-based row number, its line in the file and cells.
#[derive(Clone, Debug)]
pub struct RawRow {
    pub row: u64,
    pub line: u64,
    pub record: csv::StringRecord,
}

impl Rows {
    pub fn header(&self) -> &Header {
        &self.header
    }
}

impl Iterator for Rows {
    type Item = Result<RawRow, InputError>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.csv.read_record(&mut self.record) {
                Ok(false) => return None,
                Ok(true) if is_blank(&self.record) => continue,
                Ok(true) => {
                    self.row += 1;
                    let line = self.record.position().map(|p| p.line()).unwrap_or(0);
                    return Some(Ok(RawRow { row: self.row, line, record: std::mem::take(&mut self.record) }));
                }
                Err(e) => {
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    return Some(Err(InputError::Csv { path: self.display.clone(), line, message: e.to_string() }));
                }
            }
        }
    }
}

/// A validated order, its values trimmed.
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
}

/// Cells that spreadsheets run as formulas when a cell begins with them.
pub const FORMULA_TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

const BILL_NO_MAX: usize = 63;

fn bad_char(value: &str, allowed: impl Fn(char) -> bool) -> Option<char> {
    value.chars().find(|&c| !allowed(c))
}

fn is_bill_no_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '|' | '*' | '@')
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
}

/// `1.23457E+17`, `1E+17`, `2.5e-05`: a number a spreadsheet reformatted.
fn looks_scientific(v: &str) -> bool {
    let Some((mantissa, exp)) = v.split_once(['e', 'E']) else { return false };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let exp = exp.strip_prefix(['+', '-']).unwrap_or("");
    digits(int) && digits(frac) && digits(exp)
}

/// Checks bill_no against SPEC §1.1: 1–63 characters of `0-9 A-Z a-z _ - | * @`.
pub fn check_bill_no(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("bill_no is empty".into());
    }
    if looks_scientific(v) {
        return Err(format!(
            "bill_no `{v}` is a number a spreadsheet rewrote in scientific notation, so the real order id is lost; \
             re-export the orders with that column formatted as text"
        ));
    }
    if let Some(c) = bad_char(v, is_bill_no_char) {
        return Err(format!("bill_no `{v}` contains `{c}`; only 0-9 A-Z a-z _ - | * @ are allowed"));
    }
    let n = v.chars().count();
    if n > BILL_NO_MAX {
        return Err(format!("bill_no is {n} characters long; at most {BILL_NO_MAX} are allowed"));
    }
    Ok(())
}

fn check_id(field: &str, v: &str, max: usize, hint: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err(format!("{field} is empty{hint}"));
    }
    if let Some(c) = bad_char(v, is_id_char) {
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
    if v.len() > 128 || bad_char(v, |c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')).is_some() {
        return Err("session_key is not a base64 session key (the value is not shown)".into());
    }
    Ok(())
}

/// The outcome of validating one row, before duplicate detection.
#[derive(Debug)]
pub enum Validated {
    Valid(Order),
    /// The row is bad. `bill_no` is set when the bill_no itself was valid, so
    /// later rows with the same bill_no are still recognised as duplicates.
    Invalid {
        bill_no: Option<String>,
        message: String,
    },
}

/// Validates one row; messages name the line and the field.
pub fn validate(header: &Header, raw: &RawRow) -> Validated {
    let line = raw.line;
    let invalid =
        |bill_no: Option<String>, m: String| Validated::Invalid { bill_no, message: format!("line {line}: {m}") };
    if raw.record.len() != header.len() {
        let m = format!(
            "the row has {} fields but the header has {} (a missing or extra comma, or an unquoted comma inside a value)",
            raw.record.len(),
            header.len()
        );
        return invalid(None, m);
    }
    let get = |f: Field| header.column(f).and_then(|i| raw.record.get(i)).map(str::trim).unwrap_or("");
    let opt = |f: Field| Some(get(f)).filter(|v| !v.is_empty()).map(str::to_string);
    let bill_no = get(Field::BillNo);
    if let Err(m) = check_bill_no(bill_no) {
        return invalid(None, m);
    }
    let checks = [
        check_id("openid", get(Field::Openid), 128, ""),
        check_id("zone_id", get(Field::ZoneId), 64, " (use 1 for a game without zones)"),
        opt(Field::Pf).map_or(Ok(()), |v| check_id("pf", &v, 32, "")),
        opt(Field::UserIp).map_or(Ok(()), |v| check_user_ip(&v)),
        opt(Field::PayItem).map_or(Ok(()), |v| check_pay_item(&v)),
        opt(Field::SessionKey).map_or(Ok(()), |v| check_session_key(&v)),
    ];
    if let Some(Err(m)) = checks.into_iter().find(Result::is_err) {
        return invalid(Some(bill_no.to_string()), m);
    }
    Validated::Valid(Order {
        row: raw.row,
        bill_no: bill_no.to_string(),
        openid: get(Field::Openid).to_string(),
        zone_id: get(Field::ZoneId).to_string(),
        pf: opt(Field::Pf),
        user_ip: opt(Field::UserIp),
        pay_item: opt(Field::PayItem),
        session_key: opt(Field::SessionKey).map(Secret::new),
    })
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

/// Session keys from `--session-keys FILE` (CSV `openid,session_key`).
#[derive(Default)]
pub struct SessionKeys(HashMap<String, Secret>);

impl SessionKeys {
    pub fn load(path: &Path) -> anyhow::Result<SessionKeys> {
        use anyhow::Context as _;
        let ctx = || format!("--session-keys {}", path.display());
        let mut rdr =
            csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_path(path).with_context(ctx)?;
        let headers = rdr.headers().with_context(ctx)?.clone();
        let pos = |name: &str| headers.iter().position(|h| h.trim_start_matches('\u{feff}').eq_ignore_ascii_case(name));
        let (Some(o), Some(k)) = (pos("openid"), pos("session_key")) else {
            anyhow::bail!("{}: the header row must name the columns openid and session_key", ctx());
        };
        let mut map = HashMap::new();
        for rec in rdr.records() {
            let rec = rec.with_context(ctx)?;
            let line = rec.position().map_or(0, |p| p.line());
            let (openid, key) = (rec.get(o).unwrap_or(""), rec.get(k).unwrap_or(""));
            if openid.is_empty() && key.is_empty() {
                continue;
            }
            check_session_key(key).map_err(|m| anyhow::anyhow!("{} line {line}: {m}", ctx()))?;
            if !key.is_empty() {
                map.insert(openid.to_string(), Secret::new(key));
            }
        }
        Ok(SessionKeys(map))
    }

    pub fn get(&self, openid: &str) -> Option<&Secret> {
        self.0.get(openid)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every key, so the redactor can scrub them.
    pub fn values(&self) -> impl Iterator<Item = &Secret> {
        self.0.values()
    }
}

/// What to do with one row.
#[derive(Debug)]
pub enum Verdict {
    /// Valid, first of its bill_no, and sendable under the `--mp-sig` mode.
    Ready(Order),
    /// Not to be sent: invalid_input, duplicate or missing_session_key.
    Rejected { category: Category, message: String },
}

/// Turns rows into verdicts, in input order: validation, then duplicate
/// detection (first row wins), then the session-key rule of `--mp-sig`.
pub struct Classifier {
    // 128-bit fingerprints rather than the bill_nos themselves keep memory
    // near 30 bytes a row; a collision is astronomically unlikely.
    seen: HashMap<u128, u64>,
    session_keys: Arc<SessionKeys>,
    mp_sig: MpSigMode,
}

impl Classifier {
    pub fn new(session_keys: Arc<SessionKeys>, mp_sig: MpSigMode) -> Self {
        Classifier { seen: HashMap::new(), session_keys, mp_sig }
    }

    /// Classifies the next row; rows must come in input order.
    pub fn classify(&mut self, header: &Header, raw: &RawRow) -> Verdict {
        let (bill_no, result) = match validate(header, raw) {
            Validated::Valid(order) => (Some(order.bill_no.clone()), Ok(order)),
            Validated::Invalid { bill_no, message } => (bill_no, Err(message)),
        };
        if let Some(b) = &bill_no {
            let fp = xxhash_rust::xxh3::xxh3_128(b.as_bytes());
            if let Some(&first) = self.seen.get(&fp) {
                return Verdict::Rejected {
                    category: Category::Duplicate,
                    message: format!(
                        "line {}: bill_no `{b}` already appeared on row {first}; only that row is sent",
                        raw.line
                    ),
                };
            }
            self.seen.insert(fp, raw.row);
        }
        let mut order = match result {
            Ok(o) => o,
            Err(message) => return Verdict::Rejected { category: Category::InvalidInput, message },
        };
        if order.session_key.is_none() {
            order.session_key = self.session_keys.get(&order.openid).cloned();
        }
        if self.mp_sig == MpSigMode::Always && order.session_key.is_none() {
            return Verdict::Rejected {
                category: Category::MissingSessionKey,
                message: format!(
                    "line {}: no session key for openid `{}` (--mp-sig always needs one)",
                    raw.line, order.openid
                ),
            };
        }
        Verdict::Ready(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(cols: &[&str]) -> Header {
        Header::resolve("t", &csv::StringRecord::from(cols.to_vec()), &[]).unwrap()
    }

    fn raw(row: u64, cells: &[&str]) -> RawRow {
        RawRow { row, line: row + 1, record: csv::StringRecord::from(cells.to_vec()) }
    }

    fn message(v: Validated) -> String {
        match v {
            Validated::Invalid { message, .. } => message,
            Validated::Valid(o) => panic!("expected invalid, got {o:?}"),
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
            let m = message(validate(&h, &raw(1, cells)));
            assert!(m.contains(want), "{cells:?}: {m}");
        }
    }

    #[test]
    fn session_key_never_echoed() {
        let h = header(&["bill_no", "openid", "zone_id", "session_key"]);
        let m = message(validate(&h, &raw(1, &["b", "o", "1", "SeCrEt!!"])));
        assert!(!m.contains("SeCrEt"));
    }

    #[test]
    fn values_are_trimmed_and_empty_optionals_dropped() {
        let h = header(&["bill_no", "openid", "zone_id", "user_ip", "pay_item"]);
        match validate(&h, &raw(1, &[" b1 ", "\to\t", " 3_99 ", "  ", " 金币 "])) {
            Validated::Valid(o) => {
                assert_eq!((o.bill_no.as_str(), o.openid.as_str(), o.zone_id.as_str()), ("b1", "o", "3_99"));
                assert_eq!(o.user_ip, None);
                assert_eq!(o.pay_item.as_deref(), Some("金币"));
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn first_bill_no_wins_even_when_its_row_is_invalid() {
        let h = header(&["bill_no", "openid", "zone_id"]);
        let mut c = Classifier::new(Arc::default(), MpSigMode::Auto);
        let v1 = c.classify(&h, &raw(1, &["b1", "", "1"]));
        let v2 = c.classify(&h, &raw(2, &["b1", "o", "1"]));
        let v3 = c.classify(&h, &raw(3, &["b2", "o", "1"]));
        assert!(matches!(v1, Verdict::Rejected { category: Category::InvalidInput, .. }));
        match v2 {
            Verdict::Rejected { category: Category::Duplicate, message } => assert!(message.contains("row 1")),
            v => panic!("{v:?}"),
        }
        assert!(matches!(v3, Verdict::Ready(_)));
    }

    #[test]
    fn mp_sig_always_needs_a_session_key() {
        let h = header(&["bill_no", "openid", "zone_id"]);
        let mut c = Classifier::new(Arc::default(), MpSigMode::Always);
        assert!(matches!(
            c.classify(&h, &raw(1, &["b1", "o", "1"])),
            Verdict::Rejected { category: Category::MissingSessionKey, .. }
        ));
        let mut c = Classifier::new(Arc::default(), MpSigMode::Auto);
        assert!(matches!(c.classify(&h, &raw(1, &["b1", "o", "1"])), Verdict::Ready(_)));
    }

    #[test]
    fn header_mapping_and_errors() {
        let rec = csv::StringRecord::from(vec!["订单号", "OpenID", "zone_id", "amount"]);
        let map = vec!["bill_no=订单号".parse::<ColumnMapping>().unwrap()];
        let h = Header::resolve("t", &rec, &map).unwrap();
        assert_eq!(h.column(Field::BillNo), Some(0));
        assert_eq!(h.column(Field::Openid), Some(1), "header names match case-insensitively");
        let e = Header::resolve("t", &rec, &[]).unwrap_err().to_string();
        assert!(e.contains("bill_no") && e.contains("--column"), "{e}");
        let bad = vec!["bill_no=nope".parse::<ColumnMapping>().unwrap()];
        assert!(Header::resolve("t", &rec, &bad).unwrap_err().to_string().contains("nope"));
        assert!("bogus=x".parse::<ColumnMapping>().is_err());
        assert!("bill_no".parse::<ColumnMapping>().is_err());
    }
}
