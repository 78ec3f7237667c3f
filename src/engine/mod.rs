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

pub mod pace;
pub mod queue;

use crate::api::token::{TokenFailure, Tokens};
use crate::api::{Action, Transport};
use crate::attempt_log::{AttemptLog, Event};
use crate::category::Category;
use crate::clock::{unix_now, unix_now_f64};
use crate::input::{Classifier, Input, InputConfig, Order, RawRow, Verdict};
use crate::reporter::Reporter;
use crate::request::Signing;
use crate::results::journal::{Entry as JournalEntry, Journal};
use crate::results::output::{Outcome, ResultsWriter};
use crate::results::tally::Tally;
use crate::secret::Redactor;
use anyhow::Context as _;
use pace::{PaceChange, PaceReport, Pacer, Signal};
use queue::RetryQueue;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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
}

/// What a live run is given, beyond its input file and its results file.
pub struct Settings<'a> {
    pub send: &'a SendSettings,
    pub input: &'a InputConfig,
    pub signing: &'a Signing,
    pub redactor: &'a Redactor,
}

/// Consecutive breaker answers (90011, 90017) that stop the run.
const BREAKER_THRESHOLD: u32 = 3;
/// How long the first request may hold the others back (see `Control::canary`).
const CANARY_PATIENCE: Duration = Duration::from_secs(1);
/// The longest single wait, so that a stop or a due retry is noticed quickly.
const NAP: Duration = Duration::from_millis(50);
/// An order still processing (90016) settles in seconds to a minute, not in
/// the milliseconds a busy server needs: its delays are this many times the
/// back-off (500 ms → 5, 10, 20, 40 s: 75 s over the default 5 attempts).
pub const PROCESSING_FACTOR: u32 = 10;
/// Longest single delay of each schedule.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
const PROCESSING_CAP: Duration = Duration::from_secs(120);
/// Parked rows are held in memory; past this many (per worker, and at least
/// the absolute floor) workers take no fresh row until some are settled.
const PARKED_PER_WORKER: usize = 256;
const PARKED_FLOOR: usize = 4096;

/// Why a run stopped before every row was tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The circuit breaker tripped; the message names the likely cause.
    Breaker(String),
    /// Ctrl-C / SIGTERM.
    Interrupted,
}

/// Run-wide control: the stop flag, its reason, the breaker and the canary.
pub struct Control {
    stop: AtomicBool,
    /// Second Ctrl-C: record what is answered and quit at once.
    hard: AtomicBool,
    reason: Mutex<Option<StopReason>>,
    consecutive: AtomicU32,
    /// Until the first answer that is not a breaker answer, one request at a
    /// time: a wrong key then costs a few requests, not `concurrency` of them.
    warm: AtomicBool,
    canary: Mutex<()>,
    /// When the request now holding the canary took it.
    canary_since: Mutex<Option<Instant>>,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            stop: AtomicBool::new(false),
            hard: AtomicBool::new(false),
            reason: Mutex::new(None),
            consecutive: AtomicU32::new(0),
            warm: AtomicBool::new(false),
            canary: Mutex::new(()),
            canary_since: Mutex::new(None),
        }
    }
}

impl Control {
    pub fn stop_flag(&self) -> &AtomicBool {
        &self.stop
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Stops the run; the first reason given is kept.
    pub fn stop(&self, reason: StopReason) {
        let mut r = self.reason.lock().expect("control lock");
        if r.is_none() {
            *r = Some(reason);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    /// A second interrupt: the writer records what has been answered, syncs
    /// and exits the process at once (in-flight requests are abandoned; their
    /// rows are absent from the file and `--resume` re-sends them).
    pub fn hard_stop(&self) {
        self.stop(StopReason::Interrupted);
        self.hard.store(true, Ordering::SeqCst);
    }

    pub fn reason(&self) -> Option<StopReason> {
        self.reason.lock().expect("control lock").clone()
    }

    /// Until the run is warm, one request at a time. Workers that queued for
    /// the canary while the first request was out must not each hold it for a
    /// whole request once the run is warm: they re-check and pass through.
    /// A canary whose answer takes longer than [`CANARY_PATIENCE`] (a lost
    /// reply waits for the whole --timeout) warms the run anyway: a wrong key
    /// then costs at most `concurrency` requests before the breaker trips.
    fn canary(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        loop {
            if self.warm.load(Ordering::Acquire) || self.stopped() {
                return None;
            }
            match self.canary.try_lock() {
                Ok(guard) => {
                    *self.canary_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                    return (!self.warm.load(Ordering::Acquire)).then_some(guard);
                }
                Err(std::sync::TryLockError::Poisoned(e)) => return Some(e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {
                    let since = *self.canary_since.lock().unwrap_or_else(|e| e.into_inner());
                    if since.is_some_and(|t| t.elapsed() >= CANARY_PATIENCE) {
                        self.warm.store(true, Ordering::Release);
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    fn answer_ok(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
        self.warm.store(true, Ordering::Release);
    }

    fn answer_fatal(&self, why: String) {
        if self.consecutive.fetch_add(1, Ordering::SeqCst) + 1 >= BREAKER_THRESHOLD {
            self.stop(StopReason::Breaker(why));
        }
    }
}

/// Live counters for progress and the summary.
#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    /// Rows the stop settled before their time (never attempted, or parked
    /// with attempts left): an interrupt that cut none short changed nothing.
    pub cut_short: AtomicU64,
}

/// One row on its way through the workers.
struct Job {
    raw: RawRow,
    order: Order,
    attempts: u32,
    /// Attempts the access token's rejection (then refreshed) answered: the
    /// run's problem, not the row's, so they do not use up `--max-attempts`
    /// (up to [`TOKEN_RETRIES`]; the breaker stops a token that cannot be had).
    token_rejections: u32,
    /// The answer of the last attempt, kept while the row is parked: a run
    /// stopped meanwhile records it (not final, so `--resume` retries it).
    last: Option<Outcome>,
}

impl Job {
    fn new(raw: RawRow, order: Order) -> Job {
        Job { raw, order, attempts: 0, token_rejections: 0, last: None }
    }

    /// Attempts that count toward `--max-attempts`.
    fn counted_attempts(&self) -> u32 {
        self.attempts - self.token_rejections.min(TOKEN_RETRIES)
    }
}

/// Token rejections per row that do not count as attempts.
const TOKEN_RETRIES: u32 = 10;

/// One finished row on its way to the results file.
struct Finished {
    raw: RawRow,
    /// v2: the cancellation id, for the results file.
    cancel_id: Option<String>,
    valid: bool,
    outcome: Outcome,
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

/// What one attempt leads to.
enum Step {
    /// The row is settled with this outcome.
    Done(Outcome),
    /// The row waits in the retry queue until then.
    Park(Instant),
}

/// Which overload signal an answer is.
fn signal(category: Category, action: Action) -> Signal {
    match (action, category) {
        (Action::Retry { slow_down: true }, Category::RateLimited) => Signal::Limit,
        (Action::Retry { slow_down: true }, _) => Signal::Busy,
        _ => Signal::Fine,
    }
}

/// Everything a worker needs, shared.
struct Worker<'a> {
    send: &'a SendSettings,
    signing: &'a Signing,
    redactor: &'a Redactor,
    transport: &'a dyn Transport,
    tokens: &'a Tokens,
    pacer: &'a Pacer,
    control: &'a Control,
    stats: &'a Stats,
    log: Option<&'a AttemptLog>,
}

impl Worker<'_> {
    /// One attempt for `job`: waits for the pace, signs at send time, sends,
    /// and decides whether the row is settled or waits for another attempt.
    fn attempt(&self, job: &mut Job) -> Step {
        let settle_unsent = |job: &mut Job, why: Outcome| {
            self.stats.cut_short.fetch_add(1, Ordering::Relaxed);
            Step::Done(job.last.take().unwrap_or(why))
        };
        let canary = self.control.canary();
        let Some((epoch, probe)) = self.pacer.wait(self.control.stop_flag()) else {
            return settle_unsent(job, Outcome::skipped());
        };
        if let Some(change) = probe {
            self.log_pace(&change);
        }
        let token = match self.tokens.current() {
            Ok(t) => t,
            Err(e) => {
                self.control.stop(StopReason::Breaker(e.to_string()));
                return settle_unsent(job, Outcome::unsent(Category::TokenError, e.to_string()));
            }
        };
        let ts = unix_now();
        let (sent_at, sent_unix, pace_now) = (Instant::now(), unix_now_f64(), self.pacer.current_rate());
        let order = job.order.as_ref();
        let request = self.signing.live(&order, &token, ts);
        let reply = self.transport.cancel(request.uri, token.expose(), &request.query_tail, &request.body);
        job.attempts += 1;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let api = self.signing.api();
        let (category, action) = reply.classify(api);
        if let Some(cut) = self.pacer.observe(epoch, signal(category, action)) {
            self.log_pace(&cut);
        }
        let mut errmsg = self.redactor.redact(&reply.message());
        if request.without_session_key && matches!(category, Category::SessionExpired | Category::MpSigError) {
            errmsg.push_str(" (sent without mp_sig: supply session keys, see README)");
        }
        let outcome = Outcome { category, errcode: reply.errcode(), errmsg, attempts: job.attempts, ts: Some(ts) };
        if let Some(log) = self.log {
            log.write(&Event::Request {
                sent: sent_unix,
                answered: unix_now_f64(),
                row: job.raw.row,
                bill_no: order.bill_no,
                attempt: job.attempts,
                http_status: reply.http_status(),
                errcode: reply.errcode(),
                category: category.as_str(),
                latency_ms: sent_at.elapsed().as_secs_f64() * 1000.0,
                pace: pace_now,
            });
        }
        // The canary is released only once the answer has been counted,
        // so a queued worker cannot slip a request past a tripping breaker.
        if action == Action::Breaker {
            let why = api.breaker_message(category, reply.errcode(), BREAKER_THRESHOLD, self.signing.sandbox());
            self.control.answer_fatal(why);
            drop(canary);
            return Step::Done(outcome);
        }
        self.control.answer_ok();
        drop(canary);
        let due = match action {
            Action::Stop | Action::Breaker => None,
            Action::Retry { .. } => Some(Instant::now() + self.delay(category, job.attempts)),
            Action::RefreshToken => match self.tokens.rejected(&token) {
                // Re-signed with the new token at once.
                Ok(()) => {
                    job.token_rejections += 1;
                    Some(Instant::now())
                }
                Err(e) => {
                    let stop_why = match e {
                        TokenFailure::StaticRejected | TokenFailure::RefreshExhausted => e.to_string(),
                        TokenFailure::Fetch(_) => format!("access token rejected and {e}"),
                    };
                    self.control.stop(StopReason::Breaker(stop_why));
                    None
                }
            },
        };
        match due {
            Some(due) if job.counted_attempts() < self.send.max_attempts && !self.control.stopped() => {
                job.last = Some(outcome);
                Step::Park(due)
            }
            Some(_) if job.counted_attempts() < self.send.max_attempts => {
                self.stats.cut_short.fetch_add(1, Ordering::Relaxed);
                Step::Done(outcome)
            }
            _ => Step::Done(outcome),
        }
    }

    /// The wait before the next attempt: exponential with jitter, on the
    /// processing schedule for 90016 and the back-off schedule otherwise.
    fn delay(&self, category: Category, attempts: u32) -> Duration {
        let doubling = 1u32 << attempts.saturating_sub(1).min(16);
        if category == Category::Processing {
            let full = self.send.backoff.saturating_mul(PROCESSING_FACTOR).saturating_mul(doubling);
            // ±10 %: the schedule's sum is a promise (see PROCESSING_FACTOR).
            full.min(PROCESSING_CAP).mul_f64(0.9 + fastrand::f64() / 5.0)
        } else {
            let full = self.send.backoff.saturating_mul(doubling).min(BACKOFF_CAP);
            full.mul_f64(0.5 + fastrand::f64() / 2.0)
        }
    }

    fn log_pace(&self, change: &PaceChange) {
        if let Some(log) = self.log {
            log.write(&Event::Pace { at: unix_now_f64(), from: change.from, to: change.to, why: change.why });
        }
    }
}

/// The shared state of the worker pool.
struct Pool<'a> {
    jobs: crossbeam_channel::Receiver<Job>,
    queue: RetryQueue<Job>,
    /// Rows handed to the pool and not yet sent to the writer (queued,
    /// parked or in an attempt): the pool is done when this is 0 and the
    /// feeder has hung up.
    pending: AtomicU64,
    parked_cap: usize,
    worker: Worker<'a>,
}

impl Pool<'_> {
    /// Hands a settled row to the writer. When the writer has failed the run
    /// is stopping (it raised the stop) and the row is left out: it was
    /// never recorded, so `--resume` sends it again.
    fn finish(&self, to_writer: &crossbeam_channel::Sender<Finished>, job: Job, outcome: Outcome) {
        let _ = to_writer.send(Finished { raw: job.raw, cancel_id: job.order.cancel_id, valid: true, outcome });
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// One worker's loop: due retries first, then fresh rows; after a stop,
    /// settles what is left. Returns once the feeder has hung up and no row
    /// is pending. `to_writer` is this worker's own handle, so the writer
    /// sees the end once every worker has returned.
    fn serve(&self, to_writer: crossbeam_channel::Sender<Finished>) {
        loop {
            if self.worker.control.stopped() {
                if !self.settle_after_stop(&to_writer) {
                    return;
                }
                continue;
            }
            let now = Instant::now();
            let job = match self.queue.take_due(now) {
                Some(job) => job,
                None => {
                    let wait = self.queue.next_due().map_or(NAP, |d| d.saturating_duration_since(now)).min(NAP);
                    if self.queue.len() >= self.parked_cap {
                        std::thread::sleep(wait);
                        continue;
                    }
                    match self.jobs.recv_timeout(wait) {
                        Ok(job) => job,
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                            if self.pending.load(Ordering::SeqCst) == 0 {
                                return;
                            }
                            std::thread::sleep(wait.max(Duration::from_millis(1)));
                            continue;
                        }
                    }
                }
            };
            let mut job = job;
            match self.worker.attempt(&mut job) {
                Step::Done(outcome) => self.finish(&to_writer, job, outcome),
                Step::Park(due) => self.queue.park(job, due),
            }
        }
    }

    /// After a stop: parked rows are recorded with their last answer, rows
    /// still queued as `skipped`. Returns `false` once nothing is left.
    fn settle_after_stop(&self, to_writer: &crossbeam_channel::Sender<Finished>) -> bool {
        let cut_short = || self.worker.stats.cut_short.fetch_add(1, Ordering::Relaxed);
        while let Some(mut job) = self.queue.take_any() {
            cut_short();
            let outcome = job.last.take().unwrap_or_else(Outcome::skipped);
            self.finish(to_writer, job, outcome);
        }
        match self.jobs.recv_timeout(NAP) {
            Ok(job) => {
                cut_short();
                self.finish(to_writer, job, Outcome::skipped());
                true
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => true,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                let left = self.pending.load(Ordering::SeqCst) > 0;
                if left {
                    std::thread::sleep(Duration::from_millis(5));
                }
                left
            }
        }
    }
}

/// Appends finished rows and syncs them in groups (one fsync covers every
/// row that finished meanwhile), counting a row only once it is on disk. A
/// row an earlier run left unfinished carries that run's outcome on in its
/// new line (see [`Outcome::after`]).
fn write_results(
    writer: &mut ResultsWriter<std::fs::File>,
    unfinished: &mut HashMap<u64, (Outcome, Option<String>)>,
    finished: crossbeam_channel::Receiver<Finished>,
    tally: &Mutex<Tally>,
    control: &Control,
    on_commit: &dyn Fn(&Tally),
) -> anyhow::Result<()> {
    const GROUP: usize = 512;
    let mut pending = Vec::with_capacity(GROUP);
    loop {
        let first = match finished.recv_timeout(NAP) {
            Ok(f) => f,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if control.hard.load(Ordering::SeqCst) {
                    writer.flush()?;
                    writer.get_ref().sync_data()?;
                    std::process::exit(crate::exit::Exit::Interrupted as i32);
                }
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        // Everything that finished meanwhile joins this group.
        for f in std::iter::once(first).chain(std::iter::from_fn(|| finished.try_recv().ok())).take(GROUP) {
            pending.push(f.outcome.category);
            let outcome = match unfinished.remove(&f.raw.row) {
                Some((earlier, _)) => f.outcome.after(&earlier),
                None => f.outcome,
            };
            writer
                .write_live(&f.raw, f.valid, f.cancel_id.as_deref(), &outcome)
                .context("cannot write the results file")?;
        }
        writer.flush().context("cannot write the results file")?;
        writer.get_ref().sync_data().context("cannot sync the results file")?;
        let mut t = tally.lock().expect("tally lock");
        for c in pending.drain(..) {
            t.add(c);
        }
        on_commit(&t);
    }
    Ok(())
}

/// Where a live run writes: the results file (new, or resumed with the rows
/// already final in it), what it already holds, and the ids journal.
pub struct Target {
    pub writer: ResultsWriter<std::fs::File>,
    /// `done[row - 1]`: the row has a final line already (empty: none).
    pub done: Vec<bool>,
    /// Categories of the final lines already in the file.
    pub prior: Tally,
    /// Rows an earlier run left unfinished: their outcome and id so far.
    pub unfinished: HashMap<u64, (Outcome, Option<String>)>,
    /// APIs whose operations have their own ids (v2): every row's id is
    /// recorded here, and synced, before its first request leaves.
    pub journal: Option<Journal>,
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
            let attention = t.total() - t.get(Category::Cancelled) - t.get(Category::AlreadyReturned) - skipped;
            let pace = pacer_ref.current_rate();
            let slowed =
                if pace < f64::from(send.rate.get()) { format!(" · pace {pace:.0}/s") } else { String::new() };
            let skipped = if skipped > 0 { format!(" · skipped {skipped}") } else { String::new() };
            let status = format!(
                "cancelled {} · already returned {} · needs attention {} · waiting to retry {}{skipped}{slowed}",
                t.get(Category::Cancelled),
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
                    let amounts: Vec<String> =
                        ready.iter().map(|j| j.order.amount.map(|a| a.to_string()).unwrap_or_default()).collect();
                    journal.record(ready.iter().zip(&amounts).filter_map(|(j, amount)| {
                        let id = j.order.cancel_id.as_deref()?;
                        Some(JournalEntry { row: j.raw.row, bill_no: &j.order.bill_no, amount, tag, id })
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
                        ready.push(Job::new(raw, order));
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
