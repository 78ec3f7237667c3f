//! Mini Program cash refunds (`--api xpay-refund`, issue 20 part 2) end to
//! end against the simulator: refunds that settle, fail, meet a stale
//! left_fee and share a paid order; a kill -9 between `refund_order` and its
//! answer; the same input run again; orders WeChat will not refund; a wrong
//! AppKey; every query and refund vector through the real binary.

use crate::harness::{assert_one_line_per_row, sim_config, start, stderr_of, Results, Workdir, APP_KEY};
use midas_cancel::sim::{OrderState, SimConfig, Simulator};
use serde_json::Value;
use std::time::Duration;

/// A simulator whose refunds settle after 200 ms.
fn refund_sim(tune: impl FnOnce(&mut SimConfig)) -> Simulator {
    let mut c = sim_config();
    c.refund_settle = Duration::from_millis(200);
    c.v2_remaining = 10_000;
    tune(&mut c);
    start(c)
}

/// A live refund run, polling every 50 ms (doubling to 600 ms).
fn refund_run(w: &Workdir, input: &str, output: &str, sim: &Simulator) -> assert_cmd::Command {
    let mut c = w.live(input, output, sim);
    c.args(["--api", "xpay-refund", "--poll-ms", "50"]);
    c
}

/// `n` paid orders P0001.. for users oP1..oP5; odd rows refund 100·i fen,
/// even rows give no amount (all that is left); every fifth row names its
/// order by wx_order_id.
fn paid_orders(w: &Workdir, name: &str, n: usize) {
    let mut text = String::from("bill_no,wx_order_id,openid,amount,note\n");
    for i in 1..=n {
        let (bill_no, wx) =
            if i % 5 == 0 { (String::new(), format!("42000000{i:020}")) } else { (format!("P{i:04}"), String::new()) };
        let amount = if i % 2 == 1 { (100 * i).to_string() } else { String::new() };
        text.push_str(&format!("{bill_no},{wx},oP{},{amount},row {i}\n", i % 5 + 1));
    }
    w.write(name, text);
}

/// The paid order a results line names (bill_no, else wx_order_id).
fn order_of(row: &std::collections::HashMap<String, String>) -> String {
    if row["bill_no"].is_empty() {
        row["wx_order_id"].clone()
    } else {
        row["bill_no"].clone()
    }
}

#[test]
fn refunds_settle_fail_go_stale_and_share_an_order() {
    let w = Workdir::new();
    paid_orders(&w, "in.csv", 20);
    // Row 3's order answers its first refund with a stale left_fee; two
    // more rows refund parts of one order under their own refund ids.
    let mut text = std::fs::read_to_string(w.path("in.csv")).unwrap();
    text =
        text.replace("bill_no,wx_order_id,openid,amount,note", "bill_no,wx_order_id,openid,amount,note,refund_bill_no");
    let mut lines: Vec<String> = text.lines().map(|l| format!("{l},")).collect();
    lines[0] = lines[0].trim_end_matches(',').to_string();
    lines.push("SHARED,,oP9,4000,part 1 of 2,SHARED-R1".into());
    lines.push("SHARED,,oP9,5000,part 2 of 2,SHARED-R2".into());
    w.write("in.csv", lines.join("\n") + "\n");
    let sim = refund_sim(|c| {
        c.orders.insert("P0003".into(), OrderState::Stale);
    });
    let out = refund_run(&w, "in.csv", "out.csv", &sim).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_one_line_per_row(&r, 22);
    let refunded = sim.stats().refunded;
    for row in &r.rows {
        assert_eq!(row["category"], "refunded", "{row:?}");
        assert_eq!(row["refund_status"], "8");
        assert!(row["wx_refund_id"].starts_with("wxr") && !row["settled_at"].is_empty(), "{row:?}");
        let fee: u64 = row["refund_fee"].parse().unwrap();
        if row["amount"].is_empty() {
            // All that was left.
            assert_eq!(row["left_fee"], row["refund_fee"], "{row:?}");
        } else {
            assert_eq!(row["refund_fee"], row["amount"], "{row:?}");
        }
        if order_of(row) != "SHARED" {
            assert_eq!(refunded[&order_of(row)], fee, "refunded once: {row:?}");
        }
    }
    assert_eq!(refunded["SHARED"], 9000, "both parts of the shared order, once each");
    let ids: Vec<&str> = r.column("refund_bill_no");
    assert!(ids.iter().filter(|i| i.starts_with("mr")).count() == 20 && ids.contains(&"SHARED-R2"));
    assert_eq!(r.row(3)["category"], "refunded", "the stale left_fee was queried again");
    assert!(r.row(3)["attempts"].parse::<u32>().unwrap() >= 5, "find, query, stale refund, query, refund, poll");
    assert!(sim.stats().cancelled_once(22), "one refund per refund id");
    let summary = crate::harness::stdout_of(&out) + &stderr_of(&out);
    assert!(summary.contains("Σ refund_fee"), "the summary sums refunded fen: {summary}");

    // Refunds that fail are final and say so.
    let w2 = Workdir::new();
    paid_orders(&w2, "in.csv", 4);
    let failing = refund_sim(|c| c.refund_fail_rate = 1.0);
    let out = refund_run(&w2, "in.csv", "out.csv", &failing).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let r = Results::read(&w2.path("out.csv"));
    assert!(r.rows.iter().all(|row| row["category"] == "refund_failed" && row["refund_status"] == "7"));
    assert!(failing.stats().refunded.is_empty(), "a failed refund moved nothing");
}

#[test]
fn orders_wechat_will_not_refund_are_final_and_named() {
    let w = Workdir::new();
    let text =
        "bill_no,openid,amount\nGONE,oA,100\nUNPAID,oA,100\nCLOSED,oA,\nREDEEMED,oA,100\nEMPTY,oA,\nSMALL,oA,900\n";
    w.write("in.csv", text);
    let sim = refund_sim(|c| {
        for (id, state) in [
            ("GONE", OrderState::Unknown),
            ("UNPAID", OrderState::Unpaid),
            ("CLOSED", OrderState::Closed),
            ("REDEEMED", OrderState::Confirmed),
            ("EMPTY", OrderState::Cancelled),
            ("SMALL", OrderState::Remaining(500)),
        ] {
            c.orders.insert(id.into(), state);
        }
    });
    let out = refund_run(&w, "in.csv", "out.csv", &sim).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    let want = [
        ("GONE", "not_found"),
        ("UNPAID", "not_refundable"),
        ("CLOSED", "not_refundable"),
        ("REDEEMED", "not_refundable"),
        ("EMPTY", "already_returned"),
        ("SMALL", "param_error"),
    ];
    for (bill_no, category) in want {
        assert_eq!(r.row_by("bill_no", bill_no)["category"], category, "{bill_no}");
    }
    assert!(r.row_by("bill_no", "SMALL")["errmsg"].contains("refund exceeds what is left: 500 fen"));
    assert!(sim.stats().refunded.is_empty(), "nothing was refunded");
    // Every row is final: a resume has nothing to send.
    let before = sim.stats().requests.len();
    let out = refund_run(&w, "in.csv", "out.csv", &sim).arg("--resume").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert_eq!(sim.stats().requests.len(), before);
}

#[test]
fn a_kill_between_refund_and_answer_then_resume_refunds_once() {
    let w = Workdir::new();
    paid_orders(&w, "in.csv", 6);
    // Answers take 700 ms: the refund is made when the request arrives.
    let sim = refund_sim(|c| c.faults.latency = Duration::from_millis(700));
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("midas-cancel"))
        .current_dir(w.dir.path())
        .env("MIDAS_APP_KEY", APP_KEY)
        .env("WECHAT_APP_SECRET", crate::harness::APP_SECRET)
        .args(["run", "in.csv", "-o", "out.csv", "--appid", "wxtest", "--api", "xpay-refund", "--poll-ms", "50"])
        .args(["--base-url", sim.url(), "--timeout", "5"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = child;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sim.stats().cancels.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no refund was ever made");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL, the refund's answer still on its way
    child.wait().unwrap();
    let made = sim.stats().cancels.len();
    assert!(made >= 1);
    let out = refund_run(&w, "in.csv", "out.csv", &sim).args(["--resume", "--timeout", "5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_one_line_per_row(&r, 6);
    assert!(r.rows.iter().all(|row| row["category"] == "refunded"), "{:?}", r.categories());
    assert!(sim.stats().cancelled_once(6), "no refund was made twice: {:?}", sim.stats().cancels);
    for row in &r.rows {
        assert_eq!(sim.stats().refunded[&order_of(row)], row["refund_fee"].parse::<u64>().unwrap());
    }
}

#[test]
fn the_same_input_into_a_new_results_file_finds_every_refund() {
    let w = Workdir::new();
    paid_orders(&w, "in.csv", 10);
    let sim = refund_sim(|_| {});
    let out = refund_run(&w, "in.csv", "first.csv", &sim).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let refunds = sim.stats().cancels.clone();
    let out = refund_run(&w, "in.csv", "second.csv", &sim).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let (first, second) = (Results::read(&w.path("first.csv")), Results::read(&w.path("second.csv")));
    for row in &second.rows {
        assert_eq!(row["category"], "refunded", "{row:?}");
        let n: u64 = row["row"].parse().unwrap();
        assert_eq!(row["refund_bill_no"], first.row(n)["refund_bill_no"], "the same refund id");
        assert_eq!(row["wx_refund_id"], first.row(n)["wx_refund_id"], "WeChat's record of the same refund");
    }
    assert_eq!(sim.stats().cancels, refunds, "nothing was refunded a second time");
    let refund_calls = sim.stats().requests.iter().filter(|r| r.ends_with("/xpay/refund_order")).count();
    assert_eq!(refund_calls, 10, "the second run never called refund_order");
    // `report --only` gives back an input that `run` takes, ids included.
    let out = w.cmd().args(["report", "first.csv", "--only", "refunded", "-o", "again.csv"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let again = Results::read(&w.path("again.csv"));
    assert!(again.headers.contains(&"refund_bill_no".to_string()));
    let out = refund_run(&w, "again.csv", "third.csv", &sim).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(sim.stats().cancels, refunds, "the ids came back with the rows");
}

#[test]
fn a_refund_still_settling_is_pending_and_resume_polls_it() {
    let w = Workdir::new();
    // One row gives its refund id; the others' ids are derived and written
    // into the same column.
    let text = "bill_no,openid,amount,refund_bill_no\nP1,oA,100,MY-REFUND-1\nP2,oB,,\nP3,oC,300,\n";
    w.write("in.csv", text);
    let sim = refund_sim(|c| c.refund_settle = Duration::from_millis(2500));
    let out = refund_run(&w, "in.csv", "out.csv", &sim).args(["--settle-timeout", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert!(r.rows.iter().all(|row| row["category"] == "refund_pending"), "{:?}", r.categories());
    assert!(r.rows.iter().all(|row| !row["left_fee"].is_empty()), "what was left is kept");
    std::thread::sleep(Duration::from_millis(1600));
    let out = refund_run(&w, "in.csv", "out.csv", &sim).arg("--resume").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_one_line_per_row(&r, 3);
    for row in &r.rows {
        assert_eq!(row["category"], "refunded", "{row:?}");
        assert!(!row["left_fee"].is_empty(), "the first run's left_fee stays: {row:?}");
    }
    assert_eq!(r.row(1)["refund_bill_no"], "MY-REFUND-1");
    assert!(r.row(2)["refund_bill_no"].starts_with("mr"), "the derived id in the input's column");
    assert!(!r.headers.iter().skip(4).any(|h| h == "refund_bill_no"), "one refund_bill_no column: {:?}", r.headers);
    assert!(sim.stats().cancelled_once(3), "resume polled, never refunded again");
}

#[test]
fn a_wrong_app_key_stops_refunds_in_three_requests() {
    let w = Workdir::new();
    paid_orders(&w, "in.csv", 30);
    let sim = refund_sim(|_| {});
    let out = w
        .cmd()
        .env("MIDAS_APP_KEY", "NOTtheKEY0123456789abcdefghijklm")
        .env("WECHAT_APP_SECRET", crate::harness::APP_SECRET)
        .args(["run", "in.csv", "-o", "out.csv", "--appid", "wxtest", "--api", "xpay-refund", "--base-url", sim.url()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("not the virtual payment AppKey"), "{err}");
    let sent = sim.stats().requests.iter().filter(|r| r.contains("/xpay/")).count();
    assert_eq!(sent, 3, "{sent} requests before the breaker");
    assert!(sim.stats().refunded.is_empty());
}

#[test]
fn bad_refund_rows_get_clear_errors_and_lose_nothing() {
    let w = Workdir::new();
    let text = "bill_no,wx_order_id,openid,amount,refund_reason,req_from\n\
                OK1,,oA,100,,\n\
                ,,oA,100,,\n\
                B2,42000001,oA,100,,\n\
                B3,,oA,1.5,,\n\
                B4,,oA,100,9,\n\
                B5,,oA,100,,7\n\
                OK1,,oA,50,,\n\
                B8,,oA,0,,\n";
    w.write("in.csv", text);
    let out = w.cmd().args(["check", "in.csv", "--api", "xpay-refund"]).output().unwrap();
    let all = crate::harness::stdout_of(&out) + &stderr_of(&out);
    for needle in [
        "bill_no and wx_order_id are both empty",
        "gives both bill_no `B2` and wx_order_id",
        "amount `1.5` has a decimal point",
        "refund_reason `9` is not one of 0-5",
        "req_from `7` is not one of 1-3",
        "amount is 0: a refund is at least 1 fen",
    ] {
        assert!(all.contains(needle), "{needle}: {all}");
    }
    let sim = refund_sim(|_| {});
    let out = refund_run(&w, "in.csv", "out.csv", &sim).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_one_line_per_row(&r, 8);
    assert_eq!(r.row(1)["category"], "refunded");
    assert_eq!(r.row(8)["category"], "invalid_input");
    assert!((2..=6).all(|n| r.row(n)["category"] == "invalid_input"));
    assert_eq!(r.row(7)["category"], "duplicate", "the same paid order again, without refund ids of its own");
    // A file with neither order column stops before anything is sent.
    w.write("none.csv", "openid,amount\noA,100\n");
    let out = refund_run(&w, "none.csv", "none.out.csv", &sim).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("bill_no (or wx_order_id)"), "{}", stderr_of(&out));
}

/// The vectors' rows as a one-row CSV (cells as given).
fn vector_csv(row: &serde_json::Map<String, Value>) -> Vec<u8> {
    let mut csv = csv::Writer::from_writer(vec![]);
    csv.write_record(row.keys()).unwrap();
    csv.write_record(row.values().map(|v| v.as_str().unwrap())).unwrap();
    csv.into_inner().unwrap()
}

/// `run` of one vector case's row with its AppKey, appid, tag and env.
fn vector_run(w: &Workdir, c: &Value, input: &str, output: &str) -> assert_cmd::Command {
    let inp = &c["inputs"];
    let mut cmd = w.cmd();
    cmd.env("MIDAS_APP_KEY", c["app_key"].as_str().unwrap());
    cmd.args(["run", input, "-o", output, "--api", "xpay-refund", "--appid", inp["appid"].as_str().unwrap()]);
    cmd.args(["--cancel-tag", inp["cancel_tag"].as_str().unwrap()]);
    if inp["env"] == 1 {
        cmd.arg("--sandbox");
    }
    cmd
}

#[test]
fn every_query_vector_reproduces_through_a_dry_run() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/xpay.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let w = Workdir::new();
    let mut n = 0;
    for (i, c) in v["cases"].as_array().unwrap().iter().enumerate().filter(|(_, c)| c["call"] == "query_order") {
        let inp = &c["inputs"];
        let (input, output) = (format!("q{i}.csv"), format!("q{i}.out.csv"));
        w.write(&input, vector_csv(inp["row"].as_object().unwrap()));
        let mut cmd = vector_run(&w, c, &input, &output);
        cmd.arg("--dry-run");
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "case {i}: {}", stderr_of(&out));
        let r = Results::read(&w.path(&output));
        let row = &r.rows[0];
        let (body, sig) = match c["purpose"].as_str().unwrap() {
            "refund" => ("refund_query_body", "refund_query_pay_sig"),
            _ => ("order_query_body", "order_query_pay_sig"),
        };
        assert_eq!(row[body], c["body"].as_str().unwrap(), "case {i}");
        assert_eq!(row[sig], c["pay_sig"].as_str().unwrap(), "case {i}");
        assert_eq!(row["refund_bill_no"], c["refund_order_id"].as_str().unwrap(), "case {i}");
        n += 1;
    }
    assert_eq!(n, 24);
}

#[test]
fn every_refund_vector_reproduces_through_a_live_run() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/xpay.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let w = Workdir::new();
    let mut n = 0;
    for (i, c) in v["cases"].as_array().unwrap().iter().enumerate().filter(|(_, c)| c["call"] == "refund_order") {
        let inp = &c["inputs"];
        let row = inp["row"].as_object().unwrap();
        let order = ["bill_no", "wx_order_id"].iter().filter_map(|k| row.get(*k)?.as_str()).find(|s| !s.is_empty());
        let key = c["app_key"].as_str().unwrap();
        let mut sc = SimConfig::new(key);
        (sc.app_secret, sc.keep_log, sc.refund_settle) = (crate::harness::APP_SECRET.into(), true, Duration::ZERO);
        sc.orders.insert(order.unwrap().into(), OrderState::Remaining(inp["left_fee"].as_u64().unwrap()));
        let sim = start(sc);
        let (input, output) = (format!("r{i}.csv"), format!("r{i}.out.csv"));
        w.write(&input, vector_csv(row));
        let mut cmd = vector_run(&w, c, &input, &output);
        cmd.env("WECHAT_APP_SECRET", crate::harness::APP_SECRET).args(["--base-url", sim.url(), "--poll-ms", "20"]);
        cmd.args(["--refund-reason", inp["refund_reason_flag"].as_str().unwrap()]);
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "case {i}: {}", stderr_of(&out));
        let bodies = sim.stats().bodies;
        let (_, body, pay_sig) = bodies
            .iter()
            .find(|(uri, _, _)| uri == "/xpay/refund_order")
            .unwrap_or_else(|| panic!("case {i}: no refund"));
        assert_eq!(body, c["body"].as_str().unwrap(), "case {i}");
        assert_eq!(pay_sig, c["pay_sig"].as_str().unwrap(), "case {i}");
        n += 1;
    }
    assert_eq!(n, 24);
}

#[test]
fn the_refund_samples_rehearse_as_the_readme_says() {
    let w = Workdir::new();
    let root = env!("CARGO_MANIFEST_DIR");
    // The README's command as it stands (WeChat's poll schedule: the first
    // poll after 5 s, the simulator's refunds settle after 3 s).
    let out = w
        .cmd()
        .args(["run", &format!("{root}/samples/orders_refund.csv"), "-o", "r.csv"])
        .args(["--config", &format!("{root}/samples/midas_refund.toml"), "--simulate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let r = Results::read(&w.path("r.csv"));
    assert_one_line_per_row(&r, 5);
    assert!(r.rows.iter().all(|row| row["category"] == "refunded"), "{:?}", r.categories());
    assert_eq!(r.row(2)["refund_fee"], r.row(2)["left_fee"], "no amount: all that was left");
    assert_eq!(r.row(3)["wx_order_id"], "4200000000000000000000000003");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    assert!(readme.contains(
        "samples/orders_refund.csv -o /tmp/refund-rehearsal.csv --config samples/midas_refund.toml --simulate"
    ));
}

#[test]
fn the_finance_workbook_has_the_refunded_fen_as_numbers() {
    use calamine::{Data, Reader};
    let w = Workdir::new();
    paid_orders(&w, "in.csv", 4);
    let sim = refund_sim(|_| {});
    let out = refund_run(&w, "in.csv", "out.csv", &sim).args(["--log", "log.jsonl"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    // The post-mortem page draws how long the refunds took to settle.
    let out = w.cmd().args(["report", "out.csv", "--html", "out.html", "--log", "log.jsonl"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let page = std::fs::read_to_string(w.path("out.html")).unwrap();
    let settle = page.split("Time to settle (refunds)").nth(1).expect("a time-to-settle section");
    assert!(settle.contains("4 refund(s) settled") && settle.contains("<svg"), "{}", &settle[..400.min(settle.len())]);
    let out = w.cmd().args(["report", "out.csv", "--xlsx", "out.xlsx"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let mut book = calamine::open_workbook_auto(w.path("out.xlsx")).unwrap();
    let summary = book.worksheet_range("Summary").unwrap();
    let total = summary.rows().find(|r| r.first().is_some_and(|c| *c == "total")).unwrap();
    // 100 + 10000 + 300 + 10000: odd rows their amount, even rows all that was left.
    assert_eq!(total.get(2), Some(&Data::Float(20_400.0)), "Σ refund_fee: {total:?}");
    let results = book.worksheet_range("Results").unwrap();
    let header: Vec<String> = results.rows().next().unwrap().iter().map(|c| c.to_string()).collect();
    for name in ["refund_fee", "left_fee"] {
        let col = header.iter().position(|h| h == name).unwrap();
        for row in results.rows().skip(1) {
            assert!(matches!(row[col], Data::Float(_) | Data::Int(_)), "{name} is a number: {:?}", row[col]);
        }
    }
}

#[test]
fn an_interrupt_while_refunds_settle_leaves_them_pending_and_resume_finishes() {
    let w = Workdir::new();
    paid_orders(&w, "in.csv", 8);
    let sim = refund_sim(|c| c.refund_settle = Duration::from_secs(3));
    let mut child = w.spawn_live("in.csv", "out.csv", &sim, &["--api", "xpay-refund", "--poll-ms", "200"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sim.stats().cancels.len() < 8 {
        assert!(std::time::Instant::now() < deadline, "the refunds never all started");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Every refund is under way and its row waits for a poll: Ctrl-C.
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let r = Results::read(&w.path("out.csv"));
    assert_one_line_per_row(&r, 8);
    for row in &r.rows {
        assert_eq!(row["category"], "refund_pending", "started, not settled: {row:?}");
    }
    std::thread::sleep(Duration::from_secs(3));
    let out = refund_run(&w, "in.csv", "out.csv", &sim).arg("--resume").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_one_line_per_row(&r, 8);
    assert!(r.rows.iter().all(|row| row["category"] == "refunded"), "{:?}", r.categories());
    assert!(sim.stats().cancelled_once(8), "nothing refunded twice");
}

#[test]
fn tokens_that_expire_between_steps_are_refreshed() {
    let w = Workdir::new();
    paid_orders(&w, "in.csv", 24);
    // Tokens live 1 s; refunds settle after 1.5 s, polled 0.3 s, 0.6 s, ...
    let sim = refund_sim(|c| {
        c.token_lifetime = Duration::from_secs(1);
        c.refund_settle = Duration::from_millis(1500);
    });
    let out = refund_run(&w, "in.csv", "out.csv", &sim).args(["--rate", "40", "--poll-ms", "300"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let stats = sim.stats();
    assert!(stats.stable_token_calls >= 3, "tokens refreshed ({} calls)", stats.stable_token_calls);
    let r = Results::read(&w.path("out.csv"));
    assert!(r.rows.iter().all(|row| row["category"] == "refunded"), "{:?}", r.categories());
    assert!(stats.cancelled_once(24));
}

/// Regression (refund_step_words_skipped_the_redactor): a step's own words
/// quote WeChat's errmsg ("WeChat has no such paid order (...)"), and were
/// written as composed, after the redactor had seen only the errmsg part.
#[test]
fn an_errmsg_quoted_in_a_steps_words_is_redacted() {
    let w = Workdir::new();
    paid_orders(&w, "in.csv", 3);
    let sim = refund_sim(|c| {
        c.default_state = OrderState::Echo;
        c.echo = crate::harness::APP_SECRET.into();
    });
    let out = refund_run(&w, "in.csv", "out.csv", &sim).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    for row in &r.rows {
        assert_eq!(row["category"], "not_found", "{row:?}");
        assert!(row["errmsg"].contains("echo: access_token=***"), "the echo is there, scrubbed: {}", row["errmsg"]);
    }
    let written = std::fs::read_to_string(w.path("out.csv")).unwrap();
    let console = format!("{}{}", stderr_of(&out), crate::harness::stdout_of(&out));
    for secret in [APP_KEY, crate::harness::APP_SECRET] {
        assert!(!written.contains(secret) && !console.contains(secret), "{secret} leaked");
    }
    let token = written.split("access_token=").nth(1).map(|t| t.split('&').next().unwrap_or(""));
    assert_eq!(token, Some("***"), "the token is scrubbed");
}
