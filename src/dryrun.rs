//! `run --dry-run`: sign every row in parallel (rayon) and write the
//! signatures in input order, streaming, without sending anything.
//!
//! Three stages joined by bounded channels, so memory stays flat whatever the
//! input size: a reader thread parses records into recycled batches; rayon
//! validates, signs and encodes each batch's lines on the calling thread; a
//! writer thread decides duplicates in input order and writes the encoded
//! bytes. Duplicates are rare, so signing and encoding them speculatively,
//! then encoding the few again, is cheaper than a sequential pass before
//! signing; and encoding in parallel keeps the one writer thread from being
//! the bottleneck (a v2 line is twice a v1 line, its JSON body's quotes
//! doubled by CSV).

use crate::category::Category;
use crate::config::RunConfig;
use crate::input::{validate, Classifier, Facts, Field, Header, RawRow, RowBatch, Validated};
use crate::reporter::Reporter;
use crate::request::Signing;
use crate::results::output::{DrySigned, DryV2, Layout, ResultsWriter};
use crate::results::tally::Tally;
use anyhow::Context as _;
use rayon::prelude::*;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Rows per batch: large enough to amortise channel and rayon overhead,
/// small enough to keep memory flat.
const BATCH: usize = 4096;
/// Batches in flight between two stages.
const DEPTH: usize = 4;
/// Rows one parallel task signs and encodes.
const CHUNK: usize = 256;

/// How many row problems a dry run repeats on stderr (`check` lists them all).
pub const SHOWN_PROBLEMS: usize = 20;

/// The parallel stage's verdict on one row, owning nothing of the batch.
struct Signed {
    bill_no_valid: bool,
    problem: Option<String>,
    has_session_key: bool,
    out: DrySigned,
}

/// What the writer needs of a row once its line is encoded: enough to decide
/// duplicates and, for the few rows that turn out not to be signed after
/// all, to encode their line again.
struct Verdict {
    bill_no_valid: bool,
    problem: Option<String>,
    has_session_key: bool,
    category: crate::category::Category,
    /// v2: the cancellation id, given or derived.
    cancel_bill_no: Option<String>,
}

/// One chunk of a batch, signed and encoded: its rows' lines back to back.
struct Encoded {
    lines: Vec<u8>,
    /// Where each row's line ends in `lines`.
    ends: Vec<usize>,
    verdicts: Vec<Verdict>,
}

/// Signs and encodes one chunk of rows (a parallel task).
fn encode_chunk(
    cfg: &RunConfig,
    header: &Header,
    layout: Layout,
    signing: &Signing,
    rows: &[RawRow],
) -> std::io::Result<Encoded> {
    let keys = &*cfg.input.session_keys;
    let mut lines = Vec::with_capacity(rows.len() * 512);
    let mut ends = Vec::with_capacity(rows.len());
    let mut verdicts = Vec::with_capacity(rows.len());
    let mut encoder = ResultsWriter::encoder(&mut lines, header, layout);
    for raw in rows {
        let s = sign_row(cfg, signing, validate(header, raw, keys));
        encoder.write_dry(raw, s.problem.is_none(), &s.out)?;
        ends.push(encoder.encoded_len()?);
        verdicts.push(Verdict {
            bill_no_valid: s.bill_no_valid,
            problem: s.problem,
            has_session_key: s.has_session_key,
            category: s.out.category,
            cancel_bill_no: s.out.v2.map(|v| v.cancel_bill_no),
        });
    }
    drop(encoder);
    Ok(Encoded { lines, ends, verdicts })
}

/// Signs one validated row (taken by value: a derived cancellation id moves
/// into the output instead of being copied).
fn sign_row(cfg: &RunConfig, signing: &Signing, v: Validated<'_>) -> Signed {
    match v {
        Validated::Invalid { bill_no, message } => Signed {
            bill_no_valid: bill_no.is_some(),
            problem: Some(message),
            has_session_key: false,
            out: DrySigned::unsigned(Category::InvalidInput),
        },
        Validated::Valid(o) => {
            let ts = cfg.dry_run_ts.unwrap_or_else(crate::clock::unix_now);
            let has_session_key = o.session_key.is_some();
            let out = signing.dry(o, cfg.access_token.as_ref(), ts);
            Signed { bill_no_valid: true, problem: None, has_session_key, out }
        }
    }
}

/// The duplicate key of a row: its bill_no, or (v2 with a cancel_bill_no
/// column) its cancellation id, given or derived.
fn duplicate_key<'a>(header: &'a Header, raw: &'a RawRow, v: &'a Verdict) -> &'a str {
    match (&v.cancel_bill_no, header.keyed_by_cancel_id()) {
        (Some(id), true) => id,
        (None, true) => header.cell(raw, header.rules().api.input().id_field),
        (_, false) => header.order_cell(raw),
    }
}

/// Runs the dry run into `out`; returns the categories written and the first
/// few row problems.
pub fn run(cfg: &RunConfig, out: std::fs::File, reporter: &Reporter) -> anyhow::Result<(Tally, Vec<String>)> {
    let input = &*cfg.input.opened;
    let read_bytes = Arc::new(AtomicU64::new(0));
    let mut rows = input.rows(&cfg.input.columns, &cfg.input.rules, Some(read_bytes.clone()))?;
    let header = rows.header().clone();
    let layout = Layout::for_header(&header, true);
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let mut head = Vec::new();
    ResultsWriter::new(&mut head, &header, layout, true)?.flush()?;
    out.write_all(&head).context("cannot write the output")?;
    let signing = cfg.signing();
    let mut classifier = Classifier::for_run(cfg.input.mp_sig, &header);
    for w in input.warnings(&header) {
        reporter.notice(&w);
    }
    // v1's mp_sig is signed over the access token too: session keys without
    // one sign nothing, which must not pass without a word.
    let keys_given = !cfg.input.session_keys.is_empty() || header.column(crate::input::Field::SessionKey).is_some();
    if cfg.input.rules.api == crate::api::ApiKind::V1 && keys_given && cfg.access_token.is_none() {
        reporter.notice(
            "note: mp_sig is left empty: it is signed over the access token as well as the session key, and no \
             WECHAT_ACCESS_TOKEN is set (a live run fetches its own token and signs mp_sig then)",
        );
    }
    // A workbook's size is its rows.
    reporter.start_progress(input.size(), input.sheet_name().is_none());

    let (to_sign, unsigned) = crossbeam_channel::bounded::<RowBatch>(DEPTH);
    let (to_write, writing) = crossbeam_channel::bounded::<(RowBatch, Vec<Encoded>)>(DEPTH);
    // Written batches go back to the reader to be refilled.
    let (recycle, recycled) = crossbeam_channel::bounded::<RowBatch>(3 * DEPTH);

    std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> anyhow::Result<()> {
            loop {
                let mut batch = recycled.try_recv().unwrap_or_default();
                rows.fill(&mut batch, BATCH)?;
                if batch.is_empty() || to_sign.send(batch).is_err() {
                    return Ok(());
                }
            }
        });
        let header = &header;
        let writer_thread = scope.spawn(move || -> anyhow::Result<(Tally, Vec<String>)> {
            let mut tally = Tally::default();
            let mut problems = Vec::new();
            let mut first_batch = true;
            let mut again = Vec::new();
            for (batch, chunks) in writing {
                if let (true, Some(last)) = (std::mem::take(&mut first_batch), batch.rows().last()) {
                    classifier.reserve_for(input.size(), last);
                }
                let rows = batch.rows();
                let verdicts = chunks.iter().flat_map(|c| &c.verdicts);
                let facts: Vec<(u64, u64, Facts<'_>)> = rows
                    .iter()
                    .zip(verdicts)
                    .map(|(raw, v)| {
                        let facts = Facts {
                            bill_no: v.bill_no_valid.then(|| duplicate_key(header, raw, v)),
                            problem: v.problem.as_deref(),
                            openid: header.cell(raw, Field::Openid),
                            has_session_key: v.has_session_key,
                        };
                        (raw.row, raw.line, facts)
                    })
                    .collect();
                let mut decisions = classifier.decide_batch(&facts).into_iter();
                drop(facts);
                let mut raws = rows.iter();
                for chunk in &chunks {
                    // Runs of lines as encoded are copied whole; a row decided
                    // otherwise (a duplicate, no session key) is encoded again.
                    let mut copied = 0;
                    let mut start = 0;
                    for (&end, v) in chunk.ends.iter().zip(&chunk.verdicts) {
                        let raw = raws.next().context("a signed row without its input row")?;
                        let mut category = v.category;
                        if let Some(Some((decided, message))) = decisions.next() {
                            category = decided;
                            if problems.len() < SHOWN_PROBLEMS {
                                problems.push(message);
                            }
                            // The cancellation id stays: finance can still find it.
                            let v2 = v
                                .cancel_bill_no
                                .clone()
                                .map(|cancel_bill_no| Box::new(DryV2 { cancel_bill_no, ..DryV2::default() }));
                            let line = DrySigned { v2, ..DrySigned::unsigned(decided) };
                            again.clear();
                            let mut encoder = ResultsWriter::encoder(&mut again, header, layout);
                            encoder.write_dry(raw, v.problem.is_none(), &line)?;
                            encoder.flush()?;
                            drop(encoder);
                            out.write_all(&chunk.lines[copied..start]).context("cannot write the output")?;
                            out.write_all(&again).context("cannot write the output")?;
                            copied = end;
                        }
                        tally.add(category);
                        start = end;
                    }
                    out.write_all(&chunk.lines[copied..]).context("cannot write the output")?;
                }
                reporter.progress(read_bytes.load(Ordering::Relaxed), input.size(), "");
                let _ = recycle.try_send(batch);
            }
            out.flush().context("cannot write the output")?;
            Ok((tally, problems))
        });
        let signed = (move || -> anyhow::Result<()> {
            for batch in unsigned {
                let encoded = batch
                    .rows()
                    .par_chunks(CHUNK)
                    .map(|rows| encode_chunk(cfg, header, layout, &signing, rows))
                    .collect::<std::io::Result<Vec<Encoded>>>()
                    .context("cannot encode the output")?;
                if to_write.send((batch, encoded)).is_err() {
                    break;
                }
            }
            Ok(())
        })();
        let read = reader.join().expect("reader thread panicked");
        let written = writer_thread.join().expect("writer thread panicked");
        reporter.finish_progress();
        signed.and(read).and(written)
    })
}
