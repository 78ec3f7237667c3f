//! Test harness: a temp directory per test, the real binary, and helpers to
//! read the results CSV back.

use assert_cmd::Command;
use midas_cancel::sim::{SimConfig, Simulator};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const APP_KEY: &str = "TESTappKEY0123456789abcdefghijkl";
pub const TOKEN: &str = "TEST_ACCESS_TOKEN_0123456789";
pub const APP_SECRET: &str = "TEST_APP_SECRET_abcdefghijklmnop";

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

impl Workdir {
    /// A live `run` against `sim` with the test keys, fast retries and a
    /// short timeout; tokens come from the simulator's stable_token.
    pub fn live(&self, input: &str, output: &str, sim: &Simulator) -> Command {
        let mut c = self.cmd();
        c.env("MIDAS_APP_KEY", APP_KEY).env("WECHAT_APP_SECRET", APP_SECRET).args(live_args(input, output, sim));
        c
    }

    /// A live `run` against any base URL (for URL checks), with the
    /// defaults' pace.
    pub fn live_to(&self, input: &str, output: &str, base_url: &str) -> Command {
        let mut c = self.cmd();
        c.env("MIDAS_APP_KEY", APP_KEY).env("WECHAT_APP_SECRET", APP_SECRET).args(run_args(input, output, base_url));
        c
    }

    /// A live run (`live`) started by `sh` after `setup` (a `ulimit`, a
    /// `trap`), so the limit applies to the real process.
    pub fn live_in_shell(&self, setup: &str, input: &str, output: &str, sim: &Simulator) -> std::process::Command {
        let mut sh = std::process::Command::new("sh");
        sh.current_dir(self.dir.path())
            .env("MIDAS_APP_KEY", APP_KEY)
            .env("WECHAT_APP_SECRET", APP_SECRET)
            .arg("-c")
            .arg(format!(r#"{setup}; exec "$0" "$@""#))
            .arg(assert_cmd::cargo::cargo_bin("midas-cancel"))
            .args(live_args(input, output, sim));
        sh
    }

    /// The same live run as a process that can be killed part-way.
    pub fn spawn_live(&self, input: &str, output: &str, sim: &Simulator, extra: &[&str]) -> std::process::Child {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("midas-cancel"))
            .current_dir(self.dir.path())
            .env_remove("WECHAT_ACCESS_TOKEN")
            .env("MIDAS_APP_KEY", APP_KEY)
            .env("WECHAT_APP_SECRET", APP_SECRET)
            .args(live_args(input, output, sim))
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn midas-cancel")
    }

    /// Waits until `output` holds at least `lines` result lines.
    pub fn wait_for_lines(&self, output: &str, lines: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let n = std::fs::read_to_string(self.path(output)).map(|t| t.lines().count()).unwrap_or(0);
            if n > lines {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("{output} never reached {lines} lines");
    }

    /// An orders file with `n` rows B0001.. for users u1..u5.
    pub fn orders(&self, name: &str, n: usize) -> PathBuf {
        let mut text = String::from("bill_no,openid,zone_id,amount\n");
        for i in 1..=n {
            text.push_str(&format!("B{i:04},oUSER{},1,{}\n", i % 5 + 1, i * 100));
        }
        self.write(name, text)
    }
}

fn run_args(input: &str, output: &str, base_url: &str) -> Vec<String> {
    let args = ["run", input, "-o", output, "--appid", "wxtest", "--offer-id", "123", "--base-url", base_url];
    args.iter().map(|s| s.to_string()).collect()
}

/// `run_args` against `sim` with fast retries and a short timeout.
fn live_args(input: &str, output: &str, sim: &Simulator) -> Vec<String> {
    let fast = ["--backoff-ms", "20", "--timeout", "1", "--rate", "200"];
    run_args(input, output, sim.url()).into_iter().chain(fast.iter().map(|s| s.to_string())).collect()
}

/// A simulator that knows the test keys.
pub fn sim_config() -> SimConfig {
    let mut c = SimConfig::new(APP_KEY);
    c.app_secret = APP_SECRET.into();
    c.keep_log = true;
    c
}

pub fn start(c: SimConfig) -> Simulator {
    Simulator::start(c, None).expect("simulator starts")
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

    /// The line whose column `name` is `value`.
    pub fn row_by(&self, name: &str, value: &str) -> &HashMap<String, String> {
        self.rows.iter().find(|r| r[name] == value).unwrap_or_else(|| panic!("no line with {name} = {value}"))
    }

    /// The category of every row, by row number.
    pub fn categories(&self) -> HashMap<u64, String> {
        self.rows.iter().map(|r| (r["row"].parse().unwrap(), r["category"].clone())).collect()
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

/// One line per input row, each row once.
pub fn assert_one_line_per_row(r: &Results, rows: usize) {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for row in &r.rows {
        *seen.entry(row["row"].parse().unwrap()).or_default() += 1;
    }
    assert_eq!(r.rows.len(), rows, "one line per input row");
    assert!((1..=rows as u64).all(|n| seen.get(&n) == Some(&1)), "every row exactly once");
}

/// Kills a live run (SIGKILL) once `output` has `lines` lines; returns how
/// many result lines it left.
pub fn kill_part_way(w: &Workdir, mut child: std::process::Child, output: &str, lines: usize) -> usize {
    w.wait_for_lines(output, lines);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    Results::read(&w.path(output)).rows.len()
}
