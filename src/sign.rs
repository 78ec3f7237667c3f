//! The Midas payment signature algorithm (SPEC §1.2): pure functions, no I/O.
//!
//! `sig` is HMAC-SHA256 keyed with the app key over the sorted body fields plus
//! `org_loc`, `method` and `secret`; `mp_sig` is HMAC-SHA256 keyed with the
//! user's session key over the same fields plus `access_token` and `sig`.
//! This module is also the one place that knows which fields a cancelpay body
//! carries: the HTTP body is built from [`CancelParams::fields`].

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt::Write as _;

type HmacSha256 = Hmac<Sha256>;

/// Production cancelpay path (also the production `org_loc`).
pub const PROD_URI: &str = "/cgi-bin/midas/cancelpay";
/// Sandbox cancelpay path (also the sandbox `org_loc`).
pub const SANDBOX_URI: &str = "/cgi-bin/midas/sandbox/cancelpay";

/// The request path for an environment.
pub fn cancel_uri(sandbox: bool) -> &'static str {
    if sandbox {
        SANDBOX_URI
    } else {
        PROD_URI
    }
}

/// The signed fields of one cancelpay request. Optional fields that are `None`
/// (or empty) are neither sent nor signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelParams<'a> {
    pub openid: &'a str,
    pub appid: &'a str,
    pub offer_id: &'a str,
    pub ts: u64,
    pub zone_id: &'a str,
    pub pf: &'a str,
    pub bill_no: &'a str,
    pub user_ip: Option<&'a str>,
    pub pay_item: Option<&'a str>,
}

/// A field value as it is signed: strings raw, `ts` in decimal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Str(&'a str),
    Num(u64),
}

impl CancelParams<'_> {
    /// The body fields except `sig`/`mp_sig`, sorted by name in ASCII order.
    /// Empty optional fields are left out.
    pub fn fields(&self) -> Vec<(&'static str, Value<'_>)> {
        let mut f = Vec::with_capacity(9);
        // Written in ASCII order so no sort is needed: appid < bill_no <
        // offer_id < openid < pay_item < pf < ts < user_ip < zone_id.
        f.push(("appid", Value::Str(self.appid)));
        f.push(("bill_no", Value::Str(self.bill_no)));
        f.push(("offer_id", Value::Str(self.offer_id)));
        f.push(("openid", Value::Str(self.openid)));
        if let Some(p) = self.pay_item.filter(|p| !p.is_empty()) {
            f.push(("pay_item", Value::Str(p)));
        }
        f.push(("pf", Value::Str(self.pf)));
        f.push(("ts", Value::Num(self.ts)));
        if let Some(ip) = self.user_ip.filter(|p| !p.is_empty()) {
            f.push(("user_ip", Value::Str(ip)));
        }
        f.push(("zone_id", Value::Str(self.zone_id)));
        f
    }
}

fn push_pair(buf: &mut String, name: &str, value: Value<'_>) {
    if !buf.is_empty() {
        buf.push('&');
    }
    buf.push_str(name);
    buf.push('=');
    match value {
        Value::Str(s) => buf.push_str(s),
        Value::Num(n) => {
            let _ = write!(buf, "{n}");
        }
    }
}

/// Joins sorted `k=v` pairs and the trailer `&org_loc=URI&method=POST&NAME=SECRET`.
fn signing_string(buf: &mut String, fields: &[(&str, Value<'_>)], uri: &str, secret_name: &str, secret: &str) {
    buf.clear();
    for &(k, v) in fields {
        push_pair(buf, k, v);
    }
    push_pair(buf, "org_loc", Value::Str(uri));
    push_pair(buf, "method", Value::Str("POST"));
    push_pair(buf, secret_name, Value::Str(secret));
}

/// The fields of `mp_sig`: the body fields plus `access_token` and `sig`, sorted.
fn mp_fields<'a>(params: &'a CancelParams<'a>, sig: &'a str, access_token: &'a str) -> Vec<(&'static str, Value<'a>)> {
    let mut f = params.fields();
    f.push(("access_token", Value::Str(access_token)));
    f.push(("sig", Value::Str(sig)));
    f.sort_unstable_by_key(|&(k, _)| k);
    f
}

/// The exact string `sig` is computed over (exposed for tests and debugging;
/// it contains the app key, so it must never be printed).
pub fn sig_string(params: &CancelParams<'_>, uri: &str, app_key: &str) -> String {
    let mut buf = String::new();
    signing_string(&mut buf, &params.fields(), uri, "secret", app_key);
    buf
}

/// The exact string `mp_sig` is computed over (contains the session key).
pub fn mp_sig_string(params: &CancelParams<'_>, uri: &str, sig: &str, access_token: &str, session_key: &str) -> String {
    let mut buf = String::new();
    signing_string(&mut buf, &mp_fields(params, sig, access_token), uri, "session_key", session_key);
    buf
}

fn hmac_hex(mac: HmacSha256, message: &str) -> String {
    let mut mac = mac;
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Signs requests for one environment with one app key. The HMAC key state of
/// the app key is computed once and cloned per row, instead of re-keying.
#[derive(Clone)]
pub struct Signer {
    app_mac: HmacSha256,
    app_key: String,
    uri: &'static str,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("uri", &self.uri).finish_non_exhaustive()
    }
}

/// `sig` and, when a token and session key were at hand, `mp_sig`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signatures {
    pub sig: String,
    pub mp_sig: Option<String>,
}

impl Signer {
    pub fn new(app_key: &str, sandbox: bool) -> Self {
        Signer {
            // HMAC accepts keys of any length, so this cannot fail.
            app_mac: HmacSha256::new_from_slice(app_key.as_bytes()).expect("HMAC takes any key length"),
            app_key: app_key.to_string(),
            uri: cancel_uri(sandbox),
        }
    }

    /// The path (and `org_loc`) this signer signs for.
    pub fn uri(&self) -> &'static str {
        self.uri
    }

    /// `sig` of one request.
    pub fn sig(&self, params: &CancelParams<'_>) -> String {
        let mut buf = String::with_capacity(320);
        signing_string(&mut buf, &params.fields(), self.uri, "secret", &self.app_key);
        hmac_hex(self.app_mac.clone(), &buf)
    }

    /// `mp_sig` of one request, given its `sig`.
    pub fn mp_sig(&self, params: &CancelParams<'_>, sig: &str, access_token: &str, session_key: &str) -> String {
        let mut buf = String::with_capacity(480);
        signing_string(&mut buf, &mp_fields(params, sig, access_token), self.uri, "session_key", session_key);
        let mac = HmacSha256::new_from_slice(session_key.as_bytes()).expect("HMAC takes any key length");
        hmac_hex(mac, &buf)
    }

    /// Both signatures; `mp_sig` only when `token_and_session_key` is given.
    pub fn sign(&self, params: &CancelParams<'_>, token_and_session_key: Option<(&str, &str)>) -> Signatures {
        let sig = self.sig(params);
        let mp_sig = token_and_session_key.map(|(token, sk)| self.mp_sig(params, &sig, token, sk));
        Signatures { sig, mp_sig }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn getbalance_params() -> CancelParams<'static> {
        CancelParams {
            openid: "odkx20ENSNa2w5y3g_qOkOvBNM1g",
            appid: "wx1234567",
            offer_id: "12345678",
            ts: 1507530737,
            zone_id: "1",
            pf: "android",
            bill_no: "",
            user_ip: None,
            pay_item: None,
        }
    }

    /// The official getbalance vector has no bill_no, so sign its fields
    /// directly with the same string builder the cancelpay signer uses.
    #[test]
    fn official_getbalance_vector() {
        let p = getbalance_params();
        let fields: Vec<_> = p.fields().into_iter().filter(|(k, _)| *k != "bill_no").collect();
        let uri = "/cgi-bin/midas/getbalance";
        let key = "zNLgAGgqsEWJOg1nFVaO5r7fAlIQxr1u";
        let mut s = String::new();
        signing_string(&mut s, &fields, uri, "secret", key);
        let sig = hmac_hex(HmacSha256::new_from_slice(key.as_bytes()).unwrap(), &s);
        assert_eq!(sig, "1ad64e8dcb2ec1dc486b7fdf01f4a15159fc623dc3422470e51cf6870734726b");

        let mut mp = fields.clone();
        mp.push(("access_token", Value::Str("ACCESSTOKEN")));
        mp.push(("sig", Value::Str(&sig)));
        mp.sort_unstable_by_key(|&(k, _)| k);
        let sk = "V7Q38/i2KXaqrQyl2Yx9Hg==";
        signing_string(&mut s, &mp, uri, "session_key", sk);
        let mp_sig = hmac_hex(HmacSha256::new_from_slice(sk.as_bytes()).unwrap(), &s);
        assert_eq!(mp_sig, "ff4c5bb39dea1002a8f03be0438724e1a8bcea5ebce8f221f9b9fea3bcf3bf76");
    }

    #[test]
    fn fields_are_in_ascii_order() {
        let mut p = getbalance_params();
        p.bill_no = "b";
        p.user_ip = Some("1.2.3.4");
        p.pay_item = Some("x");
        let names: Vec<_> = p.fields().into_iter().map(|(k, _)| k).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 9);
    }

    #[test]
    fn empty_optional_fields_are_not_signed() {
        let mut with_empty = getbalance_params();
        with_empty.bill_no = "b";
        with_empty.user_ip = Some("");
        with_empty.pay_item = Some("");
        let mut without = with_empty.clone();
        without.user_ip = None;
        without.pay_item = None;
        let signer = Signer::new("k", false);
        assert_eq!(signer.sig(&with_empty), signer.sig(&without));
        assert!(!sig_string(&with_empty, PROD_URI, "k").contains("user_ip"));
    }

    #[test]
    fn sandbox_signs_with_the_sandbox_uri() {
        let mut p = getbalance_params();
        p.bill_no = "b";
        assert_ne!(Signer::new("k", true).sig(&p), Signer::new("k", false).sig(&p));
        assert_eq!(Signer::new("k", true).uri(), SANDBOX_URI);
    }
}
