//! Pacing: a hard limit that no request passes (governor: at most
//! `rate + burst` in any sliding second, retries included) and, beneath it,
//! the pace an overload controller sets from the *share* of overload answers.
//!
//! The controller:
//! - counts each answer toward the pace *epoch* its request was sent in; a
//!   cut starts a new epoch, and requests sent in the first [`GRACE`] after
//!   a cut are judged with none: the answers of requests already in flight
//!   when WeChat pushed back, and of those sent while the server's own
//!   window still remembers the overshoot, never cause a second cut;
//! - cuts on the frequency limit (45009, HTTP 429) when they are at least
//!   [`LIMIT_SHARE`] of the epoch's recent answers, to a little below the
//!   most WeChat *accepted* in any one second of the last [`HISTORY`]: it
//!   settles near the server's limit instead of halving and doubling around
//!   it (whether or not the server counts rejected calls toward its limit);
//! - cuts on "busy" (-1, 5xx) only when their share rises [`BUSY_EXCESS`]
//!   above the run's background (a slow average), so a scattering of random
//!   errors does not slow the run;
//! - after [`HOLD`] without a cut, probes upward by [`PROBE`] of the pace per
//!   second until the next overload or the full `--rate`.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How far back "recent answers" reach for the shares.
const WINDOW: Duration = Duration::from_secs(2);
/// How far back the accepted rate is looked for.
const HISTORY: Duration = Duration::from_secs(5);
/// After a cut, requests sent within this time are judged with no epoch:
/// a server's frequency window (a second) still holds the overshoot.
const GRACE: Duration = Duration::from_secs(1);
/// The epoch tag of requests that are not judged.
const UNJUDGED: u64 = u64::MAX;
/// Answers of the current epoch needed before a cut is judged: fewer for the
/// frequency limit, since a server that counts rejected calls toward its
/// limit rejects almost everything once the pace is over it.
const MIN_SAMPLES_LIMIT: usize = 10;
const MIN_SAMPLES_BUSY: usize = 20;
/// Share of frequency-limit answers that cuts the pace ...
const LIMIT_SHARE: f64 = 0.05;
/// ... and how many of them at least.
const MIN_LIMIT_ANSWERS: usize = 3;
/// A cut on the frequency limit aims this far below the accepted rate.
const BELOW_LIMIT: f64 = 0.9;
/// "Busy" answers cut the pace when their share is this far above background ...
const BUSY_EXCESS: f64 = 0.2;
/// ... and at least this many of them; the cut multiplies the pace by:
const BUSY_CUT: f64 = 0.7;
const MIN_BUSY_ANSWERS: usize = 5;
/// Time constant of the background share of busy answers.
const BACKGROUND_TAU: f64 = 30.0;
/// The highest background share: above it, busy answers are overload.
const BACKGROUND_CAP: f64 = 0.5;
/// Quiet time after a cut before probing upward.
const HOLD: Duration = Duration::from_secs(1);
/// Upward probe per second, as a share of the pace (at least 0.5 request/s) ...
const PROBE: f64 = 0.02;
const PROBE_FLOOR: f64 = 0.5;
/// ... and, within [`NEAR_LIMIT`] of a limit found, a creep (at least 0.05/s).
const CREEP: f64 = 0.005;
const CREEP_FLOOR: f64 = 0.05;
const NEAR_LIMIT: f64 = 0.9;
/// The creep stops this far below the highest limit found: within the jitter
/// of a server's limit, a server that counts rejected calls rejects a whole
/// streak ...
const CEILING: f64 = 0.97;
/// ... and after this long without a cut the ceiling is tried a little
/// higher, in case the server now allows more.
const RETEST_AFTER: Duration = Duration::from_secs(30);
const RETEST_STEP: f64 = 1.02;
const PROBE_STEP: Duration = Duration::from_millis(250);
/// The longest single sleep, so that a stop is noticed quickly.
const NAP: Duration = Duration::from_millis(50);
/// GCRA admits `burst + 1` at once and then one per period; pacing at 99.5 %
/// of `--rate` keeps any sliding second under `rate + burst` even when a few
/// requests leave a little late.
const PACE_MARGIN: f64 = 0.995;

fn limiter(per_second: f64, capacity: u32) -> DefaultDirectRateLimiter {
    // Bounded by --rate's range (1..=10_000) and the floor of 1/s, so the
    // period is a positive, finite duration.
    let period = Duration::from_secs_f64(1.0 / per_second.clamp(1.0, 1e6));
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(capacity.max(1)).unwrap_or(NonZeroU32::MIN));
    RateLimiter::direct(quota)
}

/// What an answer says about WeChat's load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Anything but the two below (timeouts included).
    Fine,
    /// The frequency limit: 45009, HTTP 429.
    Limit,
    /// System busy: -1, HTTP 5xx.
    Busy,
}

/// A change of pace, for the attempt log and progress.
#[derive(Clone, Debug, PartialEq)]
pub struct PaceChange {
    pub from: f64,
    pub to: f64,
    pub why: &'static str,
}

struct Answer {
    at: Instant,
    signal: Signal,
    epoch: u64,
}

struct Controller {
    pace: f64,
    /// `None` while the pace is the full rate.
    limiter: Option<DefaultDirectRateLimiter>,
    epoch: u64,
    last_change: Instant,
    last_probe: Instant,
    /// The pace last reported as a change (probes are reported in steps).
    reported: f64,
    /// Until when requests are sent unjudged (the grace after a cut).
    unjudged_until: Option<Instant>,
    recent: VecDeque<Answer>,
    first_answer: Option<Instant>,
    background: f64,
    background_at: Option<Instant>,
    limit_found: Option<f64>,
    /// `limit_found` rests on a second of history or more.
    limit_reliable: bool,
    cuts: u64,
    limit_answers: u64,
}

/// What the controller found, for the end-of-run summary.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PaceReport {
    /// The accepted rate measured at the last frequency-limit cut.
    pub limit_found: Option<f64>,
    pub cuts: u64,
    /// Answers that were the frequency limit (45009, 429).
    pub limit_answers: u64,
    pub pace: f64,
}

/// Pacing shared by every worker.
pub struct Pacer {
    hard: DefaultDirectRateLimiter,
    rate: f64,
    ctl: Mutex<Controller>,
    clock: DefaultClock,
    /// Held by the one worker waiting for the next permit. Without it every
    /// idle worker slept until the same instant and all but one slept again:
    /// at 1000/s with 16 workers, 15 wake-ups per request.
    turnstile: Mutex<()>,
}

impl Pacer {
    pub fn new(rate: NonZeroU32, burst: u32) -> Pacer {
        let rate = f64::from(rate.get());
        let now = Instant::now();
        Pacer {
            hard: limiter(rate * PACE_MARGIN, burst + 1),
            rate,
            ctl: Mutex::new(Controller {
                pace: rate,
                limiter: None,
                epoch: 0,
                last_change: now,
                last_probe: now,
                reported: rate,
                unjudged_until: None,
                recent: VecDeque::new(),
                first_answer: None,
                background: 0.0,
                background_at: None,
                limit_found: None,
                limit_reliable: false,
                cuts: 0,
                limit_answers: 0,
            }),
            clock: DefaultClock::default(),
            turnstile: Mutex::new(()),
        }
    }

    fn ctl(&self) -> std::sync::MutexGuard<'_, Controller> {
        self.ctl.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until a request may leave; returns the epoch it leaves in (to
    /// hand back to [`Pacer::observe`]) and any probe step taken, or `None`
    /// when `stop` was raised.
    pub fn wait(&self, stop: &AtomicBool) -> Option<(u64, Option<PaceChange>)> {
        let _turn = self.turnstile.lock().unwrap_or_else(|e| e.into_inner());
        let mut change = None;
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            let wait = {
                let mut c = self.ctl();
                if let Some(step) = self.probe(&mut c, Instant::now()) {
                    change = Some(step);
                }
                match &c.limiter {
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
                Ok(()) => {
                    let c = self.ctl();
                    let in_grace = c.unjudged_until.is_some_and(|t| Instant::now() < t);
                    return Some((if in_grace { UNJUDGED } else { c.epoch }, change));
                }
                Err(n) => std::thread::sleep(n.wait_time_from(self.clock.now()).min(NAP)),
            }
            if stop.load(Ordering::Relaxed) {
                return None;
            }
        }
    }

    /// Counts one answer to a request sent in `epoch`; returns the cut it
    /// caused, if any.
    pub fn observe(&self, epoch: u64, signal: Signal) -> Option<PaceChange> {
        self.observe_at(epoch, signal, Instant::now())
    }

    fn observe_at(&self, epoch: u64, signal: Signal, now: Instant) -> Option<PaceChange> {
        let mut c = self.ctl();
        c.first_answer.get_or_insert(now);
        c.recent.push_back(Answer { at: now, signal, epoch });
        while c.recent.front().is_some_and(|a| now.duration_since(a.at) > HISTORY) {
            c.recent.pop_front();
        }
        if signal == Signal::Limit {
            c.limit_answers += 1;
        }
        update_background(&mut c, now);
        if signal == Signal::Fine {
            return None;
        }
        let current = c.epoch;
        let (mut n, mut limits, mut busy) = (0usize, 0usize, 0usize);
        for a in c.recent.iter().filter(|a| a.epoch == current && now.duration_since(a.at) <= WINDOW) {
            n += 1;
            limits += usize::from(a.signal == Signal::Limit);
            busy += usize::from(a.signal == Signal::Busy);
        }
        let share = |k: usize| k as f64 / n as f64;
        // The share must stand clear of chance: a scattering of random 429s
        // (2 % of answers) crosses 5 % of a small sample now and then, and a
        // cut on it would pin the run far below --rate.
        let expected = n as f64 * LIMIT_SHARE;
        let clear = (expected + 2.0 * expected.sqrt()).max(MIN_LIMIT_ANSWERS as f64);
        let target = if n >= MIN_SAMPLES_LIMIT && limits as f64 >= clear {
            let (accepted, reliable) = accepted_rate(&c, now);
            // Among estimates from a second of history or more the highest
            // stands: a later one may be taken while the server's window
            // still holds an overshoot, and only decides this cut, not where
            // probing turns into creeping. An earlier, provisional one (the
            // run's first second) is replaced.
            c.limit_found = Some(match (c.limit_found, c.limit_reliable && reliable) {
                (Some(l), true) => l.max(accepted),
                _ => accepted,
            });
            c.limit_reliable = reliable;
            (c.pace.min(accepted) * BELOW_LIMIT, "frequency limit: settle below the accepted rate")
        } else if n >= MIN_SAMPLES_BUSY && busy >= MIN_BUSY_ANSWERS && share(busy) >= c.background + BUSY_EXCESS {
            (c.pace * BUSY_CUT, "system busy well above the background")
        } else {
            return None;
        };
        c.cuts += 1;
        Some(self.set_pace(&mut c, target.0, target.1, now, true))
    }

    /// Probes upward after a quiet hold.
    fn probe(&self, c: &mut Controller, now: Instant) -> Option<PaceChange> {
        if c.pace >= self.rate || now.duration_since(c.last_change) < HOLD {
            return None;
        }
        let since = now.duration_since(c.last_probe);
        if since < PROBE_STEP {
            return None;
        }
        if let Some(limit) = c.limit_found.filter(|l| c.pace >= l * CEILING) {
            if now.duration_since(c.last_change) >= RETEST_AFTER {
                c.limit_found = Some(limit * RETEST_STEP);
                c.last_change = now;
            }
            return None;
        }
        // A limit estimated from the run's first second is provisional: it
        // does not hold the probe back.
        let limit = c.limit_found.filter(|_| c.limit_reliable);
        let near = limit.is_some_and(|l| c.pace >= l * NEAR_LIMIT);
        let per_second = if near { (c.pace * CREEP).max(CREEP_FLOOR) } else { (c.pace * PROBE).max(PROBE_FLOOR) };
        let step = per_second * since.as_secs_f64().min(1.0);
        let to = c.pace + step;
        let ceiling = limit.map_or(self.rate, |l| l * CEILING);
        let change = self.set_pace(c, to.min(ceiling.max(c.pace)), "probing upward", now, false);
        // Reported in steps of a request a second (or on reaching the full
        // rate), not every quarter second.
        if (change.to - c.reported).abs() >= 1.0 || change.to >= self.rate {
            let from = std::mem::replace(&mut c.reported, change.to);
            return Some(PaceChange { from, ..change });
        }
        None
    }

    fn set_pace(&self, c: &mut Controller, to: f64, why: &'static str, now: Instant, cut: bool) -> PaceChange {
        let from = c.pace;
        c.pace = to.clamp(1.0, self.rate);
        c.limiter = (c.pace < self.rate).then(|| limiter(c.pace, 1));
        c.last_probe = now;
        if cut {
            c.epoch += 1;
            c.last_change = now;
            // Early in a run the estimate rests on less than a second: judge
            // again as soon as that much more has been seen.
            let seen = c.first_answer.map_or(GRACE, |t| now.duration_since(t));
            c.unjudged_until = Some(now + seen.min(GRACE));
            c.reported = c.pace;
        }
        PaceChange { from, to: c.pace, why }
    }

    /// The pace now, in requests per second.
    pub fn current_rate(&self) -> f64 {
        self.ctl().pace
    }

    pub fn report(&self) -> PaceReport {
        let c = self.ctl();
        PaceReport { limit_found: c.limit_found, cuts: c.cuts, limit_answers: c.limit_answers, pace: c.pace }
    }
}

/// The rate WeChat accepts: the most answers other than the frequency limit
/// in any one second of the recent history (the server accepted that many in
/// a second, so its limit is at least that, whether or not it counts rejected
/// calls). With less than a second of history: what was accepted so far, or
/// half of it per second if that is more. The first is exact for a server
/// that counts calls per second (its whole second's quota went first); the
/// second keeps a server that spreads its quota evenly from looking far
/// slower than it is. Running high costs a short grace of rejections and
/// another cut; running low, a slow climb back.
/// Returns the rate and whether it rests on a second of history or more.
fn accepted_rate(c: &Controller, now: Instant) -> (f64, bool) {
    let seen = c.first_answer.map_or(HISTORY, |t| now.duration_since(t));
    if seen < Duration::from_secs(1) {
        let accepted = c.recent.iter().filter(|a| a.signal != Signal::Limit).count() as f64;
        return (accepted.max(0.5 * accepted / seen.as_secs_f64().max(0.05)), false);
    }
    let accepted: Vec<Instant> = c.recent.iter().filter(|a| a.signal != Signal::Limit).map(|a| a.at).collect();
    let mut best = 0;
    let mut start = 0;
    for end in 0..accepted.len() {
        while accepted[end].duration_since(accepted[start]) >= Duration::from_secs(1) {
            start += 1;
        }
        best = best.max(end + 1 - start);
    }
    (best as f64, true)
}

/// Moves the background share of busy answers toward the recent share, with
/// a time constant of [`BACKGROUND_TAU`] seconds.
fn update_background(c: &mut Controller, now: Instant) {
    let Some(last) = c.background_at else {
        c.background_at = Some(now);
        return;
    };
    let dt = now.duration_since(last).as_secs_f64();
    if dt < 0.25 || c.recent.is_empty() {
        return;
    }
    let busy = c.recent.iter().filter(|a| a.signal == Signal::Busy).count() as f64 / c.recent.len() as f64;
    // In the run's first half-minute the background is the average share so
    // far, not a slow climb from nothing: a share that is steady from the
    // first request is the background, not a burst against an empty one
    // (25 % of -1 from the start was cut four times, to a quarter of --rate).
    let run_so_far = c.first_answer.map_or(dt, |t| now.duration_since(t).as_secs_f64()).max(dt);
    let weight = (1.0 - (-dt / BACKGROUND_TAU).exp()).max(dt / run_so_far);
    // Capped: a server busy more often than not is overloaded, whenever that began.
    c.background = (c.background + (busy - c.background) * weight).min(BACKGROUND_CAP);
    c.background_at = Some(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacer(rate: u32) -> Pacer {
        Pacer::new(NonZeroU32::new(rate).unwrap(), 1)
    }

    /// Feeds `per_second` answers a second for `secs` seconds from `t0`,
    /// `signal(i)` deciding each; returns the time reached.
    fn feed(p: &Pacer, t0: Instant, secs: f64, per_second: f64, signal: impl Fn(usize) -> Signal) -> Instant {
        let n = (secs * per_second) as usize;
        let mut t = t0;
        for i in 0..n {
            t = t0 + Duration::from_secs_f64(i as f64 / per_second);
            let epoch = p.ctl().epoch;
            p.observe_at(epoch, signal(i), t);
        }
        t
    }

    #[test]
    fn a_background_of_random_busy_answers_never_slows_the_run() {
        let p = pacer(100);
        // 5 % -1 and 3 % 5xx, at random-looking positions, for a minute.
        feed(&p, Instant::now(), 60.0, 100.0, |i| if (i * 37) % 100 < 8 { Signal::Busy } else { Signal::Fine });
        assert_eq!(p.report().cuts, 0);
        assert_eq!(p.current_rate(), 100.0);
    }

    /// Regression (steady_random_errors_stalled_the_pace): 25 % of -1 from
    /// the first request looked like a burst against an empty background,
    /// and four cuts left 12.8/s of --rate 50.
    #[test]
    fn a_steady_share_of_busy_answers_from_the_start_is_background() {
        let p = pacer(50);
        feed(&p, Instant::now(), 20.0, 50.0, |i| if i % 4 == 0 { Signal::Busy } else { Signal::Fine });
        assert_eq!(p.report().cuts, 0);
        assert!(p.current_rate() >= 40.0, "{}", p.current_rate());
    }

    /// Nothing but busy answers from the start is overload, not background.
    #[test]
    fn busy_answers_only_from_the_start_still_cut() {
        let p = pacer(50);
        feed(&p, Instant::now(), 3.0, 50.0, |_| Signal::Busy);
        assert!(p.report().cuts >= 1);
    }

    #[test]
    fn a_burst_of_busy_answers_well_above_background_cuts_once_per_epoch() {
        let p = pacer(100);
        let t = feed(&p, Instant::now(), 5.0, 100.0, |_| Signal::Fine);
        // Half the answers busy: one cut, and the answers of requests sent
        // before it (the old epoch) do not cut again.
        let old_epoch = p.ctl().epoch;
        for i in 0..200 {
            let s = if i % 2 == 0 { Signal::Busy } else { Signal::Fine };
            p.observe_at(old_epoch, s, t + Duration::from_millis(i));
        }
        let r = p.report();
        assert_eq!(r.cuts, 1);
        assert!((r.pace - 70.0).abs() < 1e-9, "{}", r.pace);
    }

    #[test]
    fn a_frequency_limit_settles_just_below_the_accepted_rate() {
        let p = pacer(200);
        // A server that accepts 100 calls a second, sent 200/s: the first
        // 100 of the second pass, the rest are 45009; all these requests
        // were sent before the cut (epoch 0).
        let t = Instant::now();
        for i in 0..200u32 {
            let s = if i < 100 { Signal::Fine } else { Signal::Limit };
            p.observe_at(0, s, t + Duration::from_millis(u64::from(i) * 5));
        }
        let r = p.report();
        assert_eq!(r.cuts, 1, "one cut for one epoch");
        assert_eq!(r.limit_found, Some(100.0), "the accepted rate is what the server let through");
        assert!((r.pace - 100.0 * BELOW_LIMIT).abs() < 1e-6, "{}", r.pace);
    }

    #[test]
    fn a_few_limit_answers_below_the_share_do_not_cut() {
        let p = pacer(150);
        // 2 % of answers are HTTP 429 at random: below the 5 % share.
        feed(&p, Instant::now(), 30.0, 150.0, |i| if i % 50 == 7 { Signal::Limit } else { Signal::Fine });
        assert_eq!(p.report().cuts, 0);
    }

    /// Regression (random_429s_early_pinned_the_pace): three 429s among a
    /// run's first fifty answers (chance, at 2 %) cut the pace to half and
    /// the estimate of that first half second held the probe there for the
    /// rest of the run (43 % of --rate in the refund benchmark).
    #[test]
    fn a_cluster_of_chance_429s_at_the_start_does_not_cut() {
        let p = pacer(100);
        let chance = |i: usize| matches!(i, 5 | 20 | 40) || (i > 50 && i % 50 == 7);
        feed(&p, Instant::now(), 30.0, 100.0, |i| if chance(i) { Signal::Limit } else { Signal::Fine });
        assert_eq!(p.report().cuts, 0);
        assert_eq!(p.current_rate(), 100.0);
    }

    #[test]
    fn after_a_hold_the_pace_probes_upward_to_the_full_rate() {
        let p = pacer(100);
        let t = Instant::now();
        {
            let mut c = p.ctl();
            p.set_pace(&mut c, 50.0, "test", t, true);
        }
        let mut c = p.ctl();
        assert!(p.probe(&mut c, t + HOLD / 2).is_none(), "no probe during the hold");
        let mut at = t + HOLD;
        let mut steps = 0;
        while c.pace < 100.0 && steps < 10_000 {
            at += PROBE_STEP;
            p.probe(&mut c, at);
            steps += 1;
        }
        assert_eq!(c.pace, 100.0);
        assert!(c.limiter.is_none(), "full rate: only the hard limit");
        let secs = at.duration_since(t + HOLD).as_secs_f64();
        assert!((20.0..=60.0).contains(&secs), "gentle: 50 -> 100/s took {secs} s");
    }

    #[test]
    fn extreme_rates_build_a_limiter_without_panicking() {
        for r in [1, 10_000, u32::MAX] {
            let _ = Pacer::new(NonZeroU32::new(r).unwrap(), 10_000);
        }
    }
}
