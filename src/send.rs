//! The live run: pacing (governor), workers, retries, back-pressure, the
//! circuit breaker, and the durable results writer.
//!
//! The feeder (calling thread) reads and classifies rows in input order and
//! hands sendable ones to `concurrency` worker threads; every finished row
//! goes to one writer thread that appends it to the results file and syncs
//! it before it is counted. Rows finish out of order; the `row` column says
//! which input row each line is.

use crate::api::{cancel_body, Action, Transport};
use crate::category::Category;
use crate::config::RunConfig;
use crate::dryrun::unix_now;
use crate::input::{Classifier, Input, Order, RawRow, Verdict};
use crate::output::{Outcome, ResultsWriter};
use crate::report::Tally;
use crate::reporter::Reporter;
use crate::sign::Signer;
use crate::token::{TokenFailure, Tokens};
use anyhow::Context as _;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Sending settings of a live run.
#[derive(Clone, Debug)]
pub struct SendSettings {
    pub rate: NonZeroU32,
    pub burst: u32,
    pub concurrency: usize,
    pub max_attempts: u32,
    pub timeout: Duration,
    /// First retry delay; doubles per attempt, with jitter.
    pub backoff: Duration,
}

/// Consecutive breaker answers (90011, 90017) that stop the run.
const BREAKER_THRESHOLD: u32 = 3;
/// The longest single sleep, so that a stop is noticed quickly.
const NAP: Duration = Duration::from_millis(50);
/// Back-pressure: at most one cut per this interval (the answers of requests
/// already in flight when WeChat pushed back belong to the same episode) ...
const CUT_EVERY: Duration = Duration::from_secs(2);
/// ... a cut needs this share of overload answers among recent answers, so a
/// stray "system busy" does not slow the run ...
const OVERLOAD_SHARE: f64 = 0.05;
/// ... and each quiet interval after a cut gives back this share of the
/// full rate (additive increase, multiplicative decrease).
const RECOVER_EVERY: Duration = Duration::from_secs(1);
const RECOVER_STEP: f64 = 0.1;
/// GCRA admits `burst + 1` at once and then one per period; pacing at 99.5 %
/// of `--rate` keeps any sliding second under `rate + burst` even when a few
/// requests leave a little late.
const PACE_MARGIN: f64 = 0.995;

fn limiter(per_second: f64, capacity: u32) -> DefaultDirectRateLimiter {
    let period = Duration::from_secs_f64(1.0 / per_second.max(0.01));
    let quota = Quota::with_period(period)
        .expect("a positive period")
        .allow_burst(NonZeroU32::new(capacity.max(1)).expect("capacity >= 1"));
    RateLimiter::direct(quota)
}

struct Slowdown {
    factor: f64,
    limiter: Option<DefaultDirectRateLimiter>,
    last_cut: Option<Instant>,
    last_change: Instant,
    /// Answers and overload answers in the current and previous second.
    window_start: Instant,
    answers: [u32; 2],
    signals: [u32; 2],
}

/// Pacing shared by every worker: a fixed limiter that enforces `rate +
/// burst`, and on top of it a slower one while WeChat signals overload.
pub struct Pacer {
    hard: DefaultDirectRateLimiter,
    rate: f64,
    slow: RwLock<Slowdown>,
    slowdowns: AtomicU64,
    clock: DefaultClock,
}

impl Pacer {
    pub fn new(rate: NonZeroU32, burst: u32) -> Pacer {
        let rate = f64::from(rate.get());
        Pacer {
            hard: limiter(rate * PACE_MARGIN, burst + 1),
            rate,
            slow: RwLock::new(Slowdown {
                factor: 1.0,
                limiter: None,
                last_cut: None,
                last_change: Instant::now(),
                window_start: Instant::now(),
                answers: [0; 2],
                signals: [0; 2],
            }),
            slowdowns: AtomicU64::new(0),
            clock: DefaultClock::default(),
        }
    }

    /// Blocks until a request may leave; `false` when `stop` was raised.
    pub fn wait(&self, stop: &AtomicBool) -> bool {
        loop {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            self.recover();
            let wait = {
                let slow = self.slow.read().expect("pacer lock");
                match &slow.limiter {
                    Some(l) => l.check().err().map(|n| n.wait_time_from(self.clock.now())),
                    None => None,
                }
            };
            match wait {
                Some(d) => std::thread::sleep(d.min(NAP)),
                None => break,
            }
        }
        loop {
            match self.hard.check() {
                Ok(()) => return true,
                Err(n) => std::thread::sleep(n.wait_time_from(self.clock.now()).min(NAP)),
            }
            if stop.load(Ordering::Relaxed) {
                return false;
            }
        }
    }

    /// Counts one answer; `overload` when WeChat pushed back (45009, -1,
    /// 429, 5xx). Halves the pace when overload answers are a real share of
    /// the recent ones.
    pub fn observe(&self, overload: bool) {
        let now = Instant::now();
        let mut s = self.slow.write().expect("pacer lock");
        if now.duration_since(s.window_start) >= Duration::from_secs(1) {
            let fresh = now.duration_since(s.window_start) < Duration::from_secs(2);
            s.answers = [0, if fresh { s.answers[0] } else { 0 }];
            s.signals = [0, if fresh { s.signals[0] } else { 0 }];
            s.window_start = now;
        }
        s.answers[0] += 1;
        if !overload {
            return;
        }
        s.signals[0] += 1;
        let (signals, answers) = (s.signals[0] + s.signals[1], s.answers[0] + s.answers[1]);
        if signals < 2 || f64::from(signals) < OVERLOAD_SHARE * f64::from(answers) {
            return;
        }
        if s.last_cut.is_some_and(|t| now.duration_since(t) < CUT_EVERY) {
            return;
        }
        let floor = 1.0 / self.rate; // never below one request a second
        s.factor = (s.factor / 2.0).max(floor);
        s.limiter = Some(limiter(self.rate * s.factor, 1));
        s.last_cut = Some(now);
        s.last_change = now;
        self.slowdowns.fetch_add(1, Ordering::Relaxed);
    }

    /// Raises the pace a step after a quiet interval, up to full rate.
    fn recover(&self) {
        let now = Instant::now();
        {
            let s = self.slow.read().expect("pacer lock");
            if s.limiter.is_none() || now.duration_since(s.last_change) < RECOVER_EVERY {
                return;
            }
        }
        let mut s = self.slow.write().expect("pacer lock");
        if s.limiter.is_none() || now.duration_since(s.last_change) < RECOVER_EVERY {
            return;
        }
        s.factor = (s.factor + RECOVER_STEP).min(1.0);
        s.limiter = (s.factor < 1.0).then(|| limiter(self.rate * s.factor, 1));
        s.last_change = now;
    }

    /// The pace now, in requests per second.
    pub fn current_rate(&self) -> f64 {
        self.rate * self.slow.read().expect("pacer lock").factor
    }

    /// How many times the run was slowed down.
    pub fn slowdowns(&self) -> u64 {
        self.slowdowns.load(Ordering::Relaxed)
    }
}

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
    fn canary(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        if self.warm.load(Ordering::Acquire) {
            return None;
        }
        let guard = self.canary.lock().unwrap_or_else(|e| e.into_inner());
        (!self.warm.load(Ordering::Acquire)).then_some(guard)
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

/// The message that explains a breaker answer.
fn breaker_message(category: Category, errcode: Option<i64>, sandbox: bool) -> String {
    let code = errcode.map(|c| c.to_string()).unwrap_or_default();
    match category {
        Category::SigError => format!(
            "WeChat answered {code} (sig wrong) {BREAKER_THRESHOLD} times in a row: MIDAS_APP_KEY is not the {} app key{}",
            if sandbox { "sandbox" } else { "production" },
            if sandbox {
                " (a production key used with --sandbox?)"
            } else {
                " (the sandbox key used in production? then add --sandbox, or export the production key)"
            }
        ),
        _ => format!(
            "WeChat answered {code} (no permission) {BREAKER_THRESHOLD} times in a row: this appid/offer_id may not call \
             cancelpay; check --appid, --offer-id and the Mini Game's virtual-payment settings"
        ),
    }
}

/// Live counters for progress and the summary.
#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub retrying: AtomicU64,
}

/// One row handed to a worker.
struct Job {
    raw: RawRow,
    order: Order,
}

/// One finished row on its way to the results file.
struct Finished {
    raw: RawRow,
    valid: bool,
    outcome: Outcome,
}

/// What a live run ended with.
pub struct LiveReport {
    pub tally: Tally,
    pub stop: Option<StopReason>,
    pub elapsed: Duration,
    pub requests: u64,
    pub slowdowns: u64,
    pub token_refreshes: u64,
}

/// Everything a worker needs, shared.
struct Worker<'a> {
    cfg: &'a RunConfig,
    send: &'a SendSettings,
    transport: &'a dyn Transport,
    tokens: &'a Tokens,
    signer: Signer,
    pacer: &'a Pacer,
    control: &'a Control,
    stats: &'a Stats,
}

impl Worker<'_> {
    /// Sends one row until it has an outcome: retries what can be retried,
    /// signs every attempt at send time.
    fn process(&self, order: &Order) -> Outcome {
        let mut last: Option<Outcome> = None;
        let mut attempts = 0u32;
        loop {
            if self.control.stopped() {
                // Untouched rows are skipped; a row between retries keeps its
                // last answer (not final, so --resume retries it).
                return last
                    .unwrap_or_else(|| Outcome::unsent(Category::Skipped, "not attempted: the run was stopped"));
            }
            let canary = self.control.canary();
            if !self.pacer.wait(self.control.stop_flag()) {
                continue; // stopped while waiting: settle above
            }
            let token = match self.tokens.current() {
                Ok(t) => t,
                Err(e) => {
                    self.control.stop(StopReason::Breaker(e.to_string()));
                    return last.unwrap_or_else(|| Outcome::unsent(Category::TokenError, e.to_string()));
                }
            };
            let ts = unix_now();
            let order_ref = order.as_ref();
            let params = self.cfg.request.params(&order_ref, ts);
            let with_mp = self.cfg.input.mp_sig.inputs(Some(&token), order_ref.session_key);
            let sigs = self.signer.sign(&params, with_mp);
            let reply = self.transport.cancel(self.signer.uri(), token.expose(), &cancel_body(&params, &sigs));
            attempts += 1;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let (category, action) = reply.classify();
            self.pacer.observe(matches!(action, Action::Retry { slow_down: true }));
            let mut errmsg = self.cfg.redactor.redact(&reply.message());
            if with_mp.is_none() && matches!(category, Category::SessionExpired | Category::MpSigError) {
                errmsg.push_str(" (sent without mp_sig: supply session keys, see README)");
            }
            let outcome = Outcome { category, errcode: reply.errcode(), errmsg, attempts, ts: Some(ts) };
            // The canary is released only once the answer has been counted,
            // so a queued worker cannot slip a request past a tripping breaker.
            if action == Action::Breaker {
                let why = breaker_message(category, reply.errcode(), self.cfg.request.sandbox);
                self.control.answer_fatal(why);
                drop(canary);
                return outcome;
            }
            self.control.answer_ok();
            drop(canary);
            let retry = match action {
                Action::Stop | Action::Breaker => false,
                Action::Retry { .. } => true,
                Action::RefreshToken => match self.tokens.rejected(&token) {
                    Ok(()) => true,
                    Err(e) => {
                        let stop_why = match e {
                            TokenFailure::StaticRejected | TokenFailure::RefreshExhausted => e.to_string(),
                            TokenFailure::Fetch(_) => format!("access token rejected and {e}"),
                        };
                        self.control.stop(StopReason::Breaker(stop_why));
                        false
                    }
                },
            };
            if !retry || attempts >= self.send.max_attempts {
                return outcome;
            }
            if matches!(action, Action::Retry { .. }) {
                self.stats.retrying.fetch_add(1, Ordering::Relaxed);
                self.nap(self.backoff(attempts));
                self.stats.retrying.fetch_sub(1, Ordering::Relaxed);
            }
            last = Some(outcome);
        }
    }

    /// Exponential back-off with jitter: half to all of base × 2^(n-1), capped.
    fn backoff(&self, attempts: u32) -> Duration {
        let cap = Duration::from_secs(30);
        let full = self.send.backoff.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(cap);
        full.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    /// Sleeps, waking early when the run stops.
    fn nap(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.control.stopped() {
            let now = Instant::now();
            if now >= until {
                return;
            }
            std::thread::sleep((until - now).min(NAP));
        }
    }
}

/// Appends finished rows and syncs them in groups (one fsync covers every
/// row that finished meanwhile), counting a row only once it is on disk.
fn write_results(
    writer: &mut ResultsWriter<std::fs::File>,
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
                    std::process::exit(crate::Exit::Interrupted as i32);
                }
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        // Everything that finished meanwhile joins this group.
        for f in std::iter::once(first).chain(std::iter::from_fn(|| finished.try_recv().ok())).take(GROUP) {
            pending.push(f.outcome.category);
            writer.write_live(&f.raw, f.valid, &f.outcome).context("cannot write the results file")?;
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
/// already final in it) and what it already holds.
pub struct Target {
    pub writer: ResultsWriter<std::fs::File>,
    /// `done[row - 1]`: the row has a final line already (empty: none).
    pub done: Vec<bool>,
    /// Categories of the lines already in the file.
    pub prior: Tally,
}

/// Runs a live run over `input` (`total` rows) into `target`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    cfg: &RunConfig,
    transport: Arc<dyn Transport>,
    tokens: &Tokens,
    control: &Control,
    input: &Input,
    total: u64,
    mut target: Target,
    reporter: &Reporter,
) -> anyhow::Result<LiveReport> {
    let send = &cfg.send;
    let started = Instant::now();
    let mut rows = input.rows(&cfg.input.columns, None)?;
    let header = rows.header().clone();
    // The header is on disk before the first request leaves.
    target.writer.flush()?;
    target.writer.get_ref().sync_data()?;
    let pacer = Pacer::new(send.rate, send.burst);
    let stats = Stats::default();
    let tally = Mutex::new(target.prior.clone());
    let done = std::mem::take(&mut target.done);
    let mut classifier = Classifier::new(cfg.input.mp_sig);
    reporter.start_progress(total, false);

    let (to_workers, jobs) = crossbeam_channel::bounded::<Job>(send.concurrency);
    let (to_writer, finished) = crossbeam_channel::bounded::<Finished>(4 * send.concurrency + 64);
    let worker = Worker {
        cfg,
        send,
        transport: transport.as_ref(),
        tokens,
        signer: Signer::new(cfg.app_key.expose(), cfg.request.sandbox),
        pacer: &pacer,
        control,
        stats: &stats,
    };

    let (tally_ref, stats_ref, pacer_ref) = (&tally, &stats, &pacer);
    let written = std::thread::scope(|scope| -> anyhow::Result<()> {
        let on_commit = move |t: &Tally| {
            let (stats, pacer) = (stats_ref, pacer_ref);
            let attention = t.total() - t.get(Category::Cancelled) - t.get(Category::AlreadyReturned);
            let pace = pacer.current_rate();
            let slowed =
                if pace < f64::from(send.rate.get()) { format!(" · slowed to {pace:.0}/s") } else { String::new() };
            let status = format!(
                "cancelled {} · already returned {} · needs attention {} · retrying {}{slowed}",
                t.get(Category::Cancelled),
                t.get(Category::AlreadyReturned),
                attention,
                stats.retrying.load(Ordering::Relaxed),
            );
            reporter.progress(t.total(), total, &status);
        };
        let writer = &mut target.writer;
        let writer_thread = scope.spawn(move || {
            let written = write_results(writer, finished, tally_ref, control, &on_commit);
            if let Err(e) = &written {
                // Answers that cannot be recorded must not pile up: no new
                // request leaves once the results file stops taking lines.
                control.stop(StopReason::Breaker(format!("{e:#}")));
            }
            written
        });
        for _ in 0..send.concurrency {
            let (jobs, to_writer, worker) = (jobs.clone(), to_writer.clone(), &worker);
            scope.spawn(move || {
                for job in jobs {
                    let outcome = worker.process(&job.order);
                    if to_writer.send(Finished { raw: job.raw, valid: true, outcome }).is_err() {
                        return;
                    }
                }
            });
        }
        drop(jobs);
        let feed = (|| -> anyhow::Result<()> {
            for raw in rows.by_ref() {
                let raw = raw?;
                // Classified even when already final, so duplicates are judged
                // exactly as the first time; a final row is not written again.
                let verdict = classifier.classify(&header, &raw, &cfg.input.session_keys);
                if done.get(raw.row as usize - 1).copied().unwrap_or(false) {
                    continue;
                }
                let finished = match verdict {
                    Verdict::Ready(order) if !control.stopped() => {
                        if to_workers.send(Job { raw, order }).is_err() {
                            anyhow::bail!("the workers stopped unexpectedly");
                        }
                        continue;
                    }
                    Verdict::Ready(_) => Finished { raw, valid: true, outcome: Outcome::skipped() },
                    Verdict::Rejected { category, message, valid } => {
                        Finished { raw, valid, outcome: Outcome::unsent(category, message) }
                    }
                };
                if to_writer.send(finished).is_err() {
                    anyhow::bail!("the results writer stopped unexpectedly");
                }
            }
            Ok(())
        })();
        drop(to_workers);
        drop(to_writer);
        let write = writer_thread.join().expect("writer thread panicked");
        // A writer failure is the cause; the feeder only sees its effect.
        write.and(feed)
    });
    reporter.finish_progress();
    written?;
    let tally = tally.into_inner().expect("tally lock");
    Ok(LiveReport {
        tally,
        stop: control.reason(),
        elapsed: started.elapsed(),
        requests: stats.requests.load(Ordering::Relaxed),
        slowdowns: pacer.slowdowns(),
        token_refreshes: tokens.refreshes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stray_overload_answers_do_not_slow_the_run() {
        let p = Pacer::new(NonZeroU32::new(100).unwrap(), 1);
        for i in 0..200 {
            p.observe(i % 50 == 0); // 2 %
        }
        assert_eq!(p.slowdowns(), 0);
        assert_eq!(p.current_rate(), 100.0);
    }

    #[test]
    fn sustained_overload_halves_the_pace_once_per_episode_then_recovers() {
        let p = Pacer::new(NonZeroU32::new(100).unwrap(), 1);
        for i in 0..100 {
            p.observe(i % 3 == 0);
        }
        assert_eq!(p.slowdowns(), 1, "one cut for one episode");
        assert_eq!(p.current_rate(), 50.0);
        // Pretend the last change was long ago: recovery adds a step.
        p.slow.write().unwrap().last_change -= RECOVER_EVERY;
        p.recover();
        assert!((p.current_rate() - 60.0).abs() < 1e-9);
    }
}
