//! `report RESULTS`: the summary of a results file (text or JSON), the rows
//! of some categories as an input `run` takes back (`--only`), a workbook
//! for finance (`--xlsx`), or a page for the post-mortem (`--html`).

use super::{write_new, EXISTS_OTHER};
use crate::cli;
use crate::exit::Exit;
use crate::results::report;
use crate::say;

pub fn command(args: &cli::ReportArgs) -> anyhow::Result<Exit> {
    use std::io::Write as _;
    let is_xlsx = |p: &std::path::Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("xlsx"));
    if !args.only.is_empty() {
        let n = match &args.output {
            Some(p) if is_xlsx(p) && args.excel_csv => {
                anyhow::bail!("--excel-csv writes CSV, and {} names a workbook: drop one of them", p.display())
            }
            Some(p) if is_xlsx(p) => {
                write_new(p, EXISTS_OTHER, |f| report::xlsx::write_only(&args.results, &args.only, f))?
            }
            Some(p) => {
                write_new(p, EXISTS_OTHER, |f| report::write_only(&args.results, &args.only, args.excel_csv, f))?
            }
            None => report::write_only(&args.results, &args.only, args.excel_csv, std::io::stdout().lock())?,
        };
        say!("{n} row(s) written");
        return Ok(Exit::Done);
    }
    if let Some(p) = &args.html {
        if !p.extension().is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm")) {
            anyhow::bail!("--html {}: the name must end in .html (browsers and mail go by it)", p.display());
        }
        let summary = report::summarize(&args.results, args.sum.as_deref())?;
        let exists = "it is never overwritten: choose another --html name or move the file away";
        let n = write_new(p, exists, |f| report::html::write_html(&args.results, &summary, args.log.as_deref(), f))?;
        say!("{} written ({n} row(s) that need attention listed)", p.display());
        return Ok(summary.verdict());
    }
    if let Some(p) = &args.xlsx {
        if !is_xlsx(p) {
            anyhow::bail!("--xlsx {}: the name must end in .xlsx (Excel goes by it)", p.display());
        }
        let summary = report::summarize(&args.results, args.sum.as_deref())?;
        let exists = "it is never overwritten: choose another --xlsx name or move the file away";
        let n = write_new(p, exists, |f| report::xlsx::write_report(&args.results, &summary, f))?;
        say!("{n} row(s) written to {} (sheets Summary and Results)", p.display());
        return Ok(summary.verdict());
    }
    let summary = report::summarize(&args.results, args.sum.as_deref())?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&summary.json())?)?;
    } else {
        if summary.torn {
            writeln!(out, "(the last line is incomplete: a run may be writing it, or was cut off)")?;
        }
        writeln!(out, "{}", summary.table())?;
    }
    Ok(summary.verdict())
}
