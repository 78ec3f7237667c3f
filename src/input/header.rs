//! The header row: column names matched to order fields (case, `_`, `-`, `.`
//! and spaces aside; `--column FIELD=HEADER` as given), and the field of each
//! column.

use super::field::{Field, Need, FIELDS, NAMES};
use super::fields::trim;
use super::records::RawRow;
use super::{place, InputError, Rules};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// One `--column FIELD=HEADER` mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnMapping {
    pub field: Field,
    pub header: String,
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

/// The input's header: its column names and where each order field is.
#[derive(Clone, Debug)]
pub struct Header {
    names: Vec<String>,
    index: [Option<usize>; FIELDS],
    rules: Arc<Rules>,
    /// The sheet's name, when the input is a workbook: messages then name
    /// spreadsheet rows, not lines.
    pub(super) sheet: Option<Arc<str>>,
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
        let spec = rules.api.input();
        // Another API's export under this one's default: its own columns
        // would be carried, not sent, and its rows end in final categories.
        if let Some(other) = spec.other_api.filter(|o| !rules.api_named && o.columns.iter().all(|c| has(c))) {
            return Err(InputError::OtherApi {
                path: path.to_string(),
                what: other.what,
                columns: other.columns.join(" and "),
                this: rules.api.name(),
                api: other.api,
            });
        }
        let mut index = [None; FIELDS];
        for (field, name) in NAMES {
            if spec.need(field) == Need::Unused {
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
                            field: NAMES[b].1,
                            first: NAMES[a].1.to_string(),
                            second: names[*x].clone(),
                        });
                    }
                }
            }
        }
        let mut missing: Vec<String> = NAMES
            .iter()
            .filter(|(f, _)| spec.need(*f) == Need::Required && index[*f as usize].is_none())
            .map(|(_, n)| n.to_string())
            .collect();
        // An order named either way: one of the two columns.
        if let Some(alt) = spec.alt_order {
            if index[Field::BillNo as usize].is_none() && index[alt as usize].is_none() {
                missing.insert(0, format!("{} (or {})", Field::BillNo.name(), alt.name()));
            }
        }
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

    /// An API with ids of its own, and an input with their column:
    /// duplicates are judged by the id rather than by the order (SPEC §2
    /// Output).
    pub fn keyed_by_cancel_id(&self) -> bool {
        let spec = self.rules.api.input();
        spec.own_id.is_some() && self.column(spec.id_field).is_some()
    }

    /// The order a row names, as given, and the field that names it: its
    /// bill_no, else (an API that takes either) the other id, when given.
    pub fn order_of<'a>(&self, raw: &'a RawRow) -> (Field, &'a str) {
        let bill_no = self.cell(raw, Field::BillNo);
        match self.rules.api.input().alt_order {
            Some(alt) if bill_no.is_empty() && !self.cell(raw, alt).is_empty() => (alt, self.cell(raw, alt)),
            _ => (Field::BillNo, bill_no),
        }
    }

    /// The order a row names, as given (see [`Header::order_of`]).
    pub fn order_cell<'a>(&self, raw: &'a RawRow) -> &'a str {
        self.order_of(raw).1
    }

    /// How messages name the duplicate key.
    pub fn key_name(&self) -> &'static str {
        self.rules.api.input().key_names[usize::from(self.keyed_by_cancel_id())]
    }

    /// The own id of a row that is not sent (a duplicate, no session key,
    /// invalid otherwise), when its cells give one, so that the results file
    /// names it all the same.
    pub fn cancel_id_of(&self, raw: &RawRow) -> Option<String> {
        let spec = self.rules.api.input();
        spec.own_id?;
        let cell = |f| self.cell(raw, f);
        let given = Some(cell(spec.id_field)).filter(|c| !c.is_empty());
        let ((order_field, bill_no), amount) = (self.order_of(raw), cell(Field::Amount));
        // A derived id needs a valid order and amount (an optional amount may
        // be blank); a given one is as given.
        let amount_ok = match spec.need(Field::Amount) {
            Need::Optional if amount.is_empty() => true,
            _ => spec.check(Field::Amount, amount).is_ok(),
        };
        let derivable = spec.check(order_field, bill_no).is_ok() && amount_ok;
        (given.is_some() || derivable).then(|| self.rules.cancel_id(given, bill_no, amount).into_owned())
    }

    /// Whether every row needs a session key to be sent.
    pub fn needs_session_key(&self) -> bool {
        self.rules.api.input().needs_session_key
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

    /// The value of `field` in `raw` as it is, white space and all (free
    /// text that is signed as given); empty when missing.
    pub fn raw_cell<'a>(&self, raw: &'a RawRow, field: Field) -> &'a str {
        self.column(field).and_then(|i| raw.record.get(i)).unwrap_or("")
    }

    /// Whether the value of `field` is taken as it is, not trimmed.
    pub fn verbatim(field: Field) -> bool {
        field == Field::BizMeta
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
        NAMES.iter().map(|(f, _)| *f).find(|&f| self.index[f as usize] == Some(col))
    }

    /// The input columns that appear in the output (every one but session_key),
    /// as (index, name).
    pub fn output_columns(&self) -> impl Iterator<Item = (usize, &str)> {
        let sk = self.column(Field::SessionKey);
        self.names.iter().enumerate().filter(move |(i, _)| Some(*i) != sk).map(|(i, n)| (i, n.as_str()))
    }
}

/// A header cell as a column name: trimmed, without a byte-order mark that
/// a spreadsheet left on the first one.
pub(super) fn header_name(cell: &str) -> &str {
    cell.trim().trim_start_matches('\u{feff}')
}

/// A header name compared loosely: case, `_`, `-`, `.` and white space aside.
pub(super) fn loose_name(name: &str) -> String {
    name.chars().filter(|c| !matches!(c, '_' | '-' | '.') && !c.is_whitespace()).flat_map(char::to_lowercase).collect()
}
