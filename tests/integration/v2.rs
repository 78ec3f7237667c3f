//! Virtual Payment 2.0 (`--api v2`) end to end against the simulator: ids,
//! partial cancels, idempotency, sandbox, session keys, kill -9 + resume,
//! validation, and the report.

use crate::harness::{sim_config, start, stderr_of, stdout_of, Results, Workdir, APP_KEY};
use midas_cancel::api::v2;
use midas_cancel::input::SessionKeys;
use midas_cancel::sim::{Faults, OrderState, SessionPolicy};
use std::sync::Arc;

/// `n` deductions P0001.. of 10·i coins for users u1..u5, each with a session key.
fn deductions(w: &Workdir, name: &str, n: usize) {
    let mut text = String::from("bill_no,openid,zone_id,amount,session_key\n");
    for i in 1..=n {
        text.push_str(&format!("P{i:04},oUSER{},1,{},a2V5{}==\n", i % 5 + 1, i * 10, i % 5 + 1));
    }
    w.write(name, text);
}

#[test]
fn v2_cancels_every_deduction_under_its_derived_id() {
    let w = Workdir::new();
    deductions(&w, "in.csv", 30);
    let sim = start(sim_config());
    let out = w.live("in.csv", "out.csv", &sim).args(["--api", "v2", "--cancel-tag", "inc-7"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    let tail: Vec<&str> = r.headers.iter().rev().take(7).rev().map(String::as_str).collect();
    assert_eq!(tail, ["row", "cancel_bill_no", "category", "errcode", "errmsg", "attempts", "ts"]);
    for row in &r.rows {
        assert_eq!(row["category"], "cancelled");
        let want = v2::cancellation_id("123", &row["bill_no"], &row["amount"], "inc-7");
        assert_eq!(row["cancel_bill_no"], want);
    }
    assert!(sim.stats().cancelled_once(30), "once per cancellation id");
    assert!(sim.stats().log.iter().all(|e| !e.sandbox), "env 0");
}

#[test]
fn a_lost_v2_reply_is_resent_and_answers_already_returned() {
    let w = Workdir::new();
    deductions(&w, "in.csv", 4);
    let mut c = sim_config();
    // Each cancel is processed, but its first answer never comes back.
    c.faults = Faults { drop_first: true, ..Faults::default() };
    let sim = start(c);
    let out = w
        .live("in.csv", "out.csv", &sim)
        .args(["--api", "v2", "--max-attempts", "3", "--timeout", "0.3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    for row in &r.rows {
        assert_eq!(
            (row["category"].as_str(), row["errcode"].as_str(), row["attempts"].as_str()),
            ("already_returned", "90012", "2")
        );
    }
    assert!(sim.stats().cancelled_once(4), "coins returned once per cancellation id");
}

#[test]
fn a_repeated_cancellation_id_answers_90012_and_counts_as_already_returned() {
    let w = Workdir::new();
    w.write(
        "in.csv",
        "bill_no,openid,zone_id,amount,session_key,cancel_bill_no\nP1,o1,1,60,a2V5==,C1\nP2,o1,1,10,a2V5==,C2\n",
    );
    let sim = start(sim_config());
    w.live("in.csv", "out.csv", &sim).args(["--api", "v2"]).assert().code(0);
    // The same ids again, in a new results file: every one is already processed.
    let out = w.live("in.csv", "again.csv", &sim).args(["--api", "v2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "already_returned is done: {}", stderr_of(&out));
    let r = Results::read(&w.path("again.csv"));
    for row in &r.rows {
        assert_eq!((row["category"].as_str(), row["errcode"].as_str()), ("already_returned", "90012"));
    }
    assert!(sim.stats().cancelled_once(2));
}

#[test]
fn partial_cancels_and_an_amount_above_what_is_left() {
    let w = Workdir::new();
    w.write(
        "in.csv",
        "bill_no,openid,zone_id,amount,session_key,cancel_bill_no\n\
         P1,o1,1,60,a2V5==,C1\nP1,o1,1,60,a2V5==,C2\nP1,o1,1,40,a2V5==,C3\nGONE,o1,1,5,a2V5==,C4\n",
    );
    let mut c = sim_config();
    c.orders.insert("P1".into(), OrderState::Remaining(100));
    c.orders.insert("GONE".into(), OrderState::Unknown);
    let sim = start(c);
    let out = w.live("in.csv", "out.csv", &sim).args(["--api", "v2", "--concurrency", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    let cat = |n: u64| r.row(n)["category"].clone();
    assert_eq!(
        (cat(1), cat(2), cat(3), cat(4)),
        ("cancelled".into(), "param_error".into(), "cancelled".into(), "not_found".into())
    );
    assert!(r.row(2)["errmsg"].contains("above"), "{}", r.row(2)["errmsg"]);
    // report --sum totals the coins per category; --only gives the rows back.
    let rep = w.cmd().args(["report", "out.csv", "--json", "--sum", "amount"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&rep)).unwrap();
    assert_eq!(v["sums"]["by_category"]["cancelled"], "100");
    assert_eq!(v["sums"]["by_category"]["param_error"], "60");
    let only = w.cmd().args(["report", "out.csv", "--only", "param_error"]).output().unwrap();
    assert_eq!(stdout_of(&only), "bill_no,openid,zone_id,amount,cancel_bill_no\nP1,o1,1,60,C2\n");
}

#[test]
fn v2_sandbox_sends_env_1_signed_with_the_sandbox_key() {
    let w = Workdir::new();
    deductions(&w, "in.csv", 5);
    let mut c = sim_config();
    c.sandbox_app_key = "SANDBOX-2.0-appkey-0123456789".into();
    let sim = start(c);
    w.live("in.csv", "out.csv", &sim)
        .env("MIDAS_APP_KEY", "SANDBOX-2.0-appkey-0123456789")
        .args(["--api", "v2", "--sandbox"])
        .assert()
        .code(0);
    assert!(sim.stats().log.iter().all(|e| e.sandbox), "env 1");
    // The production AppKey with --sandbox: pay_sig refused, the breaker trips.
    let out = w.live("in.csv", "prod-key.csv", &sim).args(["--api", "v2", "--sandbox"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("pay_sig wrong") && err.contains("2.0 AppKey"), "{err}");
    assert!(!err.contains(APP_KEY));
}

#[test]
fn v2_session_keys_wrong_or_unknown() {
    let w = Workdir::new();
    w.write(
        "in.csv",
        "bill_no,openid,zone_id,amount,session_key\nP1,oA,1,1,a2V5QQ==\nP2,oA,1,1,V1JPTkc=\nP3,oNOBODY,1,1,a2V5QQ==\nP4,oB,1,1,\n",
    );
    let keys = w.write("keys.csv", "openid,session_key\noA,a2V5QQ==\n");
    let mut c = sim_config();
    c.sessions = SessionPolicy::Strict;
    c.session_keys = Arc::new(SessionKeys::load(&keys).unwrap());
    let sim = start(c);
    let out = w.live("in.csv", "out.csv", &sim).args(["--api", "v2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r = Results::read(&w.path("out.csv"));
    let cat = |n: u64| r.row(n)["category"].clone();
    assert_eq!(cat(1), "cancelled");
    assert_eq!(cat(2), "session_key_error", "signature refused (90010)");
    assert_eq!(cat(3), "session_expired", "unknown session (90016)");
    assert_eq!(cat(4), "missing_session_key", "never sent without a session key");
    assert_eq!(sim.stats().log.len(), 3);
    let text = std::fs::read_to_string(w.path("out.csv")).unwrap();
    assert!(!text.contains("a2V5QQ") && !text.contains("V1JPTkc"), "no session key in the results");
}

#[test]
fn v2_sigkill_part_way_then_resume_cancels_every_deduction_once() {
    let w = Workdir::new();
    deductions(&w, "in.csv", 300);
    let sim = start(sim_config());
    let mut child = w.spawn_live("in.csv", "out.csv", &sim, &["--api", "v2", "--rate", "100"]);
    w.wait_for_lines("out.csv", 60);
    child.kill().unwrap();
    child.wait().unwrap();
    let before = Results::read(&w.path("out.csv")).rows.len();
    assert!(before < 300, "killed part-way ({before} rows written)");
    // A resume with another tag would derive other ids: refused.
    let out = w.live("in.csv", "out.csv", &sim).args(["--api", "v2", "--resume", "--cancel-tag", "x"]).output();
    assert_eq!(out.unwrap().status.code(), Some(2));
    w.live("in.csv", "out.csv", &sim).args(["--api", "v2", "--resume"]).assert().code(0);
    let r = Results::read(&w.path("out.csv"));
    assert_eq!(r.rows.len(), 300);
    let mut rows: Vec<u64> = r.rows.iter().map(|row| row["row"].parse().unwrap()).collect();
    rows.sort();
    rows.dedup();
    assert_eq!(rows.len(), 300, "every row exactly once");
    assert!(r.rows.iter().all(|row| row["category"] == "cancelled" || row["category"] == "already_returned"));
    assert!(sim.stats().cancelled_once(300), "every deduction cancelled once");
}

#[test]
fn v2_validation_names_each_mistake_and_loses_no_row() {
    let w = Workdir::new();
    w.write(
        "in.csv",
        "bill_no,openid,zone_id,amount,session_key\n\
         P1,o1,1,60,a2V5==\n\
         P2,o1,1,60.0,a2V5==\n\
         P3,o1,1,\"1,000\",a2V5==\n\
         P4,o1,1,¥60,a2V5==\n\
         P5,o1,1,-5,a2V5==\n\
         P6,o1,1,,a2V5==\n\
         P7,o1,1,6E+01,a2V5==\n\
         _P8,o1,1,5,a2V5==\n\
         P|9,o1,1,5,a2V5==\n\
         P1,o1,1,5,a2V5==\n\
         P11,o1,1,5,\n",
    );
    let out = w.cmd().args(["check", "in.csv", "--api", "v2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout_of(&out);
    for (row, want) in [
        (2, "decimal point"),
        (3, "thousands separator"),
        (4, "contains `¥`"),
        (5, "sign"),
        (6, "amount is empty"),
        (7, "scientific notation"),
        (8, "starts with `_`"),
        (9, "contains `|`"),
        (10, "duplicate: line 11: bill_no (the pay_bill_no) `P1` already appeared on row 1"),
        (11, "missing_session_key"),
    ] {
        let line =
            text.lines().find(|l| l.starts_with(&format!("row {row}:"))).unwrap_or_else(|| panic!("row {row}: {text}"));
        assert!(line.contains(want), "row {row}: {line}");
    }
    assert!(text.contains("11 rows, 1 ready to send"), "{text}");
    // The same rules in a dry run: every row has its line.
    let mut dry = w.cmd();
    dry.env("MIDAS_APP_KEY", APP_KEY).args(["run", "in.csv", "-o", "d.csv", "--api", "v2", "--appid", "wx1"]);
    let dry = dry.args(["--offer-id", "1", "--dry-run"]).output().unwrap();
    assert_eq!(dry.status.code(), Some(1));
    assert_eq!(Results::read(&w.path("d.csv")).rows.len(), 11);
    // A v2 input needs an amount column.
    w.write("noamount.csv", "bill_no,openid,zone_id\nP1,o1,1\n");
    let out = w.cmd().args(["check", "noamount.csv", "--api", "v2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("amount"), "{}", stderr_of(&out));
}

#[test]
fn v2_duplicates_by_cancellation_id_when_the_column_exists() {
    let w = Workdir::new();
    w.write(
        "in.csv",
        "bill_no,openid,zone_id,amount,session_key,cancel_bill_no\n\
         P1,o1,1,60,a2V5==,C1\nP1,o1,1,40,a2V5==,C2\nP2,o1,1,5,a2V5==,C1\nP3,o1,1,5,a2V5==,\nP3,o1,1,5,a2V5==,\n",
    );
    let out = w.cmd().args(["check", "in.csv", "--api", "v2"]).output().unwrap();
    let text = stdout_of(&out);
    assert!(text.contains("row 3: duplicate") && text.contains("`C1` already appeared on row 1"), "{text}");
    assert!(text.contains("row 5: duplicate"), "the same derived id twice: {text}");
    assert!(!text.contains("row 2:"), "another id for the same deduction is a partial cancel: {text}");
}

#[test]
fn v2_rehearsal_on_the_samples() {
    let w = Workdir::new();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = w
        .cmd()
        .current_dir(root)
        .args(["run", "samples/orders_v2.csv", "-o"])
        .arg(w.path("out.csv"))
        .args(["--config", "samples/midas_v2.toml", "--simulate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    let cats = r.categories();
    let want =
        ["cancelled", "cancelled", "cancelled", "cancelled", "invalid_input", "missing_session_key", "duplicate"];
    for (n, c) in want.iter().enumerate() {
        assert_eq!(cats[&(n as u64 + 1)], *c, "row {}", n + 1);
    }
}
