//! Live runs under the stress scenarios of issue 10, against the in-process
//! simulator on loopback: orders that stay processing, random faults, and a
//! server-side frequency limit.
//!
//!     cargo build --release && cargo run --release --example live_stress [-- BINARY]
//!
//! `SCENARIO=limit` runs only the scenarios whose name contains `limit`.
//!
//! BINARY defaults to the release build of this checkout; give another build
//! (an older release, say) to compare the two on the same scenarios.
//!
//! Figures, per scenario:
//! - "sent/s": requests per second while fresh rows were still being sent
//!   (first request to the last row's first attempt): what `--rate` promises;
//!   the tail of retries of orders that stay processing is not in it;
//! - "useful/s": answers that were neither the frequency limit (45009, 429)
//!   nor busy (-1, 5xx), per second over the whole run;
//! - "limited": share of requests rejected by the frequency limit;
//! - "left": rows whose final category is `rate_limited`;
//! - "max 1s": the most requests in any sliding second.

#[path = "bench_run.rs"]
mod bench_run;

use midas_cancel::sim::Faults;
use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

struct Scenario {
    name: &'static str,
    rows: usize,
    rate: u32,
    faults: Faults,
    args: &'static [&'static str],
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "5% processing forever",
            rows: 4000,
            rate: 400,
            faults: Faults { processing_share: 0.05, ..Faults::default() },
            // The defaults: 90016 waits 5, 10, 20, 40 s, so the run ends
            // ~75 s after the last fresh row; "sent/s" is before that.
            args: &[],
        },
        Scenario {
            name: "random faults",
            rows: 2000,
            rate: 150,
            faults: Faults {
                busy_rate: 0.05,
                error_rate: 0.03,
                throttle_rate: 0.02,
                bogus_rate: 0.01,
                bogus_body: Some("<html>garbage".into()),
                drop_rate: 0.01,
                ..Faults::default()
            },
            args: &["--timeout", "2"],
        },
        Scenario {
            // Issue 17: a steady share of -1 from the first request is the
            // background, not a burst (it was cut to 12.8/s of 50).
            name: "25% -1 from the start",
            rows: 1000,
            rate: 50,
            faults: Faults { busy_rate: 0.25, ..Faults::default() },
            args: &[],
        },
        Scenario {
            name: "limit 100/s",
            rows: 3000,
            rate: 200,
            faults: Faults { frequency_limit: Some(100), ..Faults::default() },
            args: &[],
        },
        Scenario {
            name: "limit 20/s",
            rows: 1500,
            rate: 200,
            faults: Faults { frequency_limit: Some(20), ..Faults::default() },
            args: &[],
        },
        Scenario {
            name: "limit 90/s + 3% -1",
            rows: 2000,
            rate: 100,
            faults: Faults { frequency_limit: Some(90), busy_rate: 0.03, ..Faults::default() },
            args: &[],
        },
    ]
}

fn main() -> anyhow::Result<()> {
    let bin = bench_run::binary()?;
    let dir = tempfile::tempdir()?;
    println!(
        "{:<24} {:>6} {:>9} {:>7} {:>10} {:>8} {:>5} {:>7} {:>7}",
        "scenario", "rate", "sent/s", "of rate", "useful/s", "limited", "left", "max 1s", "secs"
    );
    for (i, s) in scenarios().into_iter().enumerate() {
        // `SCENARIO=part` runs only the scenarios whose name contains it.
        if !bench_run::selected(s.name) {
            continue;
        }
        let sim = bench_run::simulator(|sc| sc.faults = s.faults)?;
        let input = dir.path().join(format!("in-{i}.csv"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
        writeln!(f, "bill_no,openid,zone_id")?;
        for n in 0..s.rows {
            writeln!(f, "S{i}N{n},oBENCHUSER{},1", n % 1000)?;
        }
        f.flush()?;
        let output = dir.path().join(format!("out-{i}.csv"));
        let started = Instant::now();
        let rate = s.rate.to_string();
        let args: Vec<&str> = ["--offer-id", "1", "--rate", &rate].into_iter().chain(s.args.iter().copied()).collect();
        let status = bench_run::run(&bin, &input, &output, &sim, &args)?;
        let secs = started.elapsed().as_secs_f64();
        let stats = sim.stats();
        let log = &stats.log;
        // The last row's first attempt ends the "fresh" phase.
        let mut seen = HashSet::new();
        let mut last_first = 0.0f64;
        for e in log {
            if seen.insert(e.bill_no.as_str()) {
                last_first = last_first.max(e.at);
            }
        }
        let first = log.iter().map(|e| e.at).fold(f64::INFINITY, f64::min);
        let in_phase = log.iter().filter(|e| e.at <= last_first).count();
        let sent = in_phase.saturating_sub(1) as f64 / (last_first - first).max(1e-9);
        let overload = |e: &&midas_cancel::sim::LogEntry| {
            matches!(e.errcode, Some(45009) | Some(-1)) || e.status == 429 || e.status >= 500 || e.status == 0
        };
        let useful = log.iter().filter(|e| !overload(e)).count() as f64;
        let span = log.iter().map(|e| e.at).fold(0.0, f64::max) - first;
        let limited = log.iter().filter(|e| e.errcode == Some(45009) || e.status == 429).count();
        let text = std::fs::read_to_string(&output).unwrap_or_default();
        let left = text.lines().filter(|l| l.contains(",rate_limited,")).count();
        println!(
            "{:<24} {:>6} {:>9.1} {:>6.1}% {:>10.1} {:>7.1}% {:>5} {:>7} {:>7.1}{}",
            s.name,
            s.rate,
            sent,
            100.0 * sent / f64::from(s.rate),
            useful / span.max(1e-9),
            100.0 * limited as f64 / log.len().max(1) as f64,
            left,
            stats.busiest_second(),
            secs,
            if status.success() { String::new() } else { format!("  (exit {:?})", status.code()) }
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
