//! Live-run pacing benchmark against the in-process simulator on loopback:
//! achieved rate vs `--rate`, the busiest sliding second, ts lag, and CPU time
//! per request of the midas-cancel process.
//!
//!     cargo build --release && cargo run --release --example live_rate [-- SECONDS]
//!
//! Needs GNU time (/usr/bin/time) for the CPU figures.

use midas_cancel::sim::{SimConfig, Simulator};
use std::io::Write;
use std::process::Command;
use std::time::Duration;

const APP_KEY: &str = "BENCHappKEY000000000000000000000";
const SECRET: &str = "BENCHsecret0000000000000000000000";

fn main() -> anyhow::Result<()> {
    let seconds: u32 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let exe = std::env::current_exe()?;
    let bin = exe.parent().and_then(|p| p.parent()).map(|p| p.join("midas-cancel")).expect("target dir");
    anyhow::ensure!(bin.exists(), "build the binary first: cargo build --release");
    let dir = tempfile::tempdir()?;
    println!(
        "{:>6} {:>5} {:>7} {:>9} {:>8} {:>10} {:>12} {:>12}",
        "rate", "conc", "latency", "achieved", "ratio", "max 1s", "max ts lag", "CPU/request"
    );
    let cases: &[(u32, usize, u64)] =
        &[(50, 16, 0), (200, 16, 0), (500, 16, 0), (1000, 16, 0), (1000, 32, 0), (200, 16, 50), (500, 16, 50)];
    for &(rate, concurrency, latency_ms) in cases {
        let mut sc = SimConfig::new(APP_KEY);
        sc.app_secret = SECRET.into();
        sc.keep_log = true;
        sc.faults.latency = Duration::from_millis(latency_ms);
        let sim = Simulator::start(sc, None)?;
        let rows = (rate * seconds) as usize;
        let input = dir.path().join(format!("in-{rate}-{concurrency}-{latency_ms}.csv"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
        writeln!(f, "bill_no,openid,zone_id")?;
        for i in 0..rows {
            writeln!(f, "R{rate}C{concurrency}L{latency_ms}N{i},oBENCHUSER{},1", i % 1000)?;
        }
        f.flush()?;
        let output = input.with_extension("out.csv");
        let out = Command::new("/usr/bin/time")
            .args(["-f", "CPU %U %S"])
            .arg(&bin)
            .env("MIDAS_APP_KEY", APP_KEY)
            .env("WECHAT_APP_SECRET", SECRET)
            .args(["run"])
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .args(["--appid", "wxbench", "--offer-id", "1", "--base-url", sim.url(), "--quiet"])
            .args(["--rate", &rate.to_string(), "--concurrency", &concurrency.to_string()])
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let cpu: f64 = stderr
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("CPU "))
            .map(|l| l.split_whitespace().filter_map(|x| x.parse::<f64>().ok()).sum())
            .unwrap_or(f64::NAN);
        let stats = sim.stats();
        let (log, at) = (&stats.log, stats.arrivals());
        let span = at.last().unwrap_or(&0.0) - at.first().unwrap_or(&0.0);
        let achieved = (at.len().saturating_sub(1)) as f64 / span.max(1e-9);
        let max_window = stats.busiest_second();
        let lag = log.iter().filter_map(|e| e.ts_lag).fold(0.0, f64::max);
        println!(
            "{rate:>6} {concurrency:>5} {:>5}ms {achieved:>8.1}/s {:>7.1}% {max_window:>6} (≤{}) {lag:>10.2}s {:>10.0}µs",
            latency_ms,
            100.0 * achieved / f64::from(rate),
            rate + 1,
            1e6 * cpu / log.len().max(1) as f64
        );
        if log.len() != rows {
            // Retries (a timeout under load, say) are legitimate; say so.
            println!("       ({} requests for {rows} rows: some were retried)", log.len());
        }
    }
    Ok(())
}
