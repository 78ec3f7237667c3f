//! The record never lies, nothing leaks (issue 9): each test pins a defect
//! found by adversarial testing, with the real binary against the simulator
//! (or a second one posing as another host) and real processes.

use crate::harness::{sim_config, start, stderr_of, stdout_of, Results, Workdir, APP_KEY, APP_SECRET, TOKEN};
use midas_cancel::sim::{Faults, OrderState};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("midas-cancel")
}

#[test]
fn answer_without_errcode_was_recorded_as_cancelled() {
    for body in ["{}", r#"{"message":"Service Unavailable"}"#, r#"{"errmsg":"ok"}"#, r#"{"errcode":"0"}"#] {
        let w = Workdir::new();
        w.orders("in.csv", 5);
        let mut c = sim_config();
        c.faults = Faults { bogus_rate: 1.0, bogus_body: Some(body.into()), ..Faults::default() };
        let sim = start(c);
        let out = w.live("in.csv", "out.csv", &sim).args(["--max-attempts", "2"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{body}: {}", stderr_of(&out));
        let r = Results::read(&w.path("out.csv"));
        assert_eq!(r.rows.len(), 5);
        for row in &r.rows {
            assert_eq!(row["category"], "network_error", "{body}");
            assert_eq!(row["errcode"], "", "{body}");
            assert!(row["errmsg"].contains("outcome unknown"), "{body}: {}", row["errmsg"]);
        }
        // The simulator did cancel them: a resume would answer 90015.
        assert!(sim.stats().cancelled_once(5));
    }
}

#[test]
fn rows_appended_during_a_run_were_sent_unchecked() {
    let w = Workdir::new();
    w.orders("in.csv", 40);
    let sim = start(sim_config());
    let child = w.spawn_live("in.csv", "out.csv", &sim, &["--rate", "20", "--concurrency", "2"]);
    w.wait_for_lines("out.csv", 3);
    // Appended rows, and a bill_no edited in place, while the run goes on.
    let text = std::fs::read_to_string(w.path("in.csv")).unwrap().replace("B0039,", "EDITED39,");
    let mut text = text;
    for i in 0..20 {
        text.push_str(&format!("LATE{i},oLATE,1,1\n"));
    }
    std::fs::write(w.path("in.csv"), text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_eq!(r.rows.len(), 40, "the results hold the rows that were checked");
    let sent: Vec<String> = sim.stats().log.iter().map(|e| e.bill_no.clone()).collect();
    assert_eq!(sent.len(), 40);
    assert!(sent.iter().all(|b| b.starts_with('B')), "only checked rows were sent: {sent:?}");
    let fp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.path("out.csv.run.json")).unwrap()).unwrap();
    assert_eq!(fp["rows"], 40);
}

#[test]
fn two_resumes_on_one_results_file_both_ran() {
    let w = Workdir::new();
    w.orders("in.csv", 120);
    let sim = start(sim_config());
    let first = w.spawn_live("in.csv", "out.csv", &sim, &["--rate", "60"]);
    w.wait_for_lines("out.csv", 5);
    let second = w.live("in.csv", "out.csv", &sim).arg("--resume").output().unwrap();
    assert_eq!(second.status.code(), Some(2), "{}", stderr_of(&second));
    let err = stderr_of(&second);
    assert!(err.contains("another run is writing") && err.contains(&first.id().to_string()), "{err}");
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_eq!(r.rows.len(), 120);
    assert!(r.rows.iter().all(|row| row["category"] == "cancelled"), "no line was replaced");
    assert_eq!(sim.stats().log.len(), 120, "nothing sent twice");
    assert!(!w.path("out.csv.lock").exists(), "the lock goes with the run");
}

#[test]
fn a_lock_left_by_kill_9_does_not_block_resume() {
    let w = Workdir::new();
    w.orders("in.csv", 200);
    let sim = start(sim_config());
    let mut child = w.spawn_live("in.csv", "out.csv", &sim, &["--rate", "100"]);
    w.wait_for_lines("out.csv", 10);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(w.path("out.csv.lock").exists(), "kill -9 leaves the lock file behind");
    w.live("in.csv", "out.csv", &sim).arg("--resume").assert().code(0);
    assert!(sim.stats().cancelled_once(200));
}

#[test]
fn closed_stderr_crashed_the_run_and_lost_sent_rows() {
    let w = Workdir::new();
    w.orders("in.csv", 150);
    let sim = start(sim_config());
    let mut child = w.spawn_live("in.csv", "out.csv", &sim, &["--rate", "150"]);
    drop(child.stderr.take()); // `2>&1 | head -1`: the reader is gone
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "no panic on a closed stderr");
    let r = Results::read(&w.path("out.csv"));
    assert_eq!(r.rows.len(), 150);
    assert_eq!(sim.stats().log.len(), 150, "every request sent is recorded");
    assert!(r.rows.iter().all(|row| row["category"] == "cancelled"));
}

#[test]
fn redirects_reposted_the_app_secret_and_signed_bodies() {
    let elsewhere = start(sim_config());
    // stable_token answered with a redirect: the AppSecret must not follow.
    let w = Workdir::new();
    w.orders("in.csv", 3);
    let mut c = sim_config();
    c.faults.redirect_to = Some(format!("{}/cgi-bin/stable_token", elsewhere.url()));
    let sim = start(c);
    let out = w.live("in.csv", "out.csv", &sim).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("redirect") && stderr_of(&out).contains("not followed"), "{}", stderr_of(&out));
    // cancelpay answered with a redirect: an unknown outcome, not followed.
    let mut c = sim_config();
    c.fixed_tokens.push(TOKEN.into());
    c.faults.redirect_to = Some(format!("{}/cgi-bin/midas/cancelpay", elsewhere.url()));
    let sim = start(c);
    let out = w
        .cmd()
        .env("MIDAS_APP_KEY", APP_KEY)
        .env("WECHAT_ACCESS_TOKEN", TOKEN)
        .args(["run", "in.csv", "-o", "out2.csv", "--appid", "wx1", "--offer-id", "1", "--base-url", sim.url()])
        .args(["--max-attempts", "2", "--backoff-ms", "10"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out2.csv"));
    assert!(r.rows.iter().all(|row| row["category"] == "network_error" && row["errmsg"].contains("redirect")));
    assert!(elsewhere.stats().requests.is_empty(), "nothing reached the other host: {:?}", elsewhere.stats().requests);
}

#[test]
fn plain_http_to_the_world_and_userinfo_were_accepted() {
    let w = Workdir::new();
    w.orders("in.csv", 2);
    let cases = [
        ("http://api.example.com", "plain http"),
        ("http://10.0.0.8:8080", "plain http"),
        ("https://user:tok3nSECRET@api.weixin.qq.com", "user name or password"),
        ("ftp://127.0.0.1", "https://"),
        ("not a url", "not a URL"),
    ];
    for (url, want) in cases {
        let out = w.live_to("in.csv", "out.csv", url).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{url}");
        let err = stderr_of(&out);
        assert!(err.contains(want), "{url}: {err}");
        assert!(!err.contains("tok3nSECRET"), "{err}");
        assert!(!w.path("out.csv").exists());
    }
    // Loopback may be plain http: the simulator.
    let sim = start(sim_config());
    let local = sim.url().replace("127.0.0.1", "localhost");
    w.live_to("in.csv", "out.csv", &local).assert().code(0);
}

#[test]
fn fetched_token_and_encoded_keys_leaked_through_errmsg() {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let key = "k+y/Z=ab\"cd\\ef-0123456789";
    let json = serde_json::to_string(key).unwrap();
    let forms = [
        utf8_percent_encode(key, NON_ALPHANUMERIC).to_string(),
        // Lower-case escapes, as some encoders write them.
        utf8_percent_encode(APP_SECRET, NON_ALPHANUMERIC).to_string().replace("%5F", "%5f"),
        json.trim_matches('"').to_string(),
    ];
    let w = Workdir::new();
    w.orders("in.csv", 4);
    let mut c = sim_config();
    c.app_key = key.into();
    c.default_state = OrderState::Echo;
    c.echo = forms.join(" | ");
    let sim = start(c);
    let out = w.live("in.csv", "out.csv", &sim).env("MIDAS_APP_KEY", key).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let written = std::fs::read_to_string(w.path("out.csv")).unwrap();
    assert!(written.contains("echo: access_token=***"), "the echo is there, scrubbed: {written}");
    let console = format!("{}{}", stderr_of(&out), stdout_of(&out));
    for secret in forms.iter().map(String::as_str).chain([key, APP_SECRET, "SIMTOKEN"]) {
        assert!(!written.contains(secret), "{secret} in results");
        assert!(!console.contains(secret), "{secret} on console");
    }
}

#[test]
fn stdin_spool_was_left_in_the_temp_dir_after_kill_9() {
    let w = Workdir::new();
    let tmp = w.path("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let mut text = String::from("bill_no,openid,zone_id,session_key\n");
    for i in 0..300 {
        text.push_str(&format!("B{i},o{i},1,c2VjcmV0a2V5{i}==\n"));
    }
    let sim = start(sim_config());
    let mut child = Command::new(bin())
        .current_dir(w.dir.path())
        .env("TMPDIR", &tmp)
        .env("MIDAS_APP_KEY", APP_KEY)
        .env("WECHAT_APP_SECRET", APP_SECRET)
        .args(["run", "-", "-o", "out.csv", "--appid", "wx1", "--offer-id", "1", "--base-url", sim.url()])
        .args(["--rate", "50"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    w.wait_for_lines("out.csv", 5);
    child.kill().unwrap();
    child.wait().unwrap();
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "left in the temp dir: {left:?}");
}

#[test]
fn core_dumps_could_hold_the_app_key() {
    let w = Workdir::new();
    w.orders("in.csv", 200);
    let sim = start(sim_config());
    let mut child = w
        .live_in_shell("ulimit -c unlimited", "in.csv", "out.csv", &sim)
        .args(["--rate", "40"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    w.wait_for_lines("out.csv", 2);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "soft and hard core limits: {line}");
}

#[test]
fn huge_rate_panicked_after_creating_the_output() {
    let w = Workdir::new();
    w.orders("in.csv", 2);
    let sim = start(sim_config());
    for args in [&["--rate", "4294967295"][..], &["--rate", "0"], &["--concurrency", "100000"], &["--burst", "-1"]] {
        let out = w.live("in.csv", "out.csv", &sim).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr_of(&out);
        assert!(err.contains(args[0]) && err.contains("whole number"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!w.path("out.csv").exists());
    }
    w.write("big.toml", "appid = \"wx1\"\noffer_id = \"1\"\nrate = 4294967295\n");
    let out = w.live_to("in.csv", "out.csv", sim.url()).args(["--config", "big.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("--rate takes a whole number"), "{}", stderr_of(&out));
    assert!(!w.path("out.csv").exists());
    assert!(sim.stats().log.is_empty());
}

#[test]
fn expires_in_zero_fetched_a_token_per_request() {
    let w = Workdir::new();
    w.orders("in.csv", 300);
    let mut c = sim_config();
    c.announced_lifetime = Some(0);
    let sim = start(c);
    w.live("in.csv", "out.csv", &sim).args(["--rate", "200"]).assert().code(0);
    let calls = sim.stats().stable_token_calls;
    assert!(calls <= 2, "{calls} stable_token calls for 300 rows");
}

#[test]
fn formula_like_api_cells_were_written_unguarded() {
    let w = Workdir::new();
    w.write("in.csv", "bill_no,openid,zone_id,pf\n-A1*B1,o1,1,-A1\n@A1,o2,1,android\n");
    let sim = start(sim_config());
    w.live("in.csv", "out.csv", &sim).assert().code(0);
    let r = Results::read(&w.path("out.csv"));
    assert_eq!((r.row(1)["bill_no"].as_str(), r.row(1)["pf"].as_str()), ("'-A1*B1", "'-A1"));
    assert_eq!(r.row(2)["bill_no"], "'@A1");
    // Sent as they are: the guard is only in the file.
    let sent: Vec<String> = sim.stats().log.iter().map(|e| e.bill_no.clone()).collect();
    assert!(sent.contains(&"-A1*B1".to_string()), "{sent:?}");
    // Every reader undoes it: --only gives back the input, resume sees every row done.
    let only = w.cmd().args(["report", "out.csv", "--only", "cancelled"]).output().unwrap();
    let mut lines: Vec<String> = stdout_of(&only).lines().map(String::from).collect();
    lines[1..].sort();
    assert_eq!(lines, ["bill_no,openid,zone_id,pf", "-A1*B1,o1,1,-A1", "@A1,o2,1,android"]);
    w.live("in.csv", "out.csv", &sim).arg("--resume").assert().code(0);
    assert_eq!(sim.stats().log.len(), 2, "resume sent nothing again");
}

#[test]
fn timeout_zero_message_contradicted_itself() {
    let w = Workdir::new();
    w.orders("in.csv", 2);
    let sim = start(sim_config());
    let out = w.live("in.csv", "out.csv", &sim).args(["--timeout", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(err.contains("more than 0") && !err.contains("between 0"), "{err}");
}

#[test]
fn app_key_and_a_different_app_key_file_were_both_accepted() {
    let w = Workdir::new();
    w.orders("in.csv", 2);
    let keyfile = w.write("key.txt", "another-key-0123456789abcdef\n");
    let sim = start(sim_config());
    let out = w.live("in.csv", "out.csv", &sim).env("MIDAS_APP_KEY_FILE", &keyfile).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(err.contains("MIDAS_APP_KEY and MIDAS_APP_KEY_FILE"), "{err}");
    assert!(!err.contains("another-key") && !err.contains(APP_KEY), "{err}");
    // The same key in both is no conflict.
    w.write("key.txt", format!("{APP_KEY}\n"));
    w.live("in.csv", "out.csv", &sim).env("MIDAS_APP_KEY_FILE", &keyfile).assert().code(0);
}

#[test]
fn report_and_resume_judged_an_out_of_range_row_differently() {
    let w = Workdir::new();
    w.orders("in.csv", 20);
    let sim = start(sim_config());
    w.live("in.csv", "out.csv", &sim).assert().code(0);
    let text = std::fs::read_to_string(w.path("out.csv")).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    // Line 4 of the file (rows finish out of order): its row column is the fifth.
    let mut cells: Vec<&str> = lines[3].split(',').collect();
    cells[4] = "999";
    lines[3] = cells.join(",");
    std::fs::write(w.path("out.csv"), lines.join("\n") + "\n").unwrap();
    let report = w.cmd().args(["report", "out.csv"]).output().unwrap();
    let resume = w.live("in.csv", "out.csv", &sim).arg("--resume").output().unwrap();
    for (what, out) in [("report", &report), ("resume", &resume)] {
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr_of(out));
        assert!(
            stderr_of(out).contains("line 4 is damaged (row 999 is not in the input"),
            "{what}: {}",
            stderr_of(out)
        );
    }
}

#[test]
fn a_resume_that_failed_on_a_full_disk_left_a_tmp_file() {
    let w = Workdir::new();
    w.orders("in.csv", 100);
    let sim = start(sim_config());
    w.live("in.csv", "out.csv", &sim).assert().code(0);
    let before = std::fs::read(w.path("out.csv")).unwrap();
    // 8 blocks: the input's copy (~2.5 KB) fits, the rewritten results (~6 KB) do not.
    let out = w.live_in_shell(r#"trap "" XFSZ; ulimit -f 8"#, "in.csv", "out.csv", &sim).arg("--resume").output();
    let out = out.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(!w.path("out.csv.tmp").exists(), "no temp file left");
    assert_eq!(std::fs::read(w.path("out.csv")).unwrap(), before, "the record is as it was");
    assert_eq!(sim.stats().log.len(), 100, "nothing sent");
    std::thread::sleep(Duration::from_millis(10));
}
