//! Mini Program coin cancels (`--api xpay`, issue 20 part 1) end to end
//! against the simulator: the vectors through a dry run, cancels under
//! faults and across a lost reply, a stale session key told from a wrong
//! AppKey, user_ip from the row or `--user-ip`.

use crate::harness::{assert_one_line_per_row, sim_config, start, stderr_of, Results, Workdir};
use midas_cancel::input::SessionKeys;
use midas_cancel::sim::{Faults, OrderState};
use serde_json::Value;
use std::sync::Arc;

/// `n` coin deductions C0001.. of 10·i coins for users oU1..oU5, with keys.
fn deductions(w: &Workdir, n: usize) {
    let mut text = String::from("bill_no,openid,amount,user_ip,session_key\n");
    for i in 1..=n {
        text.push_str(&format!("C{i:04},oU{},{},203.0.113.{},a2V5{}==\n", i % 5 + 1, i * 10, i % 200, i % 5 + 1));
    }
    w.write("in.csv", text);
}

fn xpay_run(w: &Workdir, output: &str, sim: &midas_cancel::sim::Simulator) -> assert_cmd::Command {
    let mut c = w.live("in.csv", output, sim);
    c.args(["--api", "xpay"]);
    c
}

#[test]
fn every_xpay_cancel_vector_reproduces_through_a_dry_run() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/xpay.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let w = Workdir::new();
    let mut n = 0;
    for (i, c) in v["cases"].as_array().unwrap().iter().enumerate().filter(|(_, c)| c["call"] == "cancel_currency_pay")
    {
        let inp = &c["inputs"];
        let row = inp["row"].as_object().unwrap();
        let mut header: Vec<&str> = row.keys().map(String::as_str).collect();
        header.push("session_key");
        let mut cells: Vec<&str> = row.values().map(|v| v.as_str().unwrap()).collect();
        cells.push(c["session_key"].as_str().unwrap());
        let mut csv = csv::Writer::from_writer(vec![]);
        csv.write_record(&header).unwrap();
        csv.write_record(&cells).unwrap();
        let (input, output) = (format!("x{i}.csv"), format!("x{i}.out.csv"));
        w.write(&input, csv.into_inner().unwrap());
        let mut cmd = w.cmd();
        cmd.env("MIDAS_APP_KEY", c["app_key"].as_str().unwrap()).args([
            "run",
            &input,
            "-o",
            &output,
            "--api",
            "xpay",
            "--appid",
            inp["appid"].as_str().unwrap(),
            "--cancel-tag",
            inp["cancel_tag"].as_str().unwrap(),
            "--dry-run",
        ]);
        if let Some(ip) = inp["user_ip_flag"].as_str() {
            cmd.args(["--user-ip", ip]);
        }
        if inp["env"] == 1 {
            cmd.arg("--sandbox");
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "case {i}: {}", stderr_of(&out));
        let r = Results::read(&w.path(&output));
        let got = r.row(1);
        assert_eq!(got["cancel_bill_no"], c["order_id"].as_str().unwrap(), "case {i}");
        for k in ["body", "pay_sig", "signature"] {
            assert_eq!(got[k], c[k].as_str().unwrap(), "case {i}: {k}");
        }
        n += 1;
    }
    assert_eq!(n, 24, "every cancel_currency_pay vector");
}

#[test]
fn coin_cancels_under_faults_and_a_lost_reply_return_coins_once() {
    let w = Workdir::new();
    deductions(&w, 40);
    let mut c = sim_config();
    c.faults = Faults { busy_rate: 0.1, drop_first: true, ..Faults::default() };
    let sim = start(c);
    // One try each: the lost replies end network_error (outcome unknown).
    let out = xpay_run(&w, "out.csv", &sim).args(["--max-attempts", "1", "--timeout", "0.3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let out = xpay_run(&w, "out.csv", &sim).args(["--resume", "--max-attempts", "8"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_one_line_per_row(&r, 40);
    assert!(r.rows.iter().all(|row| ["cancelled", "already_returned"].contains(&row["category"].as_str())));
    assert!(r.rows.iter().any(|row| row["errcode"] == "268490004"), "a repeat of a cancel that went through");
    assert!(sim.stats().cancelled_once(40), "coins returned once per deduction");
    assert!(w.path("out.csv.ids.csv").exists(), "the ids were written ahead");
}

#[test]
fn a_stale_session_key_was_taken_for_a_wrong_app_key() {
    let w = Workdir::new();
    deductions(&w, 20);
    let mut c = sim_config();
    // The simulator knows other keys for users oU1 and oU2: their rows'
    // `signature` is refused with 268490003, like a wrong pay_sig.
    let keys = "openid,session_key\noU1,bmV3a2V5MQ==\noU2,bmV3a2V5Mg==\n";
    w.write("sim_keys.csv", keys);
    c.session_keys = Arc::new(SessionKeys::load(&w.path("sim_keys.csv")).unwrap());
    let sim = start(c);
    let out = xpay_run(&w, "out.csv", &sim).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "the breaker did not trip: {}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    for row in &r.rows {
        let stale = row["openid"] == "oU1" || row["openid"] == "oU2";
        let want = if stale { "session_key_error" } else { "cancelled" };
        assert_eq!(row["category"], want, "{row:?}");
        if stale {
            assert!(row["errmsg"].contains("the AppKey is right"), "{}", row["errmsg"]);
        }
    }
    let checks = sim.stats().requests.iter().filter(|r| r.ends_with("/xpay/query_order")).count();
    assert_eq!(checks, 1, "one check settles the AppKey for the run");
}

#[test]
fn a_wrong_app_key_trips_the_breaker_in_a_few_requests() {
    let w = Workdir::new();
    deductions(&w, 30);
    let sim = start(sim_config());
    let out = w
        .cmd()
        .env("MIDAS_APP_KEY", "NOTtheKEY0123456789abcdefghijklm")
        .env("WECHAT_APP_SECRET", crate::harness::APP_SECRET)
        .args(["run", "in.csv", "-o", "out.csv", "--appid", "wxtest", "--api", "xpay", "--base-url", sim.url()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("not the virtual payment AppKey of the production environment"), "{err}");
    let sent = sim.stats().requests.iter().filter(|r| r.contains("/xpay/")).count();
    assert!(sent <= 5, "{sent} requests before the breaker");
    assert!(sim.stats().cancels.is_empty());
}

#[test]
fn user_ip_comes_from_the_row_or_the_flag() {
    let w = Workdir::new();
    w.write("in.csv", "bill_no,openid,amount,user_ip,session_key\nC1,oU1,10,,a2V5==\nC2,oU2,20,198.51.100.4,a2V5==\n");
    let mut c = sim_config();
    c.orders.insert("C1".into(), OrderState::Remaining(100));
    let sim = start(c);
    let out = xpay_run(&w, "no-flag.csv", &sim).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r = Results::read(&w.path("no-flag.csv"));
    assert_eq!(r.row(1)["category"], "invalid_input");
    assert!(r.row(1)["errmsg"].contains("--user-ip"), "{}", r.row(1)["errmsg"]);
    assert_eq!(r.row(2)["category"], "cancelled");
    let out = xpay_run(&w, "flag.csv", &sim).args(["--user-ip", "192.0.2.8"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    // No offer_id was needed for either run.
}

#[test]
fn the_xpay_samples_rehearse() {
    let w = Workdir::new();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = w
        .cmd()
        .args(["run", &format!("{root}/samples/orders_xpay.csv"), "-o", "r.csv"])
        .args(["--config", &format!("{root}/samples/midas_xpay.toml"), "--simulate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let r = Results::read(&w.path("r.csv"));
    let cats: Vec<&str> = r.column("category");
    assert_eq!(cats.iter().filter(|c| **c == "cancelled").count(), 4, "{cats:?}");
    assert!(cats.contains(&"invalid_input") && cats.contains(&"missing_session_key"), "{cats:?}");
}
