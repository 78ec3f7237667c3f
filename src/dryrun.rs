//! `run --dry-run`: sign every row in parallel (rayon) and write the
//! signatures in input order, streaming, without sending anything.
//!
//! Three stages joined by bounded channels, so memory stays flat whatever
//! the input size: a reader thread (parse, validate, deduplicate), rayon
//! signing on the calling thread, and a writer thread.

use crate::category::Category;
use crate::config::RunConfig;
use crate::input::{Classifier, Input, RawRow, Verdict};
use crate::output::{DrySigned, Layout, ResultsWriter};
use crate::report::Tally;
use crate::reporter::Reporter;
use crate::sign::{CancelParams, Signer};
use anyhow::Context as _;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Rows per batch: large enough to amortise channel and rayon overhead,
/// small enough to keep memory flat.
const BATCH: usize = 2048;

/// How many row problems a dry run repeats on stderr (`check` lists them all).
pub const SHOWN_PROBLEMS: usize = 20;

/// The time now, in UNIX seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Signs one ready row as of `ts`.
fn sign_row(cfg: &RunConfig, signer: &Signer, verdict: &Verdict, ts: Option<u64>) -> DrySigned {
    match verdict {
        Verdict::Rejected { category, .. } => DrySigned { category: *category, ts: None, sig: None, mp_sig: None },
        Verdict::Ready(o) => {
            let ts = ts.unwrap_or_else(unix_now);
            let params = CancelParams {
                openid: &o.openid,
                appid: &cfg.request.appid,
                offer_id: &cfg.request.offer_id,
                ts,
                zone_id: &o.zone_id,
                pf: o.pf.as_deref().unwrap_or(&cfg.request.pf),
                bill_no: &o.bill_no,
                user_ip: o.user_ip.as_deref(),
                pay_item: o.pay_item.as_deref(),
            };
            let with_mp = match (cfg.input.mp_sig, &cfg.access_token, &o.session_key) {
                (crate::input::MpSigMode::Never, _, _) => None,
                (_, Some(t), Some(k)) => Some((t.expose(), k.expose())),
                _ => None,
            };
            let s = signer.sign(&params, with_mp);
            DrySigned { category: Category::Signed, ts: Some(ts), sig: Some(s.sig), mp_sig: s.mp_sig }
        }
    }
}

/// Runs the dry run; returns the categories written.
pub fn run(cfg: &RunConfig, out: std::fs::File, reporter: &Reporter) -> anyhow::Result<(Tally, Vec<String>)> {
    let input = Input::open(&cfg.input.path, cfg.input.encoding, false)?;
    let read_bytes = Arc::new(AtomicU64::new(0));
    let rows = input.rows(&cfg.input.columns, Some(read_bytes.clone()))?;
    let header = rows.header().clone();
    let mut writer = ResultsWriter::new(out, &header, Layout::DryRun, true).context("cannot write the output")?;
    let signer = Signer::new(cfg.app_key.expose(), cfg.request.sandbox);
    let mut classifier = Classifier::new(cfg.input.session_keys.clone(), cfg.input.mp_sig);
    reporter.start_progress(input.size(), true);

    type Batch = Vec<(RawRow, Verdict)>;
    let (to_sign, signing) = crossbeam_channel::bounded::<anyhow::Result<Batch>>(4);
    let (to_write, writing) = crossbeam_channel::bounded::<(Batch, Vec<DrySigned>)>(4);

    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            for raw in rows {
                let raw = match raw {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = to_sign.send(Err(e.into()));
                        return;
                    }
                };
                let verdict = classifier.classify(&header, &raw);
                batch.push((raw, verdict));
                if batch.len() == BATCH
                    && to_sign.send(Ok(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))).is_err()
                {
                    return;
                }
            }
            if !batch.is_empty() {
                let _ = to_sign.send(Ok(batch));
            }
        });
        let writer_thread = scope.spawn(move || -> anyhow::Result<(Tally, Vec<String>)> {
            let mut tally = Tally::default();
            let mut problems = Vec::new();
            for (batch, signed) in writing {
                for ((raw, verdict), s) in batch.iter().zip(&signed) {
                    let order = match verdict {
                        Verdict::Ready(o) => Some(o),
                        Verdict::Rejected { message, .. } => {
                            if problems.len() < SHOWN_PROBLEMS {
                                problems.push(message.clone());
                            }
                            None
                        }
                    };
                    writer.write_dry(raw, order, s).context("cannot write the output")?;
                    tally.add(s.category);
                }
                reporter.progress(read_bytes.load(Ordering::Relaxed), input.size(), "");
            }
            writer.flush().context("cannot write the output")?;
            Ok((tally, problems))
        });
        let mut failure = None;
        for batch in signing {
            match batch {
                Ok(batch) => {
                    let signed: Vec<DrySigned> =
                        batch.par_iter().map(|(_, v)| sign_row(cfg, &signer, v, cfg.dry_run_ts)).collect();
                    if to_write.send((batch, signed)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(to_write);
        let _ = reader.join();
        let written = writer_thread.join().expect("writer thread panicked");
        reporter.finish_progress();
        match failure {
            Some(e) => Err(e),
            None => written,
        }
    })
}
