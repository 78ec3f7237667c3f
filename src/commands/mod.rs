//! One file per command (`run` live, `run --dry-run`, `check`, `report`,
//! `simulate`, and the documentation commands), each with its entry point;
//! `lib.rs` dispatches to them. Here: what more than one command needs to
//! create its output and talk about its input.

pub mod check;
pub mod docs;
pub mod dry_run;
pub mod report;
pub mod run;
pub mod simulate;

use anyhow::Context as _;
use std::path::Path;

/// What to do when `-o` names an existing file: the remedy differs by command.
pub const EXISTS_RUN: &str =
    "it may be the record of an earlier run and is never overwritten. To continue that run add --resume; \
     otherwise choose another -o name or move the file away";
pub const EXISTS_OTHER: &str = "it is never overwritten: choose another -o name or move the file away";

/// Creates an output file, refusing to replace an existing one (`exists`
/// says what to do instead) or to write over a directory.
pub fn create_output(path: &Path, exists: &str) -> anyhow::Result<std::fs::File> {
    if path.is_dir() {
        anyhow::bail!(
            "-o {} is a directory: give a file name, e.g. {}",
            path.display(),
            path.join("results.csv").display()
        );
    }
    match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            anyhow::bail!("{} already exists: {exists}", path.display())
        }
        Err(e) => Err(anyhow::anyhow!("cannot create {}: {e}", path.display())),
    }
}

/// Writes a new file at `path` through `write`: staged under a temporary
/// name and moved into place only once whole, so a failure part-way leaves
/// nothing behind (and no name that a retry would find taken).
pub fn write_new<T>(
    path: &Path,
    exists: &str,
    write: impl FnOnce(&mut std::fs::File) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if path.is_dir() {
        anyhow::bail!(
            "-o {} is a directory: give a file name, e.g. {}",
            path.display(),
            path.join("results.csv").display()
        );
    }
    let taken = |p: &Path| anyhow::anyhow!("{} already exists: {exists}", p.display());
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(taken(path));
    }
    let mut staged = crate::files::Staged::beside(path).with_context(|| format!("cannot create {}", path.display()))?;
    let value = write(staged.file())?;
    staged.publish_new(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => taken(path),
        _ => anyhow::anyhow!("cannot create {}: {e}", path.display()),
    })?;
    Ok(value)
}

/// What is said of an input with a header and no data rows.
pub fn no_data_rows(path: &Path) -> String {
    let name = if path.as_os_str() == "-" { "standard input".to_string() } else { path.display().to_string() };
    format!("{name} has a header row but no data rows: there is nothing to send (check that the export is complete)")
}

/// "about 2 h 5 min", "about 40 s".
pub fn human_duration(secs: f64) -> String {
    let s = secs.ceil() as u64;
    match s {
        0..=89 => format!("about {s} s"),
        90..=5399 => format!("about {} min", s.div_ceil(60)),
        _ => format!("about {} h {} min", s / 3600, (s % 3600) / 60),
    }
}
