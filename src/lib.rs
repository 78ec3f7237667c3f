//! midas-cancel: cancel WeChat Mini Game virtual-payment (Midas) orders in bulk.
//!
//! Data flows one way: input rows → validated orders → signed requests →
//! paced sends → outcomes → results file and summary. This file is the
//! table of contents and the dispatch; each command lives in `commands/`.

pub mod api;
pub mod attempt_log;
pub mod category;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod dryrun;
pub mod engine;
pub mod exit;
pub mod files;
pub mod input;
pub mod limits;
pub mod lock;
pub mod manual;
pub mod reporter;
pub mod request;
pub mod results;
pub mod secret;
pub mod sign;
pub mod sim;

pub use exit::Exit;

use cli::{Cli, Command};

/// Runs one command; errors returned from here mean nothing was sent.
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Check(args) => commands::check::command(&args),
        Command::Run(args) => commands::run::command(&args),
        Command::Simulate(args) => commands::simulate::command(&args),
        Command::Report(args) => commands::report::command(&args),
        Command::Completions { shell } => commands::docs::completions(shell),
        Command::Man { page, dir } => commands::docs::man(page.as_deref(), dir.as_deref()),
    }
}
