//! Every v2 vector of the independent implementation (and the official
//! getbalance vector, in the library's unit tests) reproduces, through the
//! library and end to end through `run --api v2 --dry-run`.

use crate::harness::{Results, Workdir};
use midas_cancel::api::v2;
use serde_json::Value;

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cancelpay_v2.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["uri"], v2::URI);
    let cases = v["cases"].as_array().unwrap().clone();
    assert!(cases.len() >= 20, "the vector file holds every case");
    cases
}

fn s<'a>(c: &'a Value, k: &str) -> &'a str {
    c[k].as_str().unwrap_or_else(|| panic!("{k} missing"))
}

#[test]
fn every_v2_vector_reproduces_in_the_library() {
    for (i, c) in cases().iter().enumerate() {
        let inp = &c["inputs"];
        let row = &inp["row"];
        let amount = s(row, "amount");
        let id = match row["cancel_bill_no"].as_str().filter(|v| !v.is_empty()) {
            Some(given) => given.to_string(),
            None => v2::cancellation_id(s(inp, "offer_id"), s(row, "bill_no"), amount, s(inp, "cancel_tag")),
        };
        assert_eq!(id, s(c, "cancel_bill_no"), "case {i}");
        let body = v2::CancelV2 {
            openid: s(row, "openid"),
            offer_id: s(inp, "offer_id"),
            ts: inp["ts"].as_u64().unwrap(),
            zone_id: s(row, "zone_id"),
            env: inp["env"].as_u64().unwrap() as u8,
            user_ip: row["user_ip"].as_str(),
            pay_bill_no: s(row, "bill_no"),
            bill_no: &id,
            amount: v2::check_amount(amount).unwrap(),
        }
        .body();
        assert_eq!(body, s(c, "body"), "case {i}");
        assert_eq!(format!("{}&{body}", v2::URI), s(c, "pay_sig_message"), "case {i}");
        assert_eq!(v2::pay_sig(s(c, "app_key"), &body), s(c, "pay_sig"), "case {i}");
        assert_eq!(v2::signature(s(c, "session_key"), &body), s(c, "signature"), "case {i}");
    }
}

#[test]
fn every_v2_vector_reproduces_through_a_dry_run() {
    let w = Workdir::new();
    for (i, c) in cases().iter().enumerate() {
        let inp = &c["inputs"];
        let row = inp["row"].as_object().unwrap();
        // The row as the vector gives it (absent columns stay absent), plus the session key.
        let mut header: Vec<&str> = row.keys().map(String::as_str).collect();
        header.push("session_key");
        let mut cells: Vec<&str> = row.values().map(|v| v.as_str().unwrap()).collect();
        cells.push(s(c, "session_key"));
        let mut csv = csv::Writer::from_writer(vec![]);
        csv.write_record(&header).unwrap();
        csv.write_record(&cells).unwrap();
        let (input, output) = (format!("v2case{i}.csv"), format!("v2case{i}.out.csv"));
        w.write(&input, csv.into_inner().unwrap());
        let mut cmd = w.cmd();
        cmd.env("MIDAS_APP_KEY", s(c, "app_key")).args(["run", &input, "-o", &output, "--api", "v2"]).args([
            "--appid",
            "wxtest",
            "--offer-id",
            s(inp, "offer_id"),
            "--cancel-tag",
            s(inp, "cancel_tag"),
            "--dry-run",
            "--ts",
            &inp["ts"].as_u64().unwrap().to_string(),
        ]);
        if inp["env"] == 1 {
            cmd.arg("--sandbox");
        }
        cmd.assert().code(0);
        let r = Results::read(&w.path(&output));
        let got = r.row(1);
        for k in ["cancel_bill_no", "body", "pay_sig", "signature"] {
            assert_eq!(got[k], s(c, k), "case {i}: {k}");
        }
        assert_eq!(got["category"], "signed");
        assert!(!r.headers.contains(&"session_key".to_string()));
        // One cancel_bill_no column: the input's own when it has one (the id
        // is written there), else one in the tail.
        assert_eq!(r.headers.iter().filter(|h| *h == "cancel_bill_no").count(), 1, "case {i}");
        let tail: Vec<&str> = r.headers.iter().rev().take(6).rev().map(String::as_str).collect();
        if row.contains_key("cancel_bill_no") {
            assert_eq!(tail[1..], ["ts", "body", "pay_sig", "signature", "category"], "case {i}");
        } else {
            assert_eq!(tail, ["ts", "cancel_bill_no", "body", "pay_sig", "signature", "category"], "case {i}");
        }
    }
}
