//! Spreadsheets in and out: workbook input with its hazards caught per row,
//! `report --xlsx`, `--only -o FILE.xlsx` taken back by `run`, and CSV for
//! Excel. Fixtures are built here: .xlsx with rust_xlsxwriter, .ods as a
//! minimal OpenDocument ZIP. (.xls and .xlsb cannot be written from Rust
//! here; calamine reads them through the same code path.)

use crate::harness::{
    assert_one_line_per_row, kill_part_way, sim_config, start, stderr_of, stdout_of, Results, Workdir,
};
use calamine::{Data, Reader};
use midas_cancel::sim::OrderState;
use rust_xlsxwriter::{ExcelDateTime, Format, Workbook, Worksheet};

/// One cell of a fixture.
enum Cell {
    Text(&'static str),
    Num(f64),
    Date,
    Bool,
    /// `=NA()`, its cached value `#N/A`.
    NaFormula,
    /// A formula whose cached value is this text.
    Formula(&'static str),
    /// A number shown through a number format.
    Shown(f64, &'static str),
}

fn put(sheet: &mut Worksheet, row: u32, col: u16, cell: &Cell) {
    use Cell::*;
    match cell {
        Text(t) => sheet.write_string(row, col, *t).map(|_| ()),
        Num(n) => sheet.write_number(row, col, *n).map(|_| ()),
        Date => {
            let date = ExcelDateTime::from_ymd(2026, 11, 23).unwrap();
            sheet.write_datetime_with_format(row, col, date, &Format::new().set_num_format("yyyy-mm-dd")).map(|_| ())
        }
        Bool => sheet.write_boolean(row, col, true).map(|_| ()),
        NaFormula => {
            sheet.write_formula(row, col, rust_xlsxwriter::Formula::new("=NA()").set_result("#N/A")).map(|_| ())
        }
        Shown(n, format) => {
            sheet.write_number_with_format(row, col, *n, &Format::new().set_num_format(*format)).map(|_| ())
        }
        Formula(v) => sheet.write_formula(row, col, rust_xlsxwriter::Formula::new("=\"x\"").set_result(*v)).map(|_| ()),
    }
    .unwrap();
}

/// A workbook of sheets (name, rows of cells), saved at `path`.
fn workbook(path: &std::path::Path, sheets: &[(&str, Vec<Vec<Cell>>)]) {
    let mut book = Workbook::new();
    for (name, rows) in sheets {
        let sheet = book.add_worksheet().set_name(*name).unwrap();
        for (r, cells) in rows.iter().enumerate() {
            for (c, cell) in cells.iter().enumerate() {
                put(sheet, r as u32, c as u16, cell);
            }
        }
    }
    book.save(path).unwrap();
}

fn text_rows(rows: &[&[&'static str]]) -> Vec<Vec<Cell>> {
    rows.iter().map(|r| r.iter().map(|t| Cell::Text(t)).collect()).collect()
}

/// Every cell of a sheet as calamine reads it, as text. (The Summary sheet's
/// times are date cells: read as `<date>`; counts and sums are numbers,
/// read as their digits.)
fn read_sheet(path: &std::path::Path, name: &str) -> Vec<Vec<String>> {
    let mut book = calamine::open_workbook_auto(path).unwrap();
    let range = book.worksheet_range(name).unwrap();
    range
        .rows()
        .map(|r| {
            r.iter()
                .map(|c| match c {
                    Data::String(s) => s.clone(),
                    Data::Empty => String::new(),
                    Data::DateTime(_) if name == "Summary" => "<date>".to_string(),
                    Data::Float(f) => f.to_string(),
                    Data::Int(i) => i.to_string(),
                    other => panic!("{name}: a cell that is not text: {other:?}"),
                })
                .collect()
        })
        .collect()
}

const ORDERS: &[&[&str]] = &[
    &["bill_no", "openid", "zone_id", "amount_fen", "note"],
    &["B001", "oUSER1", "1", "600", "金币礼包"],
    &["B002", "oUSER2", "3_998877", "100", "=1+2"],
];

#[test]
fn a_workbook_signs_exactly_like_the_same_rows_as_csv() {
    let w = Workdir::new();
    workbook(&w.path("orders.xlsx"), &[("Sheet1", text_rows(ORDERS))]);
    let csv: String = ORDERS.iter().map(|r| r.join(",") + "\n").collect();
    w.write("orders.csv", csv.replace("=1+2", "\"=1+2\""));
    w.dry_run("orders.xlsx", "from_xlsx.csv").assert().success();
    w.dry_run("orders.csv", "from_csv.csv").assert().success();
    let (a, b) = (std::fs::read(w.path("from_xlsx.csv")).unwrap(), std::fs::read(w.path("from_csv.csv")).unwrap());
    assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b), "same rows, same results file");
    let check = w.cmd().args(["check", "orders.xlsx"]).output().unwrap();
    assert!(check.status.success(), "{}", stderr_of(&check));
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(out.contains("2 ready to send") && out.contains("Excel workbook (.xlsx), sheet `Sheet1`"), "{out}");
}

#[test]
fn recognised_by_content_whatever_the_name() {
    let w = Workdir::new();
    workbook(&w.path("orders.csv"), &[("Sheet1", text_rows(ORDERS))]);
    w.dry_run("orders.csv", "out.csv").assert().success();
    assert_eq!(Results::read(&w.path("out.csv")).column("category"), ["signed", "signed"]);
    // And --sheet on a CSV file is a mistake, said plainly.
    w.write("plain.csv", "bill_no,openid,zone_id\nB1,o1,1\n");
    let out = w.dry_run("plain.csv", "out2.csv").args(["--sheet", "Orders"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("is a CSV file, not a workbook"), "{}", stderr_of(&out));
    assert!(!w.path("out2.csv").exists());
}

#[test]
fn hazards_in_api_columns_are_invalid_with_the_cell_address() {
    use Cell::*;
    let w = Workdir::new();
    let header = || vec![Text("bill_no"), Text("openid"), Text("zone_id"), Text("exported")];
    let rows = vec![
        header(),
        vec![Text("B001"), Text("oUSER1"), Num(1.0), Date], // 2: fine; a date carried as text
        vec![Num(123456789012.0), Text("oUSER2"), Num(1.0), Num(0.5)], // 3: integer within 15 digits: digits
        vec![Num(1234567890123456789.0), Text("oUSER3"), Text("1"), Text("")], // 4: 19 digits: refused
        vec![Text("B005"), Text("oUSER5"), Date, Text("")], // 5: a date in zone_id
        vec![Text("B006"), NaFormula, Text("1"), Text("")], // 6: #N/A in openid
        vec![Formula("B007"), Text("oUSER7"), Text("1"), Text("")], // 7: a formula's cached value
        vec![Text("B008"), Text("oUSER8"), Bool, Text("")], // 8: TRUE in zone_id
        vec![Text("B009"), Text("oUSER9"), Num(1.5), Text("")], // 9: a fraction
        vec![Shown(123.0, "00000"), Text("oUSER10"), Shown(1.0, "0.00"), Text("")], // 10: shows 00123
        vec![],                                             // 11: blank, skipped
        vec![Text("B001"), Text("oUSER1"), Text("1"), Text("")], // 12: a duplicate
        vec![Text("B006"), Text("oUSER6"), Text("1"), Text("")], // 13: B006's row had a bad openid cell
    ];
    workbook(&w.path("orders.xlsx"), &[("Sheet1", rows)]);
    let out = w.dry_run("orders.xlsx", "out.csv").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    let r = Results::read(&w.path("out.csv"));
    assert_eq!(
        r.column("category"),
        [
            "signed",
            "signed",
            "invalid_input",
            "invalid_input",
            "invalid_input",
            "invalid_input",
            "invalid_input",
            "invalid_input",
            "invalid_input",
            "duplicate",
            "duplicate"
        ]
    );
    assert_eq!(r.row(1)["exported"], "2026-11-23", "a carried date reads as displayed");
    assert_eq!(r.row(2)["bill_no"], "123456789012", "an exact integer reads as its digits");
    assert_eq!(r.row(2)["exported"], "0.5");
    for (want, why) in [
        (
            "Sheet1!A4: bill_no is stored as a number (1.2345678901234568E18) that has more than 15 digits",
            "format the bill_no column as Text",
        ),
        ("Sheet1!C5: zone_id is a date or time cell", "not text"),
        ("Sheet1!B6: openid is an error cell (#N/A)", ""),
        ("Sheet1!A7: bill_no is a formula", "paste it as values"),
        ("Sheet1!C8: zone_id is a TRUE/FALSE cell", ""),
        ("Sheet1!C9: zone_id is stored as a number (1.5) that has a fraction", "format the zone_id column as Text"),
        ("Sheet1!A10: bill_no is a number shown through the number format `00000`", "(123)"),
    ] {
        assert!(err.contains(want) && err.contains(why), "missing `{want}` … `{why}` in:\n{err}");
    }
    // A row's own problem names the spreadsheet row, not a line.
    assert!(err.contains("Sheet1 row 12: bill_no `B001` already appeared on row 1"), "{err}");
    assert!(!err.contains("Sheet1!C10"), "an integer shown as 1.00 is still 1: {err}");
}

#[test]
fn chinese_headers_on_a_second_sheet_with_sheet_and_column() {
    let w = Workdir::new();
    let notes = text_rows(&[&["说明"], &["导出自后台"]]);
    let orders = text_rows(&[
        &["订单号", "用户", "区服", "金额"],
        &["B001", "oUSER1", "1", "600"],
        &["B002", "oUSER2", "1", "100"],
    ]);
    workbook(&w.path("导出.xlsx"), &[("说明", notes), ("订单", orders)]);
    let map = ["--column", "bill_no=订单号", "--column", "openid=用户", "--column", "zone_id=区服"];
    // The first sheet is not the orders: the error says what it found.
    let out = w.dry_run("导出.xlsx", "first.csv").args(map).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("`说明`"), "{}", stderr_of(&out));
    // A sheet that does not exist: the error lists the sheets.
    let out = w.dry_run("导出.xlsx", "none.csv").args(map).args(["--sheet", "Orders"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("no sheet named `Orders`; its sheets are: `说明`, `订单`"), "{}", stderr_of(&out));
    w.dry_run("导出.xlsx", "out.csv").args(map).args(["--sheet", "订单"]).assert().success();
    let r = Results::read(&w.path("out.csv"));
    assert_eq!(r.column("订单号"), ["B001", "B002"]);
    assert_eq!(r.column("金额"), ["600", "100"]);
}

#[test]
fn report_xlsx_holds_every_line_in_input_order_and_a_summary() {
    let w = Workdir::new();
    let mut rows = vec![vec!["bill_no", "openid", "zone_id", "amount_fen"]];
    let bills: Vec<String> = (1..=30).map(|i| format!("B{i:03}")).collect();
    let amounts: Vec<String> = (1..=30).map(|i| (i * 100).to_string()).collect();
    for i in 0..30 {
        rows.push(vec![bills[i].as_str(), "oUSER1", "1", amounts[i].as_str()]);
    }
    let cells: Vec<Vec<Cell>> = rows
        .iter()
        .map(|r| r.iter().map(|t| Cell::Text(Box::leak(t.to_string().into_boxed_str()))).collect())
        .collect();
    workbook(&w.path("orders.xlsx"), &[("Sheet1", cells)]);
    let mut c = sim_config();
    c.orders.insert("B007".into(), "cancelled".parse::<OrderState>().unwrap());
    c.orders.insert("B011".into(), "errcode:90000".parse::<OrderState>().unwrap());
    let sim = start(c);
    let out = w.live("orders.xlsx", "results.csv", &sim).args(["--concurrency", "8"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    w.cmd().args(["report", "results.csv", "--xlsx", "report.xlsx", "--sum", "amount_fen"]).assert().code(1);

    // Results: the results file's lines, sorted by row, every cell text.
    let mut csv = csv::Reader::from_path(w.path("results.csv")).unwrap();
    let headers: Vec<String> = csv.headers().unwrap().iter().map(String::from).collect();
    let mut lines: Vec<Vec<String>> = csv.records().map(|r| r.unwrap().iter().map(String::from).collect()).collect();
    let row_col = headers.iter().position(|h| h == "row").unwrap();
    lines.sort_by_key(|l| l[row_col].parse::<u64>().unwrap());
    let sheet = read_sheet(&w.path("report.xlsx"), "Results");
    assert_eq!(sheet[0], headers);
    assert_eq!(&sheet[1..], &lines[..], "Results sheet equals the results file, in input order");

    // Header frozen, autofilter on, columns sized: in the sheet's own XML.
    let mut zip = zip::ZipArchive::new(std::fs::File::open(w.path("report.xlsx")).unwrap()).unwrap();
    let mut xml = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("xl/worksheets/sheet2.xml").unwrap(), &mut xml).unwrap();
    assert!(xml.contains(r#"state="frozen""#) && xml.contains(r#"ySplit="1""#), "header frozen: {xml:.400}");
    assert!(xml.contains("<autoFilter ref=\"A1:"), "autofilter on");
    assert!(xml.contains("<col ") && xml.contains("customWidth=\"1\""), "column widths set");

    let summary = read_sheet(&w.path("report.xlsx"), "Summary");
    let find =
        |k: &str| summary.iter().find(|r| r[0] == k).unwrap_or_else(|| panic!("no `{k}` in {summary:?}")).clone();
    assert_eq!(find("cancelled")[1], "28");
    assert_eq!(find("not_found")[..3], ["not_found", "1", "1100"]);
    assert_eq!(find("total")[1..3], ["30", "46500"]);
    assert_eq!(find("environment")[1], "production");
    assert!(find("requests sent")[1].parse::<u64>().unwrap() >= 30, "every row was sent");
    // Never overwrites.
    let again = w.cmd().args(["report", "results.csv", "--xlsx", "report.xlsx"]).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
}

#[test]
fn only_as_a_workbook_is_taken_back_by_run_and_excel_csv_has_a_bom() {
    let w = Workdir::new();
    w.write("orders.csv", "bill_no,openid,zone_id,note\nB001,oUSER1,1,金币\nB002,oUSER2,1,=1+2\nB003,oUSER3,1,x\n");
    let mut c = sim_config();
    c.orders.insert("B002".into(), "errcode:-1".parse::<OrderState>().unwrap());
    c.orders.insert("B003".into(), "errcode:-1".parse::<OrderState>().unwrap());
    let sim = start(c);
    w.live("orders.csv", "results.csv", &sim).args(["--max-attempts", "1"]).assert().code(1);
    w.cmd().args(["report", "results.csv", "--only", "system_busy", "-o", "retry.xlsx"]).assert().success();
    assert_eq!(
        read_sheet(&w.path("retry.xlsx"), "Orders"),
        [
            vec!["bill_no", "openid", "zone_id", "note"],
            vec!["B002", "oUSER2", "1", "=1+2"],
            vec!["B003", "oUSER3", "1", "x"]
        ]
    );
    w.dry_run("retry.xlsx", "again.csv").assert().success();
    assert_eq!(Results::read(&w.path("again.csv")).column("bill_no"), ["B002", "B003"]);

    w.cmd()
        .args(["report", "results.csv", "--only", "system_busy,cancelled", "-o", "x.csv", "--excel-csv"])
        .assert()
        .success();
    let bytes = std::fs::read(w.path("x.csv")).unwrap();
    assert!(bytes.starts_with("\u{feff}bill_no,".as_bytes()), "a BOM first");
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("金币") && text.contains("'=1+2"), "Chinese intact, formulas still guarded: {text}");
    w.dry_run("x.csv", "again2.csv").assert().success();
    let out =
        w.cmd().args(["report", "results.csv", "--only", "cancelled", "-o", "y.xlsx", "--excel-csv"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "--excel-csv with a workbook name is refused");
}

#[test]
fn resuming_with_another_sheet_is_refused() {
    let w = Workdir::new();
    let a = text_rows(&[&["bill_no", "openid", "zone_id"], &["B001", "oUSER1", "1"]]);
    let b = text_rows(&[&["bill_no", "openid", "zone_id"], &["C001", "oUSER1", "1"]]);
    workbook(&w.path("orders.xlsx"), &[("A", a), ("B", b)]);
    let sim = start(sim_config());
    w.live("orders.xlsx", "results.csv", &sim).args(["--sheet", "A"]).assert().success();
    let out = w.live("orders.xlsx", "results.csv", &sim).args(["--sheet", "B", "--resume"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr_of(&out).contains("the workbook's sheet was `A`, now `B`"), "{}", stderr_of(&out));
}

/// A minimal OpenDocument spreadsheet (what LibreOffice saves, cut to what a
/// reader needs): one sheet, rows of (value type, value) cells.
fn ods(path: &std::path::Path, sheet: &str, rows: &[&[(&str, &str)]]) {
    ods_hiding(path, sheet, rows, &[]);
}

/// [`ods`] with some rows (0-based, the header being 0) hidden as
/// LibreOffice writes them: `(row, "collapsed")` by hand, `(row, "filter")`
/// by an autofilter.
fn ods_hiding(path: &std::path::Path, sheet: &str, rows: &[&[(&str, &str)]], hidden: &[(usize, &str)]) {
    use std::io::Write as _;
    let cell = |(kind, v): &(&str, &str)| match *kind {
        "string" => format!(r#"<table:table-cell office:value-type="string"><text:p>{v}</text:p></table:table-cell>"#),
        "float" => format!(
            r#"<table:table-cell office:value-type="float" office:value="{v}"><text:p>{v}</text:p></table:table-cell>"#
        ),
        "date" => format!(
            r#"<table:table-cell office:value-type="date" office:date-value="{v}"><text:p>{v}</text:p></table:table-cell>"#
        ),
        other => panic!("fixture: cell type {other}"),
    };
    let body: String = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let visibility = hidden
                .iter()
                .find(|(h, _)| *h == i)
                .map_or(String::new(), |(_, v)| format!(r#" table:visibility="{v}""#));
            format!("<table:table-row{visibility}>{}</table:table-row>", r.iter().map(cell).collect::<String>())
        })
        .collect();
    let content = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2"><office:body><office:spreadsheet><table:table table:name="{sheet}">{body}</table:table></office:spreadsheet></office:body></office:document-content>"#
    );
    let manifest = r#"<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2"><manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/><manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>"#;
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in [
        ("mimetype", "application/vnd.oasis.opendocument.spreadsheet"),
        ("META-INF/manifest.xml", manifest),
        ("content.xml", content.as_str()),
    ] {
        zip.start_file(name, stored).unwrap();
        zip.write_all(data.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn an_opendocument_spreadsheet_is_read_with_the_same_rules() {
    let w = Workdir::new();
    let header: &[(&str, &str)] =
        &[("string", "bill_no"), ("string", "openid"), ("string", "zone_id"), ("string", "day")];
    ods(
        &w.path("orders.ods"),
        "Orders",
        &[
            header,
            &[("string", "B001"), ("string", "oUSER1"), ("float", "1"), ("date", "2026-11-23")],
            &[("float", "123456789012"), ("string", "oUSER2"), ("string", "1"), ("string", "")],
            &[("float", "1234567890123456789"), ("string", "oUSER3"), ("string", "1"), ("string", "")],
            &[("string", "B004"), ("string", "oUSER4"), ("date", "2026-11-23"), ("string", "")],
        ],
    );
    let out = w.dry_run("orders.ods", "out.csv").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    let r = Results::read(&w.path("out.csv"));
    assert_eq!(r.column("category"), ["signed", "signed", "invalid_input", "invalid_input"]);
    assert_eq!(r.column("bill_no")[..2], ["B001", "123456789012"]);
    assert_eq!(r.row(1)["day"], "2026-11-23");
    assert!(err.contains("Orders!A4: bill_no is stored as a number"), "{err}");
    assert!(err.contains("Orders!C5: zone_id is a date or time cell"), "{err}");
    let check = w.cmd().args(["check", "orders.ods"]).output().unwrap();
    assert!(String::from_utf8_lossy(&check.stdout).contains("OpenDocument spreadsheet (.ods), sheet `Orders`"));
}

#[test]
fn a_workbook_run_killed_part_way_resumes_exactly_once() {
    let w = Workdir::new();
    let mut rows = vec![vec![Cell::Text("bill_no"), Cell::Text("openid"), Cell::Text("zone_id")]];
    for i in 1..=300 {
        let bill: &'static str = Box::leak(format!("W{i:04}").into_boxed_str());
        rows.push(vec![Cell::Text(bill), Cell::Text("oUSER1"), Cell::Num(1.0)]);
    }
    workbook(&w.path("orders.xlsx"), &[("Sheet1", rows)]);
    let sim = start(sim_config());
    let child = w.spawn_live("orders.xlsx", "out.csv", &sim, &["--rate", "100"]);
    let before = kill_part_way(&w, child, "out.csv", 60);
    assert!(before < 300, "killed part-way ({before} rows written)");
    w.live("orders.xlsx", "out.csv", &sim).arg("--resume").assert().code(0);
    assert_one_line_per_row(&Results::read(&w.path("out.csv")), 300);
    assert!(sim.stats().cancelled_once(300), "every order cancelled, once");
}

#[test]
fn the_default_sheet_is_the_first_one_a_person_sees() {
    let w = Workdir::new();
    let mut book = Workbook::new();
    let lists = book.add_worksheet().set_name("lists").unwrap();
    lists.write_string(0, 0, "zone names").unwrap();
    lists.set_hidden(true);
    let orders = book.add_worksheet().set_name("orders").unwrap();
    for (r, row) in [["bill_no", "openid", "zone_id"], ["B001", "oUSER1", "1"]].iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            orders.write_string(r as u32, c as u16, *v).unwrap();
        }
    }
    orders.set_active(true);
    book.save(w.path("hidden.xlsx")).unwrap();
    w.dry_run("hidden.xlsx", "out.csv").assert().success();
    assert_eq!(Results::read(&w.path("out.csv")).column("bill_no"), ["B001"]);

    // An empty sheet says which others there are.
    workbook(&w.path("empty.xlsx"), &[("blank", vec![]), ("orders", text_rows(ORDERS))]);
    let out = w.dry_run("empty.xlsx", "out2.csv").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains(
            "sheet `blank` is empty; choose the sheet with the orders with --sheet NAME (the others: `orders`)"
        ),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn a_value_right_of_the_header_makes_its_row_invalid() {
    let w = Workdir::new();
    let rows = text_rows(&[
        &["bill_no", "openid", "zone_id"],
        &["B001", "oUSER1", "1", "stray"],
        &["B002", "oUSER2", "1", " "],
    ]);
    workbook(&w.path("orders.xlsx"), &[("Sheet1", rows)]);
    let out = w.dry_run("orders.xlsx", "out.csv").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("Sheet1!D2: a value in a column without a header (the header row ends at column C)"), "{err}");
    assert_eq!(
        Results::read(&w.path("out.csv")).column("category"),
        ["invalid_input", "signed"],
        "blank text is blank"
    );
}

#[test]
fn report_xlsx_needs_a_name_excel_recognises() {
    let w = Workdir::new();
    w.write("orders.csv", "bill_no,openid,zone_id\nB001,oUSER1,1\n");
    w.dry_run("orders.csv", "out.csv").assert().success();
    let out = w.cmd().args(["report", "out.csv", "--xlsx", "report.csv"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("the name must end in .xlsx"), "{}", stderr_of(&out));
    assert!(!w.path("report.csv").exists(), "nothing written");
}

/// Regression (hidden_rows_were_sent): an export filtered down to the
/// affected orders, or with rows hidden by hand, had every row cancelled,
/// the hidden ones too. A hidden row is reported, not sent, and claims no
/// bill_no (a visible row of the same order is still sent).
#[test]
fn hidden_and_filtered_rows_were_cancelled() {
    let w = Workdir::new();
    let rows = text_rows(&[
        &["bill_no", "openid", "zone_id"],
        &["B001", "oUSER1", "1"],
        &["B002", "oUSER2", "1"],
        &["B003", "oUSER3", "1"],
        &["B004", "oUSER4", "1"],
        &["B002", "oUSER2", "1"],
    ]);
    let mut book = Workbook::new();
    let sheet = book.add_worksheet().set_name("Orders").unwrap();
    for (r, cells) in rows.iter().enumerate() {
        for (c, cell) in cells.iter().enumerate() {
            put(sheet, r as u32, c as u16, cell);
        }
    }
    sheet.set_row_hidden(2).unwrap();
    sheet.set_row_hidden(3).unwrap();
    book.save(w.path("orders.xlsx")).unwrap();
    let text = |(k, v): (&'static str, &'static str)| (k, v);
    let ods_rows: Vec<Vec<(&str, &str)>> = [
        ["bill_no", "openid", "zone_id"],
        ["B001", "oUSER1", "1"],
        ["B002", "oUSER2", "1"],
        ["B003", "oUSER3", "1"],
        ["B004", "oUSER4", "1"],
        ["B002", "oUSER2", "1"],
    ]
    .iter()
    .map(|r| r.iter().map(|v| text(("string", v))).collect())
    .collect();
    let ods_refs: Vec<&[(&str, &str)]> = ods_rows.iter().map(Vec::as_slice).collect();
    ods_hiding(&w.path("orders.ods"), "Orders", &ods_refs, &[(2, "collapsed"), (3, "filter")]);

    for (file, out) in [("orders.xlsx", "x.csv"), ("orders.ods", "o.csv")] {
        let check = w.cmd().args(["check", file]).output().unwrap();
        let said = String::from_utf8_lossy(&check.stdout).into_owned();
        assert!(said.contains("5 rows, 3 ready to send, 2 invalid_input"), "{file}: {said}");
        assert!(said.contains("Orders row 3: hidden in the workbook"), "{file}: {said}");
        let sim = start(sim_config());
        let run = w.live(file, out, &sim).output().unwrap();
        assert_eq!(run.status.code(), Some(1), "{file}: {}", stderr_of(&run));
        let mut sent: Vec<String> = sim.stats().log.iter().map(|e| e.bill_no.clone()).collect();
        sent.sort();
        assert_eq!(sent, ["B001", "B002", "B004"], "{file}: only the rows a person sees");
        let r = Results::read(&w.path(out));
        assert_one_line_per_row(&r, 5);
        for n in [2, 3] {
            assert_eq!(r.row(n)["category"], "invalid_input", "{file}");
            assert!(r.row(n)["errmsg"].contains("unhide it and run it again"), "{file}: {:?}", r.row(n));
        }
        assert_eq!(r.row(5)["category"], "cancelled", "{file}: the visible B002 is not a duplicate of the hidden one");
    }
}

/// `check` of `file` under a 512 MiB address-space limit: (exit code, stderr).
fn check_within_512_mib(w: &Workdir, file: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new("sh")
        .current_dir(w.dir.path())
        .arg("-c")
        .arg(r#"ulimit -v 524288; exec "$0" check "$1""#)
        .arg(assert_cmd::cargo::cargo_bin("midas-cancel"))
        .arg(file)
        .output()
        .unwrap();
    (out.status.code(), stderr_of(&out))
}

/// Regression (workbook_bombs): one value at XFD1048576 made calamine ask
/// for 512 GiB (abort), one at ZZ200000 took 4.4 GB, a ZIP of white space
/// 1.6 GB. Each is refused with a message, in bounded memory.
#[test]
fn workbook_bombs_exhausted_memory() {
    let w = Workdir::new();
    for (name, row, col) in [("far.xlsx", 1_048_575, 16_383), ("wide.xlsx", 199_999, 701)] {
        let mut book = Workbook::new();
        let sheet = book.add_worksheet();
        for (c, h) in ["bill_no", "openid", "zone_id"].iter().enumerate() {
            sheet.write_string(0, c as u16, *h).unwrap();
        }
        sheet.write_string(row, col, "x").unwrap();
        book.save(w.path(name)).unwrap();
        let (code, err) = check_within_512_mib(&w, name);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(
            err.contains("cells from its first used cell to its last") && err.contains("Ctrl+End"),
            "{name}: {err}"
        );
    }
    // A sheet part of white space that unpacks to 1.5 GiB: packed small (its
    // sizes are written into the headers as such a part's would be; making
    // 1.5 GiB of it here would take a minute).
    {
        use std::io::Write as _;
        let mut bytes = std::io::Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut bytes);
        let packed = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("xl/worksheets/sheet1.xml", packed).unwrap();
        zip.write_all(&vec![b' '; 1 << 16]).unwrap();
        zip.finish().unwrap();
        let mut bytes = bytes.into_inner();
        let declared = (1536u32 << 20).to_le_bytes();
        // The uncompressed size: at 22 in the local header, 24 in the directory's.
        for (signature, at) in [([0x50, 0x4b, 0x03, 0x04], 22), ([0x50, 0x4b, 0x01, 0x02], 24)] {
            let start = bytes.windows(4).position(|win| win == signature).unwrap();
            bytes[start + at..start + at + 4].copy_from_slice(&declared);
        }
        w.write("blank.xlsx", bytes);
    }
    let (code, err) = check_within_512_mib(&w, "blank.xlsx");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("would unpack to more than"), "{err}");
}

/// LibreOffice, when this machine has it (`bash .ci/run` installs it; CI
/// must have it, so there its absence fails the test).
fn soffice() -> Option<&'static str> {
    let found = std::process::Command::new("soffice").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("CI").is_some() {
        panic!("LibreOffice (soffice) is missing: `bash .ci/run` installs libreoffice-calc-nogui and poppler-utils");
    }
    found.then_some("soffice")
}

/// Regression (report_xlsx_counts_were_text): Summary counts and sums were
/// text ("number stored as text", SUM gave 0), sums read `60.0`, the note
/// about cells that were not numbers was missing, and the printout took 8
/// portrait pages with text cut off.
#[test]
fn a_workbook_finance_could_not_total_or_print() {
    let w = Workdir::new();
    let mut text = String::from("bill_no,openid,zone_id,amount_fen,note\n");
    for i in 1..=12 {
        let amount = if i == 12 { "n/a".to_string() } else { format!("{}.00", i * 100) };
        text.push_str(&format!("B{i:04},oUSER{i},1,{amount},a note that is rather long for row {i}\n"));
    }
    w.write("in.csv", text);
    let sim = start(sim_config());
    w.live("in.csv", "out.csv", &sim).assert().code(0);
    let out = w.cmd().args(["report", "out.csv", "--sum", "amount_fen", "--xlsx", "r.xlsx"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let mut book = calamine::open_workbook_auto(w.path("r.xlsx")).unwrap();
    let summary = book.worksheet_range("Summary").unwrap();
    let cells: Vec<Vec<Data>> = summary.rows().map(|r| r.to_vec()).collect();
    assert_eq!(cells[1][0], Data::String("cancelled".into()));
    assert_eq!(cells[1][1], Data::Float(12.0), "rows is a number");
    assert_eq!(cells[1][2], Data::Float(6600.0), "the sum is a number, not `6600.00`");
    let all: Vec<String> = cells.iter().flatten().map(|c| c.to_string()).collect();
    assert!(all.iter().any(|c| c == "1 cell(s) of amount_fen were not numbers and are not in the sums"), "{all:?}");
    let results = book.worksheet_range("Results").unwrap();
    let head: Vec<String> = results.rows().next().unwrap().iter().map(|c| c.to_string()).collect();
    let at = |name: &str| head.iter().position(|h| h == name).unwrap();
    let first = results.rows().nth(1).unwrap();
    assert_eq!(first[at("amount_fen")], Data::Float(100.0), "the --sum column totals");
    assert_eq!(first[at("bill_no")], Data::String("B0001".into()), "ids stay text");
    // Page setup: landscape, one page wide, the header on every page.
    let xml = |part: &str| {
        let mut zip = zip::ZipArchive::new(std::fs::File::open(w.path("r.xlsx")).unwrap()).unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut zip.by_name(part).unwrap(), &mut s).unwrap();
        s
    };
    for sheet in ["xl/worksheets/sheet1.xml", "xl/worksheets/sheet2.xml"] {
        let x = xml(sheet);
        assert!(x.contains(r#"orientation="landscape""#) && x.contains(r#"fitToHeight="0""#), "{sheet}: {x}");
    }
    assert!(xml("xl/workbook.xml").contains("_xlnm.Print_Titles"));
    // Printed by the program finance opens it in.
    let Some(soffice) = soffice() else {
        eprintln!("skipped the printout check: no LibreOffice here (bash .ci/run installs it)");
        return;
    };
    let profile = format!("-env:UserInstallation=file://{}", w.path("lo-profile").display());
    let pdf = std::process::Command::new(soffice)
        .current_dir(w.dir.path())
        .args([profile.as_str(), "--headless", "--convert-to", "pdf", "r.xlsx"])
        .output()
        .unwrap();
    assert!(w.path("r.pdf").exists(), "{}", stderr_of(&pdf));
    let info = stdout_of(&std::process::Command::new("pdfinfo").arg(w.path("r.pdf")).output().unwrap());
    let pages: u32 = info.lines().find_map(|l| l.strip_prefix("Pages:")).unwrap().trim().parse().unwrap();
    assert_eq!(pages, 2, "one landscape page per sheet: {info}");
    assert!(info.contains("792 x 612") || info.contains("842 x 595"), "landscape: {info}");
    let text = stdout_of(
        &std::process::Command::new("pdftotext")
            .args(["-layout", "r.pdf", "-"])
            .current_dir(w.dir.path())
            .output()
            .unwrap(),
    );
    for want in ["next step", "B0012", "rather long for row 12", "requests sent"] {
        assert!(text.contains(want), "`{want}` is printed, not cut off: {text}");
    }
}
