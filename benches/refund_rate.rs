//! Live cash refunds (`--api xpay-refund`, issue 20) against the in-process
//! simulator on loopback: 1,000 refunds that settle 3 s after they start,
//! polled on WeChat's schedule (5, 10, 20, ... s), with and without faults.
//!
//!     cargo build --release && cargo run --release --example refund_rate [-- BINARY]
//!
//! Every row takes at least four requests (find the refund id, query the
//! paid order, refund, poll), all under the one `--rate`. Figures, per
//! scenario:
//! - "sent/s": requests per second while fresh rows were still starting
//!   (first request to the last row's first request): what `--rate`
//!   promises, polls included;
//! - "req/row": requests per row over the whole run;
//! - "secs": the run's time, and "ideal": requests / rate + the first poll
//!   (5 s): a run whose rows waited for their refunds in a slot would take
//!   rows × settle time / concurrency instead;
//! - "refunded": rows that ended `refunded`; "twice": refund ids refunded
//!   more than once (must be 0).

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
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "settle after 3 s", rows: 1000, rate: 100, faults: Faults::default() },
        Scenario {
            name: "+ random faults",
            rows: 1000,
            rate: 100,
            faults: Faults { busy_rate: 0.05, error_rate: 0.03, throttle_rate: 0.02, ..Faults::default() },
        },
        Scenario {
            name: "+ limit 80/s",
            rows: 1000,
            rate: 100,
            faults: Faults { frequency_limit: Some(80), ..Faults::default() },
        },
    ]
}

fn main() -> anyhow::Result<()> {
    let bin = bench_run::binary()?;
    let dir = tempfile::tempdir()?;
    println!(
        "{:<20} {:>5} {:>6} {:>8} {:>7} {:>8} {:>7} {:>7} {:>9} {:>6}",
        "scenario", "rows", "rate", "sent/s", "of rate", "req/row", "secs", "ideal", "refunded", "twice"
    );
    for (i, s) in scenarios().into_iter().enumerate() {
        if !bench_run::selected(s.name) {
            continue;
        }
        let sim = bench_run::simulator(|sc| {
            sc.faults = s.faults;
            sc.refund_settle = Duration::from_secs(3);
        })?;
        let input = dir.path().join(format!("in-{i}.csv"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
        writeln!(f, "bill_no,openid,amount")?;
        for n in 0..s.rows {
            writeln!(f, "R{i}N{n},oBENCHUSER{},{}", n % 1000, 100 + n)?;
        }
        f.flush()?;
        let output = dir.path().join(format!("out-{i}.csv"));
        let started = Instant::now();
        let rate = s.rate.to_string();
        let args = ["--api", "xpay-refund", "--rate", &rate, "--max-attempts", "10"];
        let status = bench_run::run(&bin, &input, &output, &sim, &args)?;
        let secs = started.elapsed().as_secs_f64();
        let stats = sim.stats();
        let log = &stats.log;
        // A row's first request is the query of its refund id (`mr...`).
        let mut seen = HashSet::new();
        let mut last_first = 0.0f64;
        for e in log.iter().filter(|e| e.call == "query_order" && e.bill_no.starts_with("mr")) {
            if seen.insert(e.bill_no.as_str()) {
                last_first = last_first.max(e.at);
            }
        }
        let first = log.iter().map(|e| e.at).fold(f64::INFINITY, f64::min);
        let in_phase = log.iter().filter(|e| e.at <= last_first).count();
        let sent = in_phase.saturating_sub(1) as f64 / (last_first - first).max(1e-9);
        let ideal = log.len() as f64 / f64::from(s.rate) + 5.0;
        let text = std::fs::read_to_string(&output).unwrap_or_default();
        let refunded = text.lines().filter(|l| l.contains(",refunded,")).count();
        let twice = stats.cancels.values().filter(|&&n| n > 1).count();
        println!(
            "{:<20} {:>5} {:>6} {:>8.1} {:>6.1}% {:>8.2} {:>7.1} {:>7.1} {:>9} {:>6}{}",
            s.name,
            s.rows,
            s.rate,
            sent,
            100.0 * sent / f64::from(s.rate),
            log.len() as f64 / s.rows as f64,
            secs,
            ideal,
            refunded,
            twice,
            if status.success() { String::new() } else { format!("  (exit {:?})", status.code()) }
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
