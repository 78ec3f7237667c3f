//! The live run: workers, the retry queue, pacing and overload control, the
//! circuit breaker, and the durable results writer.
//!
//! The feeder (calling thread) reads and classifies rows in input order and
//! hands sendable ones to `concurrency` worker threads. A worker makes one
//! attempt at a time: a row that must wait for its next attempt (a back-off,
//! an order still processing, a refreshed token) is parked in the
//! [`queue::RetryQueue`] and the worker takes whatever is due next, parked
//! or fresh. So `--concurrency` bounds requests in flight, never waiting
//! rows. Every finished row goes to one writer thread that appends it to the
//! results file and syncs it before it is counted. Rows finish out of
//! order; the `row` column says which input row each line is.

mod control;
pub mod pace;
pub mod queue;
mod worker;
mod writer;

pub use self::control::{Control, StopReason};
use self::worker::*;
pub use self::writer::Target;
use self::writer::*;

use crate::api::token::Tokens;
use crate::api::Transport;
use crate::attempt_log::AttemptLog;
use crate::category::Category;
use crate::input::{Classifier, Input, InputConfig, Verdict};
use crate::reporter::Reporter;
use crate::request::Signing;
use crate::results::journal::Entry as JournalEntry;
use crate::results::output::Outcome;
use crate::results::tally::Tally;
use crate::secret::Redactor;
use pace::{PaceReport, Pacer};
use queue::RetryQueue;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sending settings of a live run.
#[derive(Clone, Debug)]
pub struct SendSettings {
    pub rate: NonZeroU32,
    pub burst: u32,
    pub concurrency: usize,
    pub max_attempts: u32,
    pub timeout: Duration,
    /// First retry delay; doubles per attempt, with jitter. An order still
    /// processing (90016) waits [`PROCESSING_FACTOR`] times as long.
    pub backoff: Duration,
    /// How refunds are polled until they settle (xpay-refund).
    pub polling: crate::api::Polling,
}

/// What a live run is given, beyond its input file and its results file.
pub struct Settings<'a> {
    pub send: &'a SendSettings,
    pub input: &'a InputConfig,
    pub signing: &'a Signing,
    pub redactor: &'a Redactor,
}

/// The longest single wait, so that a stop or a due retry is noticed quickly.
const NAP: Duration = Duration::from_millis(50);

/// An order still processing (90016) settles in seconds to a minute, not in
/// the milliseconds a busy server needs: its delays are this many times the
/// back-off (500 ms → 5, 10, 20, 40 s: 75 s over the default 5 attempts).
pub const PROCESSING_FACTOR: u32 = 10;

/// Parked rows are held in memory; past this many (per worker, and at least
/// the absolute floor) workers take no fresh row until some are settled.
const PARKED_PER_WORKER: usize = 256;

const PARKED_FLOOR: usize = 4096;

/// Live counters for progress and the summary.
#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    /// Rows the stop settled before their time (never attempted, or parked
    /// with attempts left): an interrupt that cut none short changed nothing.
    pub cut_short: AtomicU64,
}

/// What a live run ended with.
pub struct LiveReport {
    pub tally: Tally,
    pub stop: Option<StopReason>,
    pub elapsed: Duration,
    pub requests: u64,
    pub token_refreshes: u64,
    /// `--rate`.
    pub requested_rate: u32,
    pub pace: PaceReport,
}

/// Rows the feeder records in the ids journal with one sync, before it
/// hands them to the workers.
const JOURNAL_GROUP: usize = 256;

/// Runs a live run over `input` (`total` rows) into `target`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    settings: &Settings<'_>,
    transport: Arc<dyn Transport>,
    tokens: &Tokens,
    control: &Control,
    input: &Input,
    total: u64,
    mut target: Target,
    reporter: &Reporter,
    log: Option<&AttemptLog>,
) -> anyhow::Result<LiveReport> {
    let (send, cfg_input) = (settings.send, settings.input);
    let started = Instant::now();
    let mut rows = input.rows(&cfg_input.columns, &cfg_input.rules, None)?;
    let header = rows.header().clone();
    // The header is on disk before the first request leaves.
    target.writer.flush()?;
    target.writer.get_ref().sync_data()?;
    let pacer = Pacer::new(send.rate, send.burst);
    let stats = Stats::default();
    let tally = Mutex::new(target.prior.clone());
    let done = std::mem::take(&mut target.done);
    let mut unfinished = std::mem::take(&mut target.unfinished);
    let mut journal = target.journal.take();
    let tag = cfg_input.rules.cancel_tag.as_str();
    let api = cfg_input.rules.api;
    let mut classifier = Classifier::for_run(cfg_input.mp_sig, &header);
    reporter.start_progress(total, false);

    let (to_workers, jobs) = crossbeam_channel::bounded::<Job>(send.concurrency);
    let (to_writer, finished) = crossbeam_channel::bounded::<Finished>(4 * send.concurrency + 64);
    let pool = Pool {
        jobs,
        queue: RetryQueue::default(),
        pending: AtomicU64::new(0),
        parked_cap: (PARKED_PER_WORKER * send.concurrency).max(PARKED_FLOOR),
        worker: Worker {
            send,
            signing: settings.signing,
            redactor: settings.redactor,
            transport: transport.as_ref(),
            tokens,
            pacer: &pacer,
            control,
            stats: &stats,
            log,
        },
    };

    let (tally_ref, pool_ref, pacer_ref, stats_ref) = (&tally, &pool, &pacer, &stats);
    let written = std::thread::scope(|scope| -> anyhow::Result<()> {
        let on_commit = move |t: &Tally| {
            // Skipped rows (a stop) are not "attention": --resume sends them.
            let skipped = t.get(Category::Skipped);
            let done = t.get(Category::Cancelled) + t.get(Category::Refunded);
            let attention = t.total() - done - t.get(Category::AlreadyReturned) - skipped;
            let pace = pacer_ref.current_rate();
            let slowed =
                if pace < f64::from(send.rate.get()) { format!(" · pace {pace:.0}/s") } else { String::new() };
            let skipped = if skipped > 0 { format!(" · skipped {skipped}") } else { String::new() };
            let status = format!(
                "{} {done} · already returned {} · needs attention {} · waiting {}{skipped}{slowed}",
                if api.has_steps() { "refunded" } else { "cancelled" },
                t.get(Category::AlreadyReturned),
                attention,
                pool_ref.queue.len(),
            );
            reporter.progress(t.total(), total, &status);
        };
        let (writer, unfinished) = (&mut target.writer, &mut unfinished);
        let writer_thread = scope.spawn(move || {
            let written = write_results(writer, unfinished, finished, tally_ref, control, &on_commit);
            if let Err(e) = &written {
                // Answers that cannot be recorded must not pile up: no new
                // request leaves once the results file stops taking lines.
                control.stop(StopReason::Breaker(format!("{e:#}")));
            }
            written
        });
        for _ in 0..send.concurrency {
            let to_writer = to_writer.clone();
            scope.spawn(move || pool_ref.serve(to_writer));
        }
        let feed = (|| -> anyhow::Result<()> {
            // Ready rows wait here until their ids are on disk.
            let mut ready: Vec<Job> = Vec::with_capacity(JOURNAL_GROUP);
            let journaled = journal.is_some();
            let mut hand_over = |ready: &mut Vec<Job>| -> anyhow::Result<()> {
                if let Some(journal) = journal.as_mut() {
                    journal.record(ready.iter().filter_map(|j| {
                        let id = j.order.cancel_id.as_deref()?;
                        Some(JournalEntry {
                            row: j.raw.row,
                            bill_no: &j.order.bill_no,
                            amount: j.order.amount,
                            tag,
                            id,
                        })
                    }))?;
                }
                for job in ready.drain(..) {
                    pool_ref.pending.fetch_add(1, Ordering::SeqCst);
                    if to_workers.send(job).is_err() {
                        anyhow::bail!("the workers stopped unexpectedly");
                    }
                }
                Ok(())
            };
            for raw in rows.by_ref() {
                let raw = raw?;
                // Classified even when already final, so duplicates are judged
                // exactly as the first time; a final row is not written again.
                let verdict = classifier.classify(&header, &raw, &cfg_input.session_keys);
                if done.get(raw.row as usize - 1).copied().unwrap_or(false) {
                    continue;
                }
                let finished = match verdict {
                    Verdict::Ready(order) if !control.stopped() => {
                        ready.push(Job::new(raw, *order, api.steps()));
                        // Without a journal there is nothing to wait for.
                        if ready.len() >= JOURNAL_GROUP || !journaled {
                            hand_over(&mut ready)?;
                        }
                        continue;
                    }
                    Verdict::Ready(order) => {
                        stats_ref.cut_short.fetch_add(1, Ordering::Relaxed);
                        Finished { raw, cancel_id: order.cancel_id, valid: true, outcome: Outcome::skipped() }
                    }
                    Verdict::Rejected { category, message, valid } => Finished {
                        cancel_id: header.cancel_id_of(&raw),
                        raw,
                        valid,
                        outcome: Outcome::unsent(category, message),
                    },
                };
                if to_writer.send(finished).is_err() {
                    anyhow::bail!("the results writer stopped unexpectedly");
                }
            }
            hand_over(&mut ready)
        })();
        drop(to_workers);
        drop(to_writer);
        let write = writer_thread.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the results writer crashed")));
        // A writer failure is the cause; the feeder only sees its effect.
        write.and(feed)
    });
    reporter.finish_progress();
    written?;
    let tally = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    // An interrupt that came when every row was settled cut nothing short:
    // the run finished (exit 0 or 1, not "rows not attempted are skipped").
    let cut_short = stats.cut_short.load(Ordering::Relaxed) > 0;
    Ok(LiveReport {
        tally,
        stop: control.reason().filter(|r| cut_short || *r != StopReason::Interrupted),
        elapsed: started.elapsed(),
        requests: stats.requests.load(Ordering::Relaxed),
        token_refreshes: tokens.refreshes(),
        requested_rate: send.rate.get(),
        pace: pacer.report(),
    })
}
