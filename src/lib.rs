//! midas-cancel: cancel WeChat Mini Game virtual-payment (Midas) orders in bulk.
//!
//! Data flows one way: input rows → validated orders → signed requests →
//! paced sends → outcomes → results file and summary.

pub mod category;
pub mod check;
pub mod cli;
pub mod config;
pub mod dryrun;
pub mod input;
pub mod output;
pub mod report;
pub mod reporter;
pub mod secret;
pub mod sign;

use anyhow::Context as _;
use category::Category;
use cli::{Cli, Command};
use reporter::Reporter;
use std::path::Path;

/// The exit statuses of SPEC §2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Every row cancelled or already returned (dry run: signed).
    Done = 0,
    /// The run finished, but some rows need attention.
    Attention = 1,
    /// Nothing was sent: bad flags, config, secret or input.
    Usage = 2,
    /// Stopped early (circuit breaker): `--resume` continues.
    Stopped = 3,
    /// Interrupted: `--resume` continues.
    Interrupted = 130,
}

/// Creates the results file, refusing to replace an existing one: it may be
/// the audit record of an earlier run.
pub fn create_output(path: &Path) -> anyhow::Result<std::fs::File> {
    match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => anyhow::bail!(
            "{} already exists and may be the record of an earlier run: it is never overwritten. \
             To continue that run add --resume; otherwise choose another -o name or move the file away",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// Runs one command; errors returned from here mean nothing was sent.
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Check(args) => {
            let file = match &args.input_args.config {
                Some(p) => config::FileConfig::load(p)?,
                None => Default::default(),
            };
            let cfg = config::InputConfig::resolve(&args.input, &args.input_args, &file)?;
            let tally = check::run(&cfg, &mut std::io::stdout().lock())?;
            Ok(if tally.total() == 0 { Exit::Done } else { Exit::Attention })
        }
        Command::Run(args) => {
            let cfg = config::RunConfig::resolve(&args, &config::process_env)?;
            let reporter = Reporter::stderr(false);
            // Bad input is found before the output file is created.
            let out = create_output(&cfg.output)?;
            let result = dryrun::run(&cfg, out, &reporter);
            let (tally, problems) = match result {
                Ok(r) => r,
                Err(e) => {
                    // Nothing useful was produced: do not leave a partial file.
                    let _ = std::fs::remove_file(&cfg.output);
                    return Err(e);
                }
            };
            for p in &problems {
                reporter.notice(p);
            }
            if problems.len() == dryrun::SHOWN_PROBLEMS {
                reporter.notice("... (`midas-cancel check` lists every bad row)");
            }
            reporter.notice(&tally.table());
            Ok(if tally.all_in(|c| c == Category::Signed) { Exit::Done } else { Exit::Attention })
        }
    }
}
