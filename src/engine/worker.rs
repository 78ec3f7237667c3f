//! The worker pool: one attempt at a time per worker, signed at send time;
//! a row that must wait (a back-off, an order still processing, a refreshed
//! token) is parked in the time-ordered queue and the worker takes whatever
//! is due next, parked or fresh.

use super::control::{Control, StopReason, BREAKER_THRESHOLD, KEY_REFUSED, KEY_RIGHT};
use super::pace::{PaceChange, Pacer, Signal};
use super::queue::RetryQueue;
use super::writer::Finished;
use super::{SendSettings, Stats, NAP, PROCESSING_FACTOR};
use crate::api::token::{TokenFailure, Tokens};
use crate::api::{Action, RowSteps, Transport, Turn};
use crate::attempt_log::{AttemptLog, Event};
use crate::category::Category;
use crate::clock::{unix_now, unix_now_f64};
use crate::input::{Order, OrderRef, RawRow};
use crate::request::Signing;
use crate::results::output::Outcome;
use crate::secret::{Redactor, Secret};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest single delay of each schedule.
pub(super) const BACKOFF_CAP: Duration = Duration::from_secs(30);

pub(super) const PROCESSING_CAP: Duration = Duration::from_secs(120);

/// One row on its way through the workers.
pub(super) struct Job {
    pub(super) raw: RawRow,
    pub(super) order: Order,
    pub(super) attempts: u32,
    /// Attempts the access token's rejection (then refreshed) answered: the
    /// run's problem, not the row's, so they do not use up `--max-attempts`
    /// (up to [`TOKEN_RETRIES`]; the breaker stops a token that cannot be had).
    pub(super) token_rejections: u32,
    /// The answer of the last attempt, kept while the row is parked: a run
    /// stopped meanwhile records it (not final, so `--resume` retries it).
    pub(super) last: Option<Outcome>,
    /// A row of several steps (xpay-refund): where it stands.
    pub(super) steps: Option<RowSteps>,
    /// `attempts` when the current step began: `--max-attempts` counts
    /// the tries of one step.
    pub(super) step_start: u32,
}

impl Job {
    pub(super) fn new(raw: RawRow, order: Order, steps: Option<RowSteps>) -> Job {
        Job { raw, order, attempts: 0, token_rejections: 0, last: None, steps, step_start: 0 }
    }

    /// Attempts of this step that count toward `--max-attempts`.
    pub(super) fn counted_attempts(&self) -> u32 {
        self.attempts - self.step_start - self.token_rejections.min(TOKEN_RETRIES)
    }
}

/// Token rejections per row that do not count as attempts.
pub(super) const TOKEN_RETRIES: u32 = 10;

/// What one attempt leads to.
pub(super) enum Step {
    /// The row is settled with this outcome.
    Done(Outcome),
    /// The row waits in the retry queue until then.
    Park(Instant),
}

/// Which overload signal an answer is.
pub(super) fn signal(category: Category, action: Action) -> Signal {
    match (action, category) {
        (Action::Retry { slow_down: true }, Category::RateLimited) => Signal::Limit,
        (Action::Retry { slow_down: true }, _) => Signal::Busy,
        _ => Signal::Fine,
    }
}

/// Everything a worker needs, shared.
pub(super) struct Worker<'a> {
    pub(super) send: &'a SendSettings,
    pub(super) signing: &'a Signing,
    pub(super) redactor: &'a Redactor,
    pub(super) transport: &'a dyn Transport,
    pub(super) tokens: &'a Tokens,
    pub(super) pacer: &'a Pacer,
    pub(super) control: &'a Control,
    pub(super) stats: &'a Stats,
    pub(super) log: Option<&'a AttemptLog>,
}

impl Worker<'_> {
    /// One attempt for `job`: waits for the pace, signs at send time, sends,
    /// and decides whether the row is settled or waits for another attempt.
    pub(super) fn attempt(&self, job: &mut Job) -> Step {
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
        let request = self.signing.live(&order, job.steps.as_ref(), &token, ts);
        let reply = self.transport.cancel(request.uri, token.expose(), &request.query_tail, &request.body);
        job.attempts += 1;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let api = self.signing.api();
        // A row of several steps reads its answer itself; the rest by the table.
        let turn = match job.steps.as_mut() {
            Some(steps) => steps.read(&reply, &order, &self.send.polling),
            None => {
                let (category, action) = reply.classify(api);
                Turn::Answer(category, action)
            }
        };
        // A step's own words, and when its next step is due.
        let (category, action, note, next_step) = match turn {
            Turn::Answer(category, action) => (category, action, None, None),
            Turn::Settle(category, note) => (category, Action::Stop, Some(note), None),
            Turn::Next { wait, meanwhile, note } => (meanwhile, Action::Stop, Some(note), Some(wait)),
        };
        if let Some(cut) = self.pacer.observe(epoch, signal(category, action)) {
            self.log_pace(&cut);
        }
        let mut errmsg = reply.message();
        if request.without_session_key && matches!(category, Category::SessionExpired | Category::MpSigError) {
            errmsg.push_str(" (sent without mp_sig: supply session keys, see README)");
        }
        if let Some(note) = note {
            errmsg = if errmsg.is_empty() || errmsg == "ok" { note } else { format!("{note} ({errmsg})") };
        }
        // Last, over everything: a step's words may quote WeChat's errmsg.
        let errmsg = self.redactor.redact(&errmsg);
        let refund = job.steps.as_ref().map(|s| Box::new(s.facts.clone()));
        let outcome =
            Outcome { category, errcode: reply.errcode(), errmsg, attempts: job.attempts, ts: Some(ts), refund };
        if let Some(log) = self.log {
            log.write(&Event::Request {
                sent: sent_unix,
                answered: unix_now_f64(),
                row: job.raw.row,
                bill_no: order.bill_no,
                attempt: job.attempts,
                http_status: reply.http_status(),
                errcode: reply.errcode(),
                // A step that leads to the row's next one is no outcome yet.
                category: if next_step.is_some() { "next_step" } else { category.as_str() },
                call: request.uri.rsplit('/').next().unwrap_or_default(),
                latency_ms: sent_at.elapsed().as_secs_f64() * 1000.0,
                pace: pace_now,
            });
        }
        let (action, outcome) = match action {
            Action::CheckKey => self.check_key(&order, &token, outcome),
            other => (other, outcome),
        };
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
        if let Some(wait) = next_step {
            // The row's next step: its tries start over, and it waits parked.
            job.step_start = job.attempts;
            job.token_rejections = 0;
            if self.control.stopped() {
                self.stats.cut_short.fetch_add(1, Ordering::Relaxed);
                return Step::Done(outcome);
            }
            job.last = Some(outcome);
            return Step::Park(Instant::now() + wait);
        }
        let due = match action {
            Action::Stop | Action::Breaker | Action::CheckKey => None,
            Action::Retry { .. } => Some(Instant::now() + self.delay(category, job.attempts - job.step_start)),
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

    /// A signature was refused and the answer does not say whose: the
    /// AppKey's (every row fails: the breaker) or the user's session key
    /// (this row: fresh keys, `--resume`). A request signed by the AppKey
    /// alone tells them apart, under the pace like any other; its finding
    /// holds for the rest of the run.
    fn check_key(&self, order: &OrderRef<'_>, token: &Secret, outcome: Outcome) -> (Action, Outcome) {
        let key_refused = |outcome: Outcome| {
            let errmsg = format!("{} (a request signed by the AppKey alone was refused too)", outcome.errmsg);
            (Action::Breaker, Outcome { errmsg, ..outcome })
        };
        let session_key_refused = |outcome: Outcome| {
            let errmsg = format!(
                "{} (the AppKey is right, a request signed by it alone was answered: the user's session key is \
                 stale or wrong)",
                outcome.errmsg
            );
            (Action::Stop, Outcome { category: Category::SessionKeyError, errmsg, ..outcome })
        };
        match self.control.app_key.load(Ordering::Acquire) {
            KEY_RIGHT => return session_key_refused(outcome),
            KEY_REFUSED => return key_refused(outcome),
            _ => {}
        }
        let Some((epoch, _)) = self.pacer.wait(self.control.stop_flag()) else {
            return (Action::Stop, outcome);
        };
        let request = self.signing.key_check(order);
        let reply = self.transport.cancel(request.uri, token.expose(), &request.query_tail, &request.body);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let api = self.signing.api();
        let (category, action) = reply.classify(api);
        if let Some(cut) = self.pacer.observe(epoch, signal(category, action)) {
            self.log_pace(&cut);
        }
        if api.app_key_refused(&reply) {
            self.control.app_key.store(KEY_REFUSED, Ordering::Release);
            key_refused(outcome)
        } else if reply.errcode().is_some() {
            self.control.app_key.store(KEY_RIGHT, Ordering::Release);
            session_key_refused(outcome)
        } else {
            // No answer to the check: the row is tried again, and so is the check.
            (Action::Retry { slow_down: false }, outcome)
        }
    }

    /// The wait before the next attempt: exponential with jitter, on the
    /// processing schedule for 90016 and the back-off schedule otherwise.
    pub(super) fn delay(&self, category: Category, attempts: u32) -> Duration {
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

    pub(super) fn log_pace(&self, change: &PaceChange) {
        if let Some(log) = self.log {
            log.write(&Event::Pace { at: unix_now_f64(), from: change.from, to: change.to, why: change.why });
        }
    }
}

/// The shared state of the worker pool.
pub(super) struct Pool<'a> {
    pub(super) jobs: crossbeam_channel::Receiver<Job>,
    pub(super) queue: RetryQueue<Job>,
    /// Rows handed to the pool and not yet sent to the writer (queued,
    /// parked or in an attempt): the pool is done when this is 0 and the
    /// feeder has hung up.
    pub(super) pending: AtomicU64,
    pub(super) parked_cap: usize,
    pub(super) worker: Worker<'a>,
}

impl Pool<'_> {
    /// Hands a settled row to the writer. When the writer has failed the run
    /// is stopping (it raised the stop) and the row is left out: it was
    /// never recorded, so `--resume` sends it again.
    pub(super) fn finish(&self, to_writer: &crossbeam_channel::Sender<Finished>, job: Job, mut outcome: Outcome) {
        if let Some(steps) = &job.steps {
            steps.finish(&mut outcome);
        }
        let _ = to_writer.send(Finished { raw: job.raw, cancel_id: job.order.cancel_id, valid: true, outcome });
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// One worker's loop: due retries first, then fresh rows; after a stop,
    /// settles what is left. Returns once the feeder has hung up and no row
    /// is pending. `to_writer` is this worker's own handle, so the writer
    /// sees the end once every worker has returned.
    pub(super) fn serve(&self, to_writer: crossbeam_channel::Sender<Finished>) {
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
    pub(super) fn settle_after_stop(&self, to_writer: &crossbeam_channel::Sender<Finished>) -> bool {
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
