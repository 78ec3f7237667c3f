//! Files the run makes, and only those (SPEC "Behaviour under stress"):
//! created exclusively (never truncating what is there, never through a
//! symlink), written whole before they appear under their name, and removed
//! only when this run made them.

use std::fs::File;
use std::io;
use std::path::Path;

/// Creates `path`, which must not exist. `O_EXCL` also refuses a symlink,
/// dangling or not, so a planted link cannot lead the write elsewhere.
pub fn create_new(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path)
}

/// Syncs the folder of `path`, so a file created or renamed in it survives
/// a power cut.
pub fn sync_dir(path: &Path) {
    if let Ok(d) = File::open(folder_of(path)) {
        let _ = d.sync_all();
    }
}

fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// A file written under a private temporary name in the folder of its
/// destination, and moved there only once complete: a failure part-way
/// leaves nothing behind (the temporary file is removed, being ours), and
/// the destination is never seen half-written.
pub struct Staged {
    tmp: tempfile::NamedTempFile,
}

impl Staged {
    /// A staging file beside `dest`.
    pub fn beside(dest: &Path) -> io::Result<Staged> {
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(folder_of(dest))?;
        Ok(Staged { tmp })
    }

    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Syncs the file and moves it to `dest`, which must not exist (a file
    /// that appeared meanwhile is not replaced).
    pub fn publish_new(self, dest: &Path) -> io::Result<()> {
        // A temporary file is private (0600); the file it becomes gets the
        // mode any new file of the user's gets (0666 less the umask).
        use std::os::unix::fs::PermissionsExt as _;
        self.tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o666 & !umask()))?;
        self.tmp.as_file().sync_all()?;
        self.tmp.persist_noclobber(dest).map_err(|e| e.error)?;
        sync_dir(dest);
        Ok(())
    }

    /// Syncs the file and moves it over `dest` (atomic on POSIX): for files
    /// this run owns (the results file it resumes, its fingerprint).
    pub fn replace(self, dest: &Path) -> io::Result<()> {
        self.tmp.as_file().sync_all()?;
        self.tmp.persist(dest).map_err(|e| e.error)?;
        sync_dir(dest);
        Ok(())
    }
}

/// The process's umask (read by setting it and setting it back).
fn umask() -> u32 {
    // SAFETY: umask only swaps the process's mask; it is put back at once.
    let mask = unsafe { libc::umask(0o022) };
    unsafe { libc::umask(mask) };
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn create_new_never_follows_a_symlink_nor_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        let link = dir.path().join("out.lock");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(create_new(&link).is_err());
        assert!(create_new(&victim).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn a_staged_file_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("r.xlsx");
        let mut s = Staged::beside(&dest).unwrap();
        s.file().write_all(b"half").unwrap();
        drop(s);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left behind");
        std::fs::write(&dest, "theirs").unwrap();
        let mut s = Staged::beside(&dest).unwrap();
        s.file().write_all(b"ours").unwrap();
        assert!(s.publish_new(&dest).is_err());
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "theirs");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
