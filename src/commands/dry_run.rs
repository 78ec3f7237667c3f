//! `run --dry-run`: every row signed, nothing sent; the signed lines in
//! input order, the bad rows named, the summary.

use super::{create_output, no_data_rows};
use crate::category::Category;
use crate::config::RunConfig;
use crate::dryrun;
use crate::exit::Exit;
use crate::reporter::Reporter;
use crate::results::report;

pub fn command(cfg: &RunConfig, reporter: &Reporter) -> anyhow::Result<Exit> {
    let out = create_output(&cfg.output, "a dry run never resumes: choose another -o name or move the file away")?;
    let (tally, problems) = match dryrun::run(cfg, out, reporter) {
        Ok(r) => r,
        Err(e) => {
            // A bad file was found part-way: leave no partial output behind.
            let _ = std::fs::remove_file(&cfg.output);
            return Err(e);
        }
    };
    if tally.total() == 0 {
        let _ = std::fs::remove_file(&cfg.output);
        reporter.notice(&no_data_rows(&cfg.input.path));
        return Ok(Exit::Attention);
    }
    for p in &problems {
        reporter.notice(p);
    }
    if problems.len() == dryrun::SHOWN_PROBLEMS {
        reporter.notice("... (`midas-cancel check` lists every bad row)");
    }
    match &cfg.sum {
        Some(col) => reporter.notice(&report::summarize(&cfg.output, Some(col))?.table()),
        None => reporter.notice(&tally.table()),
    }
    reporter.notice(&format!("signed lines: {} (nothing was sent)", cfg.output.display()));
    Ok(if tally.all_in(|c| c == Category::Signed) { Exit::Done } else { Exit::Attention })
}
