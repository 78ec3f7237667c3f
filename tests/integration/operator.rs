//! Operator experience: report and summary agree with the results file,
//! --only round-trips through run, progress only on a terminal, the
//! production guard, and help that teaches.

use crate::harness::{sim_config, start, stderr_of, stdout_of, Results, Workdir, APP_KEY, APP_SECRET};
use midas_cancel::category::ALL;
use midas_cancel::sim::{OrderState, SessionPolicy};
use std::collections::BTreeMap;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/results_every_category.csv");

/// Counts per category straight from the CSV, independently of the tool.
fn counts(path: &std::path::Path) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in Results::read(path).rows {
        *m.entry(r["category"].clone()).or_default() += 1;
    }
    m
}

#[test]
fn report_json_agrees_with_the_file_on_every_category() {
    let w = Workdir::new();
    let out = w.cmd().args(["report", FIXTURE, "--json", "--sum", "amount_fen"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "skipped rows: incomplete");
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let reported: BTreeMap<String, u64> =
        v["counts"].as_object().unwrap().iter().map(|(k, n)| (k.clone(), n.as_u64().unwrap())).collect();
    let expected = counts(std::path::Path::new(FIXTURE));
    assert_eq!(reported, expected);
    // Every category but `signed` (dry runs), `session_key_error` (v2 and
    // xpay) and the four of refunds (xpay-refund only).
    assert_eq!(expected.len(), ALL.len() - 6, "the fixture covers every live v1 category");
    assert_eq!(v["rows"], 20);
    assert_eq!(v["verdict"], "incomplete");
    // Exact decimal sums; the guarded '-1800 counts as -1800.
    assert_eq!(v["sums"]["by_category"]["cancelled"], "112.50");
    assert_eq!(v["sums"]["by_category"]["network_error"], "-1800");
    assert_eq!(v["sums"]["total"], "15412.50"); // 100+..+1900 - 2*1800 + 12.50

    let text = w.cmd().args(["report", FIXTURE]).output().unwrap();
    let text = stdout_of(&text);
    for (cat, n) in &expected {
        let line = text.lines().find(|l| l.starts_with(&format!("{cat} "))).unwrap_or_else(|| panic!("{cat}: {text}"));
        assert!(line.contains(&format!(" {n} ")), "{line}");
    }
    assert!(text.contains("handle these orders by another channel"), "advice per category: {text}");
}

#[test]
fn end_of_run_summary_is_the_report_of_the_results_file() {
    let w = Workdir::new();
    w.orders("in.csv", 12);
    let mut c = sim_config();
    c.orders.insert("B0002".into(), OrderState::Confirmed);
    c.orders.insert("B0003".into(), OrderState::Cancelled);
    c.orders.insert("B0004".into(), OrderState::Errcode(90010));
    let sim = start(c);
    let run = w.live("in.csv", "out.csv", &sim).args(["--sum", "amount"]).output().unwrap();
    assert_eq!(run.status.code(), Some(1));
    let report = w.cmd().args(["report", "out.csv", "--sum", "amount"]).output().unwrap();
    assert_eq!(report.status.code(), Some(1));
    let table = stdout_of(&report);
    assert!(stderr_of(&run).contains(table.trim()), "run:\n{}\nreport:\n{table}", stderr_of(&run));
    assert!(table.contains("already_confirmed") && table.contains("session_expired"), "{table}");
    assert!(table.contains("7800"), "total of the amount column: {table}");
}

#[test]
fn only_extracts_rows_that_run_takes_back() {
    let w = Workdir::new();
    w.write("in.csv", "bill_no,openid,zone_id,note\nB1,oA,1,=SUM(A1)\nB2,oB,3_7,\"x, y\"\nB3,oC,1,plain\n");
    let mut c = sim_config();
    c.sessions = SessionPolicy::Strict;
    let sim = start(c);
    w.live("in.csv", "out.csv", &sim).assert().code(1);
    assert!(Results::read(&w.path("out.csv")).rows.iter().all(|r| r["category"] == "session_expired"));

    w.cmd().args(["report", "out.csv", "--only", "session_expired", "-o", "retry.csv"]).assert().code(0);
    let retry = Results::read(&w.path("retry.csv"));
    assert_eq!(retry.headers, ["bill_no", "openid", "zone_id", "note"]);
    let mut notes: Vec<&str> = retry.column("note");
    notes.sort();
    assert_eq!(notes, ["=SUM(A1)", "plain", "x, y"], "cells come back as they were in the input");

    // With fresh session keys the extracted rows go through.
    w.write("keys.csv", "openid,session_key\noA,a2V5QQ==\noB,a2V5Qg==\noC,a2V5Qw==\n");
    let mut c = sim_config();
    c.sessions = SessionPolicy::Strict;
    c.session_keys = std::sync::Arc::new(midas_cancel::input::SessionKeys::load(&w.path("keys.csv")).unwrap());
    let sim = start(c);
    w.live("retry.csv", "retry-out.csv", &sim).args(["--session-keys", "keys.csv"]).assert().code(0);
    let r = Results::read(&w.path("retry-out.csv"));
    assert_eq!(r.rows.len(), 3);
    assert!(r.rows.iter().all(|row| row["category"] == "cancelled"));
    assert_eq!(r.rows.iter().find(|row| row["bill_no"] == "B1").unwrap()["note"], "'=SUM(A1)", "guarded again");
}

/// report, --only and resume read results files with one reader: a last
/// line cut mid-write (even one that still parses) is skipped, damage in
/// the middle is an error naming the line.
#[test]
fn report_skips_a_torn_last_line_and_names_a_damaged_one() {
    let w = Workdir::new();
    let fixture = std::fs::read_to_string(FIXTURE).unwrap();
    let whole = fixture.lines().count() - 1;
    // Cut just before the final line end: the line still parses, but its
    // last cell may be short, so it is not counted.
    w.write("cut.csv", fixture.trim_end_matches('\n'));
    let out = w.cmd().args(["report", "cut.csv", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(v["torn_last_line"], true, "{v}");
    assert_eq!(v["rows"], whole as u64 - 1, "{v}");
    let all = ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",");
    w.cmd().args(["report", "cut.csv", "--only", &all, "-o", "only.csv"]).assert().code(0);
    assert_eq!(Results::read(&w.path("only.csv")).rows.len(), whole - 1);

    let mut lines: Vec<&str> = fixture.lines().collect();
    lines[3] = "B0003,oX,1,not,enough,fields";
    w.write("damaged.csv", lines.join("\n") + "\n");
    for args in [&["report", "damaged.csv"][..], &["report", "damaged.csv", "--only", "cancelled"]] {
        let out = w.cmd().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr_of(&out).contains("damaged.csv line 4 is damaged (6 fields instead of"), "{}", stderr_of(&out));
    }
}

#[test]
fn progress_is_hidden_when_stderr_is_not_a_terminal() {
    let w = Workdir::new();
    w.orders("in.csv", 30);
    let sim = start(sim_config());
    let out = w.live("in.csv", "out.csv", &sim).output().unwrap();
    let err = stderr_of(&out);
    assert!(!err.contains('\r') && !err.contains("\x1b["), "no terminal drawing: {err:?}");
    assert!(err.contains("progress: "), "plain progress lines instead: {err}");
    let quiet = w.live("in.csv", "q.csv", &sim).arg("--quiet").output().unwrap();
    assert!(!stderr_of(&quiet).contains("progress:"), "{}", stderr_of(&quiet));
    assert!(stderr_of(&quiet).contains("category"), "the summary still shows");
}

/// Runs `cmd` under a pseudo-terminal (util-linux `script`), feeding `stdin`.
fn under_pty(w: &Workdir, cmd: &str, stdin: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new("script")
        .current_dir(w.dir.path())
        .args(["-qec", cmd, "/dev/null"])
        .env("TERM", "xterm")
        .env("MIDAS_APP_KEY", APP_KEY)
        .env("WECHAT_APP_SECRET", APP_SECRET)
        .env_remove("WECHAT_ACCESS_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(stdin.as_bytes())?;
            child.wait_with_output()
        })
        .expect("util-linux script runs");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn bin() -> String {
    assert_cmd::cargo::cargo_bin("midas-cancel").display().to_string()
}

#[test]
fn progress_is_shown_under_a_terminal() {
    let w = Workdir::new();
    w.orders("in.csv", 40);
    let sim = start(sim_config());
    let cmd =
        format!("{} run in.csv -o out.csv --appid wx1 --offer-id 1 --base-url {} --rate 20 --yes", bin(), sim.url());
    let (code, screen) = under_pty(&w, &cmd, "");
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("rows (") && screen.contains("ETA"), "a progress bar: {screen}");
    assert!(screen.contains("cancelled"), "{screen}");
}

#[test]
fn a_production_run_on_a_terminal_asks_first() {
    let w = Workdir::new();
    w.orders("in.csv", 5);
    let sim = start(sim_config());
    let cmd = format!("{} run in.csv -o out.csv --appid wx1 --offer-id 1 --base-url {}", bin(), sim.url());
    let (code, screen) = under_pty(&w, &cmd, "no\n");
    assert_eq!(code, Some(2), "{screen}");
    assert!(screen.contains("PRODUCTION") && screen.contains("wx1") && screen.contains("5 to send"), "{screen}");
    // Regression (confirmation_hid_the_base_url): a non-default --base-url is shown.
    assert!(screen.contains(&format!("base URL  {}", sim.url())), "{screen}");
    assert!(screen.contains("nothing was sent"), "{screen}");
    assert!(sim.stats().log.is_empty());
    assert!(!w.path("out.csv").exists());

    let (code, screen) = under_pty(&w, &cmd, "yes\n");
    assert_eq!(code, Some(0), "{screen}");
    assert_eq!(sim.stats().log.len(), 5);
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    let w = Workdir::new();
    for sub in ["run", "check", "report", "simulate", "completions", "man"] {
        let out = w.cmd().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub}");
        let text = stdout_of(&out);
        assert!(text.contains("Usage: midas-cancel"), "{sub}: {text}");
        assert!(text.contains("Example"), "{sub} --help shows an example");
    }
    let run = stdout_of(&w.cmd().args(["run", "--help"]).output().unwrap());
    for heading in ["Input:", "Request:", "Mode:", "Sending:", "MIDAS_APP_KEY"] {
        assert!(run.contains(heading), "run --help groups options: {heading}");
    }
}

#[test]
fn completions_and_man_page_are_generated() {
    let w = Workdir::new();
    let bash = w.cmd().args(["completions", "bash"]).output().unwrap();
    assert!(stdout_of(&bash).contains("midas-cancel") && stdout_of(&bash).contains("--dry-run"));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = w.cmd().args(["completions", shell]).output().unwrap();
        assert!(out.status.success() && stdout_of(&out).contains("midas-cancel"), "{shell}");
    }
    let man = w.cmd().arg("man").output().unwrap();
    assert!(stdout_of(&man).contains(".TH midas-cancel"));
}

/// Regression (bash_completion_stopped_after_the_subcommand): the generated
/// script's states and case labels disagreed for a hyphenated binary, so
/// `midas-cancel run --<TAB>` offered nothing. Run in a real bash.
#[test]
fn bash_completes_a_subcommands_flags() {
    let w = Workdir::new();
    let script = w.cmd().args(["completions", "bash"]).output().unwrap();
    w.write("mc.bash", script.stdout);
    let probe = r#"source ./mc.bash
complete -p midas-cancel
COMP_WORDS=(midas-cancel run --res); COMP_CWORD=2; _midas__cancel midas-cancel --res run; echo "run: ${COMPREPLY[*]}"
COMP_WORDS=(midas-cancel report --on); COMP_CWORD=2; _midas__cancel midas-cancel --on report; echo "report: ${COMPREPLY[*]}"
COMP_WORDS=(midas-cancel ru); COMP_CWORD=1; _midas__cancel midas-cancel ru midas-cancel; echo "top: ${COMPREPLY[*]}""#;
    let out = std::process::Command::new("bash").current_dir(w.dir.path()).args(["-c", probe]).output().unwrap();
    let text = stdout_of(&out);
    assert!(text.contains("-F _midas__cancel midas-cancel"), "{text}{}", stderr_of(&out));
    assert!(text.contains("run: --resume"), "{text}");
    assert!(text.contains("report: --only"), "{text}");
    assert!(text.contains("top: run"), "{text}");
}

/// Regression (man_was_one_screen): a page per subcommand, with the exit
/// statuses and categories the code itself knows.
#[test]
fn man_writes_a_page_per_subcommand_with_exit_statuses_and_categories() {
    let w = Workdir::new();
    w.cmd().args(["man", "--dir", "pages"]).assert().success();
    for page in
        ["midas-cancel", "midas-cancel-run", "midas-cancel-check", "midas-cancel-report", "midas-cancel-simulate"]
    {
        let text = std::fs::read_to_string(w.path(&format!("pages/{page}.1"))).unwrap();
        assert!(text.contains(&format!(".TH {page} 1")), "{page}");
    }
    let run = std::fs::read_to_string(w.path("pages/midas-cancel-run.1")).unwrap();
    // roff escapes hyphens.
    assert!(run.contains(r"\-\-resume") && run.contains(r"\-\-max\-attempts"), "run's options are on its page");
    for section in ["EXIT STATUS", "CATEGORIES"] {
        assert!(run.contains(section), "{section}");
    }
    for c in midas_cancel::category::ALL {
        assert!(run.contains(c.as_str()), "{c}");
    }
    let one = w.cmd().args(["man", "report"]).output().unwrap();
    assert!(stdout_of(&one).contains(".TH midas-cancel-report 1"));
    let none = w.cmd().args(["man", "nope"]).output().unwrap();
    assert_eq!(none.status.code(), Some(2));
    // clap names the pages there are (completion offers them too).
    assert!(stderr_of(&none).contains("possible values: run, check, report"), "{}", stderr_of(&none));
}

#[test]
fn errors_name_the_flag_file_or_column() {
    let w = Workdir::new();
    w.write("in.csv", "bill_no,openid,zone_id\nB1,oA,1\n");
    let out = w.cmd().args(["report", "in.csv"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("not a midas-cancel results file"));
    let out = w.cmd().args(["report", FIXTURE, "--sum", "nope"]).output().unwrap();
    assert!(stderr_of(&out).contains("--sum nope") && stderr_of(&out).contains("amount_fen"));
    let out = w.cmd().args(["report", FIXTURE, "--only", "cancelld"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("cancelled"), "suggests the right name: {}", stderr_of(&out));
    let out = w.dry_run("in.csv", "o.csv").args(["--column", "bill_no=订单号"]).output().unwrap();
    assert!(stderr_of(&out).contains("--column bill_no=订单号"), "{}", stderr_of(&out));
}

/// Regression (help_examples_wrapped_mid_command): examples longer than the
/// help width were cut in two; and `simulate --help` named a sample file
/// that did not exist.
#[test]
fn help_examples_stay_whole_and_name_real_files() {
    let w = Workdir::new();
    for sub in ["run", "simulate", "report", "check", "man"] {
        let out = w.cmd().args([sub, "--help"]).output().unwrap();
        let text = stdout_of(&out);
        let examples = text.split_once("Example").map(|(_, e)| e).unwrap_or_else(|| panic!("{sub}: no example"));
        // After the heading's own line, every example line is a comment, a
        // command or an assignment: never a wrapped tail.
        for line in examples.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let l = line.trim_start();
            let whole = ["#", "midas-cancel", "export", "URL="].iter().any(|p| l.starts_with(p));
            assert!(whole, "{sub} --help: a wrapped example line: {line:?}");
            assert!(line.len() <= 100, "{sub} --help: {line:?}");
        }
        for word in examples.split_whitespace().filter(|w| w.starts_with("samples/")) {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(word);
            assert!(path.exists(), "{sub} --help names {word}, which does not exist");
        }
    }
}
