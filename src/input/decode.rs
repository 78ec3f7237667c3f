//! Decoding a file's bytes before any record is read: what the file is (a
//! workbook, a PDF, UTF-16 ...), its encoding (checked over the whole file,
//! mixed encodings refused), and the private copy a live run reads, with its
//! SHA-256.

use super::records::{lock, LineStarts, LineTracking};
use super::{Input, InputError};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// `--encoding`: the input's character encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingName {
    #[value(name = "utf-8", alias = "utf8")]
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    Gbk,
    Gb18030,
}

impl Input {
    /// One pass over the raw bytes: BOM, encoding validity, size.
    pub(super) fn scan(&mut self, head: &[u8], named: Option<EncodingName>) -> Result<(), InputError> {
        if head.is_empty() {
            return Err(InputError::Empty { path: self.display.clone() });
        }
        if let Some(what) = not_csv(head) {
            return Err(InputError::NotCsv { path: self.display.clone(), what });
        }
        if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) || looks_utf16(head) {
            return Err(InputError::Utf16 { path: self.display.clone() });
        }
        let has_bom = head.starts_with(&[0xEF, 0xBB, 0xBF]);
        let candidates: &[&'static encoding_rs::Encoding] = match (named, has_bom) {
            (Some(EncodingName::Utf8), _) | (None, true) => &[encoding_rs::UTF_8],
            // GBK is a subset of GB18030 and WHATWG decodes both the same way.
            (Some(EncodingName::Gbk | EncodingName::Gb18030), _) => &[encoding_rs::GB18030],
            (None, false) => &[encoding_rs::UTF_8, encoding_rs::GB18030],
        };
        let mut last_failure = None;
        for &enc in candidates {
            match self.check_decodes(enc) {
                // Not UTF-8 as a whole, but with UTF-8 text in it: a file of
                // mixed encodings, which no single decoding reads right.
                Ok(()) if enc != encoding_rs::UTF_8 && candidates.len() > 1 => {
                    if let Some(offset) = self.mixed_utf8()? {
                        let line = self.line_at(offset)?;
                        return Err(InputError::MixedEncodings { path: self.display.clone(), line, offset });
                    }
                    self.encoding = enc;
                    self.bom_len = 0;
                    return Ok(());
                }
                Ok(()) => {
                    self.encoding = enc;
                    self.bom_len = if has_bom && enc == encoding_rs::UTF_8 { 3 } else { 0 };
                    return Ok(());
                }
                Err(e @ InputError::Undecodable { .. }) => last_failure = Some(e),
                Err(e) => return Err(e),
            }
        }
        let mut e = last_failure.expect("at least one candidate encoding");
        if let InputError::Undecodable { tried, .. } = &mut e {
            if candidates.len() > 1 {
                *tried = "UTF-8 or GBK/GB18030";
            }
        }
        Err(e)
    }

    /// Decodes the whole file without replacement; fails at the first bad byte.
    pub(super) fn check_decodes(&mut self, enc: &'static encoding_rs::Encoding) -> Result<(), InputError> {
        let mut f = self.file.try_clone().map_err(|e| self.io_err(e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| self.io_err(e))?;
        let mut check: Box<ChunkCheck> =
            if enc == encoding_rs::UTF_8 { Box::new(utf8_checker()) } else { Box::new(decoder_checker(enc)) };
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| self.io_err(e))?;
            let chunk = &buf[..n];
            if let Some(at) = check(chunk, n == 0) {
                // `at` may point into bytes carried from the previous chunk.
                let offset = offset + at.min(chunk.len()) as u64;
                return Err(InputError::Undecodable {
                    path: self.display.clone(),
                    tried: if enc == encoding_rs::UTF_8 { "UTF-8" } else { "GBK/GB18030" },
                    line: self.line_at(offset)?,
                    offset,
                });
            }
            offset += n as u64;
            if n == 0 {
                break;
            }
        }
        self.size = offset;
        Ok(())
    }

    /// Where the first line that is not UTF-8 starts, when the file also has
    /// a line of UTF-8 text beyond ASCII: GBK text is almost never valid
    /// UTF-8 (its bytes rarely fall into UTF-8's lead-and-continuation
    /// pattern), so a line that is tells the file was UTF-8 to begin with.
    pub(super) fn mixed_utf8(&self) -> Result<Option<u64>, InputError> {
        let mut f = self.file.try_clone().map_err(|e| self.io_err(e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| self.io_err(e))?;
        let mut reader = io::BufReader::with_capacity(1 << 20, f);
        let (mut line, mut offset) = (Vec::new(), 0u64);
        let (mut utf8_text, mut first_bad) = (false, None);
        loop {
            line.clear();
            let n = io::BufRead::read_until(&mut reader, b'\n', &mut line).map_err(|e| self.io_err(e))?;
            if n == 0 {
                break;
            }
            if !line.is_ascii() {
                match std::str::from_utf8(&line) {
                    Ok(_) => utf8_text = true,
                    Err(e) => {
                        first_bad.get_or_insert(offset + e.valid_up_to() as u64);
                    }
                }
            }
            if utf8_text && first_bad.is_some() {
                return Ok(first_bad);
            }
            offset += n as u64;
        }
        Ok(None)
    }

    /// The line of the byte at `offset`. Counted only for an error message:
    /// counting newlines on every pass was most of the cost of the scan.
    pub(super) fn line_at(&self, offset: u64) -> Result<u64, InputError> {
        let mut f = self.file.try_clone().map_err(|e| self.io_err(e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| self.io_err(e))?;
        let lines = Arc::new(Mutex::new(LineStarts::default()));
        let mut tracked = LineTracking::new(f.take(offset), lines.clone());
        io::copy(&mut tracked, &mut io::sink()).map_err(|e| self.io_err(e))?;
        let line = lock(&lines).line_of(offset);
        Ok(line)
    }
}

/// Which side of a copy failed.
pub(super) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// What a file is, judged by its first bytes, when it is a common kind that
/// is not CSV text.
pub(super) fn not_csv(head: &[u8]) -> Option<&'static str> {
    let kinds: [(&[u8], &str); 3] = [
        (b"%PDF", "a PDF document"),
        (b"\x1F\x8B", "a gzip-compressed file (unpack it first)"),
        (b"{\\rtf", "an RTF document"),
    ];
    kinds.iter().find(|(magic, _)| head.starts_with(magic)).map(|(_, what)| *what)
}

/// A ZIP archive (.xlsx, .xlsb, .ods) or an OLE compound file (.xls): read
/// as a workbook, whatever the file's name.
pub(super) fn workbook_magic(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04") || head.starts_with(b"\xD0\xCF\x11\xE0")
}

/// UTF-16 text without a byte-order mark: ASCII with a zero byte beside
/// every character.
pub(super) fn looks_utf16(head: &[u8]) -> bool {
    head.len() >= 4 && head.chunks(2).all(|p| p.len() == 2 && ((p[0] == 0) != (p[1] == 0)))
}

/// Copies `src` into an unlinked temp file (hashing it when `hash`), and
/// returns the copy rewound with the hash.
pub(super) fn private_copy(mut src: impl Read, hash: bool) -> Result<(File, Option<String>), CopyError> {
    let mut copy = tempfile::tempfile().map_err(CopyError::Write)?;
    let mut hasher = hash.then(Sha256::new);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
        io::Write::write_all(&mut copy, &buf[..n]).map_err(CopyError::Write)?;
    }
    copy.seek(SeekFrom::Start(0)).map_err(CopyError::Write)?;
    Ok((copy, hasher.map(|h| hex::encode(h.finalize()))))
}

/// Checks the next chunk of raw bytes (`true` on the last call); returns the
/// offset of the first undecodable byte in the chunk.
pub(super) type ChunkCheck = dyn FnMut(&[u8], bool) -> Option<usize>;

/// A chunked UTF-8 validator: returns the offset (in the chunk) of the first
/// invalid byte. A sequence cut by the chunk boundary is carried over.
pub(super) fn utf8_checker() -> impl FnMut(&[u8], bool) -> Option<usize> {
    let mut carry: Vec<u8> = Vec::new();
    move |chunk, last| {
        let mut joined;
        let data: &[u8] = if carry.is_empty() {
            chunk
        } else {
            joined = std::mem::take(&mut carry);
            joined.extend_from_slice(chunk);
            &joined
        };
        let skew = data.len() - chunk.len();
        match std::str::from_utf8(data) {
            Ok(_) => None,
            Err(e) if e.error_len().is_none() && !last => {
                carry = data[e.valid_up_to()..].to_vec();
                None
            }
            Err(e) => Some(e.valid_up_to().saturating_sub(skew)),
        }
    }
}

/// A chunked decoder check for other encodings (GB18030).
pub(super) fn decoder_checker(enc: &'static encoding_rs::Encoding) -> impl FnMut(&[u8], bool) -> Option<usize> {
    let mut decoder = enc.new_decoder_without_bom_handling();
    let mut out = vec![0u8; 1 << 16];
    move |mut chunk, last| {
        let mut consumed = 0;
        loop {
            let (result, read, _) = decoder.decode_to_utf8_without_replacement(chunk, &mut out, last);
            match result {
                encoding_rs::DecoderResult::InputEmpty => return None,
                encoding_rs::DecoderResult::OutputFull => {}
                encoding_rs::DecoderResult::Malformed(bad, _) => return Some(consumed + read - bad as usize),
            }
            consumed += read;
            chunk = &chunk[read..];
        }
    }
}

pub(super) fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

pub(super) struct CountingReader {
    pub(super) inner: File,
    pub(super) count: Option<Arc<AtomicU64>>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(c) = &self.count {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}
