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

/// The first words of every lock file this tool writes: a file at the
/// lock's name without them is someone else's (`-o Cargo` names
/// `Cargo.lock`), and is never written to or removed.
const MARK: &str = "midas-cancel run lock, process ";

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
            let (mut file, made) = open_lock_file(output, &path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let holder = read_holder(&mut file);
                    let who = holder.map(|p| format!(" (process {p})")).unwrap_or_default();
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
                if !made {
                    // A lock file left by a killed run (it has our mark):
                    // now ours, it names this process.
                    file.set_len(0)?;
                }
                file.seek(SeekFrom::Start(0))?;
                let _ = writeln!(file, "{MARK}{}", std::process::id());
                return Ok(RunLock { file, path });
            }
        }
    }
}

/// Opens the lock file: a new one (`true`), or one a run of this tool left
/// behind (`false`). Anything else at that name (someone's file, a FIFO, a
/// symlink) is refused by name and left as it is.
fn open_lock_file(output: &Path, path: &Path) -> anyhow::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let name = path.display();
    match crate::files::create_new(path) {
        Ok(f) => return Ok((f, true)),
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(e).with_context(|| format!("cannot create the lock file {name}"))
        }
        Err(_) => {}
    }
    let foreign = || {
        anyhow::anyhow!(
            "{name} exists and is not a midas-cancel lock file, and a run on -o {} would need that name for its \
             lock. Nothing was changed: choose another -o name (or, if a killed run left it, remove it)",
            output.display()
        )
    };
    // Non-blocking: a FIFO planted at the name must not hang the run.
    let file =
        match OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(foreign()),
            // Removed meanwhile by the run that held it: create it afresh.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return open_lock_file(output, path),
            Err(e) => return Err(e).with_context(|| format!("cannot open the lock file {name}")),
        };
    if !file.metadata().with_context(|| format!("cannot read {name}"))?.is_file() {
        return Err(foreign());
    }
    let mut head = Vec::new();
    (&file).take(MARK.len() as u64).read_to_end(&mut head).with_context(|| format!("cannot read {name}"))?;
    if head != MARK.as_bytes() {
        return Err(foreign());
    }
    Ok((file, false))
}

/// The process named in a lock file.
fn read_holder(file: &mut File) -> Option<String> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    let pid = text.trim().strip_prefix(MARK)?;
    Some(pid.to_string()).filter(|p| !p.is_empty())
}

fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still held, so no other run can lock this file and
        // then find it gone; the lock itself goes when `file` closes. Only
        // the file this run holds is removed.
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
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

    /// Regression (lock_file_beside_a_foreign_file): `-o Cargo` took
    /// `Cargo.lock` for its lock, wrote a pid into it and deleted it; a
    /// symlink at the lock's name had the pid written through it.
    #[test]
    fn a_foreign_file_at_the_locks_name_is_never_touched() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("Cargo");
        std::fs::write(lock_path(&out), "# a lock file of another tool\n").unwrap();
        let e = RunLock::acquire(&out).unwrap_err().to_string();
        assert!(e.contains("not a midas-cancel lock file") && e.contains("Cargo.lock"), "{e}");
        assert_eq!(std::fs::read_to_string(lock_path(&out)).unwrap(), "# a lock file of another tool\n");

        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        let out = dir.path().join("out.csv");
        std::os::unix::fs::symlink(&victim, lock_path(&out)).unwrap();
        let e = RunLock::acquire(&out).unwrap_err().to_string();
        assert!(e.contains("not a midas-cancel lock file"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(lock_path(&out)).is_ok(), "the link is left where it was");
    }

    /// Regression (fifo_at_the_lock_name): "Invalid argument (os error 22)"
    /// without the file's name, or a hang.
    #[test]
    fn a_fifo_at_the_locks_name_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.csv");
        let fifo = std::ffi::CString::new(lock_path(&out).to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo touches nothing of ours.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let e = RunLock::acquire(&out).unwrap_err().to_string();
        assert!(e.contains("out.csv.lock") && e.contains("not a midas-cancel lock file"), "{e}");
    }

    #[test]
    fn a_lock_left_by_a_killed_run_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.csv");
        std::fs::write(lock_path(&out), format!("{MARK}999999\n")).unwrap();
        let held = RunLock::acquire(&out).unwrap();
        let text = std::fs::read_to_string(lock_path(&out)).unwrap();
        assert_eq!(text, format!("{MARK}{}\n", std::process::id()));
        drop(held);
        assert!(!lock_path(&out).exists());
    }
}
