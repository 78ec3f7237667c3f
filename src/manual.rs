//! Manual pages: one per command (`midas-cancel`, `midas-cancel-run`, ...)
//! from the clap definitions, with the exit statuses and result categories
//! taken from the code's own tables, so the pages cannot drift from them.

use crate::category::ALL;
use crate::exit::Exit;
use roff::{bold, roman, Roff};
use std::path::Path;

/// Commands that get no page of their own.
const NO_PAGE: [&str; 1] = ["help"];

/// The page of the top command (`None`) or of one subcommand.
pub fn page(cli: &clap::Command, sub: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let cmd = match sub {
        None => cli.clone(),
        Some(name) => {
            let found = cli.get_subcommands().find(|s| s.get_name() == name && !NO_PAGE.contains(&name));
            let Some(s) = found else {
                let names: Vec<&str> =
                    cli.get_subcommands().map(|s| s.get_name()).filter(|n| !NO_PAGE.contains(n)).collect();
                anyhow::bail!("no manual page for `{name}`; there is one for: {}", names.join(", "));
            };
            // The page is named like the file that holds it: midas-cancel-run(1).
            let full = format!("{}-{name}", cli.get_name());
            s.clone().name(full.clone()).bin_name(format!("{} {name}", cli.get_name())).display_name(full)
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    // Exit statuses and categories are what `run` and `report` answer with.
    if matches!(sub, None | Some("run") | Some("report")) {
        out.extend(statuses_and_categories().render().into_bytes());
    }
    Ok(out)
}

/// Writes every page into `dir`; returns the file names.
pub fn write_all(cli: &clap::Command, dir: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let subs = cli
        .get_subcommands()
        .map(|s| Some(s.get_name().to_string()))
        .filter(|n| n.as_deref().is_some_and(|n| !NO_PAGE.contains(&n)));
    let mut written = Vec::new();
    for sub in std::iter::once(None).chain(subs) {
        let name = match &sub {
            None => format!("{}.1", cli.get_name()),
            Some(s) => format!("{}-{s}.1", cli.get_name()),
        };
        let path = dir.join(&name);
        std::fs::write(&path, page(cli, sub.as_deref())?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        written.push(name);
    }
    Ok(written)
}

/// The EXIT STATUS and CATEGORIES sections.
fn statuses_and_categories() -> Roff {
    let mut r = Roff::default();
    r.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in Exit::DESCRIBED {
        r.control("TP", []).text([bold(code.to_string())]).text([roman(meaning)]);
    }
    r.control("SH", ["CATEGORIES"]);
    r.text([roman(
        "Every input row gets one category in the results file. Final categories are never attempted again by --resume.",
    )]);
    for c in ALL {
        let kind = if c.is_final() { "final" } else { "not final" };
        r.control("TP", []).text([bold(c.as_str()), roman(format!(" ({kind})"))]).text([roman(c.advice())]);
    }
    r
}
