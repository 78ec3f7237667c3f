//! Reading an order export: encoding detection, CSV parsing, workbooks
//! ([`workbook`]), column mapping, row validation and duplicate detection
//! (SPEC §2 Input).
//!
//! A CSV file is streamed record by record and never held in memory. Before
//! the first record is handed out, [`Input::open`] scans the raw bytes once to
//! settle the encoding, so undecodable bytes stop the run before anything is
//! produced or sent. A workbook's sheet is parsed whole when it is opened.

mod decode;
mod duplicates;
pub mod field;
mod fields;
mod header;
mod records;
mod session_keys;
mod sheet_xml;
pub mod workbook;

pub use self::{decode::*, duplicates::*, field::*, fields::*, header::*, records::*, session_keys::*};

use crate::api::ApiKind;
use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What validation and duplicate detection need to know of the run: the API
/// and, for v2's derived cancellation ids, the offer_id and `--cancel-tag`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub api: ApiKind,
    /// Whether the API was named (`--api`, config `api`) rather than the
    /// default: only the default gives way to "this looks like another API's
    /// export".
    pub api_named: bool,
    /// What derived ids are made of besides the order: v2's offer_id,
    /// xpay's appid.
    pub offer_id: String,
    pub cancel_tag: String,
    /// `--user-ip`: the user's IP for rows without one (xpay).
    pub user_ip: Option<String>,
    /// `--refund-reason`: the reason of refund rows without one (xpay-refund).
    pub refund_reason: Option<String>,
}

impl Rules {
    /// A row's own id (an API that has one): its `cancel_bill_no` cell when
    /// given, else derived by the API from the order and amount (v2: SPEC
    /// §1.5). Empty for an API without ids.
    pub fn cancel_id<'a>(&self, given: Option<&'a str>, bill_no: &str, amount: &str) -> Cow<'a, str> {
        match (given, self.api.input().own_id) {
            (Some(c), _) => Cow::Borrowed(c),
            (None, Some(derive)) => Cow::Owned(derive(&self.offer_id, bill_no, amount, &self.cancel_tag)),
            (None, None) => Cow::Borrowed(""),
        }
    }
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
        "{path} looks like a {what} export (its header has the columns {columns}), and this run speaks the \
         {this} API, where those columns would be carried and not sent: add --api {api} (or api = \"{api}\" in \
         the config file). If it really is a {this} export, say so with --api {this}"
    )]
    OtherApi { path: String, what: &'static str, columns: String, this: &'static str, api: &'static str },
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
}

impl Input {
    /// Warnings about the input as a whole: in a workbook, id columns with
    /// numbers in them (`0012` typed as a number is 12; nobody can tell the
    /// zeros were there, so the operator is told to look).
    pub fn warnings(&self, header: &Header) -> Vec<String> {
        let Some(sheet) = &self.sheet else { return Vec::new() };
        // Only what the person sees is sent, and here that cannot be told.
        let hidden = (!sheet.visibility_known).then(|| {
            format!(
                "warning: {}: which rows are hidden (filtered out, or hidden by hand) cannot be read from this format, \
                 so hidden rows would be sent like the others: unhide every row first, or save the workbook as .xlsx",
                sheet.format
            )
        });
        hidden
            .into_iter()
            .chain(
                [
                    Field::BillNo,
                    Field::Openid,
                    Field::ZoneId,
                    Field::CancelBillNo,
                    Field::WxOrderId,
                    Field::RefundBillNo,
                ]
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
                }),
            )
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::category::Category;
    use std::sync::Mutex;

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
