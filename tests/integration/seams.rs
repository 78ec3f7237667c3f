//! Trust at the seams (issue 17): features that were honest alone, tried
//! together. Each test pins a defect that made the results file lie,
//! returned money twice, leaked a secret or touched a foreign file, and is
//! named after it. Real binary, real simulator, real signals.

use crate::harness::{assert_one_line_per_row, sim_config, start, stderr_of, stdout_of, Results, Workdir};
use midas_cancel::sim::{Faults, OrderState};
use std::time::{Duration, Instant};

/// One v2 deduction of 100 coins (P1) and a second one (P2), with keys.
const V2_ROWS: &str = "bill_no,openid,zone_id,amount,session_key\nP1,oU1,1,60,a2V5MQ==\nP2,oU2,1,10,a2V5Mg==\n";

/// A simulator whose v2 deductions hold 100 coins, where P1's first answer
/// is lost on the way back (the cancel is applied).
fn lossy_v2_sim() -> midas_cancel::sim::Simulator {
    let mut c = sim_config();
    c.faults = Faults { drop_first: true, ..Faults::default() };
    c.orders.insert("P1".into(), OrderState::Remaining(100));
    c.orders.insert("P2".into(), OrderState::Remaining(100));
    start(c)
}

/// Runs v2 with one attempt, so a lost reply ends `network_error`.
fn v2_once(w: &Workdir, input: &str, output: &str, sim: &midas_cancel::sim::Simulator) -> std::process::Output {
    w.live(input, output, sim).args(["--api", "v2", "--max-attempts", "1", "--timeout", "0.3"]).output().unwrap()
}

/// Waits until a cancel request has reached `sim`.
fn wait_for_cancel_request(sim: &midas_cancel::sim::Simulator) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sim.stats().requests.iter().any(|r| r.contains("cancelpay")) {
        assert!(Instant::now() < deadline, "the request never left");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_edited_amount_gave_a_lost_cancel_a_second_id() {
    let w = Workdir::new();
    w.write("in.csv", V2_ROWS);
    let sim = lossy_v2_sim();
    let out = v2_once(&w, "in.csv", "out.csv", &sim);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let first = Results::read(&w.path("out.csv"));
    assert!(first.rows.iter().all(|r| r["category"] == "network_error"), "{:?}", first.rows);
    let id = first.row(1)["cancel_bill_no"].clone();
    let journal = std::fs::read_to_string(w.path("out.csv.ids.csv")).unwrap();
    assert!(journal.contains(&format!("1,P1,60,,{id}\n")), "the id was written ahead: {journal}");

    // The amount edited, then resumed with force: refused, nothing sent.
    w.write("in.csv", V2_ROWS.replace("P1,oU1,1,60", "P1,oU1,1,50"));
    let sent_before = sim.stats().log.len();
    let out = w.live("in.csv", "out.csv", &sim).args(["--api", "v2", "--resume", "--force-resume"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("row 1") && err.contains(&id) && err.contains("amount was `60`, now `50`"), "{err}");
    assert_eq!(sim.stats().log.len(), sent_before, "nothing was sent");
    assert_eq!(sim.stats().cancels.len(), 2, "one cancellation per deduction: {:?}", sim.stats().cancels);

    // The amount as it was: the same ids again, answered "already processed".
    w.write("in.csv", V2_ROWS);
    let out = w.live("in.csv", "out.csv", &sim).args(["--api", "v2", "--resume"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_one_line_per_row(&r, 2);
    assert_eq!(r.row(1)["cancel_bill_no"], id);
    assert_eq!(r.row(1)["category"], "already_returned");
    assert!(sim.stats().cancelled_once(2));
}

#[test]
fn the_readme_retry_flow_cancelled_a_lost_cancel_again_under_a_new_tag() {
    let w = Workdir::new();
    w.write("in.csv", V2_ROWS);
    let sim = lossy_v2_sim();
    v2_once(&w, "in.csv", "out.csv", &sim);
    let id = Results::read(&w.path("out.csv")).row(1)["cancel_bill_no"].clone();
    let out = w.cmd().args(["report", "out.csv", "--only", "network_error", "-o", "retry.csv"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let retry = Results::read(&w.path("retry.csv"));
    assert_eq!(retry.row_by("bill_no", "P1")["cancel_bill_no"], id, "report --only gives the id back");
    // Run again with a new tag, as an operator would (session keys are never
    // written out, so they come from a file): the recorded id wins.
    w.write("keys.csv", "openid,session_key\noU1,a2V5MQ==\noU2,a2V5Mg==\n");
    let out = w
        .live("retry.csv", "retry-out.csv", &sim)
        .args(["--api", "v2", "--cancel-tag", "retry-1", "--session-keys", "keys.csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let r = Results::read(&w.path("retry-out.csv"));
    assert_eq!(r.row_by("bill_no", "P1")["cancel_bill_no"], id);
    assert!(r.rows.iter().all(|row| row["category"] == "already_returned"), "{:?}", r.rows);
    assert!(sim.stats().cancelled_once(2), "60 coins returned once, not 60 + 60: {:?}", sim.stats().cancels);
}

#[test]
fn a_reordered_export_was_resumed_by_position() {
    let w = Workdir::new();
    w.write("in.csv", "bill_no,openid,zone_id\nA1,oU1,1\nB1,oU2,1\nC1,oU3,1\n");
    let mut c = sim_config();
    c.orders.insert("B1".into(), OrderState::Errcode(-1));
    let sim = start(c);
    let out = w.live("in.csv", "out.csv", &sim).args(["--max-attempts", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert_eq!(Results::read(&w.path("out.csv")).row(2)["category"], "system_busy");
    // The same orders, re-exported as B, A, C.
    w.write("in.csv", "bill_no,openid,zone_id\nB1,oU2,1\nA1,oU1,1\nC1,oU3,1\n");
    let sent_before = sim.stats().log.len();
    for extra in [&["--resume"][..], &["--resume", "--force-resume"]] {
        let out = w.live("in.csv", "out.csv", &sim).args(extra).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr_of(&out));
        let err = stderr_of(&out);
        if extra.len() == 2 {
            assert!(err.contains("row 1: the results file records bill_no `A1`"), "{err}");
            assert!(err.contains("row 2: the results file records bill_no `B1`"), "{err}");
        }
    }
    assert_eq!(sim.stats().log.len(), sent_before, "nothing was sent");
    let out = w.cmd().args(["report", "out.csv"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "B still needs attention: {}", stdout_of(&out));
}

#[test]
fn a_resume_dropped_the_history_of_an_unknown_outcome() {
    let w = Workdir::new();
    w.write("in.csv", "bill_no,openid,zone_id\nA1,oU1,1\nB1,oU2,1\n");
    let mut c = sim_config();
    c.orders.insert("B1".into(), OrderState::Errcode(-1));
    let busy = start(c);
    let out = w.live("in.csv", "out.csv", &busy).args(["--max-attempts", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    // Killed while the resume's request for B is out: its history is still
    // in the file.
    let mut c = sim_config();
    c.faults = Faults { latency: Duration::from_millis(3000), ..Faults::default() };
    let slow = start(c);
    let mut child = w.spawn_live("in.csv", "out.csv", &slow, &["--resume", "--timeout", "5"]);
    wait_for_cancel_request(&slow);
    child.kill().unwrap();
    child.wait().unwrap();
    let healthy = start(sim_config());
    let r = Results::read(&w.path("out.csv"));
    assert!(
        r.rows.iter().any(|row| row["bill_no"] == "B1" && row["category"] == "system_busy"),
        "the unknown outcome's line survives a kill during the resume: {:?}",
        r.rows
    );
    let out = w.live("in.csv", "out.csv", &healthy).arg("--resume").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_one_line_per_row(&r, 2);
    let b = r.row(2);
    assert_eq!(b["category"], "cancelled");
    assert_eq!(b["attempts"], "3", "attempts add up across runs: {b:?}");
    assert!(b["errmsg"].contains("earlier: system_busy after 2 attempt(s), errcode -1"), "{}", b["errmsg"]);
    let json = stdout_of(&w.cmd().args(["report", "out.csv", "--json"]).output().unwrap());
    assert!(json.contains("\"done\""), "{json}");
}

#[test]
fn sigterm_as_the_last_row_finished_said_interrupted() {
    let w = Workdir::new();
    w.write("in.csv", "bill_no,openid,zone_id\nA1,oU1,1\n");
    let mut c = sim_config();
    c.faults = Faults { latency: Duration::from_millis(1500), ..Faults::default() };
    let sim = start(c);
    let child = w.spawn_live("in.csv", "out.csv", &sim, &["--timeout", "5"]);
    wait_for_cancel_request(&sim);
    // The only row is in flight: it is finished and recorded, nothing is cut short.
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("skipped"), "{err}");
    assert_eq!(Results::read(&w.path("out.csv")).row(1)["category"], "cancelled");
}

#[test]
fn excel_csv_wrote_a_formula_header_raw() {
    let w = Workdir::new();
    w.write("in.csv", "bill_no,openid,zone_id,\"=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"\nA1,oU1,1,note\n");
    let sim = start(sim_config());
    w.live("in.csv", "out.csv", &sim).assert().code(0);
    let out =
        w.cmd().args(["report", "out.csv", "--only", "cancelled", "-o", "x.csv", "--excel-csv"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = std::fs::read_to_string(w.path("x.csv")).unwrap();
    let header = text.trim_start_matches('\u{feff}').lines().next().unwrap().to_string();
    assert!(header.contains("'=HYPERLINK"), "{header}");
    // Without --excel-csv the header goes back as it was, for `run`.
    w.cmd().args(["report", "out.csv", "--only", "cancelled", "-o", "y.csv"]).assert().code(0);
    let text = std::fs::read_to_string(w.path("y.csv")).unwrap();
    assert!(text.lines().next().unwrap().contains(",\"=HYPERLINK"), "{text}");
}

#[test]
fn token_rejections_used_up_a_rows_attempts() {
    let w = Workdir::new();
    w.write("in.csv", "bill_no,openid,zone_id\nA1,oU1,1\nB1,oU2,1\nC1,oU3,1\n");
    let mut c = sim_config();
    // Tokens die after a second; every order settles on its third try, the
    // tries 1.5 s apart: each retry meets a dead token first.
    c.token_lifetime = Duration::from_secs(1);
    for b in ["A1", "B1", "C1"] {
        c.orders.insert(b.into(), OrderState::Processing(2));
    }
    let sim = start(c);
    let out = w.live("in.csv", "out.csv", &sim).args(["--max-attempts", "3", "--backoff-ms", "150"]).output().unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let r = Results::read(&w.path("out.csv"));
    let codes: Vec<_> = sim.stats().log.iter().map(|e| (e.bill_no.clone(), e.errcode)).collect();
    let rejected: Vec<&str> = codes.iter().filter(|(_, c)| *c == Some(42001)).map(|(b, _)| b.as_str()).collect();
    assert!(!rejected.is_empty(), "tokens were rejected: {codes:?}");
    for row in &r.rows {
        assert_eq!(row["category"], "cancelled", "{row:?}");
        let attempts: u32 = row["attempts"].parse().unwrap();
        // `attempts` counts every request, the rejected ones too.
        let want = if rejected.contains(&row["bill_no"].as_str()) { 4 } else { 3 };
        assert!(attempts >= want, "{row:?}");
    }
}

#[test]
fn a_failed_workbook_report_left_an_empty_file_behind() {
    let w = Workdir::new();
    let long = "x".repeat(40_000);
    w.write("in.csv", format!("bill_no,openid,zone_id,note\nA1,oU1,1,{long}\n"));
    let sim = start(sim_config());
    w.live("in.csv", "out.csv", &sim).assert().code(0);
    for _ in 0..2 {
        let out = w.cmd().args(["report", "out.csv", "--xlsx", "r.xlsx"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = stderr_of(&out);
        assert!(err.contains("Results!D2") && err.contains("32,767"), "the cell is named: {err}");
        assert!(!err.contains("already exists"), "{err}");
        assert!(!w.path("r.xlsx").exists(), "no file left behind");
    }
    let left: Vec<_> = std::fs::read_dir(w.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!left.iter().any(|n| n.to_string_lossy().ends_with(".tmp")), "{left:?}");
}

#[test]
fn a_token_refresh_failing_mid_run_printed_the_app_secret() {
    let w = Workdir::new();
    w.orders("in.csv", 40);
    let mut c = sim_config();
    // The first token lives a second; every later stable_token call fails
    // with an errmsg that repeats the AppSecret it was sent.
    c.token_lifetime = Duration::from_secs(1);
    c.token_echo_after = Some(1);
    let sim = start(c);
    let out = w.live("in.csv", "out.csv", &sim).args(["--rate", "15"]).output().unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("Stopped early") && err.contains("invalid appsecret ***"), "{err}");
    assert!(!err.contains(crate::harness::APP_SECRET), "{err}");
    let written = std::fs::read_to_string(w.path("out.csv")).unwrap();
    assert!(!written.contains(crate::harness::APP_SECRET));
    // Workers that met the dead token are told at once, not after a fetch each.
    assert!(sim.stats().stable_token_calls <= 3, "{} stable_token calls", sim.stats().stable_token_calls);
}

#[test]
fn a_session_key_column_under_another_spelling_was_written_out() {
    for header in ["sessionKey", "Session-Key", "SessionKey", "session key"] {
        let w = Workdir::new();
        w.write("in.csv", format!("bill_no,openid,zone_id,amount,{header}\nP1,oU1,1,60,S3ssionKeyAAAA==\n"));
        let sim = start(sim_config());
        let out = w.live("in.csv", "out.csv", &sim).args(["--api", "v2"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{header}: {}", stderr_of(&out));
        let written = std::fs::read_to_string(w.path("out.csv")).unwrap();
        assert!(!written.contains("S3ssionKey"), "{header}: {written}");
        assert!(!written.to_lowercase().contains("key,"), "{header}: no such column: {written}");
    }
}

#[test]
fn session_keys_from_a_fifo_were_read_twice() {
    let w = Workdir::new();
    let mut orders = String::from("bill_no,openid,zone_id,amount\n");
    let mut keys = String::from("openid,session_key\n");
    for i in 0..2000 {
        orders.push_str(&format!("P{i},oU{i},1,5\n"));
        keys.push_str(&format!("oU{i},a2V5{i}==\n"));
    }
    w.write("in.csv", orders);
    let fifo = w.path("keys.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; mkfifo touches nothing of ours.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let writer = std::thread::spawn(move || std::fs::write(fifo, keys));
    let out = w
        .dry_run("in.csv", "out.csv")
        .args(["--api", "v2", "--session-keys", "keys.fifo"])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_eq!(r.rows.len(), 2000);
    assert!(r.rows.iter().all(|row| row["category"] == "signed"), "every key used");
}

#[test]
fn a_utf8_file_with_one_gbk_line_was_read_as_gb18030() {
    let w = Workdir::new();
    let mut bytes = "bill_no,openid,zone_id,city\nA1,oU1,1,北京\n".as_bytes().to_vec();
    bytes.extend_from_slice(&encoding_rs::GBK.encode("B1,oU2,1,上海\n").0);
    bytes.extend_from_slice("C1,oU3,1,广州\n".as_bytes());
    w.write("in.csv", bytes);
    let out = w.cmd().args(["check", "in.csv"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stdout_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("mixes encodings") && err.contains("line 3"), "{err}");
    // A file that is GBK throughout is still read as GBK.
    w.write("gbk.csv", encoding_rs::GBK.encode("bill_no,openid,zone_id,city\nA1,oU1,1,北京\nB1,oU2,1,上海\n").0);
    let out = w.cmd().args(["check", "gbk.csv"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
}

#[test]
fn a_fresh_run_would_have_replaced_an_earlier_runs_ids_journal() {
    let w = Workdir::new();
    w.write("in.csv", V2_ROWS);
    let earlier = "row,bill_no,amount,cancel_tag,cancel_bill_no\n1,P1,60,,mcEARLIER\n";
    w.write("out.csv.ids.csv", earlier);
    let sim = lossy_v2_sim();
    let out = w.live("in.csv", "out.csv", &sim).args(["--api", "v2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("out.csv.ids.csv already exists") && err.contains("never replaced"), "{err}");
    assert!(sim.stats().log.is_empty(), "nothing was sent");
    assert!(!w.path("out.csv").exists(), "no results file was created");
    assert_eq!(std::fs::read_to_string(w.path("out.csv.ids.csv")).unwrap(), earlier, "the journal is untouched");
}
