//! Every signature vector of the independent implementation reproduces, both
//! through the library and end to end through `run --dry-run`.

use crate::harness::{Results, Workdir};
use midas_cancel::sign::{self, CancelParams, Signer};
use serde_json::Value;

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cancelpay.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"].as_array().unwrap().clone();
    assert!(cases.len() >= 20, "the vector file holds every case");
    cases
}

fn s<'a>(c: &'a Value, k: &str) -> &'a str {
    c[k].as_str().unwrap_or_else(|| panic!("{k} missing"))
}

fn params(c: &Value) -> CancelParams<'_> {
    let p = &c["params"];
    CancelParams {
        openid: s(p, "openid"),
        appid: s(p, "appid"),
        offer_id: s(p, "offer_id"),
        ts: p["ts"].as_u64().unwrap(),
        zone_id: s(p, "zone_id"),
        pf: s(p, "pf"),
        bill_no: s(p, "bill_no"),
        user_ip: p["user_ip"].as_str(),
        pay_item: p["pay_item"].as_str(),
    }
}

#[test]
fn every_vector_reproduces_in_the_library() {
    for (i, c) in cases().iter().enumerate() {
        let p = params(c);
        let sandbox = c["sandbox"].as_bool().unwrap();
        assert_eq!(sign::cancel_uri(sandbox), s(c, "uri"), "case {i}");
        assert_eq!(sign::sig_string(&p, s(c, "uri"), s(c, "app_key")), s(c, "sig_string"), "case {i}");
        let signer = Signer::new(s(c, "app_key"), sandbox);
        let got = signer.sign(&p, Some((s(c, "access_token"), s(c, "session_key"))));
        assert_eq!(got.sig.as_str(), s(c, "sig"), "case {i}");
        assert_eq!(
            sign::mp_sig_string(&p, s(c, "uri"), got.sig.as_str(), s(c, "access_token"), s(c, "session_key")),
            s(c, "mp_sig_string"),
            "case {i}"
        );
        assert_eq!(got.mp_sig.as_ref().map(|h| h.as_str()), Some(s(c, "mp_sig")), "case {i}");
    }
}

#[test]
fn every_vector_reproduces_through_a_dry_run() {
    let w = Workdir::new();
    for (i, c) in cases().iter().enumerate() {
        let p = &c["params"];
        let mut csv = csv::Writer::from_writer(vec![]);
        csv.write_record(["bill_no", "openid", "zone_id", "pf", "user_ip", "pay_item", "session_key"]).unwrap();
        csv.write_record([
            s(p, "bill_no"),
            s(p, "openid"),
            s(p, "zone_id"),
            s(p, "pf"),
            p["user_ip"].as_str().unwrap_or(""),
            p["pay_item"].as_str().unwrap_or(""),
            s(c, "session_key"),
        ])
        .unwrap();
        let input = format!("case{i}.csv");
        let output = format!("case{i}.out.csv");
        w.write(&input, csv.into_inner().unwrap());
        let mut cmd = w.cmd();
        cmd.env("MIDAS_APP_KEY", s(c, "app_key")).env("WECHAT_ACCESS_TOKEN", s(c, "access_token")).args([
            "run",
            &input,
            "-o",
            &output,
            "--appid",
            s(p, "appid"),
            "--offer-id",
            s(p, "offer_id"),
            "--dry-run",
            "--ts",
            &p["ts"].as_u64().unwrap().to_string(),
        ]);
        if c["sandbox"].as_bool().unwrap() {
            cmd.arg("--sandbox");
        }
        cmd.assert().code(0);
        let r = Results::read(&w.path(&output));
        let row = r.row(1);
        assert_eq!(row["sig"], s(c, "sig"), "case {i}");
        assert_eq!(row["mp_sig"], s(c, "mp_sig"), "case {i}");
        assert_eq!(row["category"], "signed");
        assert!(!r.headers.contains(&"session_key".to_string()));
    }
}
