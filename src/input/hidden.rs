//! Which rows of a worksheet a person does not see: filtered out by an
//! autofilter, or hidden by hand. Only what the person sees is sent (SPEC
//! "Behaviour under stress"), and calamine reads cells, not row visibility,
//! so it is read here from the workbook's XML: `<row hidden="1">` in an
//! .xlsx sheet, `table:visibility="collapsed"|"filter"` on an .ods row.

use quick_xml::events::{BytesStart, Event};
use std::collections::HashSet;
use std::io::{BufReader, Cursor, Read};

/// The 0-based rows of sheet `name` that are hidden, in an .xlsx (or .xlsm)
/// or .ods workbook held in `bytes`.
pub fn xlsx_hidden_rows(bytes: &[u8], name: &str) -> Result<HashSet<u32>, String> {
    let mut zip = archive(bytes)?;
    let rid = find_attr(&mut zip, "xl/workbook.xml", "sheet", "name", name, "id")?
        .ok_or_else(|| format!("sheet `{name}` is not listed in xl/workbook.xml"))?;
    let target = find_attr(&mut zip, "xl/_rels/workbook.xml.rels", "Relationship", "Id", &rid, "Target")?
        .ok_or_else(|| format!("sheet `{name}` has no part in the workbook"))?;
    let path = match target.strip_prefix('/') {
        Some(absolute) => absolute.to_string(),
        None => format!("xl/{target}"),
    };
    let mut hidden = HashSet::new();
    let mut next = 0u32;
    each_element(&mut zip, &path, |e| {
        if e.local_name().into_inner() != "row" {
            return Ok(());
        }
        // `r` is 1-based; a row without one follows the previous.
        let row = attr(e, "r")?.and_then(|r| r.parse::<u32>().ok()).map_or(next, |r| r.saturating_sub(1));
        next = row + 1;
        if attr(e, "hidden")?.is_some_and(|h| h == "1" || h == "true") {
            hidden.insert(row);
        }
        Ok(())
    })?;
    Ok(hidden)
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

/// The most of one part read (decompressed): a sheet of a million full rows
/// is well below it.
const MAX_PART: u64 = 2 << 30;

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
