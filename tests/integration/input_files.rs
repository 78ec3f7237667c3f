//! Bad files stop before anything is produced (exit 2, a message saying how
//! to fix it); bad rows never stop the others; `check` reports both.

use crate::harness::{stderr_of, stdout_of, Workdir, APP_KEY};

fn refused(w: &Workdir, input: &str, want: &str) {
    let out = w.dry_run(input, "out.csv").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{input}: {}", stderr_of(&out));
    assert!(stderr_of(&out).contains(want), "{input}: {}", stderr_of(&out));
    assert!(!w.path("out.csv").exists(), "{input}: nothing produced");
    let check = w.cmd().args(["check", input]).output().unwrap();
    assert_eq!(check.status.code(), Some(2), "check {input}");
}

#[test]
fn bad_files_stop_before_anything_is_produced() {
    let w = Workdir::new();
    w.write("empty.csv", "");
    refused(&w, "empty.csv", "is empty");
    w.write("blank.csv", "\n\n");
    refused(&w, "blank.csv", "is empty");
    w.write("noheader.csv", "B1,oA,1\nB2,oB,1\n");
    refused(&w, "noheader.csv", "Is the header row missing?");
    w.write("missing.csv", "bill_no,openid\nB1,oA\n");
    refused(&w, "missing.csv", "zone_id");
    let mut bad = b"bill_no,openid,zone_id\nB1,oA,1\nB2,oB,".to_vec();
    bad.extend([0xff, 0xfe, 0xfd, b'\n']);
    w.write("undecodable.csv", &bad);
    refused(&w, "undecodable.csv", "line 3");
    w.write("utf16.csv", [0xff, 0xfe, b'b', 0]);
    refused(&w, "utf16.csv", "UTF-16");
    refused(&w, "does-not-exist.csv", "cannot read");
}

#[test]
fn named_encoding_is_enforced() {
    let w = Workdir::new();
    let (gbk, _, _) = encoding_rs::GBK.encode("bill_no,openid,zone_id,备注\nB1,oA,1,退款\n");
    w.write("gbk.csv", &gbk);
    let out = w.dry_run("gbk.csv", "out.csv").args(["--encoding", "utf-8"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("not valid UTF-8"), "{}", stderr_of(&out));
    w.dry_run("gbk.csv", "out.csv").args(["--encoding", "gbk"]).assert().code(0);
}

#[test]
fn bad_config_and_missing_secret_exit_2() {
    let w = Workdir::new();
    w.write("in.csv", "bill_no,openid,zone_id\nB1,oA,1\n");
    let out = w
        .cmd()
        .args(["run", "in.csv", "-o", "o.csv", "--appid", "wx1", "--offer-id", "1", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("MIDAS_APP_KEY is not set"));
    let out =
        w.cmd().env("MIDAS_APP_KEY", APP_KEY).args(["run", "in.csv", "-o", "o.csv", "--dry-run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("no appid"));
    w.write("bad.toml", "appid = 'wx1'\nrate = 'fast'\nbogus = 1\n");
    let out = w
        .cmd()
        .env("MIDAS_APP_KEY", APP_KEY)
        .args(["run", "in.csv", "-o", "o.csv", "--dry-run", "--config", "bad.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("bad.toml"));
    assert!(!w.path("o.csv").exists());
}

#[test]
fn check_lists_every_bad_row_and_counts() {
    let w = Workdir::new();
    w.write("in.csv", "bill_no,openid,zone_id\nB1,oA,1\nB1,oB,1\n1.5E+10,oC,1\nB4,,1\nB5,oE\n");
    let out = w.cmd().args(["check", "in.csv"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout_of(&out);
    assert!(text.contains("row 2: duplicate"), "{text}");
    assert!(text.contains("row 3: invalid_input: line 4: bill_no `1.5E+10`"), "{text}");
    assert!(text.contains("row 4: invalid_input: line 5: openid is empty"), "{text}");
    assert!(text.contains("row 5: invalid_input: line 6: the row has 2 fields"), "{text}");
    assert!(text.contains("5 rows, 1 ready to send, 3 invalid_input, 1 duplicate"), "{text}");
    w.write("ok.csv", "bill_no,openid,zone_id\nB1,oA,1\n");
    w.cmd().args(["check", "ok.csv"]).assert().code(0);
}

#[test]
fn modes_can_come_from_the_config_file() {
    let w = Workdir::new();
    w.write("in.csv", "bill_no,openid,zone_id\nB1,oA,1\n");
    w.write("dry.toml", "appid = 'wx1'\noffer_id = '1'\ndry_run = true\nts = 1700000000\n");
    w.cmd()
        .env("MIDAS_APP_KEY", APP_KEY)
        .args(["run", "in.csv", "-o", "o.csv", "--config", "dry.toml"])
        .assert()
        .code(0);
    let text = std::fs::read_to_string(w.path("o.csv")).unwrap();
    assert!(text.contains(",1700000000,") && text.contains("signed"), "{text}");
    w.write("bad.toml", "appid = 'wx1'\noffer_id = '1'\ndry_run = true\nsimulate = true\n");
    let out = w
        .cmd()
        .env("MIDAS_APP_KEY", APP_KEY)
        .args(["run", "in.csv", "-o", "p.csv", "--config", "bad.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("cannot be combined"), "{}", stderr_of(&out));
}

/// Regression (crlf_line_numbers_one_too_low): the CSV reader counted lines
/// on `\n` only, so every CRLF line was reported one too low and a file with
/// bare CR line ends said `line 1` for every row.
#[test]
fn line_numbers_are_right_for_every_line_end() {
    let lf = "bill_no,openid,zone_id,note\nA1,o1,1,x\nA2,,1,x\nA3,o3,1,\"two\nlines\"\nA4,,1,备注\n";
    let gbk = encoding_rs::GBK.encode(lf).0.into_owned();
    let mut with_bom = vec![0xEF, 0xBB, 0xBF];
    with_bom.extend(lf.replace('\n', "\r\n").into_bytes());
    let variants: [(&str, Vec<u8>); 5] = [
        ("lf", lf.as_bytes().to_vec()),
        ("crlf", lf.replace('\n', "\r\n").into_bytes()),
        ("cr", lf.replace('\n', "\r").into_bytes()),
        ("bom-crlf", with_bom),
        ("gbk", gbk),
    ];
    let w = Workdir::new();
    for (name, bytes) in variants {
        let file = format!("{name}.csv");
        w.write(&file, bytes);
        let out = w.cmd().args(["check", &file]).output().unwrap();
        let text = stdout_of(&out);
        assert!(text.contains("row 2: invalid_input: line 3: openid is empty"), "{name}: {text}");
        assert!(text.contains("row 4: invalid_input: line 6: openid is empty"), "{name}: {text}");
    }
    // An undecodable byte is placed on its line for CR files too.
    let mut bad = b"bill_no,openid,zone_id\rB1,oA,1\rB2,oB,".to_vec();
    bad.extend([0xff, 0xfe, 0xfd, b'\r']);
    w.write("bad-cr.csv", bad);
    let out = w.cmd().args(["check", "bad-cr.csv"]).output().unwrap();
    assert!(stderr_of(&out).contains("line 3"), "{}", stderr_of(&out));
}
