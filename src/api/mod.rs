//! The WeChat side: what both cancel APIs share (the reply and how it is read,
//! token wire types, the HTTP transport behind the one seam the engine uses)
//! and the switch between them; each API's own knowledge is in its module.

pub mod token;
pub mod v1;
pub mod v2;
pub mod xpay;
pub mod xpay_refund;

use crate::category::Category;
use crate::input::field::ApiInput;
use crate::sign::{CancelParams, Signatures, Value};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What the sender should do after an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The row is settled (final or not, it is not retried in this run).
    Stop,
    /// Retry after a back-off; `slow_down` also slows the whole run.
    Retry { slow_down: bool },
    /// Refresh the access token, re-sign and resend.
    RefreshToken,
    /// An answer that every further request would get too: counts toward the
    /// circuit breaker.
    Breaker,
    /// A signature was refused, and the answer does not say which: the
    /// AppKey's (every request fails: the breaker) or the user's session key
    /// (this row only). A request signed by the AppKey alone tells them apart
    /// (once per run: a right AppKey stays right).
    CheckKey,
}

/// A row of several steps (xpay-refund), driven by its API module: the
/// engine sends what it names and hands back the answer, knowing no API.
pub use self::xpay_refund::Steps as RowSteps;

/// How a run polls: the first wait (5 s; shorter in rehearsals and tests),
/// and how long a refund may take before the row is left `refund_pending`.
#[derive(Clone, Copy, Debug)]
pub struct Polling {
    pub first: Duration,
    pub settle_timeout: Duration,
}

impl Default for Polling {
    fn default() -> Polling {
        Polling { first: Duration::from_secs(5), settle_timeout: Duration::from_secs(600) }
    }
}

/// What an answer leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    /// An answer of the shared table (retry, breaker, token, a final error).
    Answer(Category, Action),
    /// The row goes on to its next step after `wait`; a run stopped
    /// meanwhile records it as `meanwhile` with `note`.
    Next { wait: Duration, meanwhile: Category, note: String },
    /// The row is settled.
    Settle(Category, String),
}

/// Which cancel API a run speaks (`--api`, config `api`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiKind {
    // SPEC §1.1; the doc comments are `--api`'s help.
    /// Mini Game virtual payment, `/cgi-bin/midas/cancelpay`
    #[default]
    V1,
    // SPEC §1.5.
    /// Virtual Payment 2.0, `/wxa/game/cancelpay` (Mini Games from 2022-11 on)
    V2,
    // SPEC §1.6.
    /// Mini Program virtual payment: cancel coin deductions, `/xpay/cancel_currency_pay`
    Xpay,
    // SPEC §1.6.
    /// Mini Program virtual payment: refund paid orders in cash, `/xpay/refund_order`, and poll until settled
    #[serde(rename = "xpay-refund")]
    XpayRefund,
}

impl ApiKind {
    pub fn name(self) -> &'static str {
        match self {
            ApiKind::V1 => "v1",
            ApiKind::V2 => "v2",
            ApiKind::Xpay => "xpay",
            ApiKind::XpayRefund => "xpay-refund",
        }
    }

    /// Whether each operation has an id of the tool's own (v2's
    /// cancellation id), which the ids journal records before it is sent.
    pub fn has_own_ids(self) -> bool {
        self != ApiKind::V1
    }

    /// Whether a row takes several steps (xpay-refund: query, refund, poll).
    pub fn has_steps(self) -> bool {
        self == ApiKind::XpayRefund
    }

    /// A fresh row's steps, for an API whose rows take several.
    pub fn steps(self) -> Option<RowSteps> {
        self.has_steps().then(xpay_refund::Steps::new)
    }

    /// What this API reads from an input, declared by its module: the
    /// fields, their checks, the duplicate key, its own ids.
    pub fn input(self) -> &'static ApiInput {
        match self {
            ApiKind::V1 => &v1::INPUT,
            ApiKind::V2 => &v2::INPUT,
            ApiKind::Xpay => &xpay::INPUT,
            ApiKind::XpayRefund => &xpay_refund::INPUT,
        }
    }

    /// The category and next action for an errcode of this API.
    pub fn classify_errcode(self, errcode: i64) -> (Category, Action) {
        match self {
            ApiKind::V1 => v1::classify_errcode(errcode),
            ApiKind::V2 => v2::classify_errcode(errcode),
            ApiKind::Xpay => xpay::classify_errcode(errcode),
            ApiKind::XpayRefund => xpay_refund::classify_errcode(errcode),
        }
    }

    /// Why the breaker tripped, in words that say what to fix.
    pub fn breaker_message(self, category: Category, errcode: Option<i64>, threshold: u32, sandbox: bool) -> String {
        match self {
            ApiKind::V1 => v1::breaker_message(category, errcode, threshold, sandbox),
            ApiKind::V2 => v2::breaker_message(errcode, threshold, sandbox),
            ApiKind::Xpay | ApiKind::XpayRefund => xpay::breaker_message(errcode, threshold, sandbox),
        }
    }

    /// What an answer to [`Action::CheckKey`]'s request says: `true` when
    /// the AppKey itself was refused.
    pub fn app_key_refused(self, reply: &Reply) -> bool {
        match self {
            ApiKind::Xpay => reply.errcode() == Some(xpay::SIGNATURE_WRONG),
            ApiKind::V1 | ApiKind::V2 | ApiKind::XpayRefund => false,
        }
    }

    /// What the API's own ids are derived from besides the order: v2's
    /// offer_id, the Mini Program's appid for xpay.
    pub fn id_scope<'a>(self, appid: &'a str, offer_id: &'a str) -> &'a str {
        match self {
            ApiKind::Xpay | ApiKind::XpayRefund => appid,
            ApiKind::V1 | ApiKind::V2 => offer_id,
        }
    }
}

/// What came back for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A JSON answer with an integer errcode, and the (2xx) HTTP status it
    /// came with; `detail` keeps the rest of a successful answer (a queried
    /// order's record), for the APIs whose rows take several steps.
    Answer {
        status: u16,
        errcode: i64,
        errmsg: String,
        detail: Option<Box<serde_json::Map<String, serde_json::Value>>>,
    },
    /// An HTTP status other than 2xx (3xx, 429, 5xx, ...) without a usable answer.
    Status(u16),
    /// No usable answer: timeout, reset, refused, unparsable body, no errcode.
    Failed(String),
}

impl Reply {
    /// Category and action for this reply to `api`. HTTP 429 is WeChat's
    /// frequency limit in another form; 5xx and failures leave the outcome
    /// unknown.
    pub fn classify(&self, api: ApiKind) -> (Category, Action) {
        match self {
            Reply::Answer { errcode, .. } => api.classify_errcode(*errcode),
            Reply::Status(429) => (Category::RateLimited, Action::Retry { slow_down: true }),
            Reply::Status(s) if *s >= 500 => (Category::NetworkError, Action::Retry { slow_down: true }),
            Reply::Status(_) | Reply::Failed(_) => (Category::NetworkError, Action::Retry { slow_down: false }),
        }
    }

    /// The HTTP status, when a response came at all.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Reply::Answer { status, .. } | Reply::Status(status) => Some(*status),
            Reply::Failed(_) => None,
        }
    }

    pub fn errcode(&self) -> Option<i64> {
        match self {
            Reply::Answer { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// The message for the results file.
    pub fn message(&self) -> String {
        match self {
            Reply::Answer { errmsg, .. } => errmsg.clone(),
            Reply::Status(s @ 300..=399) => {
                format!("HTTP {s} redirect, not followed (signed bodies go to --base-url only): outcome unknown")
            }
            Reply::Status(s) => format!("HTTP {s} without a usable answer: outcome unknown"),
            Reply::Failed(why) => format!("no usable answer ({why}): outcome unknown"),
        }
    }
}

/// Reads one cancelpay answer. Only a 2xx JSON object whose `errcode` is a
/// JSON integer is an answer: a proxy's `{}`, `{"message": ...}`, an errcode
/// in quotes or as a float says nothing about the order, so it is an unknown
/// outcome (retried, then `network_error`), never a success by default.
pub fn read_answer(status: u16, body: &[u8]) -> Reply {
    use serde_json::Value;
    if !(200..300).contains(&status) {
        return Reply::Status(status);
    }
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
        return Reply::Failed("unparsable answer".into());
    };
    let Some(errcode) = map.get("errcode").and_then(Value::as_i64) else {
        return Reply::Failed("answer without an integer errcode".into());
    };
    let errmsg = match map.get("errmsg") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let detail = (errcode == 0).then(|| {
        map.remove("errcode");
        map.remove("errmsg");
        Box::new(map)
    });
    Reply::Answer { status, errcode, errmsg, detail }
}

/// The JSON answer of cancelpay as the simulator writes it.
#[derive(Debug, Deserialize, Serialize)]
pub struct Answer {
    pub errcode: i64,
    pub errmsg: String,
}

/// The body of `POST /cgi-bin/stable_token`.
#[derive(Debug, Deserialize, Serialize)]
pub struct StableTokenRequest {
    pub grant_type: String,
    pub appid: String,
    pub secret: String,
    pub force_refresh: bool,
}

/// The answer of stable_token as the simulator writes it.
#[derive(Debug, Deserialize, Serialize)]
pub struct StableTokenAnswer {
    pub access_token: String,
    pub expires_in: u64,
}

/// Reads a stable_token answer: a token is had only from a 2xx JSON object
/// with a non-empty string `access_token` and an integer `expires_in` (and
/// an errcode, when present, of 0). Anything else is an error whose message
/// carries no part of the body but WeChat's errcode and errmsg.
pub fn read_grant(status: u16, body: &[u8]) -> Result<Grant, String> {
    use serde_json::Value;
    if (300..400).contains(&status) {
        return Err(format!(
            "stable_token answered HTTP {status} (a redirect): not followed, the AppSecret is sent to --base-url only"
        ));
    }
    let map = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m,
        _ => return Err(format!("stable_token: HTTP {status}, unparsable answer")),
    };
    let errcode = map.get("errcode");
    let errmsg = map.get("errmsg").and_then(Value::as_str).unwrap_or("");
    if errcode.is_some_and(|c| c.as_i64() != Some(0)) {
        let code = errcode.map(Value::to_string).unwrap_or_default();
        return Err(format!("stable_token answered errcode {code} ({errmsg})"));
    }
    if !(200..300).contains(&status) {
        return Err(format!("stable_token: HTTP {status} without a token"));
    }
    match (map.get("access_token").and_then(Value::as_str), map.get("expires_in").and_then(Value::as_u64)) {
        (Some(t), Some(e)) if !t.is_empty() => {
            Ok(Grant { token: crate::secret::Secret::new(t), expires_in: Duration::from_secs(e) })
        }
        _ => Err("stable_token answered without an access_token and an integer expires_in".into()),
    }
}

/// A token handed out by stable_token.
#[derive(Clone, Debug)]
pub struct Grant {
    pub token: crate::secret::Secret,
    pub expires_in: Duration,
}

/// The JSON body of one cancelpay request: the signed fields (ts a number,
/// every other field a string) plus `sig` and, when computed, `mp_sig`.
pub fn cancel_body(params: &CancelParams<'_>, sigs: &Signatures) -> Vec<u8> {
    let mut body = serde_json::Map::new();
    for &(name, value) in params.fields().as_slice() {
        let v = match value {
            Value::Str(s) => serde_json::Value::from(s),
            Value::Num(n) => serde_json::Value::from(n),
        };
        body.insert(name.to_string(), v);
    }
    body.insert("sig".into(), sigs.sig.as_str().into());
    if let Some(mp) = &sigs.mp_sig {
        body.insert("mp_sig".into(), mp.as_str().into());
    }
    serde_json::to_vec(&body).expect("a JSON map serialises")
}

/// The side effect: sending requests to WeChat (or the simulator). One small
/// seam so the sender has one code path.
pub trait Transport: Send + Sync {
    /// POSTs a cancel body to `uri` with the token first in the query
    /// string, then `query_tail` (v2's signatures; empty for v1).
    fn cancel(&self, uri: &str, access_token: &str, query_tail: &str, body: &[u8]) -> Reply;
    /// Calls stable_token; `Err` carries a message free of secrets.
    fn stable_token(&self, appid: &str, secret: &str, force_refresh: bool) -> Result<Grant, String>;
}

/// The reqwest transport: one blocking client shared by every worker, so
/// connections are reused.
pub struct HttpTransport {
    client: reqwest::blocking::Client,
    base: String,
}

impl HttpTransport {
    pub fn new(base: &str, timeout: Duration, concurrency: usize) -> anyhow::Result<HttpTransport> {
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(concurrency.max(1))
            // A redirect would re-post the AppSecret or a signed body to
            // another host: a 3xx is an unusable answer, never followed.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("midas-cancel/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpTransport { client, base: base.trim_end_matches('/').to_string() })
    }

    fn post(&self, url: &str, body: Vec<u8>) -> Result<reqwest::blocking::Response, String> {
        self.client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            // without_url: the URL carries the access token.
            .map_err(|e| describe(&e.without_url()))
    }
}

/// A transport error in a few words, without the URL.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "broken body"
    } else {
        "transport error"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

impl Transport for HttpTransport {
    fn cancel(&self, uri: &str, access_token: &str, query_tail: &str, body: &[u8]) -> Reply {
        let url = format!("{}{uri}?access_token={access_token}{query_tail}", self.base);
        let resp = match self.post(&url, body.to_vec()) {
            Ok(r) => r,
            Err(why) => return Reply::Failed(why),
        };
        let status = resp.status().as_u16();
        match resp.bytes() {
            Ok(bytes) => read_answer(status, &bytes),
            Err(e) => Reply::Failed(describe(&e.without_url())),
        }
    }

    fn stable_token(&self, appid: &str, secret: &str, force_refresh: bool) -> Result<Grant, String> {
        let body = StableTokenRequest {
            grant_type: "client_credential".into(),
            appid: appid.into(),
            secret: secret.into(),
            force_refresh,
        };
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let resp = self.post(&format!("{}/cgi-bin/stable_token", self.base), body)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().map_err(|e| describe(&e.without_url()))?;
        read_grant(status, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Category::*;

    #[test]
    fn replies_without_answer() {
        assert_eq!(Reply::Status(429).classify(ApiKind::V1).0, RateLimited);
        assert_eq!(Reply::Status(502).classify(ApiKind::V1), (NetworkError, Action::Retry { slow_down: true }));
        assert_eq!(
            Reply::Failed("timeout".into()).classify(ApiKind::V1),
            (NetworkError, Action::Retry { slow_down: false })
        );
        assert!(Reply::Status(503).message().contains("outcome unknown"));
        assert_eq!(Reply::Status(307).classify(ApiKind::V1), (NetworkError, Action::Retry { slow_down: false }));
        assert!(Reply::Status(307).message().contains("not followed"));
    }

    /// Regression (answer_without_errcode_recorded_as_cancelled): `{}` and
    /// its kin were read as errcode 0.
    #[test]
    fn only_an_integer_errcode_is_an_answer() {
        let ok = |code: i64, msg: &str| Reply::Answer {
            status: 200,
            errcode: code,
            errmsg: msg.into(),
            detail: (code == 0).then(Default::default),
        };
        let table: &[(u16, &str, Option<Reply>)] = &[
            (200, r#"{"errcode":0,"errmsg":"ok"}"#, Some(ok(0, "ok"))),
            (200, r#"{"errcode":90015}"#, Some(ok(90015, ""))),
            (200, r#"{"errcode":-1,"errmsg":"busy","bill_no":"B1"}"#, Some(ok(-1, "busy"))),
            (200, r#"{"errcode":90013,"errmsg":7}"#, Some(ok(90013, "7"))),
            (200, "{}", None),
            (200, r#"{"message":"Service Unavailable"}"#, None),
            (200, r#"{"errmsg":"ok"}"#, None),
            (200, r#"{"errcode":"0"}"#, None),
            (200, r#"{"errcode":0.0}"#, None),
            (200, r#"{"errcode":null}"#, None),
            (200, r#"{"errcode":18446744073709551615}"#, None),
            (200, "[0]", None),
            (200, "0", None),
            (200, "", None),
            (200, "<html>ok</html>", None),
        ];
        for (status, body, want) in table {
            let got = read_answer(*status, body.as_bytes());
            match want {
                Some(w) => assert_eq!(&got, w, "{body}"),
                None => {
                    assert!(matches!(got, Reply::Failed(_)), "{body}: {got:?}");
                    assert_eq!(got.classify(ApiKind::V1), (NetworkError, Action::Retry { slow_down: false }), "{body}");
                }
            }
        }
        assert_eq!(read_answer(302, br#"{"errcode":0}"#), Reply::Status(302));
        assert_eq!(read_answer(502, br#"{"errcode":0}"#), Reply::Status(502));
    }

    #[test]
    fn a_token_needs_a_string_token_and_an_integer_lifetime() {
        assert!(read_grant(200, br#"{"access_token":"T","expires_in":7200}"#).is_ok());
        assert!(read_grant(200, br#"{"access_token":"T","expires_in":7200,"errcode":0}"#).is_ok());
        for body in [
            r#"{}"#,
            r#"{"access_token":"","expires_in":7200}"#,
            r#"{"access_token":5,"expires_in":7200}"#,
            r#"{"access_token":"T","expires_in":"7200"}"#,
            r#"{"access_token":"T","expires_in":7200,"errcode":40125}"#,
            r#"{"errcode":40125,"errmsg":"invalid appsecret"}"#,
            "nope",
        ] {
            assert!(read_grant(200, body.as_bytes()).is_err(), "{body}");
        }
        let e = read_grant(307, b"").unwrap_err();
        assert!(e.contains("redirect") && e.contains("not followed"), "{e}");
        assert!(read_grant(500, br#"{"access_token":"T","expires_in":7200}"#).is_err());
    }
}
