//! The documentation commands: shell completions and manual pages.

use crate::cli::Cli;
use crate::exit::Exit;
use crate::{manual, say};
use std::io::Write as _;
use std::path::Path;

/// `completions SHELL`: the completion script on standard output.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<Exit> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "midas-cancel", &mut script);
    if shell == clap_complete::Shell::Bash {
        // clap_complete spells the states of a hyphenated binary two
        // ways (clap-rs/clap#6421): the dispatch loop arrives at
        // `midas__cancel__subcmd__run`, the case arms expect
        // `midas__subcmd__cancel__subcmd__run`, so nothing completed
        // after a subcommand. Spell the arms like the loop.
        let fixed = String::from_utf8_lossy(&script).replace("midas__subcmd__cancel", "midas__cancel");
        script = fixed.into_bytes();
    }
    std::io::stdout().write_all(&script)?;
    Ok(Exit::Done)
}

/// `man [PAGE]`: one page on standard output, or `--dir`: every page there.
pub fn man(page: Option<&str>, dir: Option<&Path>) -> anyhow::Result<Exit> {
    let cmd = <Cli as clap::CommandFactory>::command();
    match dir {
        Some(dir) => {
            for name in manual::write_all(&cmd, dir)? {
                say!("wrote {}", dir.join(name).display());
            }
        }
        None => std::io::stdout().write_all(&manual::page(&cmd, page)?)?,
    }
    Ok(Exit::Done)
}
