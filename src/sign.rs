//! The Midas payment signature algorithm (SPEC §1.2): pure functions, no I/O.
//!
//! `sig` is HMAC-SHA256 keyed with the app key over the sorted body fields plus
//! `org_loc`, `method` and `secret`; `mp_sig` is HMAC-SHA256 keyed with the
//! user's session key over the same fields plus `access_token` and `sig`.
//! This module is also the one place that knows which fields a cancelpay body
//! carries: the HTTP body is built from [`CancelParams::fields`].

use hmac::{Hmac, Mac};
use sha2::Sha256;

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

/// The body fields except `sig`/`mp_sig`, sorted by name in ASCII order, with
/// empty optional fields left out. A fixed array keeps signing allocation-free.
pub struct Fields<'a> {
    items: [(&'static str, Value<'a>); 9],
    len: usize,
}

impl<'a> Fields<'a> {
    pub fn as_slice(&self) -> &[(&'static str, Value<'a>)] {
        &self.items[..self.len]
    }
}

impl<'a> CancelParams<'a> {
    /// The signed body fields in ASCII order of their names.
    pub fn fields(&self) -> Fields<'a> {
        let none = ("", Value::Num(0));
        let mut f = Fields { items: [none; 9], len: 0 };
        let mut push = |k: &'static str, v: Value<'a>| {
            f.items[f.len] = (k, v);
            f.len += 1;
        };
        // Written in ASCII order so no sort is needed: appid < bill_no <
        // offer_id < openid < pay_item < pf < ts < user_ip < zone_id.
        push("appid", Value::Str(self.appid));
        push("bill_no", Value::Str(self.bill_no));
        push("offer_id", Value::Str(self.offer_id));
        push("openid", Value::Str(self.openid));
        if let Some(p) = self.pay_item.filter(|p| !p.is_empty()) {
            push("pay_item", Value::Str(p));
        }
        push("pf", Value::Str(self.pf));
        push("ts", Value::Num(self.ts));
        if let Some(ip) = self.user_ip.filter(|p| !p.is_empty()) {
            push("user_ip", Value::Str(ip));
        }
        push("zone_id", Value::Str(self.zone_id));
        f
    }
}

/// Feeds the signing input to `sink` piece by piece: the sorted `k=v` pairs of
/// `fields` merged with the (sorted) `extra` pairs, joined by `&`, then
/// `&org_loc=URI&method=POST&NAME=SECRET`. The only place that knows the layout
/// of the string, whether it ends up in an HMAC or in a test's String.
fn feed_signing_input(
    sink: &mut impl FnMut(&[u8]),
    fields: &[(&str, Value<'_>)],
    extra: &[(&str, Value<'_>)],
    uri: &str,
    secret_name: &str,
    secret: &str,
) {
    let mut first = true;
    let mut pair = |sink: &mut dyn FnMut(&[u8]), k: &str, v: Value<'_>| {
        if !first {
            sink(b"&");
        }
        first = false;
        sink(k.as_bytes());
        sink(b"=");
        match v {
            Value::Str(s) => sink(s.as_bytes()),
            Value::Num(n) => sink(itoa::Buffer::new().format(n).as_bytes()),
        }
    };
    let (mut a, mut b) = (fields.iter().peekable(), extra.iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if y.0 < x.0 => b.next(),
            (Some(_), _) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        if let Some(&(k, v)) = next {
            pair(sink, k, v);
        }
    }
    pair(sink, "org_loc", Value::Str(uri));
    pair(sink, "method", Value::Str("POST"));
    pair(sink, secret_name, Value::Str(secret));
}

/// The extra fields of `mp_sig`, in ASCII order.
fn mp_extra<'a>(sig: &'a str, access_token: &'a str) -> [(&'static str, Value<'a>); 2] {
    [("access_token", Value::Str(access_token)), ("sig", Value::Str(sig))]
}

fn to_string(fields: &[(&str, Value<'_>)], extra: &[(&str, Value<'_>)], uri: &str, name: &str, secret: &str) -> String {
    let mut buf = Vec::with_capacity(512);
    feed_signing_input(&mut |b: &[u8]| buf.extend_from_slice(b), fields, extra, uri, name, secret);
    String::from_utf8(buf).expect("pieces are UTF-8")
}

/// The exact string `sig` is computed over (exposed for tests and debugging;
/// it contains the app key, so it must never be printed).
pub fn sig_string(params: &CancelParams<'_>, uri: &str, app_key: &str) -> String {
    to_string(params.fields().as_slice(), &[], uri, "secret", app_key)
}

/// The exact string `mp_sig` is computed over (contains the session key).
pub fn mp_sig_string(params: &CancelParams<'_>, uri: &str, sig: &str, access_token: &str, session_key: &str) -> String {
    to_string(params.fields().as_slice(), &mp_extra(sig, access_token), uri, "session_key", session_key)
}

/// A signature as 64 lowercase hex digits, held inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hex64([u8; 64]);

impl Hex64 {
    pub fn as_str(&self) -> &str {
        // Only ever filled by hex::encode_to_slice, which writes ASCII.
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl std::fmt::Debug for Hex64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Hex64 {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

fn hmac_hex(
    mut mac: HmacSha256,
    fields: &[(&str, Value<'_>)],
    extra: &[(&str, Value<'_>)],
    uri: &str,
    name: &str,
    secret: &str,
) -> Hex64 {
    // One update of the assembled input: dozens of tiny updates spent more
    // time in the hasher's block buffering than in SHA-256 itself.
    let mut buf = Vec::with_capacity(512);
    feed_signing_input(&mut |b: &[u8]| buf.extend_from_slice(b), fields, extra, uri, name, secret);
    mac.update(&buf);
    let mut out = [0u8; 64];
    hex::encode_to_slice(mac.finalize().into_bytes(), &mut out).expect("32 bytes make 64 hex digits");
    Hex64(out)
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
    pub sig: Hex64,
    pub mp_sig: Option<Hex64>,
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
    pub fn sig(&self, params: &CancelParams<'_>) -> Hex64 {
        hmac_hex(self.app_mac.clone(), params.fields().as_slice(), &[], self.uri, "secret", &self.app_key)
    }

    /// `mp_sig` of one request, given its `sig`.
    pub fn mp_sig(&self, params: &CancelParams<'_>, sig: &str, access_token: &str, session_key: &str) -> Hex64 {
        let mac = HmacSha256::new_from_slice(session_key.as_bytes()).expect("HMAC takes any key length");
        let extra = mp_extra(sig, access_token);
        hmac_hex(mac, params.fields().as_slice(), &extra, self.uri, "session_key", session_key)
    }

    /// Both signatures; `mp_sig` only when `token_and_session_key` is given.
    pub fn sign(&self, params: &CancelParams<'_>, token_and_session_key: Option<(&str, &str)>) -> Signatures {
        let sig = self.sig(params);
        let mp_sig = token_and_session_key.map(|(token, sk)| self.mp_sig(params, sig.as_str(), token, sk));
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
    /// directly with the same input feeder the cancelpay signer uses.
    #[test]
    fn official_getbalance_vector() {
        let p = getbalance_params();
        let fields: Vec<_> = p.fields().as_slice().iter().copied().filter(|(k, _)| *k != "bill_no").collect();
        let uri = "/cgi-bin/midas/getbalance";
        let key = "zNLgAGgqsEWJOg1nFVaO5r7fAlIQxr1u";
        let mac = |k: &str| HmacSha256::new_from_slice(k.as_bytes()).unwrap();
        let sig = hmac_hex(mac(key), &fields, &[], uri, "secret", key);
        assert_eq!(sig, "1ad64e8dcb2ec1dc486b7fdf01f4a15159fc623dc3422470e51cf6870734726b");
        let sk = "V7Q38/i2KXaqrQyl2Yx9Hg==";
        let mp_sig = hmac_hex(mac(sk), &fields, &mp_extra(sig.as_str(), "ACCESSTOKEN"), uri, "session_key", sk);
        assert_eq!(mp_sig, "ff4c5bb39dea1002a8f03be0438724e1a8bcea5ebce8f221f9b9fea3bcf3bf76");
    }

    #[test]
    fn fields_are_in_ascii_order() {
        let mut p = getbalance_params();
        p.bill_no = "b";
        p.user_ip = Some("1.2.3.4");
        p.pay_item = Some("x");
        let names: Vec<_> = p.fields().as_slice().iter().map(|(k, _)| *k).collect();
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
