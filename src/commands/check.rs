//! `check`: validate an export row by row without signing or sending.

use super::no_data_rows;
use crate::cli::CheckArgs;
use crate::exit::Exit;
use crate::input::{Classifier, InputConfig, Verdict};
use crate::results::tally::Tally;
use crate::{config, say};
use std::io::Write;

/// `check INPUT`: every bad row on its own line, then a summary; exit 0
/// when every row would be sent, 1 when some would not.
pub fn command(args: &CheckArgs) -> anyhow::Result<Exit> {
    let file = match &args.input_args.config {
        Some(p) => config::FileConfig::load(p)?,
        None => Default::default(),
    };
    let cfg = InputConfig::resolve(&args.input, &args.input_args, &file, (None, None), false)?;
    let (tally, ready) = run(&cfg, &mut std::io::stdout().lock())?;
    if tally.total() + ready == 0 {
        say!("{}", no_data_rows(&cfg.path));
        return Ok(Exit::Attention);
    }
    Ok(if tally.total() == 0 { Exit::Done } else { Exit::Attention })
}

/// Writes one line per bad row to `out`, then a summary line; returns the
/// tally of rows that would not be sent and how many would be.
pub fn run(cfg: &InputConfig, out: &mut dyn Write) -> anyhow::Result<(Tally, u64)> {
    let input = &cfg.opened;
    let rows = input.rows(&cfg.columns, &cfg.rules, None)?;
    let header = rows.header().clone();
    let mut classifier = Classifier::for_run(cfg.mp_sig, &header);
    let mut tally = Tally::default();
    let mut ready = 0u64;
    let warnings = input.warnings(&header);
    for raw in rows {
        let raw = raw?;
        match classifier.classify(&header, &raw, &cfg.session_keys) {
            Verdict::Ready(_) => ready += 1,
            Verdict::Rejected { category, message, .. } => {
                writeln!(out, "row {}: {category}: {message}", raw.row)?;
                tally.add(category);
            }
        }
    }
    for w in &warnings {
        writeln!(out, "{w}")?;
    }
    let problems: Vec<String> = tally.nonzero().map(|(c, n)| format!("{n} {c}")).collect();
    writeln!(
        out,
        "{}: {} rows, {ready} ready to send{}{} ({})",
        input.display(),
        ready + tally.total(),
        if problems.is_empty() { "" } else { ", " },
        problems.join(", "),
        input.kind()
    )?;
    Ok((tally, ready))
}
