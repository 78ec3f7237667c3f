//! Secrets (app key, app secret, access token, session keys) and the redactor
//! that scrubs them from anything the tool prints or writes.

use std::fmt;

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

/// Replaces every known secret in a text by `***`. Applied to WeChat's errmsg
/// and to transport errors before they reach the results file or the console,
/// because an echoing proxy or a URL in an error would otherwise leak a token.
#[derive(Clone, Default, Debug)]
pub struct Redactor {
    secrets: Vec<Secret>,
}

impl Redactor {
    pub fn add(&mut self, secret: &Secret) {
        // Very short values would redact ordinary text; real secrets are long.
        if secret.0.len() >= 8 && !self.secrets.contains(secret) {
            self.secrets.push(secret.clone());
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.expose()) {
                out = out.replace(s.expose(), "***");
            }
        }
        out
    }
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
        let mut r = Redactor::default();
        r.add(&Secret::new("TOKEN123456"));
        r.add(&Secret::new("KEY98765432"));
        assert_eq!(r.redact("a TOKEN123456 b KEY98765432"), "a *** b ***");
    }
}
