//! What the live benchmarks share (`live_stress`, `refund_rate`): the
//! binary under test, a simulator that knows the bench keys, and one run of
//! the binary against it.

use midas_cancel::sim::{SimConfig, Simulator};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

pub const APP_KEY: &str = "BENCHappKEY000000000000000000000";
pub const SECRET: &str = "BENCHsecret0000000000000000000000";

/// The binary named as the first argument, else the release build beside
/// this example.
pub fn binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let default_bin = exe.parent().and_then(|p| p.parent()).map(|p| p.join("midas-cancel")).expect("target dir");
    let bin = std::env::args().nth(1).map(PathBuf::from).unwrap_or(default_bin);
    anyhow::ensure!(bin.exists(), "build the binary first: cargo build --release");
    println!("binary: {}", bin.display());
    Ok(bin)
}

/// Whether `SCENARIO=part` (when set) selects the scenario `name`.
pub fn selected(name: &str) -> bool {
    name.contains(std::env::var("SCENARIO").unwrap_or_default().as_str())
}

/// A simulator that knows the bench keys and keeps its log, tuned by `tune`.
pub fn simulator(tune: impl FnOnce(&mut SimConfig)) -> anyhow::Result<Simulator> {
    let mut sc = SimConfig::new(APP_KEY);
    sc.app_secret = SECRET.into();
    sc.keep_log = true;
    tune(&mut sc);
    Simulator::start(sc, None)
}

/// `bin run INPUT -o OUTPUT` against `sim`, quiet, with `args` after.
pub fn run(bin: &Path, input: &Path, output: &Path, sim: &Simulator, args: &[&str]) -> anyhow::Result<ExitStatus> {
    Ok(Command::new(bin)
        .env("MIDAS_APP_KEY", APP_KEY)
        .env("WECHAT_APP_SECRET", SECRET)
        .arg("run")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(["--appid", "wxbench", "--base-url", sim.url(), "--quiet"])
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()?)
}
