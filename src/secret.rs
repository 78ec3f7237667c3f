//! Secrets (app key, app secret, access token, session keys) and the redactor
//! that scrubs them from anything the tool prints or writes.

use std::fmt;
use std::sync::{Arc, RwLock};

/// A secret string whose `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself: only for signing and for the query string.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Replaces every known secret by `***`, in each form it may take in a text:
/// raw, percent-encoded (upper- or lower-case hex, every common encode set,
/// `+` for space) and JSON-escaped (with `/` escaped or not). Applied to
/// WeChat's errmsg and to transport errors before they reach the results
/// file or the console, because an echoing proxy or a URL in an error would
/// otherwise leak a key or a token.
///
/// Clones share one registry, so a token fetched mid-run (registered by the
/// token source) is scrubbed everywhere from then on.
#[derive(Clone, Default, Debug)]
pub struct Redactor {
    forms: Arc<RwLock<Vec<String>>>,
}

/// The process's redactor: every secret the run learns is registered with
/// it, and every text the process writes to stderr passes it.
static PROCESS: std::sync::OnceLock<Redactor> = std::sync::OnceLock::new();

impl Redactor {
    /// The redactor of this process (clones share its registry).
    pub fn process() -> &'static Redactor {
        PROCESS.get_or_init(Redactor::default)
    }

    pub fn add(&self, secret: &Secret) {
        // Very short values would redact ordinary text; real secrets are long.
        if secret.0.len() < 8 {
            return;
        }
        let mut forms = self.forms.write().unwrap_or_else(|e| e.into_inner());
        for form in forms_of(&secret.0) {
            if !forms.contains(&form) {
                forms.push(form);
            }
        }
        // Longest first, so that a form is replaced before a shorter form
        // inside it could leave a tail behind.
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for form in self.forms.read().unwrap_or_else(|e| e.into_inner()).iter() {
            if out.contains(form.as_str()) {
                out = out.replace(form.as_str(), "***");
            }
        }
        out
    }
}

/// The spellings of `raw` that a URL, a form or a JSON document may carry.
fn forms_of(raw: &str) -> Vec<String> {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    // encodeURIComponent leaves these as they are; RFC 3986 leaves -._~.
    const COMPONENT: &AsciiSet =
        &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'!').remove(b'~').remove(b'*').remove(b'\'');
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    let mut forms = vec![raw.to_string()];
    let json = serde_json::to_string(raw).unwrap_or_default();
    let json = json.trim_matches('"').to_string();
    forms.push(json.replace('/', "\\/"));
    forms.push(json);
    for set in [NON_ALPHANUMERIC, COMPONENT, UNRESERVED] {
        let upper = utf8_percent_encode(raw, set).to_string();
        forms.push(lowercase_escapes(&upper));
        forms.push(upper);
    }
    forms.push(url::form_urlencoded::byte_serialize(raw.as_bytes()).collect());
    forms.sort();
    forms.dedup();
    forms
}

/// `%2B` → `%2b`: the same escape in lower-case hex.
fn lowercase_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let esc = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&esc.to_ascii_lowercase());
        rest = &rest[at + esc.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("topsecretvalue");
        assert!(!format!("{s:?} {s}").contains("topsecret"));
    }

    #[test]
    fn redactor_scrubs_every_secret() {
        let r = Redactor::default();
        r.add(&Secret::new("TOKEN123456"));
        r.add(&Secret::new("KEY98765432"));
        assert_eq!(r.redact("a TOKEN123456 b KEY98765432"), "a *** b ***");
    }

    /// Regression (secret_forms_pass_the_redactor): URL-encoded and
    /// JSON-escaped forms of a key went through.
    #[test]
    fn redactor_scrubs_encoded_and_escaped_forms() {
        let r = Redactor::default();
        let key = "k/y+Z= \"q\\ab_c-d.e~f";
        r.add(&Secret::new(key));
        let forms = [
            key.to_string(),
            "k%2Fy%2BZ%3D%20%22q%5Cab%5Fc%2Dd%2Ee%7Ef".to_string(),
            "k%2fy%2bZ%3d%20%22q%5cab%5fc%2dd%2ee%7ef".to_string(),
            "k%2Fy%2BZ%3D%20%22q%5Cab_c-d.e~f".to_string(),
            "k%2Fy%2BZ%3D+%22q%5Cab_c-d.e%7Ef".to_string(),
            r#"k/y+Z= \"q\\ab_c-d.e~f"#.to_string(),
            r#"k\/y+Z= \"q\\ab_c-d.e~f"#.to_string(),
        ];
        for f in forms {
            let out = r.redact(&format!("echo: [{f}]"));
            assert_eq!(out, "echo: [***]", "{f}");
        }
    }

    #[test]
    fn clones_share_secrets_registered_later() {
        let r = Redactor::default();
        let seen_by_writer = r.clone();
        r.add(&Secret::new("FETCHED_TOKEN_123"));
        assert_eq!(seen_by_writer.redact("t=FETCHED_TOKEN_123"), "t=***");
    }
}
