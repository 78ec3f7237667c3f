//! Every xpay vector of the independent implementation (SPEC §1.6:
//! cancel_currency_pay, query_order, refund_order) reproduces through the
//! library's wire module. (Issue 20's run path, which will also reproduce
//! them end to end through `run --dry-run`, is not built yet.)

use midas_cancel::api::xpay::{self, OrderKey};
use serde_json::Value;

fn vectors() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/xpay.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("{k} missing"))
}

/// A cell of the row: absent (no such column) and "" (an empty cell) alike.
fn cell<'a>(row: &'a Value, k: &str) -> Option<&'a str> {
    row[k].as_str().filter(|v| !v.is_empty())
}

#[test]
fn every_xpay_vector_reproduces_in_the_library() {
    let v = vectors();
    let official = &v["official"];
    assert_eq!(
        xpay::pay_sig(s(official, "app_key"), s(official, "uri"), s(official, "body")).as_str(),
        s(official, "pay_sig")
    );
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 72, "the vector file holds every case");
    let mut seen = std::collections::BTreeMap::new();
    for (i, c) in cases.iter().enumerate() {
        let inp = &c["inputs"];
        let row = &inp["row"];
        let (appid, tag) = (s(inp, "appid"), s(inp, "cancel_tag"));
        let env = inp["env"].as_u64().unwrap() as u8;
        let order = match (cell(row, "bill_no"), cell(row, "wx_order_id")) {
            (Some(b), _) => OrderKey::OrderId(b),
            (None, Some(w)) => OrderKey::WxOrderId(w),
            (None, None) => panic!("case {i}: a row names its order"),
        };
        let order_text = match order {
            OrderKey::OrderId(v) | OrderKey::WxOrderId(v) => v,
        };
        let refund_id = || match cell(row, "refund_bill_no") {
            Some(given) => given.to_string(),
            None => xpay::refund_id(appid, order_text, cell(row, "amount"), tag),
        };
        let call = s(c, "call");
        *seen.entry(call.to_string()).or_insert(0) += 1;
        let body = match call {
            "cancel_currency_pay" => {
                let amount = s(row, "amount");
                let id = match cell(row, "cancel_bill_no") {
                    Some(given) => given.to_string(),
                    None => xpay::cancel_id(appid, s(row, "bill_no"), amount, tag),
                };
                assert_eq!(id, s(c, "order_id"), "case {i}: the cancel's id");
                let user_ip = cell(row, "user_ip").or(inp["user_ip_flag"].as_str()).unwrap();
                let body = xpay::CancelCurrencyPay {
                    openid: s(row, "openid"),
                    env,
                    user_ip,
                    pay_order_id: s(row, "bill_no"),
                    order_id: &id,
                    amount: amount.parse().unwrap(),
                }
                .body();
                assert_eq!(xpay::signature(s(c, "session_key"), &body).as_str(), s(c, "signature"), "case {i}");
                body
            }
            "query_order" => {
                let id = refund_id();
                assert_eq!(id, s(c, "refund_order_id"), "case {i}: the refund's id");
                match s(c, "purpose") {
                    "refund" => xpay::query_order_body(s(row, "openid"), env, OrderKey::OrderId(&id)),
                    "paid_order" => xpay::query_order_body(s(row, "openid"), env, order),
                    other => panic!("case {i}: purpose {other}"),
                }
            }
            "refund_order" => {
                let id = refund_id();
                assert_eq!(id, s(c, "refund_order_id"), "case {i}: the refund's id");
                let left_fee = inp["left_fee"].as_u64().unwrap();
                let refund_fee = cell(row, "amount").map_or(left_fee, |a| a.parse().unwrap());
                assert_eq!(refund_fee, c["refund_fee"].as_u64().unwrap(), "case {i}");
                xpay::RefundOrder {
                    openid: s(row, "openid"),
                    order,
                    refund_order_id: &id,
                    left_fee,
                    refund_fee,
                    biz_meta: row["biz_meta"].as_str().unwrap_or(""),
                    refund_reason: cell(row, "refund_reason").unwrap_or(s(inp, "refund_reason_flag")),
                    req_from: cell(row, "req_from").unwrap_or("1"),
                    env,
                }
                .body()
            }
            other => panic!("case {i}: call {other}"),
        };
        assert_eq!(body, s(c, "body"), "case {i} ({call})");
        assert_eq!(format!("{}&{body}", s(c, "uri")), s(c, "pay_sig_message"), "case {i}");
        assert_eq!(xpay::pay_sig(s(c, "app_key"), s(c, "uri"), &body).as_str(), s(c, "pay_sig"), "case {i}");
    }
    assert_eq!(seen.len(), 3, "every call: {seen:?}");
}
