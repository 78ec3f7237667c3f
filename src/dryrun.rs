//! `run --dry-run`: sign every row in parallel (rayon) and write the
//! signatures in input order, streaming, without sending anything.
//!
//! Three stages joined by bounded channels, so memory stays flat whatever the
//! input size: a reader thread parses records into recycled batches; rayon
//! validates and signs each batch on the calling thread; a writer thread
//! decides duplicates in input order and writes. Duplicates are rare, so
//! signing them speculatively and discarding the signature is cheaper than a
//! sequential pass before signing.

use crate::api::{v2, ApiKind};
use crate::category::Category;
use crate::config::RunConfig;
use crate::input::{validate, Classifier, Facts, Field, Header, RawRow, RowBatch, Validated};
use crate::output::{DrySigned, DryV2, Layout, ResultsWriter};
use crate::reporter::Reporter;
use crate::sign::Signer;
use crate::tally::Tally;
use anyhow::Context as _;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Rows per batch: large enough to amortise channel and rayon overhead,
/// small enough to keep memory flat.
const BATCH: usize = 4096;
/// Batches in flight between two stages.
const DEPTH: usize = 4;

/// How many row problems a dry run repeats on stderr (`check` lists them all).
pub const SHOWN_PROBLEMS: usize = 20;

/// The parallel stage's verdict on one row, owning nothing of the batch.
struct Signed {
    bill_no_valid: bool,
    problem: Option<String>,
    has_session_key: bool,
    out: DrySigned,
}

/// Signs one validated row (taken by value: a derived cancellation id moves
/// into the output instead of being copied).
fn sign_row(cfg: &RunConfig, signer: &Signer, pay_signer: &v2::PaySigner, v: Validated<'_>) -> Signed {
    match v {
        Validated::Invalid { bill_no, message } => Signed {
            bill_no_valid: bill_no.is_some(),
            problem: Some(message),
            has_session_key: false,
            out: DrySigned::unsigned(Category::InvalidInput),
        },
        Validated::Valid(o) if cfg.input.rules.api == ApiKind::V2 => {
            let ts = cfg.dry_run_ts.unwrap_or_else(crate::clock::unix_now);
            let mut v2 = DryV2::default();
            // Without a session key the row is not sent (missing_session_key).
            if let Some(key) = o.session_key {
                v2.body = o.v2(&cfg.input.rules, u8::from(cfg.request.sandbox), ts).body();
                v2.pay_sig = Some(pay_signer.sign(&v2.body));
                v2.signature = Some(v2::signature(key, &v2.body));
            }
            let has_session_key = o.session_key.is_some();
            v2.cancel_bill_no = o.cancel_id.map(std::borrow::Cow::into_owned).unwrap_or_default();
            let out = DrySigned { ts: Some(ts), v2: Some(Box::new(v2)), ..DrySigned::unsigned(Category::Signed) };
            Signed { bill_no_valid: true, problem: None, has_session_key, out }
        }
        Validated::Valid(o) => {
            let ts = cfg.dry_run_ts.unwrap_or_else(crate::clock::unix_now);
            let params = cfg.request.params(&o, ts);
            let s = signer.sign(&params, cfg.input.mp_sig.inputs(cfg.access_token.as_ref(), o.session_key));
            Signed {
                bill_no_valid: true,
                problem: None,
                has_session_key: o.session_key.is_some(),
                out: DrySigned {
                    category: Category::Signed,
                    ts: Some(ts),
                    sig: Some(s.sig),
                    mp_sig: s.mp_sig,
                    v2: None,
                },
            }
        }
    }
}

/// The duplicate key of a row: its bill_no, or (v2 with a cancel_bill_no
/// column) its cancellation id, given or derived.
fn duplicate_key<'a>(header: &'a Header, raw: &'a RawRow, s: &'a Signed) -> &'a str {
    match (&s.out.v2, header.keyed_by_cancel_id()) {
        (Some(v2), true) => &v2.cancel_bill_no,
        (None, true) => header.cell(raw, Field::CancelBillNo),
        (_, false) => header.cell(raw, Field::BillNo),
    }
}

/// Runs the dry run into `out`; returns the categories written and the first
/// few row problems.
pub fn run(cfg: &RunConfig, out: std::fs::File, reporter: &Reporter) -> anyhow::Result<(Tally, Vec<String>)> {
    let input = &*cfg.input.opened;
    let read_bytes = Arc::new(AtomicU64::new(0));
    let mut rows = input.rows(&cfg.input.columns, &cfg.input.rules, Some(read_bytes.clone()))?;
    let header = rows.header().clone();
    let mut writer = ResultsWriter::new(out, &header, Layout::new(cfg.input.rules.api, true), true)
        .context("cannot write the output")?;
    let signer = Signer::new(cfg.app_key.expose(), cfg.request.sandbox);
    let pay_signer = v2::PaySigner::new(cfg.app_key.expose());
    let mut classifier = Classifier::for_run(cfg.input.mp_sig, &header);
    let keys = &*cfg.input.session_keys;
    reporter.start_progress(input.size(), true);

    let (to_sign, signing) = crossbeam_channel::bounded::<RowBatch>(DEPTH);
    let (to_write, writing) = crossbeam_channel::bounded::<(RowBatch, Vec<Signed>)>(DEPTH);
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
            for (batch, signed) in writing {
                if let (true, Some(last)) = (std::mem::take(&mut first_batch), batch.rows().last()) {
                    classifier.reserve_for(input.size(), last);
                }
                let rows = batch.rows();
                let facts: Vec<(u64, u64, Facts<'_>)> = rows
                    .iter()
                    .zip(&signed)
                    .map(|(raw, s)| {
                        let facts = Facts {
                            bill_no: s.bill_no_valid.then(|| duplicate_key(header, raw, s)),
                            problem: s.problem.as_deref(),
                            openid: header.cell(raw, Field::Openid),
                            has_session_key: s.has_session_key,
                        };
                        (raw.row, raw.line, facts)
                    })
                    .collect();
                let decisions = classifier.decide_batch(&facts);
                drop(facts);
                for ((raw, s), decision) in rows.iter().zip(signed).zip(decisions) {
                    let mut out = s.out;
                    if let Some((category, message)) = decision {
                        // The cancellation id stays: finance can still find it.
                        let v2 =
                            out.v2.map(|v| Box::new(DryV2 { cancel_bill_no: v.cancel_bill_no, ..DryV2::default() }));
                        out = DrySigned { v2, ..DrySigned::unsigned(category) };
                        if problems.len() < SHOWN_PROBLEMS {
                            problems.push(message);
                        }
                    }
                    writer.write_dry(raw, s.problem.is_none(), &out).context("cannot write the output")?;
                    tally.add(out.category);
                }
                reporter.progress(read_bytes.load(Ordering::Relaxed), input.size(), "");
                let _ = recycle.try_send(batch);
            }
            writer.flush().context("cannot write the output")?;
            Ok((tally, problems))
        });
        for batch in signing {
            let signed: Vec<Signed> = batch
                .rows()
                .par_iter()
                .map(|raw| sign_row(cfg, &signer, &pay_signer, validate(header, raw, keys)))
                .collect();
            if to_write.send((batch, signed)).is_err() {
                break;
            }
        }
        drop(to_write);
        let read = reader.join().expect("reader thread panicked");
        let written = writer_thread.join().expect("writer thread panicked");
        reporter.finish_progress();
        read.and(written)
    })
}
