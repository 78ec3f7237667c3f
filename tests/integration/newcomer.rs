//! A newcomer's first hour (issue 12): the mistakes people make get
//! messages that point the right way, and nothing is announced or sent
//! before every check has passed.

use crate::harness::{sim_config, start, stderr_of, Workdir, APP_SECRET, TOKEN};

#[test]
fn a_secret_in_the_config_file_is_refused_and_never_echoed() {
    let w = Workdir::new();
    w.orders("in.csv", 2);
    let cases = [
        ("secret.toml", "appid = \"wx1\"\nMIDAS_APP_KEY = \"Sup3rS3cretValue\"\n", "looks like a secret"),
        (
            "token.toml",
            "appid = \"wx1\"\nwechat_access_token = \"Sup3rS3cretValue\"\n",
            "secrets belong in the environment",
        ),
        ("broken.toml", "appid = \"wx1\"\noffer_id = Sup3rS3cretValue\n", "not valid TOML at line 2"),
        ("unquoted.toml", "MIDAS_APP_KEY = Sup3rS3cretValue\n", "line 1"),
    ];
    for (name, text, want) in cases {
        w.write(name, text);
        let out = w.dry_run("in.csv", "out.csv").args(["--config", name]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = stderr_of(&out);
        assert!(err.contains(want), "{name}: {err}");
        assert!(!err.contains("Sup3rS3cret"), "{name} echoed the secret: {err}");
    }
}

#[test]
fn refusals_name_the_right_remedy() {
    let w = Workdir::new();
    w.orders("in.csv", 2);
    w.write("taken.csv", "x\n");
    std::fs::create_dir(w.path("adir")).unwrap();
    // A dry run into an existing file: no --resume for a dry run.
    let dry = w.dry_run("in.csv", "taken.csv").output().unwrap();
    assert!(stderr_of(&dry).contains("a dry run never resumes") && !stderr_of(&dry).contains("add --resume"));
    // report --only -o an existing file.
    let sim = start(sim_config());
    w.live("in.csv", "res.csv", &sim).assert().code(0);
    let only = w.cmd().args(["report", "res.csv", "--only", "cancelled", "-o", "taken.csv"]).output().unwrap();
    assert_eq!(only.status.code(), Some(2));
    assert!(!stderr_of(&only).contains("--resume"), "{}", stderr_of(&only));
    // --resume on a file that does not exist: nothing to resume.
    let resume = w.live("in.csv", "nothere.csv", &sim).arg("--resume").output().unwrap();
    assert_eq!(resume.status.code(), Some(2));
    let err = stderr_of(&resume);
    assert!(err.contains("nothing to resume") && !err.contains(".run.json"), "{err}");
    // -o a directory.
    let dir = w.live("in.csv", "adir", &sim).output().unwrap();
    assert_eq!(dir.status.code(), Some(2));
    assert!(stderr_of(&dir).contains("is a directory"), "{}", stderr_of(&dir));
    assert_eq!(sim.stats().log.len(), 2, "none of these sent anything");
}

#[test]
fn a_rehearsal_is_announced_only_once_every_check_passed() {
    let w = Workdir::new();
    w.orders("in.csv", 2);
    w.write("taken.csv", "x\n");
    let out = w
        .cmd()
        .args(["run", "in.csv", "-o", "taken.csv", "--appid", "wx1", "--offer-id", "1", "--simulate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!stderr_of(&out).contains("rehearsal: sending"), "{}", stderr_of(&out));
    let ok =
        w.cmd().args(["run", "in.csv", "-o", "ok.csv", "--appid", "wx1", "--offer-id", "1", "--simulate"]).output();
    assert!(stderr_of(&ok.unwrap()).contains("rehearsal: sending"));
}

#[test]
fn os_errors_are_said_once() {
    let w = Workdir::new();
    let out = w.cmd().args(["check", "nope.csv"]).output().unwrap();
    let err = stderr_of(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn workbooks_and_other_files_are_named_for_what_they_are() {
    let w = Workdir::new();
    let cases: [(&str, &[u8], &str); 4] = [
        ("orders.xlsx", b"PK\x03\x04\x14\x00\x06\x00", "looks like a workbook (a ZIP archive or an Office file)"),
        ("orders.xls", b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1", "save it again as .xlsx"),
        ("orders.pdf", b"%PDF-1.7\n", "PDF document"),
        ("orders.txt", b"b\0i\0l\0l\0_\0n\0o\0", "UTF-16"),
    ];
    for (name, bytes, want) in cases {
        w.write(name, bytes);
        let out = w.cmd().args(["check", name]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = stderr_of(&out);
        assert!(err.contains(want) && !err.contains("not valid UTF-8"), "{name}: {err}");
    }
}

#[test]
fn a_header_only_input_sends_nothing_and_says_so() {
    let w = Workdir::new();
    w.write("empty.csv", "bill_no,openid,zone_id\n");
    let sim = start(sim_config());
    let live = w.live("empty.csv", "out.csv", &sim).output().unwrap();
    assert_eq!(live.status.code(), Some(1));
    assert!(stderr_of(&live).contains("no data rows"), "{}", stderr_of(&live));
    assert_eq!(sim.stats().stable_token_calls, 0, "no token fetched");
    assert!(!w.path("out.csv").exists());
    let dry = w.dry_run("empty.csv", "dry.csv").output().unwrap();
    assert_eq!(dry.status.code(), Some(1));
    assert!(stderr_of(&dry).contains("no data rows"));
    let check = w.cmd().args(["check", "empty.csv"]).output().unwrap();
    assert_eq!(check.status.code(), Some(1));
}

#[test]
fn config_paths_are_relative_to_the_config_file_and_errors_name_the_key() {
    let w = Workdir::new();
    std::fs::create_dir(w.path("conf")).unwrap();
    w.write("conf/keys.csv", "openid,session_key\noUSER1,a2V5==\n");
    w.write("conf/game.toml", "appid = \"wx1\"\noffer_id = \"1\"\nsession_keys = \"keys.csv\"\n");
    w.orders("in.csv", 3);
    w.dry_run("in.csv", "out.csv").args(["--config", "conf/game.toml"]).assert().code(0);
    w.write("conf/bad.toml", "appid = \"wx1\"\nsession_keys = \"missing.csv\"\n[columns]\n");
    let out = w.dry_run("in.csv", "out2.csv").args(["--config", "conf/bad.toml"]).output().unwrap();
    let err = stderr_of(&out);
    assert!(err.contains("`session_keys` in the config file conf/bad.toml"), "{err}");
    assert!(!err.contains("--session-keys"), "{err}");
    w.write("conf/cols.toml", "[columns]\nnot_a_field = \"x\"\n");
    let out = w.dry_run("in.csv", "out3.csv").args(["--config", "conf/cols.toml"]).output().unwrap();
    assert!(stderr_of(&out).contains("conf/cols.toml"), "{}", stderr_of(&out));
}

#[test]
fn a_dry_run_refuses_both_token_sources_like_a_live_run() {
    let w = Workdir::new();
    w.orders("in.csv", 2);
    let out =
        w.dry_run("in.csv", "out.csv").env("WECHAT_APP_SECRET", APP_SECRET).env("WECHAT_ACCESS_TOKEN", TOKEN).output();
    let out = out.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("both WECHAT_APP_SECRET and WECHAT_ACCESS_TOKEN"), "{}", stderr_of(&out));
}
