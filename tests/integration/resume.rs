//! Never lose a row: SIGKILL and SIGINT part-way through a real process, then
//! `--resume`; torn lines; refusals that protect the audit record.

use crate::harness::{assert_one_line_per_row, kill_part_way, sim_config, start, stderr_of, Results, Workdir};
use midas_cancel::sim::OrderState;

#[test]
fn sigkill_part_way_then_resume_completes_exactly_once() {
    let w = Workdir::new();
    w.orders("in.csv", 300);
    let sim = start(sim_config());
    let child = w.spawn_live("in.csv", "out.csv", &sim, &["--rate", "100"]);
    let before = kill_part_way(&w, child, "out.csv", 60);
    assert!(before < 300, "killed part-way ({before} rows written)");

    w.live("in.csv", "out.csv", &sim).arg("--resume").assert().code(0);
    let r = Results::read(&w.path("out.csv"));
    assert_one_line_per_row(&r, 300);
    assert!(r.rows.iter().all(|row| row["category"] == "cancelled" || row["category"] == "already_returned"));
    let stats = sim.stats();
    assert!(stats.cancelled_once(300), "every order cancelled, once");
    // Rows recorded before the kill were not sent again.
    let sent: usize = stats.log.len();
    assert!(sent < 300 + 16 + 2, "{sent} requests: only in-flight rows were re-sent");
}

/// A results file that stops growing part-way (a full disk; here a file-size
/// limit, with SIGXFSZ ignored so the write fails with EFBIG): exit 3, the
/// cause and the resume command on stderr, no new request after the failure,
/// and `--resume` then completes with every order cancelled once.
#[test]
fn a_results_file_that_cannot_grow_stops_the_run_with_exit_3() {
    let w = Workdir::new();
    // ~5 KB of input: its private copy fits under the limit below.
    w.orders("in.csv", 200);
    let sim = start(sim_config());
    // 16 blocks of 512 bytes: the header and about 150 rows fit.
    let out = w.live_in_shell(r#"trap "" XFSZ; ulimit -f 16"#, "in.csv", "out.csv", &sim).output().unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("cannot write the results file") && err.contains("File too large"), "{err}");
    assert!(err.contains("--resume"), "{err}");
    let file = std::fs::read(w.path("out.csv")).unwrap();
    assert!(file.len() <= 8192, "{} bytes", file.len());
    let recorded = file.iter().filter(|&&b| b == b'\n').count() - 1;
    // Only requests already in flight when the file stopped growing go
    // unrecorded; without the stop, each of the 16 workers sent one more.
    let sent = sim.stats().log.len();
    assert!(sent <= recorded + 8, "{sent} requests sent, {recorded} recorded");

    w.live("in.csv", "out.csv", &sim).arg("--resume").assert().code(0);
    let r = Results::read(&w.path("out.csv"));
    assert_one_line_per_row(&r, 200);
    assert!(sim.stats().cancelled_once(200), "every order cancelled, once");
}

#[test]
fn sigint_finishes_in_flight_requests_marks_the_rest_skipped_then_resume() {
    let w = Workdir::new();
    w.orders("in.csv", 300);
    let sim = start(sim_config());
    let child = w.spawn_live("in.csv", "out.csv", &sim, &["--rate", "100"]);
    w.wait_for_lines("out.csv", 40);
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("--resume"), "says how to resume: {}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_one_line_per_row(&r, 300);
    let cats = r.categories();
    let skipped = cats.values().filter(|c| *c == "skipped").count();
    assert!(skipped > 0 && cats.values().all(|c| c == "cancelled" || c == "skipped"), "{cats:?}");
    let cancelled_before = 300 - skipped;

    w.live("in.csv", "out.csv", &sim).arg("--resume").assert().code(0);
    let r = Results::read(&w.path("out.csv"));
    assert_one_line_per_row(&r, 300);
    assert!(r.rows.iter().all(|row| row["category"] == "cancelled"), "skipped rows were sent, none twice");
    let stats = sim.stats();
    assert_eq!(stats.log.len(), 300, "{cancelled_before} rows were not sent again");
    assert!(stats.cancelled_once(300));
}

#[test]
fn a_torn_last_line_is_dropped_and_its_row_sent_again() {
    let w = Workdir::new();
    w.orders("in.csv", 10);
    let sim = start(sim_config());
    w.live("in.csv", "out.csv", &sim).assert().code(0);
    let text = std::fs::read_to_string(w.path("out.csv")).unwrap();
    let torn_row: u64 = Results::read(&w.path("out.csv")).rows.last().unwrap()["row"].parse().unwrap();
    // Cut the last line in the middle, as a power cut would.
    std::fs::write(w.path("out.csv"), &text[..text.len() - 12]).unwrap();

    let out = w.live("in.csv", "out.csv", &sim).arg("--resume").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("torn"), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_one_line_per_row(&r, 10);
    assert_eq!(r.row(torn_row)["category"], "already_returned", "re-sent; the repeat answers 90015");
    assert_eq!(sim.stats().log.len(), 11);
}

#[test]
fn resume_sends_only_rows_that_are_not_final() {
    let w = Workdir::new();
    w.orders("in.csv", 10);
    let mut c = sim_config();
    c.orders.insert("B0003".into(), OrderState::Errcode(90010));
    c.orders.insert("B0007".into(), OrderState::Errcode(-1));
    let first = start(c);
    w.live("in.csv", "out.csv", &first).args(["--max-attempts", "2"]).assert().code(1);
    let cats = Results::read(&w.path("out.csv")).categories();
    assert_eq!((cats[&3].as_str(), cats[&7].as_str()), ("session_expired", "system_busy"));

    let second = start(sim_config()); // the users logged in again, WeChat recovered
    w.live("in.csv", "out.csv", &second).arg("--resume").assert().code(0);
    let r = Results::read(&w.path("out.csv"));
    assert_one_line_per_row(&r, 10);
    let mut resent: Vec<String> = second.stats().log.iter().map(|e| e.bill_no.clone()).collect();
    resent.sort();
    assert_eq!(resent, ["B0003", "B0007"]);
}

#[test]
fn resume_is_refused_for_a_changed_input_unless_forced() {
    let w = Workdir::new();
    w.orders("in.csv", 5);
    let sim = start(sim_config());
    w.live("in.csv", "out.csv", &sim).assert().code(0);
    let before = std::fs::read_to_string(w.path("out.csv")).unwrap();
    w.orders("in.csv", 6);
    let out = w.live("in.csv", "out.csv", &sim).arg("--resume").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("input file changed"), "{}", stderr_of(&out));
    assert_eq!(std::fs::read_to_string(w.path("out.csv")).unwrap(), before, "untouched");

    let out = w.live("in.csv", "out.csv", &sim).args(["--resume", "--appid", "wxother"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));

    w.live("in.csv", "out.csv", &sim).args(["--resume", "--force-resume"]).assert().code(0);
    assert_one_line_per_row(&Results::read(&w.path("out.csv")), 6);
}

/// Regression (rehearsal_file_became_production_record): `--force-resume`
/// let a `--simulate` results file be resumed against production, so 100
/// simulated `cancelled` lines became production's record.
#[test]
fn a_rehearsal_is_never_resumed_for_real_not_even_forced() {
    let w = Workdir::new();
    w.orders("in.csv", 3);
    w.cmd()
        .args(["run", "in.csv", "-o", "out.csv", "--appid", "wx1", "--offer-id", "1", "--simulate"])
        .assert()
        .code(0);
    let before = std::fs::read(w.path("out.csv")).unwrap();
    let sim = start(sim_config());
    for extra in [&["--resume"][..], &["--resume", "--force-resume"]] {
        let out = w.live("in.csv", "out.csv", &sim).args(["--appid", "wx1", "--offer-id", "1"]).args(extra).output();
        let out = out.unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let err = stderr_of(&out);
        assert!(err.contains("records a rehearsal run") && err.contains("no flag overrides"), "{err}");
    }
    assert!(sim.stats().log.is_empty());
    assert_eq!(std::fs::read(w.path("out.csv")).unwrap(), before, "the rehearsal record is untouched");
}

/// Regression (resume_ignored_pf_and_column_changes): only appid and
/// offer_id were compared, so a resume with another --pf or --column mixed
/// two configurations in one record.
#[test]
fn resume_is_refused_for_another_pf_or_column_mapping() {
    let w = Workdir::new();
    w.write("in.csv", "bill_no,openid,zone_id,uid\nB1,o1,1,o9\nB2,o2,1,o8\n");
    let sim = start(sim_config());
    w.live("in.csv", "out.csv", &sim).assert().code(0);
    for extra in [&["--pf", "ios"][..], &["--column", "openid=uid"]] {
        let out = w.live("in.csv", "out.csv", &sim).arg("--resume").args(extra).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let err = stderr_of(&out);
        assert!(err.contains("refusing to resume") && (err.contains("pf") || err.contains("column")), "{err}");
    }
    assert_eq!(sim.stats().log.len(), 2);
}

#[test]
fn an_existing_results_file_is_never_overwritten_and_resume_needs_one() {
    let w = Workdir::new();
    w.orders("in.csv", 3);
    let sim = start(sim_config());
    w.write("out.csv", "audit record\n");
    let out = w.live("in.csv", "out.csv", &sim).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("--resume"));
    assert_eq!(std::fs::read_to_string(w.path("out.csv")).unwrap(), "audit record\n");
    let out = w.live("in.csv", "missing.csv", &sim).arg("--resume").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(sim.stats().log.is_empty(), "nothing sent");
}

#[test]
fn a_second_ctrl_c_quits_at_once_and_resume_still_completes() {
    let w = Workdir::new();
    w.orders("in.csv", 40);
    let mut c = sim_config();
    // Slow answers: a graceful stop would wait for them; a second Ctrl-C must not.
    c.faults = midas_cancel::sim::Faults { latency: std::time::Duration::from_secs(3), ..Default::default() };
    let sim = start(c);
    let child = w.spawn_live("in.csv", "out.csv", &sim, &["--concurrency", "8", "--timeout", "10"]);
    w.wait_for_lines("out.csv", 1); // the canary answered: 8 requests now in flight
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = child.id().to_string();
    let kill = |sig: &str| assert!(std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success());
    kill("-INT");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let second = std::time::Instant::now();
    kill("-INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr_of(&out));
    assert!(second.elapsed() < std::time::Duration::from_secs(2), "quit without waiting for in-flight answers");
    let r = Results::read(&w.path("out.csv"));
    assert!(r.rows.len() < 40, "in-flight rows are absent: {}", r.rows.len());

    let mut c = sim_config();
    c.orders = sim.stats().cancels.keys().map(|b| (b.clone(), OrderState::Cancelled)).collect();
    let second_sim = start(c); // Midas remembers what the first run cancelled
    w.live("in.csv", "out.csv", &second_sim).arg("--resume").assert().code(0);
    let r = Results::read(&w.path("out.csv"));
    assert_one_line_per_row(&r, 40);
    assert!(r.rows.iter().all(|row| row["category"] == "cancelled" || row["category"] == "already_returned"));
}
