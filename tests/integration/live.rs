//! Live runs against the simulator over loopback: categories, retries,
//! back-pressure, tokens, the circuit breaker, pacing and freshness.

use crate::harness::{sim_config, start, stderr_of, stdout_of, Results, Workdir, APP_KEY, APP_SECRET, TOKEN};
use midas_cancel::sim::{Faults, OrderState};
use std::time::Duration;

#[test]
fn every_errcode_lands_in_its_category() {
    let table: &[(&str, &str)] = &[
        ("deducted", "cancelled"),
        ("cancelled", "already_returned"),
        ("confirmed", "already_confirmed"),
        ("unknown", "not_found"),
        ("errcode:90018", "param_error"),
        ("errcode:-1", "system_busy"),
        ("errcode:90016", "processing"),
        ("errcode:45009", "rate_limited"),
        ("errcode:90010", "session_expired"),
        ("errcode:90009", "mp_sig_error"),
        ("errcode:90012", "unknown_error"),
        ("errcode:40013", "unknown_error"),
    ];
    let w = Workdir::new();
    let mut c = sim_config();
    let mut text = String::from("bill_no,openid,zone_id\n");
    for (i, (state, _)) in table.iter().enumerate() {
        c.orders.insert(format!("E{i}"), state.parse::<OrderState>().unwrap());
        text.push_str(&format!("E{i},oUSER{i},1\n"));
    }
    w.write("in.csv", text);
    let sim = start(c);
    let out = w.live("in.csv", "out.csv", &sim).args(["--max-attempts", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_eq!(r.rows.len(), table.len());
    for (i, (state, want)) in table.iter().enumerate() {
        let row = r.row(i as u64 + 1);
        assert_eq!(row["category"], *want, "{state}");
        let retryable = ["system_busy", "processing", "rate_limited"].contains(want);
        assert_eq!(row["attempts"], if retryable { "2" } else { "1" }, "{state}");
        assert!(!row["errcode"].is_empty() && row["ts"].parse::<u64>().is_ok(), "{state}");
    }
    assert_eq!(r.row(1)["errcode"], "0");
}

#[test]
fn breaker_codes_stop_the_run_within_a_few_requests() {
    for (state, category, hint) in
        [("errcode:90011", "sig_error", "MIDAS_APP_KEY"), ("errcode:90017", "no_permission", "appid")]
    {
        let w = Workdir::new();
        w.orders("in.csv", 200);
        let mut c = sim_config();
        c.default_state = state.parse().unwrap();
        let sim = start(c);
        let out = w.live("in.csv", "out.csv", &sim).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{state}: {}", stderr_of(&out));
        assert!(stderr_of(&out).contains(hint) && stderr_of(&out).contains("--resume"), "{}", stderr_of(&out));
        let sent = sim.stats().log.len();
        assert!(sent <= 3, "{state}: {sent} requests before the breaker tripped");
        let r = Results::read(&w.path("out.csv"));
        assert_eq!(r.rows.len(), 200, "every row accounted for");
        let cats = r.categories();
        assert_eq!(cats.values().filter(|c| *c == category).count(), sent);
        assert_eq!(cats.values().filter(|c| *c == "skipped").count(), 200 - sent);
    }
}

#[test]
fn a_wrong_app_key_trips_the_breaker() {
    let w = Workdir::new();
    w.orders("in.csv", 50);
    let mut c = sim_config();
    c.app_key = "the-real-production-key-0000000".into();
    let sim = start(c);
    let out = w.live("in.csv", "out.csv", &sim).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr_of(&out).contains("sandbox key used in production"), "{}", stderr_of(&out));
    assert!(sim.stats().log.len() <= 3);
}

#[test]
fn retries_then_success() {
    let w = Workdir::new();
    w.orders("in.csv", 20);
    let mut c = sim_config();
    c.default_state = OrderState::Processing(2);
    let sim = start(c);
    w.live("in.csv", "out.csv", &sim).assert().code(0);
    let r = Results::read(&w.path("out.csv"));
    assert!(r.rows.iter().all(|row| row["category"] == "cancelled" && row["attempts"] == "3"));
    assert!(sim.stats().cancelled_once(20));
}

#[test]
fn unanswered_requests_end_as_network_error_after_the_retries() {
    let w = Workdir::new();
    // 30 answers: enough for the pace controller to judge their share.
    w.orders("in.csv", 10);
    let mut c = sim_config();
    c.faults = Faults { error_rate: 1.0, ..Faults::default() };
    let sim = start(c);
    let out = w.live("in.csv", "out.csv", &sim).args(["--max-attempts", "3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r = Results::read(&w.path("out.csv"));
    for row in &r.rows {
        assert_eq!(
            (row["category"].as_str(), row["attempts"].as_str(), row["errcode"].as_str()),
            ("network_error", "3", "")
        );
        assert!(row["errmsg"].contains("HTTP 502"), "{}", row["errmsg"]);
    }
    let err = stderr_of(&out);
    assert!(err.contains("slowed 1 time") || err.contains("slowed 2 time"), "all-5xx slows the run: {err}");
}

#[test]
fn dropped_replies_time_out_and_a_resend_answers_already_returned() {
    let w = Workdir::new();
    w.orders("in.csv", 4);
    let mut c = sim_config();
    // Every cancel is processed but its answer is lost: the first try
    // returns the coins, every retry then sees 90015.
    c.faults = Faults { drop_rate: 1.0, ..Faults::default() };
    let sim = start(c);
    let out = w.live("in.csv", "out.csv", &sim).args(["--max-attempts", "2", "--timeout", "0.3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r = Results::read(&w.path("out.csv"));
    for row in &r.rows {
        assert_eq!(row["category"], "network_error");
        assert!(row["errmsg"].contains("outcome unknown"), "{}", row["errmsg"]);
    }
    assert!(sim.stats().cancelled_once(4), "coins returned once per order");
}

#[test]
fn frequency_limit_slows_the_whole_run_and_everything_completes() {
    let w = Workdir::new();
    w.orders("in.csv", 150);
    let mut c = sim_config();
    c.faults = Faults { frequency_limit: Some(40), ..Faults::default() };
    let sim = start(c);
    let out = w.live("in.csv", "out.csv", &sim).args(["--rate", "100", "--max-attempts", "10"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let stats = sim.stats();
    let limited = stats.log.iter().filter(|e| e.errcode == Some(45009)).count();
    assert!(limited > 0, "the limit was hit");
    let text = stderr_of(&out);
    assert!(!text.contains("slowed down 0 time"), "{text}");
    // Once the run has adapted, far fewer answers are 45009 than at the start.
    let share = |from: f64, to: f64| {
        let part: Vec<_> = stats.log.iter().filter(|e| e.at >= from && e.at < to).collect();
        part.iter().filter(|e| e.errcode == Some(45009)).count() as f64 / part.len().max(1) as f64
    };
    let start = stats.arrivals()[0];
    let (early, late) = (share(start, start + 1.0), share(start + 3.0, f64::MAX));
    assert!(late < early, "45009 share {early:.2} at first, {late:.2} after adapting");
    assert!(stats.cancelled_once(150));
}

#[test]
fn expired_tokens_are_refreshed_and_requests_re_signed() {
    let w = Workdir::new();
    w.orders("in.csv", 300);
    let mut c = sim_config();
    c.token_lifetime = Duration::from_secs(2);
    let sim = start(c);
    let out = w.live("in.csv", "out.csv", &sim).args(["--rate", "80"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let stats = sim.stats();
    assert!(stats.stable_token_calls >= 2, "token refreshed ({} calls)", stats.stable_token_calls);
    assert_eq!(stats.get_token_calls, 0, "GET /cgi-bin/token is never called");
    assert!(stats.force_refreshes <= 1);
    assert!(stats.cancelled_once(300));
}

#[test]
fn a_rejected_fixed_token_stops_the_run() {
    let w = Workdir::new();
    w.orders("in.csv", 100);
    let sim = start(sim_config()); // knows no fixed token
    let out = w
        .cmd()
        .env("MIDAS_APP_KEY", APP_KEY)
        .env("WECHAT_ACCESS_TOKEN", TOKEN)
        .args(["run", "in.csv", "-o", "out.csv", "--appid", "wx1", "--offer-id", "1", "--base-url", sim.url()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("WECHAT_APP_SECRET"), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_eq!(r.rows.len(), 100);
    let cats = r.categories();
    assert!(cats.values().all(|c| c == "token_error" || c == "skipped"));
    assert!(sim.stats().log.len() <= 2, "stops at the first rejection");
}

#[test]
fn a_wrong_app_secret_stops_before_anything_is_sent() {
    let w = Workdir::new();
    w.orders("in.csv", 3);
    let sim = start(sim_config());
    let out = w.live("in.csv", "out.csv", &sim).env("WECHAT_APP_SECRET", "wrong-secret-value-123").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("40125"), "{}", stderr_of(&out));
    assert!(!w.path("out.csv").exists());
    assert!(sim.stats().log.is_empty());
}

/// The request log shows the pacing contract: at most rate + burst in any
/// sliding second, every ts fresh, every row sent (and cancelled) once.
#[test]
fn pacing_freshness_and_exactly_once() {
    let w = Workdir::new();
    w.orders("in.csv", 250);
    let sim = start(sim_config());
    w.live("in.csv", "out.csv", &sim).args(["--rate", "100", "--burst", "2", "--concurrency", "8"]).assert().code(0);
    let stats = sim.stats();
    let max_window = stats.busiest_second();
    assert!(max_window <= 102, "{max_window} requests in one second");
    assert!(max_window >= 90, "the run used the rate it was given ({max_window}/s)");
    assert!(stats.log.iter().all(|e| e.ts_lag.unwrap() <= 2.0), "ts fresh");
    assert_eq!(stats.log.len(), 250, "one request per row");
    assert!(stats.cancelled_once(250));
}

#[test]
fn sandbox_uses_the_sandbox_path_and_key() {
    let w = Workdir::new();
    w.orders("in.csv", 5);
    let mut c = sim_config();
    c.sandbox_app_key = "sandbox-key-0123456789abcdef".into();
    let sim = start(c);
    w.live("in.csv", "out.csv", &sim)
        .env("MIDAS_APP_KEY", "sandbox-key-0123456789abcdef")
        .arg("--sandbox")
        .assert()
        .code(0);
    assert!(sim.stats().log.iter().all(|e| e.sandbox));
}

#[test]
fn mp_sig_is_sent_and_verified_when_session_keys_are_known() {
    let w = Workdir::new();
    w.write("in.csv", "bill_no,openid,zone_id,session_key\nB1,oA,1,a2V5QQ==\nB2,oB,1,\n");
    let mut c = sim_config();
    c.sessions = midas_cancel::sim::SessionPolicy::Strict;
    let keys = w.write("keys.csv", "openid,session_key\noA,a2V5QQ==\n");
    c.session_keys = std::sync::Arc::new(midas_cancel::input::SessionKeys::load(&keys).unwrap());
    let sim = start(c);
    w.live("in.csv", "out.csv", &sim).assert().code(1);
    let r = Results::read(&w.path("out.csv"));
    assert_eq!(r.row(1)["category"], "cancelled");
    assert_eq!(r.row(2)["category"], "session_expired");
    assert!(r.row(2)["errmsg"].contains("supply session keys"), "{}", r.row(2)["errmsg"]);
    assert!(!r.headers.contains(&"session_key".to_string()));
}

#[test]
fn no_secret_reaches_the_results_or_the_console() {
    let w = Workdir::new();
    w.orders("in.csv", 20);
    let mut c = sim_config();
    c.faults = Faults { busy_rate: 0.3, ..Faults::default() };
    let sim = start(c);
    let out = w.live("in.csv", "out.csv", &sim).output().unwrap();
    let written = std::fs::read_to_string(w.path("out.csv")).unwrap();
    let console = format!("{}{}", stderr_of(&out), stdout_of(&out));
    for secret in [APP_KEY, APP_SECRET, "SIMTOKEN"] {
        assert!(!written.contains(secret), "{secret} in results");
        assert!(!console.contains(secret), "{secret} on console");
    }
}

#[test]
fn rehearsal_on_the_samples() {
    let w = Workdir::new();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = w
        .cmd()
        .current_dir(root)
        .args(["run", "samples/orders.csv", "-o"])
        .arg(w.path("out.csv"))
        .args(["--config", "samples/midas.toml", "--simulate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_eq!(r.rows.len(), 12);
    let cats = r.categories();
    assert_eq!(cats.values().filter(|c| *c == "cancelled").count(), 7);
    assert_eq!(cats[&5], "duplicate");
    assert_eq!(cats[&6], "invalid_input");
}

/// Regression: workers queued behind the one-request canary each held it for
/// a whole request after warm-up, so concurrency grew by one per round trip.
#[test]
fn concurrency_opens_fully_after_the_first_answer() {
    let w = Workdir::new();
    // 24 rows: the canary, then rounds of 8. With the bug, in-flight
    // requests grow 1, 2, 3, ... and never reach 8 (1+...+7 = 28 > 24).
    w.orders("in.csv", 24);
    let mut c = sim_config();
    c.faults = Faults { latency: Duration::from_millis(1000), ..Faults::default() };
    let sim = start(c);
    w.live("in.csv", "out.csv", &sim).args(["--concurrency", "8", "--rate", "1000", "--timeout", "5"]).assert().code(0);
    let st = sim.stats();
    assert_eq!(st.max_in_flight, 8, "all 8 workers in flight at once: {:?}", st.arrivals());
}
