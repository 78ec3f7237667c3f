//! What a workbook's XML says that calamine does not, read before calamine
//! allocates anything for the sheet:
//! - which rows a person does not see: filtered out by an autofilter, or
//!   hidden by hand (`<row hidden="1">` in .xlsx, `table:visibility` on an
//!   .ods row). Only what the person sees is sent (SPEC "Behaviour under
//!   stress");
//! - how far a sheet's cells reach, and how large its parts are once
//!   unpacked: calamine holds a sheet as one grid from its first used cell
//!   to its last, so a 1.6 KB file with one value at XFD1048576 asked for
//!   512 GiB. Such a file is refused with a message, in bounded memory.

use quick_xml::events::{BytesStart, Event};
use std::collections::HashSet;
use std::io::{BufReader, Cursor, Read};

/// The most cells a sheet's grid may span (first used cell to last): a
/// million rows of 32 columns. calamine holds each in about 32 bytes.
pub const MAX_CELLS: u64 = 32 << 20;
/// The most one part of a workbook may hold unpacked, and all of them.
const MAX_PART: u64 = 1 << 30;
const MAX_UNPACKED: u64 = 2 << 30;

/// What an .xlsx sheet's XML says: its hidden rows (0-based) and the corners
/// of the grid its cells span (0-based row, column).
#[derive(Debug, Default)]
pub struct Scan {
    pub hidden: HashSet<u32>,
    pub first: Option<(u32, u32)>,
    pub last: Option<(u32, u32)>,
}

impl Scan {
    /// Cells in the grid the sheet's used cells span.
    pub fn cells(&self) -> u64 {
        match (self.first, self.last) {
            (Some((r0, c0)), Some((r1, c1))) => u64::from(r1 - r0 + 1) * u64::from(c1 - c0 + 1),
            _ => 0,
        }
    }

    fn cover(&mut self, row: u32, col: u32) {
        let (r0, c0) = self.first.unwrap_or((row, col));
        let (r1, c1) = self.last.unwrap_or((row, col));
        self.first = Some((r0.min(row), c0.min(col)));
        self.last = Some((r1.max(row), c1.max(col)));
    }
}

/// Refuses a ZIP-based workbook whose parts would unpack to more than a
/// sheet of a million full rows needs (a "zip bomb"), going by the sizes
/// its directory declares, before anything is unpacked.
pub fn check_unpacked_size(bytes: &[u8]) -> Result<(), String> {
    // One that is no readable archive at all is calamine's to describe.
    let Ok(mut zip) = archive(bytes) else { return Ok(()) };
    let mut total = 0u64;
    for i in 0..zip.len() {
        let part = zip.by_index_raw(i).map_err(|e| format!("not a readable ZIP archive ({e})"))?;
        let size = part.size();
        total = total.saturating_add(size);
        if size > MAX_PART || total > MAX_UNPACKED {
            return Err(format!(
                "it would unpack to more than {} GiB (its part {} alone to {} MiB), far beyond any export of \
                 orders: it is damaged or made to exhaust memory. Save the orders as CSV instead",
                MAX_UNPACKED >> 30,
                part.name().unwrap_or_default(),
                size >> 20
            ));
        }
    }
    Ok(())
}

/// Streams sheet `name` of an .xlsx (or .xlsm) workbook held in `bytes`:
/// its hidden rows and the grid its cells span.
pub fn xlsx_scan(bytes: &[u8], name: &str) -> Result<Scan, String> {
    let mut zip = archive(bytes)?;
    let rid = find_attr(&mut zip, "xl/workbook.xml", "sheet", "name", name, "id")?
        .ok_or_else(|| format!("sheet `{name}` is not listed in xl/workbook.xml"))?;
    let target = find_attr(&mut zip, "xl/_rels/workbook.xml.rels", "Relationship", "Id", &rid, "Target")?
        .ok_or_else(|| format!("sheet `{name}` has no part in the workbook"))?;
    let path = match target.strip_prefix('/') {
        Some(absolute) => absolute.to_string(),
        None => format!("xl/{target}"),
    };
    let mut scan = Scan::default();
    let (mut row, mut col) = (0u32, 0u32);
    let mut next_row = 0u32;
    each_element(&mut zip, &path, |e| {
        match e.local_name().into_inner() {
            "row" => {
                // `r` is 1-based; a row without one follows the previous.
                row = raw_attr(e, "r").and_then(|r| r.parse::<u32>().ok()).map_or(next_row, |r| r.saturating_sub(1));
                next_row = row + 1;
                col = 0;
                if raw_attr(e, "hidden").is_some_and(|h| h == "1" || h == "true") {
                    scan.hidden.insert(row);
                }
            }
            "c" => {
                // A cell without `r` follows the previous one in its row.
                let found = raw_attr(e, "r").and_then(|r| cell_ref(&r));
                let (r, c) = found.unwrap_or((row, col));
                scan.cover(r, c);
                col = c + 1;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(scan)
}

/// `XFD1048576` → (1048575, 16383), 0-based.
fn cell_ref(r: &str) -> Option<(u32, u32)> {
    let split = r.find(|c: char| c.is_ascii_digit())?;
    let (letters, digits) = r.split_at(split);
    if letters.is_empty() || letters.len() > 3 || !letters.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let col = letters.bytes().fold(0u32, |n, b| n * 26 + u32::from(b - b'A' + 1)) - 1;
    let row = digits.parse::<u32>().ok()?.checked_sub(1)?;
    Some((row, col))
}

/// [`xlsx_hidden_rows`] for an OpenDocument spreadsheet.
pub fn ods_hidden_rows(bytes: &[u8], name: &str) -> Result<HashSet<u32>, String> {
    let mut zip = archive(bytes)?;
    let mut hidden = HashSet::new();
    let (mut inside, mut depth, mut next) = (false, 0usize, 0u32);
    each_event(&mut zip, "content.xml", |event| {
        match event {
            Event::Start(e) | Event::Empty(e) if e.local_name().into_inner() == "table" => {
                if !inside && attr(e, "name")?.as_deref() == Some(name) {
                    inside = true;
                    depth = 0;
                } else if inside {
                    depth += 1;
                }
            }
            Event::End(e) if e.local_name().into_inner() == "table" && inside => {
                if depth == 0 {
                    inside = false;
                } else {
                    depth -= 1;
                }
            }
            Event::Start(e) | Event::Empty(e) if inside && depth == 0 && e.local_name().into_inner() == "table-row" => {
                let repeated = attr(e, "number-rows-repeated")?.and_then(|n| n.parse::<u32>().ok()).unwrap_or(1);
                let shown = attr(e, "visibility")?.is_none_or(|v| v == "visible");
                if !shown {
                    // A long hidden run (to the sheet's end) is bounded by
                    // the rows a sheet can have.
                    for r in next..next.saturating_add(repeated).min(1 << 20) {
                        hidden.insert(r);
                    }
                }
                next = next.saturating_add(repeated);
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(hidden)
}

type Archive<'a> = zip::ZipArchive<Cursor<&'a [u8]>>;

fn archive(bytes: &[u8]) -> Result<Archive<'_>, String> {
    zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("not a readable ZIP archive ({e})"))
}

/// The value of `attr` (e.g. a target) on the first `element` whose `key`
/// attribute is `value`, in part `path`.
fn find_attr(
    zip: &mut Archive<'_>,
    path: &str,
    element: &str,
    key: &str,
    value: &str,
    want: &str,
) -> Result<Option<String>, String> {
    let mut found = None;
    each_element(zip, path, |e| {
        if found.is_none() && e.local_name().into_inner() == element && attr(e, key)?.as_deref() == Some(value) {
            found = attr(e, want)?;
        }
        Ok(())
    })?;
    Ok(found)
}

/// Calls `f` on every start (or empty) element of part `path`.
fn each_element(
    zip: &mut Archive<'_>,
    path: &str,
    mut f: impl FnMut(&BytesStart<'_>) -> Result<(), String>,
) -> Result<(), String> {
    each_event(zip, path, |event| match event {
        Event::Start(e) | Event::Empty(e) => f(e),
        _ => Ok(()),
    })
}

/// Streams part `path` of the archive through `f`, event by event.
fn each_event(
    zip: &mut Archive<'_>,
    path: &str,
    mut f: impl FnMut(&Event<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let part = zip.by_name(path).map_err(|e| format!("no part {path} ({e})"))?;
    let mut reader = quick_xml::Reader::from_reader(BufReader::new(part.take(MAX_PART)));
    // A text node is never held: a part of nothing but white space would
    // otherwise be read into one buffer.
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| format!("{path} is not readable XML ({e})"))?;
        if matches!(event, Event::Eof) {
            return Ok(());
        }
        f(&event)?;
        buf.clear();
    }
}

/// An attribute's text as written, by local name: for cell references and
/// flags (never escaped), read on every cell, so without unescaping.
fn raw_attr<'a>(e: &'a BytesStart<'_>, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    e.attributes().flatten().find(|a| a.key.local_name().into_inner() == name).map(|a| a.value)
}

/// An attribute's unescaped value, by local name.
fn attr(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, String> {
    for a in e.attributes() {
        let a = a.map_err(|err| format!("a malformed attribute ({err})"))?;
        if a.key.local_name().into_inner() == name {
            let v = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|err| format!("a malformed attribute ({err})"))?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_references_read_like_a_spreadsheet() {
        assert_eq!(cell_ref("A1"), Some((0, 0)));
        assert_eq!(cell_ref("XFD1048576"), Some((1_048_575, 16_383)));
        assert_eq!(cell_ref("ZZ200000"), Some((199_999, 701)));
        assert_eq!(cell_ref("a1"), None);
        assert_eq!(cell_ref("A0"), None);
    }
}
