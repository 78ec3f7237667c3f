//! Test harness: a temp directory per test, the real binary, and helpers to
//! read the results CSV back.

use assert_cmd::Command;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const APP_KEY: &str = "TESTappKEY0123456789abcdefghijkl";
pub const TOKEN: &str = "TEST_ACCESS_TOKEN_0123456789";

/// A scratch directory and a way to run the binary inside it.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        Workdir { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).expect("write test file");
        p
    }

    /// The binary, run in the work dir with no secrets in its environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("midas-cancel").expect("binary built");
        c.current_dir(self.dir.path());
        for v in ["MIDAS_APP_KEY", "WECHAT_APP_SECRET", "WECHAT_ACCESS_TOKEN", "MIDAS_APP_KEY_FILE", "NO_COLOR"] {
            c.env_remove(v);
        }
        c
    }

    /// `run --dry-run` with the test app key and a fixed ts.
    pub fn dry_run(&self, input: &str, output: &str) -> Command {
        let mut c = self.cmd();
        c.env("MIDAS_APP_KEY", APP_KEY).args([
            "run",
            input,
            "-o",
            output,
            "--appid",
            "wxtest",
            "--offer-id",
            "123",
            "--dry-run",
            "--ts",
            "1700000000",
        ]);
        c
    }
}

/// A results CSV as header + rows of name → value.
pub struct Results {
    pub headers: Vec<String>,
    pub rows: Vec<HashMap<String, String>>,
}

impl Results {
    pub fn read(path: &Path) -> Results {
        let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let headers: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
        let rows = r
            .records()
            .map(|rec| {
                let rec = rec.unwrap();
                headers.iter().cloned().zip(rec.iter().map(String::from)).collect()
            })
            .collect();
        Results { headers, rows }
    }

    /// The row whose `row` column is `n`.
    pub fn row(&self, n: u64) -> &HashMap<String, String> {
        let n = n.to_string();
        self.rows.iter().find(|r| r["row"] == n).unwrap_or_else(|| panic!("no row {n}"))
    }

    pub fn column(&self, name: &str) -> Vec<&str> {
        self.rows.iter().map(|r| r[name].as_str()).collect()
    }
}

pub fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
