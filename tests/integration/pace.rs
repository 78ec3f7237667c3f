//! Live runs keep the pace WeChat allows (issue 10): waiting rows hold no
//! slot, background noise does not slow the run, and a frequency limit is
//! found rather than oscillated around. Bounds are coarse on purpose: these
//! must hold on a busy machine; the benchmark (`live_stress`) gives figures.

use crate::harness::{sim_config, start, stderr_of, Results, Workdir};
use midas_cancel::sim::{picked, Faults};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Before: a worker slept through a row's back-off holding its slot, so a
/// few orders that stay processing stalled everyone.
#[test]
fn processing_orders_held_workers_and_stalled_the_rest() {
    let w = Workdir::new();
    w.orders("in.csv", 200);
    let stuck: HashSet<String> = (1..=200).map(|i| format!("B{i:04}")).filter(|b| picked(b, 0.05)).collect();
    assert!((4..=20).contains(&stuck.len()), "{} processing orders", stuck.len());
    let mut c = sim_config();
    c.faults = Faults { processing_share: 0.05, ..Faults::default() };
    let sim = start(c);
    let started = Instant::now();
    let child = w.spawn_live(
        "in.csv",
        "out.csv",
        &sim,
        &["--rate", "100", "--concurrency", "2", "--backoff-ms", "300", "--max-attempts", "5"],
    );
    // Every other order gets its answer at the pace, whatever the stuck ones do.
    let others = 200 - stuck.len();
    let deadline = started + Duration::from_secs(20);
    let elapsed = loop {
        let answered = sim.stats().log.iter().filter(|e| e.errcode == Some(0)).count();
        if answered >= others || Instant::now() > deadline {
            break started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Stop it: the stuck orders are parked; they are recorded with their last answer.
    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(elapsed < Duration::from_secs(7), "{others} orders took {elapsed:?} at 100/s");
    assert_eq!(out.status.code(), Some(130), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_eq!(r.rows.len(), 200, "every row accounted for");
    for row in &r.rows {
        let want = if stuck.contains(&row["bill_no"]) { "processing" } else { "cancelled" };
        assert_eq!(row["category"], want, "{}", row["bill_no"]);
    }
}

/// Before: every -1 counted toward a halving, so 5 % of random "system busy"
/// kept the run well below --rate.
#[test]
fn background_busy_answers_lowered_the_pace() {
    let w = Workdir::new();
    w.orders("in.csv", 400);
    let mut c = sim_config();
    c.faults = Faults { busy_rate: 0.05, ..Faults::default() };
    let sim = start(c);
    let out = w.live("in.csv", "out.csv", &sim).args(["--rate", "100", "--concurrency", "8"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let at = sim.stats().arrivals();
    let achieved = (at.len() - 1) as f64 / (at[at.len() - 1] - at[0]);
    assert!(achieved >= 85.0, "{achieved:.1}/s of 100/s with 5 % background -1");
    assert!(stderr_of(&out).contains("never slowed"), "{}", stderr_of(&out));
}

/// Before: each episode halved the pace and it climbed back to full, so
/// against a server limit the run alternated between too slow and rejected.
#[test]
fn a_frequency_limit_was_oscillated_around_instead_of_found() {
    let w = Workdir::new();
    w.orders("in.csv", 600);
    let mut c = sim_config();
    c.faults = Faults { frequency_limit: Some(50), ..Faults::default() };
    let sim = start(c);
    let out = w.live("in.csv", "out.csv", &sim).args(["--rate", "200", "--max-attempts", "10"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "no row left rate_limited: {}", stderr_of(&out));
    let stats = sim.stats();
    let limited = stats.log.iter().filter(|e| e.errcode == Some(45009)).count();
    let share = limited as f64 / stats.log.len() as f64;
    assert!(share <= 0.2, "{limited} of {} requests rejected with 45009", stats.log.len());
    let at = stats.arrivals();
    let useful = (stats.log.len() - limited) as f64 / (at[at.len() - 1] - at[0]);
    assert!(useful >= 35.0, "{useful:.1} useful answers/s against a 50/s limit");
    assert!(stderr_of(&out).contains("frequency limit found near"), "{}", stderr_of(&out));
    assert!(stats.cancelled_once(600));
}

/// The attempt log: one line per request, none secret; a pace line when
/// the pace changed; a token line per fetch.
#[test]
fn the_attempt_log_has_a_line_per_request_and_no_secret() {
    let w = Workdir::new();
    w.orders("in.csv", 60);
    let mut c = sim_config();
    c.faults = Faults { frequency_limit: Some(20), ..Faults::default() };
    let sim = start(c);
    let out = w
        .live("in.csv", "out.csv", &sim)
        .args(["--rate", "100", "--max-attempts", "10", "--log", "attempts.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = std::fs::read_to_string(w.path("attempts.jsonl")).unwrap();
    for secret in [crate::harness::APP_KEY, crate::harness::APP_SECRET, "SIMTOKEN", "sig"] {
        assert!(!text.contains(secret), "{secret} in the log");
    }
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let requests: Vec<_> = lines.iter().filter(|l| l["event"] == "request").collect();
    assert_eq!(requests.len(), sim.stats().log.len(), "one line per request sent");
    let first = requests[0];
    for key in
        ["sent", "answered", "row", "bill_no", "attempt", "http_status", "errcode", "category", "latency_ms", "pace"]
    {
        assert!(!first[key].is_null(), "{key} in {first}");
    }
    assert!(requests.iter().any(|l| l["errcode"] == 45009 && l["category"] == "rate_limited"));
    assert!(lines.iter().any(|l| l["event"] == "pace"), "the pace change is logged");
    assert_eq!(lines.iter().filter(|l| l["event"] == "token").count() as u64, sim.stats().stable_token_calls);
}

/// Before: until the first answer only one request was in flight, so a lost
/// first reply held the whole run for --timeout (10 s by default).
#[test]
fn a_slow_first_answer_held_the_whole_run() {
    let w = Workdir::new();
    w.orders("in.csv", 16);
    let mut c = sim_config();
    c.faults = Faults { latency: Duration::from_millis(2500), ..Faults::default() };
    let sim = start(c);
    w.live("in.csv", "out.csv", &sim).args(["--concurrency", "8", "--rate", "1000", "--timeout", "5"]).assert().code(0);
    let at = sim.stats().arrivals();
    let second = at[1] - at[0];
    assert!((0.9..2.2).contains(&second), "the second request left {second:.2} s after the first");
}
