//! The operator's second hour (issue 18): the mistakes a tired person makes
//! after the first run, each with a message that points the right way.

use crate::harness::{sim_config, start, stderr_of, stdout_of, Results, Workdir};
use rust_xlsxwriter::Workbook;

fn samples(name: &str) -> String {
    format!("{}/samples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_v2_export_went_through_every_step_as_v1() {
    let w = Workdir::new();
    let input = samples("orders_v2.csv");
    let config = samples("midas_v2.toml");
    // The sample config names v2; without it the default (v1) must not pass.
    w.write("v1.toml", "appid = \"wxdemo\"\noffer_id = \"1450000001\"\n");
    let steps: [&[&str]; 3] = [
        &["check", &input],
        &["run", &input, "-o", "dry.csv", "--config", "v1.toml", "--dry-run"],
        &["run", &input, "-o", "sim.csv", "--config", "v1.toml", "--simulate"],
    ];
    for args in steps {
        let out = w.cmd().env("MIDAS_APP_KEY", "k".repeat(32)).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stdout_of(&out));
        let err = stderr_of(&out);
        assert!(err.contains("looks like a Virtual Payment 2.0 export") && err.contains("--api v2"), "{err}");
        assert!(!w.path("dry.csv").exists() && !w.path("sim.csv").exists());
    }
    // Said explicitly, v1 proceeds; the v2 config proceeds as v2.
    let out = w.cmd().args(["check", &input, "--api", "v1"]).output().unwrap();
    assert_ne!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let out = w.cmd().args(["run", &input, "-o", "ok.csv", "--config", &config, "--simulate"]).output().unwrap();
    // The samples hold deliberately bad rows: 1, not 2.
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(Results::read(&w.path("ok.csv")).rows.iter().any(|r| r["category"] == "cancelled"));
}

#[test]
fn a_results_file_was_accepted_as_input() {
    let w = Workdir::new();
    w.orders("in.csv", 3);
    let sim = start(sim_config());
    w.live("in.csv", "out.csv", &sim).assert().code(0);
    w.dry_run("in.csv", "dry.csv").assert().code(0);
    for fed in ["out.csv", "dry.csv"] {
        let out = w.live(fed, "again.csv", &sim).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{fed}");
        let err = stderr_of(&out);
        assert!(err.contains("is a midas-cancel results file") && err.contains("--only"), "{fed}: {err}");
    }
    assert_eq!(sim.stats().log.len(), 3, "nothing sent twice");
}

#[test]
fn numbers_in_id_columns_of_a_workbook_were_taken_without_a_word() {
    let w = Workdir::new();
    let mut book = Workbook::new();
    let sheet = book.add_worksheet().set_name("Orders").unwrap();
    for (c, h) in ["bill_no", "openid", "zone_id"].iter().enumerate() {
        sheet.write_string(0, c as u16, *h).unwrap();
    }
    for r in 1..=3u32 {
        sheet.write_number(r, 0, f64::from(1_234_567 + r)).unwrap();
        sheet.write_string(r, 1, format!("oUSER{r}")).unwrap();
        sheet.write_number(r, 2, 12.0).unwrap();
    }
    book.save(w.path("orders.xlsx")).unwrap();
    let check = w.cmd().args(["check", "orders.xlsx"]).output().unwrap();
    let said = stdout_of(&check);
    assert!(said.contains("Orders: 3 cell(s) of bill_no are numbers"), "{said}");
    assert!(said.contains("Orders: 3 cell(s) of zone_id are numbers") && said.contains("leading zeros"), "{said}");
    assert!(!said.contains("of openid are numbers"), "{said}");
    let dry = w.dry_run("orders.xlsx", "dry.csv").output().unwrap();
    assert!(stderr_of(&dry).contains("3 cell(s) of zone_id are numbers"), "{}", stderr_of(&dry));
    let sim = start(sim_config());
    let live = w.live("orders.xlsx", "out.csv", &sim).output().unwrap();
    assert!(stderr_of(&live).contains("3 cell(s) of zone_id are numbers"), "{}", stderr_of(&live));
}

#[test]
fn a_refused_bill_no_cell_disappeared_from_the_results() {
    let w = Workdir::new();
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    for (c, h) in ["bill_no", "openid", "zone_id"].iter().enumerate() {
        sheet.write_string(0, c as u16, *h).unwrap();
    }
    sheet.write_number(1, 0, 1_234_567_890_123_456_789.0).unwrap();
    sheet.write_string(1, 1, "oUSER1").unwrap();
    sheet.write_string(1, 2, "1").unwrap();
    book.save(w.path("orders.xlsx")).unwrap();
    w.dry_run("orders.xlsx", "dry.csv").assert().code(1);
    let r = Results::read(&w.path("dry.csv"));
    assert_eq!(r.row(1)["category"], "invalid_input");
    assert!(r.row(1)["bill_no"].starts_with("123456789012345"), "what the sheet holds: {:?}", r.row(1));
}

#[test]
fn the_way_back_for_invalid_rows_was_not_said() {
    let w = Workdir::new();
    w.write("in.csv", "bill_no,openid,zone_id\nA1,oU1,1\nB1,,1\n");
    let sim = start(sim_config());
    let out = w.live("in.csv", "out.csv", &sim).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("--only invalid_input -o fix.csv"), "{}", stderr_of(&out));
    // The export fixed and resumed: refused, with the route.
    w.write("in.csv", "bill_no,openid,zone_id\nA1,oU1,1\nB1,oU2,1\n");
    let out = w.live("in.csv", "out.csv", &sim).arg("--resume").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(err.contains("the input file changed") && err.contains("--only invalid_input -o fix.csv"), "{err}");
    // With --force-resume it says so too, and sends nothing for the fixed row.
    let out = w.live("in.csv", "out.csv", &sim).args(["--resume", "--force-resume"]).output().unwrap();
    assert!(stderr_of(&out).contains("--only invalid_input -o fix.csv"), "{}", stderr_of(&out));
    assert_eq!(sim.stats().log.len(), 1);
}

#[test]
fn a_finished_run_resumed_fetched_a_token_and_never_said_where_results_went() {
    let w = Workdir::new();
    w.orders("in.csv", 2);
    let sim = start(sim_config());
    let out = w.live("in.csv", "out.csv", &sim).output().unwrap();
    assert!(stderr_of(&out).contains("results: out.csv"), "{}", stderr_of(&out));
    let calls = sim.stats().stable_token_calls;
    let out = w.live("in.csv", "out.csv", &sim).arg("--resume").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("nothing to resume"), "{}", stderr_of(&out));
    assert_eq!(sim.stats().stable_token_calls, calls, "no token fetched");
}

#[test]
fn small_things_that_misled() {
    let w = Workdir::new();
    // `run --help` speaks to operators, not to the spec's sections.
    let help = stdout_of(&w.cmd().args(["run", "--help"]).output().unwrap());
    assert!(!help.contains("SPEC"), "{help}");
    // report --xlsx onto an existing file names --xlsx.
    w.orders("in.csv", 1);
    let sim = start(sim_config());
    w.live("in.csv", "out.csv", &sim).assert().code(0);
    w.write("taken.xlsx", "x");
    let out = w.cmd().args(["report", "out.csv", "--xlsx", "taken.xlsx"]).output().unwrap();
    assert!(stderr_of(&out).contains("choose another --xlsx name"), "{}", stderr_of(&out));
    // A dry run with session keys but no access token says why mp_sig is empty.
    w.write("keys.csv", "openid,session_key\noUSER2,a2V5MQ==\n");
    let out = w.dry_run("in.csv", "dry.csv").args(["--session-keys", "keys.csv"]).output().unwrap();
    assert!(stderr_of(&out).contains("mp_sig is left empty"), "{}", stderr_of(&out));
    // A short dry run without a terminal prints no lone `progress:` line.
    assert!(!stderr_of(&out).contains("progress:"), "{}", stderr_of(&out));
    // The rate achieved is never said to be above the rate asked for.
    w.orders("five.csv", 5);
    let out = w.live("five.csv", "five-out.csv", &sim).output().unwrap();
    let err = stderr_of(&out);
    let achieved: f64 = err
        .split("/s achieved of")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(achieved <= 200.0, "{err}");
    // `man` completes its page names.
    let completion = stdout_of(&w.cmd().args(["completions", "bash"]).output().unwrap());
    assert!(completion.contains("run check report simulate completions man"), "{completion:.300}");
}

#[test]
fn v2_results_had_two_cancel_bill_no_columns() {
    let w = Workdir::new();
    w.write(
        "in.csv",
        "bill_no,openid,zone_id,amount,session_key,cancel_bill_no\nP1,oU1,1,60,a2V5MQ==,C1\nP2,oU2,1,10,a2V5Mg==,\n",
    );
    let sim = start(sim_config());
    let out = w.live("in.csv", "out.csv", &sim).args(["--api", "v2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let r = Results::read(&w.path("out.csv"));
    assert_eq!(r.headers.iter().filter(|h| *h == "cancel_bill_no").count(), 1, "{:?}", r.headers);
    assert_eq!(r.row(1)["cancel_bill_no"], "C1");
    let derived = midas_cancel::api::v2::cancellation_id("123", "P2", "10", "");
    assert_eq!(r.row(2)["cancel_bill_no"], derived, "a blank cell shows the id that was sent");
    // The file reads back: report, --only (the ids given back), resume.
    w.cmd().args(["report", "out.csv"]).assert().code(0);
    w.cmd().args(["report", "out.csv", "--only", "cancelled", "-o", "again.csv"]).assert().code(0);
    let again = Results::read(&w.path("again.csv"));
    let mut ids = again.column("cancel_bill_no");
    ids.sort();
    assert_eq!(ids, ["C1", derived.as_str()]);
    let out = w.live("in.csv", "out.csv", &sim).args(["--api", "v2", "--resume"]).output().unwrap();
    assert!(stderr_of(&out).contains("nothing to resume"), "{}", stderr_of(&out));
    let dry = w.dry_run("in.csv", "dry.csv").args(["--api", "v2"]).output().unwrap();
    assert_eq!(dry.status.code(), Some(0), "{}", stderr_of(&dry));
    let d = Results::read(&w.path("dry.csv"));
    assert_eq!(d.headers.iter().filter(|h| *h == "cancel_bill_no").count(), 1, "{:?}", d.headers);
}

#[test]
fn the_simulator_shared_orders_between_sandbox_and_production() {
    let w = Workdir::new();
    w.orders("in.csv", 3);
    let sim = start(sim_config());
    w.live("in.csv", "sandbox.csv", &sim).arg("--sandbox").assert().code(0);
    // Production's orders are untouched by the sandbox's cancels.
    w.live("in.csv", "production.csv", &sim).assert().code(0);
    let r = Results::read(&w.path("production.csv"));
    assert!(r.rows.iter().all(|row| row["category"] == "cancelled"), "{:?}", r.rows);
    // And the sandbox remembers its own.
    w.live("in.csv", "sandbox-again.csv", &sim).arg("--sandbox").assert().code(0);
    let again = Results::read(&w.path("sandbox-again.csv"));
    assert!(again.rows.iter().all(|row| row["category"] == "already_returned"), "{:?}", again.rows);
}
