//! One run per results file: an exclusive OS lock on `OUTPUT.lock`, taken
//! before the results file is created or read for `--resume` and held until
//! the run ends. Two runs writing one file would each send the rows the
//! other has not recorded yet and replace each other's lines.
//!
//! The lock belongs to the process (`flock`), so a `kill -9` or a power cut
//! releases it: a stale `.lock` file never blocks the next `--resume`.

use anyhow::{bail, Context as _};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// `OUTPUT.lock`, beside the results file.
pub fn lock_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// The lock of one results file; released (and its file removed) on drop.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `output`'s run, or says which process holds it.
    pub fn acquire(output: &Path) -> anyhow::Result<RunLock> {
        let path = lock_path(output);
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| format!("cannot create the lock file {}", path.display()))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = holder.trim();
                    let who = if holder.is_empty() { String::new() } else { format!(" (process {holder})") };
                    bail!(
                        "another run is writing {}{who}: only one run may write a results file at a time. \
                         Wait for it to finish (or stop it with Ctrl-C), then continue with --resume",
                        output.display()
                    );
                }
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()));
                }
            }
            // A run that ended between our open and our lock removed the
            // file we hold: lock the one at the path now instead.
            if same_file(&file, &path) {
                file.set_len(0)?;
                file.seek(SeekFrom::Start(0))?;
                let _ = write!(file, "{}", std::process::id());
                return Ok(RunLock { file, path });
            }
        }
    }
}

fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still held, so no other run can lock this file and
        // then find it gone; the lock itself goes when `file` closes.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.csv");
        let first = RunLock::acquire(&out).unwrap();
        let e = RunLock::acquire(&out).unwrap_err().to_string();
        assert!(e.contains("another run is writing") && e.contains(&std::process::id().to_string()), "{e}");
        drop(first);
        assert!(!lock_path(&out).exists());
        let _again = RunLock::acquire(&out).unwrap();
    }
}
