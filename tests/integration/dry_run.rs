//! `run --dry-run`: output columns, order and content; formula guard; secrets;
//! messy exports (BOM, CRLF, GBK, quoted newlines, blank lines, stdin).

use crate::harness::{stderr_of, Results, Workdir, APP_KEY, TOKEN};
use midas_cancel::sign::{CancelParams, Signer};

const ORDERS: &str = "\
bill_no,openid,zone_id,session_key,user_ip,pay_item,amount
B001,oUSER1,1,c2Vzc2lvbmtleTE=,10.0.0.1,金币礼包,600
B002,oUSER2,3_998877,,,,=1+2
B001,oUSER1,1,,,,dup
1.23457E+17,oUSER3,1,,,,sci
";

fn expected_sig(bill_no: &str, openid: &str, zone: &str, ip: Option<&str>, item: Option<&str>) -> String {
    sig_with(bill_no, openid, zone, ip, item).as_str().to_string()
}

fn sig_with(
    bill_no: &str,
    openid: &str,
    zone: &str,
    ip: Option<&str>,
    item: Option<&str>,
) -> midas_cancel::sign::Hex64 {
    Signer::new(APP_KEY, false).sig(&CancelParams {
        openid,
        appid: "wxtest",
        offer_id: "123",
        ts: 1700000000,
        zone_id: zone,
        pf: "android",
        bill_no,
        user_ip: ip,
        pay_item: item,
    })
}

#[test]
fn dry_run_columns_order_and_content() {
    let w = Workdir::new();
    w.write("in.csv", ORDERS);
    w.dry_run("in.csv", "out.csv").env("WECHAT_ACCESS_TOKEN", TOKEN).assert().code(1);
    let r = Results::read(&w.path("out.csv"));
    assert_eq!(
        r.headers,
        ["row", "bill_no", "openid", "zone_id", "user_ip", "pay_item", "amount", "ts", "sig", "mp_sig", "category"]
    );
    assert_eq!(r.column("row"), ["1", "2", "3", "4"], "input order");
    assert_eq!(r.column("category"), ["signed", "signed", "duplicate", "invalid_input"]);
    let first = r.row(1);
    assert_eq!(first["sig"], expected_sig("B001", "oUSER1", "1", Some("10.0.0.1"), Some("金币礼包")));
    assert_eq!(first["ts"], "1700000000");
    assert_eq!(first["mp_sig"].len(), 64, "session key and token known: mp_sig filled");
    let second = r.row(2);
    assert_eq!(second["sig"], expected_sig("B002", "oUSER2", "3_998877", None, None));
    assert_eq!(second["mp_sig"], "", "no session key: mp_sig empty");
    assert_eq!(second["amount"], "'=1+2", "formula-like pass-through cell is guarded");
    for n in [3, 4] {
        assert_eq!((r.row(n)["sig"].as_str(), r.row(n)["ts"].as_str()), ("", ""), "unsent rows are not signed");
    }
}

#[test]
fn no_secret_reaches_the_output_or_console() {
    let w = Workdir::new();
    w.write("in.csv", ORDERS);
    let out = w.dry_run("in.csv", "out.csv").env("WECHAT_ACCESS_TOKEN", TOKEN).output().unwrap();
    let written = std::fs::read_to_string(w.path("out.csv")).unwrap();
    let console = format!("{}{}", stderr_of(&out), String::from_utf8_lossy(&out.stdout));
    for secret in [APP_KEY, TOKEN, "c2Vzc2lvbmtleTE="] {
        assert!(!written.contains(secret), "{secret} in output");
        assert!(!console.contains(secret), "{secret} on console");
    }
}

#[test]
fn mp_sig_needs_a_token_and_follows_the_mode() {
    let w = Workdir::new();
    w.write("in.csv", ORDERS);
    w.dry_run("in.csv", "none.csv").assert().code(1);
    assert_eq!(Results::read(&w.path("none.csv")).row(1)["mp_sig"], "", "no access token: mp_sig empty");

    w.dry_run("in.csv", "never.csv").env("WECHAT_ACCESS_TOKEN", TOKEN).args(["--mp-sig", "never"]).assert().code(1);
    assert_eq!(Results::read(&w.path("never.csv")).row(1)["mp_sig"], "");

    w.dry_run("in.csv", "always.csv").env("WECHAT_ACCESS_TOKEN", TOKEN).args(["--mp-sig", "always"]).assert().code(1);
    let r = Results::read(&w.path("always.csv"));
    assert_eq!(r.row(1)["category"], "signed");
    assert_eq!(r.row(2)["category"], "missing_session_key");
}

#[test]
fn session_keys_file_supplies_mp_sig() {
    let w = Workdir::new();
    w.write("in.csv", "bill_no,openid,zone_id\nB1,oUSER9,1\n");
    w.write("keys.csv", "openid,session_key\noUSER9,a2V5OQ==\n");
    w.dry_run("in.csv", "out.csv")
        .env("WECHAT_ACCESS_TOKEN", TOKEN)
        .args(["--session-keys", "keys.csv"])
        .assert()
        .code(0);
    let r = Results::read(&w.path("out.csv"));
    let signer = Signer::new(APP_KEY, false);
    let p = CancelParams {
        openid: "oUSER9",
        appid: "wxtest",
        offer_id: "123",
        ts: 1700000000,
        zone_id: "1",
        pf: "android",
        bill_no: "B1",
        user_ip: None,
        pay_item: None,
    };
    assert_eq!(r.row(1)["mp_sig"], signer.sign(&p, Some((TOKEN, "a2V5OQ=="))).mp_sig.unwrap().as_str());
}

/// The same orders in four messy shapes sign identically.
#[test]
fn bom_crlf_gbk_and_quoted_newlines_read_alike() {
    let w = Workdir::new();
    let plain = "bill_no,openid,zone_id,note\nB1,oA,1,\"line one\nline two\"\n\nB2,oB,2,\"a, b\"\n";
    w.write("plain.csv", plain);
    w.write("bom.csv", format!("\u{feff}{plain}"));
    w.write("crlf.csv", plain.replace('\n', "\r\n"));
    let gbk_text = plain.replace("note", "备注").replace("a, b", "退款, 金币");
    let (gbk, _, bad) = encoding_rs::GBK.encode(&gbk_text);
    assert!(!bad);
    w.write("gbk.csv", &gbk);
    for name in ["plain", "bom", "crlf", "gbk"] {
        w.dry_run(&format!("{name}.csv"), &format!("{name}.out")).assert().code(0);
    }
    let base = Results::read(&w.path("plain.out"));
    assert_eq!(base.rows.len(), 2, "blank line skipped");
    assert_eq!(base.row(1)["note"], "line one\nline two");
    for name in ["bom", "crlf", "gbk"] {
        let r = Results::read(&w.path(&format!("{name}.out")));
        assert_eq!(r.column("sig"), base.column("sig"), "{name}");
        assert_eq!(r.headers[1], "bill_no", "{name}: BOM stripped from the first header");
    }
    let gbk = Results::read(&w.path("gbk.out"));
    assert_eq!(gbk.row(2)["备注"], "退款, 金币", "GBK decoded to UTF-8");
    assert!(gbk.row(1)["备注"].contains("line two"));
}

#[test]
fn column_mapping_and_stdin() {
    let w = Workdir::new();
    let text = "订单号,用户,区服,金额\nB1,oA,1,600\n";
    w.dry_run("-", "out.csv")
        .args(["--column", "bill_no=订单号", "--column", "openid=用户", "--column", "zone_id=区服"])
        .write_stdin(text)
        .assert()
        .code(0);
    let r = Results::read(&w.path("out.csv"));
    assert_eq!(r.headers, ["row", "订单号", "用户", "区服", "金额", "ts", "sig", "mp_sig", "category"]);
    assert_eq!(r.row(1)["sig"], expected_sig("B1", "oA", "1", None, None));
}

#[test]
fn existing_output_is_never_overwritten() {
    let w = Workdir::new();
    w.write("in.csv", ORDERS);
    w.write("out.csv", "precious audit record\n");
    let out = w.dry_run("in.csv", "out.csv").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("already exists"), "{}", stderr_of(&out));
    assert_eq!(std::fs::read_to_string(w.path("out.csv")).unwrap(), "precious audit record\n");
}

#[test]
fn dry_run_of_only_valid_rows_exits_zero() {
    let w = Workdir::new();
    w.write("in.csv", "bill_no,openid,zone_id\nB1,oA,1\nB2,oB,1\n");
    w.dry_run("in.csv", "out.csv").assert().code(0);
}

/// Lines are encoded in parallel chunks and copied whole; a row decided
/// otherwise afterwards (a duplicate, in any chunk or batch) is encoded again
/// in place. Every line must still be its own row's, in input order.
#[test]
fn duplicates_across_chunks_and_batches_stay_in_place() {
    let w = Workdir::new();
    let mut csv = String::from("bill_no,openid,zone_id\n");
    let n = 9000; // more than two batches of 4096, many chunks of 256
    let duplicate_of = |i: usize| (i % 997 == 5 && i > 5).then_some(i / 2);
    for i in 1..=n {
        let bill = duplicate_of(i).unwrap_or(i);
        csv.push_str(&format!("B{bill},oUSER{i},1\n"));
    }
    w.write("in.csv", csv);
    w.dry_run("in.csv", "out.csv").assert().code(1);
    let r = Results::read(&w.path("out.csv"));
    assert_eq!(r.rows.len(), n);
    for (i, row) in (1..).zip(&r.rows) {
        assert_eq!(row["row"], i.to_string(), "input order");
        assert_eq!(row["openid"], format!("oUSER{i}"), "line of row {i} in its place");
        match duplicate_of(i) {
            Some(b) => {
                assert_eq!(row["category"], "duplicate", "row {i}");
                assert_eq!((row["sig"].as_str(), row["ts"].as_str()), ("", ""), "row {i} unsigned");
                assert_eq!(row["bill_no"], format!("B{b}"));
            }
            None => {
                assert_eq!(row["category"], "signed", "row {i}");
                let want = expected_sig(&format!("B{i}"), &format!("oUSER{i}"), "1", None, None);
                assert_eq!(row["sig"], want, "row {i}");
            }
        }
    }
}
