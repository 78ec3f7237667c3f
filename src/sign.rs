//! The Midas payment signature algorithm (SPEC §1.2): pure functions, no I/O.
//!
//! `sig` is HMAC-SHA256 keyed with the app key over the sorted body fields plus
//! `org_loc`, `method` and `secret`; `mp_sig` is HMAC-SHA256 keyed with the
//! user's session key over the same fields plus `access_token` and `sig`.
//! This module is also the one place that knows which fields a cancelpay body
//! carries: the HTTP body is built from [`CancelParams::fields`].

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub(crate) type HmacSha256 = Hmac<Sha256>;

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
    items: [(&'static str, Value<'a>); MAX_FIELDS],
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
        let mut f = Fields { items: [none; MAX_FIELDS], len: 0 };
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

/// Most body fields a request has (the length of [`Fields`]).
const MAX_FIELDS: usize = 9;

/// The body fields written once as sorted `k=v` pairs joined by `&`, with
/// where each pair starts, so that both signing inputs are spliced from it
/// instead of being assembled piece by piece twice: the pieces are tiny, and
/// assembling them cost a third as much as the two HMACs.
struct Pairs {
    /// `starts[i]` is where pair `i` begins; `starts[n]` is one past the end
    /// plus one, as if another pair followed, so pair runs end at `starts[j] - 1`.
    starts: [usize; MAX_FIELDS + 1],
    names: [&'static str; MAX_FIELDS],
    n: usize,
}

impl Pairs {
    /// Writes `fields` into `buf` (which must be empty).
    fn write(buf: &mut Vec<u8>, fields: &[(&'static str, Value<'_>)]) -> Pairs {
        debug_assert!(buf.is_empty());
        let mut p = Pairs { starts: [0; MAX_FIELDS + 1], names: [""; MAX_FIELDS], n: fields.len() };
        for (i, &(k, v)) in fields.iter().enumerate() {
            if i > 0 {
                buf.push(b'&');
            }
            p.starts[i] = buf.len();
            p.names[i] = k;
            push_pair(buf, k, v);
        }
        p.starts[p.n] = buf.len() + 1;
        p
    }

    /// Appends to `out` the pairs of `body` merged with the sorted `extra`
    /// pairs, joined by `&`; runs of body pairs are copied whole.
    fn merge_into(&self, out: &mut Vec<u8>, body: &[u8], extra: &[(&str, Value<'_>)]) {
        let start = out.len();
        let sep = |out: &mut Vec<u8>| {
            if out.len() != start {
                out.push(b'&');
            }
        };
        let mut from = 0;
        for &(k, v) in extra {
            let to = self.names[..self.n].partition_point(|name| *name < k);
            if to > from {
                sep(out);
                out.extend_from_slice(&body[self.starts[from]..self.starts[to] - 1]);
                from = to;
            }
            sep(out);
            push_pair(out, k, v);
        }
        if self.n > from {
            sep(out);
            out.extend_from_slice(&body[self.starts[from]..self.starts[self.n] - 1]);
        }
    }

    /// Appends a whole signing input to `out`: the pairs merged with
    /// `extra`, then `tail` (see [`tail`]) and the secret.
    fn input_into(&self, out: &mut Vec<u8>, body: &[u8], extra: &[(&str, Value<'_>)], tail: &[u8], secret: &str) {
        self.merge_into(out, body, extra);
        out.extend_from_slice(tail);
        out.extend_from_slice(secret.as_bytes());
    }
}

fn push_pair(buf: &mut Vec<u8>, k: &str, v: Value<'_>) {
    buf.extend_from_slice(k.as_bytes());
    buf.push(b'=');
    match v {
        Value::Str(s) => buf.extend_from_slice(s.as_bytes()),
        Value::Num(n) => buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
    }
}

/// What follows the pairs in a signing input, up to the secret itself:
/// `&org_loc=URI&method=POST&NAME=`.
fn tail(uri: &str, secret_name: &str) -> Vec<u8> {
    format!("&org_loc={uri}&method=POST&{secret_name}=").into_bytes()
}

/// The extra fields of `mp_sig`, in ASCII order.
fn mp_extra<'a>(sig: &'a str, access_token: &'a str) -> [(&'static str, Value<'a>); 2] {
    [("access_token", Value::Str(access_token)), ("sig", Value::Str(sig))]
}

/// The signing input: the sorted `k=v` pairs of `fields` merged with the
/// sorted `extra` pairs, joined by `&`, then `&org_loc=URI&method=POST&NAME=SECRET`.
/// [`Signer::sign`] builds the same bytes from the same parts.
fn to_string(
    fields: &[(&'static str, Value<'_>)],
    extra: &[(&str, Value<'_>)],
    uri: &str,
    name: &str,
    secret: &str,
) -> String {
    let mut body = Vec::with_capacity(INPUT_CAPACITY);
    let pairs = Pairs::write(&mut body, fields);
    let mut out = Vec::with_capacity(INPUT_CAPACITY);
    pairs.input_into(&mut out, &body, extra, &tail(uri, name), secret);
    String::from_utf8(out).expect("pieces are UTF-8")
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

/// Room for a typical signing input, so the buffer is allocated once per row.
const INPUT_CAPACITY: usize = 768;

/// HMAC of one assembled input (a single update: many tiny updates spent more
/// time in the hasher's block buffering than in SHA-256 itself), as hex.
pub(crate) fn hmac_hex(mut mac: HmacSha256, input: &[u8]) -> Hex64 {
    mac.update(input);
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
    sig_tail: Vec<u8>,
    mp_sig_tail: Vec<u8>,
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
        let uri = cancel_uri(sandbox);
        Signer {
            // HMAC accepts keys of any length, so this cannot fail.
            app_mac: HmacSha256::new_from_slice(app_key.as_bytes()).expect("HMAC takes any key length"),
            app_key: app_key.to_string(),
            uri,
            sig_tail: tail(uri, "secret"),
            mp_sig_tail: tail(uri, "session_key"),
        }
    }

    /// The path (and `org_loc`) this signer signs for.
    pub fn uri(&self) -> &'static str {
        self.uri
    }

    /// `sig` of one request.
    pub fn sig(&self, params: &CancelParams<'_>) -> Hex64 {
        self.sign(params, None).sig
    }

    /// `mp_sig` of one request, given its `sig`.
    pub fn mp_sig(&self, params: &CancelParams<'_>, sig: &str, access_token: &str, session_key: &str) -> Hex64 {
        let mut body = Vec::with_capacity(INPUT_CAPACITY);
        let pairs = Pairs::write(&mut body, params.fields().as_slice());
        self.mp_sig_of(&pairs, &body, sig, access_token, session_key)
    }

    fn mp_sig_of(&self, pairs: &Pairs, body: &[u8], sig: &str, access_token: &str, session_key: &str) -> Hex64 {
        let mut input = Vec::with_capacity(INPUT_CAPACITY);
        pairs.input_into(&mut input, body, &mp_extra(sig, access_token), &self.mp_sig_tail, session_key);
        hmac_hex(HmacSha256::new_from_slice(session_key.as_bytes()).expect("HMAC takes any key length"), &input)
    }

    /// Both signatures; `mp_sig` only when `token_and_session_key` is given.
    /// The body pairs are written once for both.
    pub fn sign(&self, params: &CancelParams<'_>, token_and_session_key: Option<(&str, &str)>) -> Signatures {
        let mut buf = Vec::with_capacity(INPUT_CAPACITY);
        let pairs = Pairs::write(&mut buf, params.fields().as_slice());
        let body_len = buf.len();
        // The sig input is the body pairs as they stand, then the tail.
        buf.extend_from_slice(&self.sig_tail);
        buf.extend_from_slice(self.app_key.as_bytes());
        let sig = hmac_hex(self.app_mac.clone(), &buf);
        let mp_sig =
            token_and_session_key.map(|(token, sk)| self.mp_sig_of(&pairs, &buf[..body_len], sig.as_str(), token, sk));
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
        let sig = hmac_hex(mac(key), to_string(&fields, &[], uri, "secret", key).as_bytes());
        assert_eq!(sig, "1ad64e8dcb2ec1dc486b7fdf01f4a15159fc623dc3422470e51cf6870734726b");
        let sk = "V7Q38/i2KXaqrQyl2Yx9Hg==";
        let input = to_string(&fields, &mp_extra(sig.as_str(), "ACCESSTOKEN"), uri, "session_key", sk);
        let mp_sig = hmac_hex(mac(sk), input.as_bytes());
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

    /// The signing strings the plain way: every pair formatted, sorted by
    /// name, joined. An independent check of the spliced assembly.
    fn reference(
        fields: &[(&str, Value<'_>)],
        extra: &[(&str, Value<'_>)],
        uri: &str,
        name: &str,
        secret: &str,
    ) -> String {
        let mut pairs: Vec<(&str, String)> = fields
            .iter()
            .chain(extra)
            .map(|&(k, v)| match v {
                Value::Str(s) => (k, s.to_string()),
                Value::Num(n) => (k, n.to_string()),
            })
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}&org_loc={uri}&method=POST&{name}={secret}", joined.join("&"))
    }

    proptest::proptest! {
        #[test]
        fn spliced_inputs_match_the_plain_construction(
            bill_no in "[a-zA-Z0-9_|*@-]{1,63}",
            openid in "[a-zA-Z0-9_-]{1,40}",
            zone_id in "[0-9_]{1,10}",
            pf in "[a-z]{0,8}",
            user_ip in proptest::option::of("[0-9.]{0,15}"),
            pay_item in proptest::option::of("[a-z_ ]{0,12}"),
            ts: u64,
            token in "[A-Za-z0-9_-]{1,120}",
            session_key in "[A-Za-z0-9+/=]{1,40}",
            sandbox: bool,
        ) {
            let p = CancelParams {
                openid: &openid, appid: "wxapp", offer_id: "123", ts, zone_id: &zone_id, pf: &pf,
                bill_no: &bill_no, user_ip: user_ip.as_deref(), pay_item: pay_item.as_deref(),
            };
            let signer = Signer::new("appkey", sandbox);
            let uri = signer.uri();
            let fields = p.fields();
            let sig_input = reference(fields.as_slice(), &[], uri, "secret", "appkey");
            proptest::prop_assert_eq!(&sig_string(&p, uri, "appkey"), &sig_input);
            let got = signer.sign(&p, Some((&token, &session_key)));
            let mac = |k: &str| HmacSha256::new_from_slice(k.as_bytes()).unwrap();
            proptest::prop_assert_eq!(got.sig, hmac_hex(mac("appkey"), sig_input.as_bytes()));
            let extra = mp_extra(got.sig.as_str(), &token);
            let mp_input = reference(fields.as_slice(), &extra, uri, "session_key", &session_key);
            proptest::prop_assert_eq!(&mp_sig_string(&p, uri, got.sig.as_str(), &token, &session_key), &mp_input);
            proptest::prop_assert_eq!(got.mp_sig, Some(hmac_hex(mac(&session_key), mp_input.as_bytes())));
        }
    }
}
