//! Workbook input (.xlsx, .xlsm, .xls, .xlsb, .ods), read with calamine.
//!
//! Cells are read as text as a person sees them, and the hazards of a
//! spreadsheet are caught per row, never guessed around: an id stored as a
//! number Excel cannot hold exactly, a date, TRUE/FALSE, an error cell or a
//! formula in a column the API reads makes its row `invalid_input`, with the
//! cell's address. Columns the tool only carries come through as displayed.

use super::Field;
use calamine::{Data, Reader};
use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Cursor;
use std::sync::{Arc, Mutex, OnceLock};

/// The largest integer a numeric cell is trusted to hold exactly: Excel
/// keeps 15 significant digits, so a longer number may already have lost
/// its last digits (and beyond 2^53 a double cannot hold every integer).
const EXACT_BELOW: f64 = 1e15;

/// An .xlsx workbook open over its bytes in memory.
type OpenXlsx = calamine::Xlsx<Cursor<Arc<[u8]>>>;

/// One worksheet of a workbook, read whole (calamine parses a sheet at once).
pub struct Sheet {
    /// The sheet's name, for messages and cell addresses.
    pub name: String,
    /// The workbook's other sheets, for messages.
    pub others: Vec<String>,
    /// What the workbook is, e.g. "Excel workbook (.xlsx)".
    pub format: &'static str,
    cells: calamine::Range<Data>,
    /// The formulas' text where cells hold one (the values are cached results).
    formulas: calamine::Range<String>,
    /// Rows (absolute, 0-based) the person does not see (.xlsx, .ods).
    hidden: HashSet<u32>,
    /// Whether hidden rows can be told at all (not in .xls and .xlsb).
    pub visibility_known: bool,
    /// Cell styles (.xlsx only): a number shown through a format such as
    /// `00000` is not what the sheet shows. Read on first need (a number in
    /// an API column): reading them is another pass over the sheet.
    styles: OnceLock<Option<calamine::StyleRange>>,
    /// The open .xlsx, kept until its styles are read.
    xlsx: Mutex<Option<OpenXlsx>>,
}

impl Sheet {
    /// Reads `sheet` (default: the first) of the workbook in `bytes`.
    pub fn read(bytes: Vec<u8>, sheet: Option<&str>) -> Result<Sheet, String> {
        if password_protected(&bytes) {
            return Err("it is a password-protected (encrypted) workbook, which cannot be read without its password: \
                        open it in Excel or LibreOffice, remove the password (Excel: File > Info > Protect \
                        Workbook), save it, and give that file"
                .to_string());
        }
        if bytes.starts_with(b"PK") {
            super::sheet_xml::check_unpacked_size(&bytes)?;
        }
        let bytes = Arc::<[u8]>::from(bytes);
        let mut book = calamine::open_workbook_auto_from_rs(Cursor::new(bytes.clone())).map_err(|e| {
            format!(
                "it looks like a workbook (a ZIP archive or an Office file), but it cannot be read as one ({e}): \
                     open it in Excel or LibreOffice and save it again as .xlsx, or as \"CSV UTF-8\""
            )
        })?;
        let format = match book {
            calamine::Sheets::Xls(_) => "Excel 97-2003 workbook (.xls)",
            calamine::Sheets::Xlsx(_) => "Excel workbook (.xlsx)",
            calamine::Sheets::Xlsb(_) => "Excel binary workbook (.xlsb)",
            calamine::Sheets::Ods(_) => "OpenDocument spreadsheet (.ods)",
        };
        let names = book.sheet_names();
        // By default the first sheet a person sees: not a hidden one, nor a chart.
        let shown = book
            .sheets_metadata()
            .iter()
            .find(|s| s.visible == calamine::SheetVisible::Visible && s.typ == calamine::SheetType::WorkSheet)
            .map(|s| s.name.clone());
        let name =
            match sheet {
                Some(wanted) => names.iter().find(|n| n.as_str() == wanted).cloned().ok_or_else(|| {
                    format!("it has no sheet named `{wanted}`; its sheets are: {}", quoted_list(&names))
                })?,
                None => shown.or_else(|| names.first().cloned()).ok_or("it has no sheets")?,
            };
        // What cannot be checked is not sent: a workbook whose row visibility
        // cannot be read is refused. Read before calamine reads the sheet,
        // which holds the whole grid its cells span at once.
        let scan = match book {
            calamine::Sheets::Xlsx(_) => super::sheet_xml::xlsx_scan(&bytes, &name),
            calamine::Sheets::Ods(_) => super::sheet_xml::ods_hidden_rows(&bytes, &name)
                .map(|hidden| super::sheet_xml::Scan { hidden, ..Default::default() }),
            calamine::Sheets::Xls(_) | calamine::Sheets::Xlsb(_) => Ok(Default::default()),
        }
        .map_err(|e| format!("sheet `{name}` cannot be read ({e})"))?;
        if scan.cells() > super::sheet_xml::MAX_CELLS {
            let (Some((r0, c0)), Some((r1, c1))) = (scan.first, scan.last) else { unreachable!("cells > 0") };
            return Err(format!(
                "sheet `{name}` spans {}{}:{}{} ({} cells from its first used cell to its last), more than the \
                 {} a sheet may span here: a stray value far from the orders (Ctrl+End in Excel shows the last \
                 cell) stretches it. Delete those rows and columns, or save the orders as CSV",
                column_letters(c0),
                r0 + 1,
                column_letters(c1),
                r1 + 1,
                scan.cells(),
                super::sheet_xml::MAX_CELLS
            ));
        }
        let hidden = scan.hidden;
        let visibility_known = matches!(book, calamine::Sheets::Xlsx(_) | calamine::Sheets::Ods(_));
        let cells = book.worksheet_range(&name).map_err(|e| format!("sheet `{name}` cannot be read ({e})"))?;
        // Not every format keeps formulas apart from their values: then none are known.
        let formulas = book.worksheet_formula(&name).unwrap_or_default();
        let xlsx = match book {
            calamine::Sheets::Xlsx(x) => Some(x),
            _ => None,
        };
        let others = names.into_iter().filter(|n| *n != name).collect();
        Ok(Sheet {
            name,
            others,
            format,
            cells,
            formulas,
            hidden,
            visibility_known,
            styles: OnceLock::new(),
            xlsx: Mutex::new(xlsx),
        })
    }

    /// Cells of column `col` (0-based within the used range) that hold a
    /// number: in an id column, a number may have been a text id whose
    /// leading zeros a spreadsheet dropped when it typed the column.
    pub fn numbers_in_column(&self, col: usize) -> u64 {
        self.cells.rows().filter(|r| matches!(r.get(col), Some(Data::Int(_) | Data::Float(_)))).count() as u64
    }

    /// Rows of the sheet's used range (the header row included).
    pub fn height(&self) -> usize {
        self.cells.height()
    }

    /// A streaming pass over the sheet's rows.
    pub fn rows(self: &Arc<Self>) -> SheetRows {
        SheetRows { sheet: self.clone(), next: 0 }
    }

    /// `Sheet1!C17` for the cell at absolute (row, column), both 0-based.
    pub fn address(&self, row: u32, col: u32) -> String {
        let name = if self.name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            Cow::Borrowed(self.name.as_str())
        } else {
            Cow::Owned(format!("'{}'", self.name.replace('\'', "''")))
        };
        format!("{name}!{}{}", column_letters(col), row + 1)
    }

    fn is_formula(&self, row: u32, col: u32) -> bool {
        self.formulas.get_value((row, col)).is_some_and(|f| !f.is_empty())
    }

    /// The number format of a cell, unless it shows an integer as its own
    /// digits (General, `0`, `#,##0`, `0.00`): zero padding (`00000`),
    /// percentages, scaling, scientific and custom formats show digits the
    /// cell does not hold.
    fn shaping_format(&self, row: u32, col: u32) -> Option<&str> {
        const PLAIN: [&str; 8] = ["", "General", "@", "0", "0.0", "0.00", "#,##0", "#,##0.00"];
        let styles = self.styles.get_or_init(|| {
            let mut xlsx = self.xlsx.lock().unwrap_or_else(|e| e.into_inner()).take()?;
            xlsx.worksheet_style(&self.name).ok()
        });
        let style = styles.as_ref()?.get((row, col))?;
        let code = style.number_format.as_ref()?.format_code.as_str();
        (!PLAIN.contains(&code)).then_some(code)
    }
}

/// One row as read: its spreadsheet row number (1-based) and its cells,
/// absolute column → cell.
pub struct SheetRow<'a> {
    pub number: u64,
    /// Absolute row, 0-based.
    row: u32,
    /// Index in the used range.
    index: usize,
    first_col: u32,
    sheet: &'a Sheet,
}

impl SheetRow<'_> {
    /// Whether the row is hidden (filtered out, or hidden by hand).
    pub fn is_hidden(&self) -> bool {
        self.sheet.hidden.contains(&self.row)
    }

    /// Whether every cell is empty (or blank text), as a blank CSV line.
    pub fn is_blank(&self) -> bool {
        self.cells().all(blank)
    }

    /// Every cell as displayed (a header row).
    pub fn texts(&self, record: &mut csv::StringRecord) {
        record.clear();
        for cell in self.cells() {
            record.push_field(&cell_text(cell));
        }
    }

    /// The cells as text for the first `width` columns (the header's, never
    /// wider than the sheet's used range), each API column (`fields[i]`)
    /// checked; returns why the row cannot be used, when it cannot, naming
    /// every bad cell by its address.
    pub fn read_into(&self, width: usize, fields: &[Option<Field>], record: &mut csv::StringRecord) -> Option<String> {
        record.clear();
        let mut problems = Vec::new();
        for (i, cell) in self.cells().enumerate() {
            let col = self.first_col + i as u32;
            if i >= width {
                if !blank(cell) {
                    problems.push(format!(
                        "{}: a value in a column without a header (the header row ends at column {})",
                        self.sheet.address(self.row, col),
                        column_letters(self.first_col + width as u32 - 1)
                    ));
                }
                continue;
            }
            let field = fields.get(i).copied().flatten();
            let hazard = |f| {
                let number = matches!(cell, Data::Int(_) | Data::Float(_));
                let format = if number { self.sheet.shaping_format(self.row, col) } else { None };
                api_text(cell, self.sheet.is_formula(self.row, col), format, f)
            };
            match field.map(hazard) {
                Some(Err(why)) => {
                    problems.push(format!("{}: {why}", self.sheet.address(self.row, col)));
                    // The row is not sent, but its line shows what the sheet
                    // holds (finance joins on the bill_no); a session key never.
                    let shown = if field == Some(Field::SessionKey) { Cow::Borrowed("") } else { cell_text(cell) };
                    record.push_field(&shown);
                }
                Some(Ok(text)) => record.push_field(&text),
                None => record.push_field(&cell_text(cell)),
            }
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }

    fn cells(&self) -> impl Iterator<Item = &Data> {
        (0..self.sheet.cells.width()).map(|j| self.sheet.cells.get((self.index, j)).unwrap_or(&Data::Empty))
    }
}

/// The rows of a sheet, in order.
pub struct SheetRows {
    sheet: Arc<Sheet>,
    /// Index into the used range of the next row.
    next: usize,
}

impl SheetRows {
    /// Rows of the used range read so far.
    pub fn consumed(&self) -> usize {
        self.next
    }

    /// The next row of the used range, or `None` at the end.
    pub fn next_row(&mut self) -> Option<SheetRow<'_>> {
        let (start_row, first_col) = self.sheet.cells.start()?;
        let index = self.next;
        if index >= self.sheet.cells.height() {
            return None;
        }
        self.next += 1;
        let row = start_row + index as u32;
        Some(SheetRow { number: u64::from(row) + 1, row, index, first_col, sheet: &self.sheet })
    }
}

/// An encrypted Office workbook: an Office compound file (whatever its name)
/// holding an `EncryptedPackage` stream, its name in UTF-16.
fn password_protected(bytes: &[u8]) -> bool {
    const OLE: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    let name: Vec<u8> = "EncryptedPackage".encode_utf16().flat_map(u16::to_le_bytes).collect();
    bytes.starts_with(&OLE) && memchr::memmem::find(bytes, &name).is_some()
}

/// An empty cell, or one of blank text.
fn blank(cell: &Data) -> bool {
    match cell {
        Data::Empty => true,
        Data::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// A cell as a person sees it (near enough: number formats other than
/// dates are not applied).
pub fn cell_text(cell: &Data) -> Cow<'_, str> {
    match cell {
        Data::Empty => Cow::Borrowed(""),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => Cow::Borrowed(s),
        Data::Int(i) => Cow::Owned(i.to_string()),
        Data::Float(f) => Cow::Owned(float_text(*f)),
        Data::Bool(b) => Cow::Borrowed(if *b { "TRUE" } else { "FALSE" }),
        Data::Error(e) => Cow::Owned(e.to_string()),
        Data::DateTime(d) => {
            let (y, mo, day, h, mi, s, _) = d.to_ymd_hms_milli();
            Cow::Owned(if d.is_duration() {
                let secs = (d.as_f64() * 86400.0).round() as i64;
                format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
            } else if (h, mi, s) == (0, 0, 0) {
                format!("{y:04}-{mo:02}-{day:02}")
            } else {
                format!("{y:04}-{mo:02}-{day:02} {h:02}:{mi:02}:{s:02}")
            })
        }
    }
}

/// An integer-valued number as its digits; any other as Rust writes it.
fn float_text(f: f64) -> String {
    match exact_integer(f) {
        Some(i) => i.to_string(),
        None => f.to_string(),
    }
}

/// The integer a number cell holds, when it surely holds exactly that one.
fn exact_integer(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && f.abs() < EXACT_BELOW).then_some(f as i64)
}

/// The text of a cell in a column the API reads, or why it cannot be sent.
/// `format`: the number format a number cell is shown through, when it is
/// not plain digits.
fn api_text<'a>(cell: &'a Data, formula: bool, format: Option<&str>, field: Field) -> Result<Cow<'a, str>, String> {
    let text = cell_as_id(cell, formula, format, field);
    if field == Field::SessionKey && text.is_err() {
        // A session key is a secret: its value is never repeated.
        return Err("session_key is not a text cell (a number, date, formula or error): format the column as \
                    Text and export again"
            .to_string());
    }
    text
}

/// [`api_text`], with messages that show the cell's value.
fn cell_as_id<'a>(cell: &'a Data, formula: bool, format: Option<&str>, field: Field) -> Result<Cow<'a, str>, String> {
    let name = field.name();
    if let Some(code) = format {
        return Err(format!(
            "{name} is a number shown through the number format `{code}`, so the sheet may show other digits than \
             the cell holds ({}): format the {name} column as Text in the source export and export again",
            cell_text(cell)
        ));
    }
    let number = |f: f64| {
        let (shown, why) = if f.fract() != 0.0 && f.abs() < EXACT_BELOW {
            (f.to_string(), "has a fraction")
        } else {
            (
                format!("{f:E}"),
                "has more than 15 digits, which Excel cannot hold exactly (it may already have changed the last ones)",
            )
        };
        format!(
            "{name} is stored as a number ({shown}) that {why}: format the {name} column as Text in the source \
             export and export again"
        )
    };
    match cell {
        Data::Bool(_) | Data::DateTime(_) | Data::DateTimeIso(_) | Data::DurationIso(_) | Data::Error(_) => {}
        _ if formula => {
            return Err(format!(
                "{name} is a formula; the value it shows is never sent: copy the column and paste it as values \
                 (Paste Special > Values), then export again"
            ))
        }
        _ => {}
    }
    match cell {
        Data::Empty => Ok(Cow::Borrowed("")),
        Data::String(s) => Ok(Cow::Borrowed(s)),
        Data::Int(i) if (i.unsigned_abs() as f64) < EXACT_BELOW => Ok(Cow::Owned(i.to_string())),
        Data::Int(i) => Err(number(*i as f64)),
        Data::Float(f) => exact_integer(*f).map(|i| Cow::Owned(i.to_string())).ok_or_else(|| number(*f)),
        Data::Bool(b) => Err(format!("{name} is a TRUE/FALSE cell ({}), not text", if *b { "TRUE" } else { "FALSE" })),
        Data::DateTime(_) | Data::DateTimeIso(_) | Data::DurationIso(_) => Err(format!(
            "{name} is a date or time cell ({}), not text: format the column as Text and export again",
            cell_text(cell)
        )),
        Data::Error(e) => Err(format!("{name} is an error cell ({e})")),
    }
}

/// `A`, …, `Z`, `AA`, … for a 0-based column.
pub fn column_letters(col: u32) -> String {
    let mut n = col + 1;
    let mut letters = Vec::new();
    while n > 0 {
        let rem = (n - 1) % 26;
        letters.push(b'A' + rem as u8);
        n = (n - 1) / 26;
    }
    letters.reverse();
    String::from_utf8(letters).unwrap_or_default()
}

fn quoted_list(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_letters_run_like_a_spreadsheet() {
        for (c, want) in
            [(0, "A"), (25, "Z"), (26, "AA"), (27, "AB"), (51, "AZ"), (52, "BA"), (701, "ZZ"), (702, "AAA")]
        {
            assert_eq!(column_letters(c), want, "{c}");
        }
    }

    #[test]
    fn numbers_in_api_columns_must_be_exact_integers() {
        let ok = |d: Data| api_text(&d, false, None, Field::BillNo).map(Cow::into_owned);
        assert_eq!(ok(Data::Float(123456789012345.0)).unwrap(), "123456789012345");
        assert_eq!(ok(Data::Int(42)).unwrap(), "42");
        assert_eq!(ok(Data::Float(60.0)).unwrap(), "60");
        for bad in [Data::Float(1234567890123456789.0), Data::Float(1e15), Data::Float(60.5), Data::Int(10_i64.pow(15))]
        {
            let m = ok(bad.clone()).unwrap_err();
            assert!(m.contains("format the bill_no column as Text"), "{bad:?}: {m}");
        }
    }

    #[test]
    fn a_session_key_cell_is_never_repeated() {
        let secret = Data::Float(98765432109876543.0);
        let m = api_text(&secret, false, None, Field::SessionKey).unwrap_err();
        assert!(!m.contains("9.87") && !m.contains("98765"), "{m}");
        assert!(m.contains("session_key is not a text cell"), "{m}");
    }

    #[test]
    fn carried_cells_read_as_displayed() {
        assert_eq!(cell_text(&Data::Float(1.5)), "1.5");
        assert_eq!(cell_text(&Data::Float(100.0)), "100");
        assert_eq!(cell_text(&Data::Bool(true)), "TRUE");
        assert_eq!(cell_text(&Data::Error(calamine::CellErrorType::NA)), "#N/A");
    }

    /// Regression (encrypted_workbook_not_named): "Cannot detect file format".
    #[test]
    fn a_password_protected_workbook_is_named_so() {
        let mut bytes = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
        bytes.resize(512, 0);
        bytes.extend("EncryptedPackage".encode_utf16().flat_map(u16::to_le_bytes));
        bytes.resize(2048, 0);
        let e = Sheet::read(bytes, None).err().unwrap();
        assert!(e.contains("password-protected"), "{e}");
    }
}
