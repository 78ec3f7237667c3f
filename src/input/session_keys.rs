//! Session keys from `--session-keys FILE` (read once), and `--mp-sig`'s rule
//! for rows without one.

use super::fields::{check_session_key, trim};
use super::header::{header_name, loose_name};
use crate::secret::Secret;
use std::collections::HashMap;
use std::path::Path;

/// `--mp-sig`: when to send `mp_sig` (SPEC §1.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MpSigMode {
    /// Send mp_sig when the row's session key is known.
    #[default]
    Auto,
    /// Every row needs a session key; rows without one are not sent.
    Always,
    /// Never send mp_sig.
    Never,
}

impl MpSigMode {
    /// The access token and session key to compute `mp_sig` with, when this
    /// mode sends it and both are at hand.
    pub fn inputs<'a>(self, token: Option<&'a Secret>, session_key: Option<&'a str>) -> Option<(&'a str, &'a str)> {
        match (self, token, session_key) {
            (MpSigMode::Never, _, _) => None,
            (_, Some(t), Some(k)) => Some((t.expose(), k)),
            _ => None,
        }
    }
}

/// 128-bit fingerprint of a string, for compact sets keyed by ids.
pub(super) fn fingerprint(s: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(s.as_bytes())
}

/// Hashes a key that is already a fingerprint by taking 64 of its bits:
/// hashing it again (SipHash) cost more than the rest of a lookup.
#[derive(Default)]
pub(super) struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-integer keys; fold them in so it stays correct.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

pub(super) type FingerprintBuild = std::hash::BuildHasherDefault<FingerprintHasher>;

/// A session key as stored: WeChat's are 24 base64 characters and are kept
/// inline (one cache miss per lookup instead of two); others are boxed.
pub(super) enum StoredKey {
    Standard([u8; 24]),
    Other(Box<str>),
}

impl StoredKey {
    fn new(key: &str) -> StoredKey {
        match <[u8; 24]>::try_from(key.as_bytes()) {
            Ok(k) => StoredKey::Standard(k),
            Err(_) => StoredKey::Other(key.into()),
        }
    }
    fn as_str(&self) -> &str {
        match self {
            // Only built from a &str, so always UTF-8.
            StoredKey::Standard(k) => std::str::from_utf8(k).unwrap_or(""),
            StoredKey::Other(k) => k,
        }
    }
}

/// Session keys from `--session-keys FILE` (CSV `openid,session_key`), keyed
/// by a fingerprint of the openid to keep a few million users small.
#[derive(Default)]
pub struct SessionKeys(HashMap<u128, StoredKey, FingerprintBuild>);

impl SessionKeys {
    pub fn load(path: &Path) -> anyhow::Result<SessionKeys> {
        use anyhow::Context as _;
        let ctx = || format!("session keys file {}", path.display());
        // Read once, whole: a FIFO or /dev/stdin cannot be read twice (the
        // line count below used to open the file a second time).
        let bytes = std::fs::read(path).with_context(ctx)?;
        let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(&bytes[..]);
        let headers = rdr.headers().with_context(ctx)?.clone();
        let pos = |name: &str| headers.iter().position(|h| loose_name(header_name(h)) == loose_name(name));
        let (Some(o), Some(k)) = (pos("openid"), pos("session_key")) else {
            anyhow::bail!("{}: the header row must name the columns openid and session_key", ctx());
        };
        // Sized up front from a count of the lines (a quick pass): growing
        // the table step by step cost a third of loading a quarter of a
        // million keys.
        let lines = memchr::memchr_iter(b'\n', &bytes).count();
        let mut map = HashMap::with_capacity_and_hasher(lines, Default::default());
        let mut rec = csv::ByteRecord::new();
        // Inserted a few thousand at a time, in a loop of nothing else, so
        // the CPU overlaps the inserts' cache misses (as with duplicates).
        let mut pending = Vec::with_capacity(4096);
        while rdr.read_byte_record(&mut rec).with_context(ctx)? {
            let line = rec.position().map_or(0, |p| p.line());
            let cell = |i: usize| std::str::from_utf8(rec.get(i).unwrap_or(b"")).map(trim);
            let (Ok(openid), Ok(key)) = (cell(o), cell(k)) else {
                anyhow::bail!("{} line {line}: not valid UTF-8", ctx());
            };
            if key.is_empty() {
                continue;
            }
            check_session_key(key).map_err(|m| anyhow::anyhow!("{} line {line}: {m}", ctx()))?;
            pending.push((fingerprint(openid), StoredKey::new(key)));
            if pending.len() == pending.capacity() {
                map.extend(pending.drain(..));
            }
        }
        // In file order, so a later line for the same openid still wins.
        map.extend(pending);
        Ok(SessionKeys(map))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, openid: &str) -> Option<&str> {
        self.0.get(&fingerprint(openid)).map(StoredKey::as_str)
    }
}
