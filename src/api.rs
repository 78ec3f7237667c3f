//! The WeChat side: wire types, the errcode → category table (SPEC §1.3), and
//! the HTTP transport behind the one seam the sender uses.

use crate::category::Category;
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
}

/// The category and next action for a WeChat errcode: the one copy of the
/// SPEC's errcode table.
pub fn classify_errcode(errcode: i64) -> (Category, Action) {
    use Category::*;
    match errcode {
        0 => (Cancelled, Action::Stop),
        90015 => (AlreadyReturned, Action::Stop),
        90014 => (AlreadyConfirmed, Action::Stop),
        90000 => (NotFound, Action::Stop),
        90018 => (ParamError, Action::Stop),
        -1 => (SystemBusy, Action::Retry { slow_down: true }),
        90016 => (Processing, Action::Retry { slow_down: false }),
        45009 => (RateLimited, Action::Retry { slow_down: true }),
        40001 | 42001 | 40014 => (TokenError, Action::RefreshToken),
        90010 => (SessionExpired, Action::Stop),
        90009 => (MpSigError, Action::Stop),
        90011 => (SigError, Action::Breaker),
        90017 => (NoPermission, Action::Breaker),
        _ => (UnknownError, Action::Stop),
    }
}

/// What came back for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A JSON answer with an errcode.
    Answer { errcode: i64, errmsg: String },
    /// An HTTP error status (429, 5xx, ...) without a usable answer.
    Status(u16),
    /// No usable answer: timeout, reset, refused, unparsable body.
    Failed(String),
}

impl Reply {
    /// Category and action for this reply. HTTP 429 is WeChat's frequency
    /// limit in another form; 5xx and failures leave the outcome unknown.
    pub fn classify(&self) -> (Category, Action) {
        match self {
            Reply::Answer { errcode, .. } => classify_errcode(*errcode),
            Reply::Status(429) => (Category::RateLimited, Action::Retry { slow_down: true }),
            Reply::Status(s) if *s >= 500 => (Category::NetworkError, Action::Retry { slow_down: true }),
            Reply::Status(_) | Reply::Failed(_) => (Category::NetworkError, Action::Retry { slow_down: false }),
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
            Reply::Status(s) => format!("HTTP {s} without a usable answer: outcome unknown"),
            Reply::Failed(why) => format!("no usable answer ({why}): outcome unknown"),
        }
    }
}

/// The JSON answer of cancelpay (and of errors from stable_token).
#[derive(Debug, Deserialize, Serialize)]
pub struct Answer {
    #[serde(default)]
    pub errcode: i64,
    #[serde(default)]
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

/// The answer of stable_token.
#[derive(Debug, Deserialize, Serialize)]
pub struct StableTokenAnswer {
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub errcode: i64,
    #[serde(default)]
    pub errmsg: String,
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
    /// POSTs a cancelpay body to `uri` with the token in the query string.
    fn cancel(&self, uri: &str, access_token: &str, body: &[u8]) -> Reply;
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
    fn cancel(&self, uri: &str, access_token: &str, body: &[u8]) -> Reply {
        let url = format!("{}{uri}?access_token={access_token}", self.base);
        let resp = match self.post(&url, body.to_vec()) {
            Ok(r) => r,
            Err(why) => return Reply::Failed(why),
        };
        let status = resp.status();
        let bytes = match resp.bytes() {
            Ok(b) => b,
            Err(e) => return Reply::Failed(describe(&e.without_url())),
        };
        match serde_json::from_slice::<Answer>(&bytes) {
            Ok(a) if status.is_success() => Reply::Answer { errcode: a.errcode, errmsg: a.errmsg },
            _ if !status.is_success() => Reply::Status(status.as_u16()),
            _ => Reply::Failed("unparsable answer".into()),
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
        let status = resp.status();
        let bytes = resp.bytes().map_err(|e| describe(&e.without_url()))?;
        let a: StableTokenAnswer =
            serde_json::from_slice(&bytes).map_err(|_| format!("stable_token: HTTP {status}, unparsable answer"))?;
        match (a.access_token, a.expires_in) {
            (Some(t), Some(e)) if a.errcode == 0 && !t.is_empty() => {
                Ok(Grant { token: crate::secret::Secret::new(t), expires_in: Duration::from_secs(e) })
            }
            _ => Err(format!("stable_token answered errcode {} ({})", a.errcode, a.errmsg)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Category::*;

    #[test]
    fn errcode_table() {
        let table: &[(i64, Category, Action)] = &[
            (0, Cancelled, Action::Stop),
            (90015, AlreadyReturned, Action::Stop),
            (90014, AlreadyConfirmed, Action::Stop),
            (90000, NotFound, Action::Stop),
            (90018, ParamError, Action::Stop),
            (-1, SystemBusy, Action::Retry { slow_down: true }),
            (90016, Processing, Action::Retry { slow_down: false }),
            (45009, RateLimited, Action::Retry { slow_down: true }),
            (40001, TokenError, Action::RefreshToken),
            (42001, TokenError, Action::RefreshToken),
            (40014, TokenError, Action::RefreshToken),
            (90010, SessionExpired, Action::Stop),
            (90009, MpSigError, Action::Stop),
            (90011, SigError, Action::Breaker),
            (90017, NoPermission, Action::Breaker),
            (90012, UnknownError, Action::Stop),
            (40013, UnknownError, Action::Stop),
        ];
        for &(code, cat, action) in table {
            assert_eq!(classify_errcode(code), (cat, action), "errcode {code}");
        }
    }

    #[test]
    fn replies_without_answer() {
        assert_eq!(Reply::Status(429).classify().0, RateLimited);
        assert_eq!(Reply::Status(502).classify(), (NetworkError, Action::Retry { slow_down: true }));
        assert_eq!(Reply::Failed("timeout".into()).classify(), (NetworkError, Action::Retry { slow_down: false }));
        assert!(Reply::Status(503).message().contains("outcome unknown"));
    }
}
