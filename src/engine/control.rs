//! Run-wide control: the stop flag and its reason, the circuit breaker, and
//! the canary that keeps a wrong key to a few requests.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive breaker answers (90011, 90017) that stop the run.
pub(super) const BREAKER_THRESHOLD: u32 = 3;

/// How long the first request may hold the others back (see `Control::canary`).
pub(super) const CANARY_PATIENCE: Duration = Duration::from_secs(1);

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
    pub(super) stop: AtomicBool,
    /// Second Ctrl-C: record what is answered and quit at once.
    pub(super) hard: AtomicBool,
    pub(super) reason: Mutex<Option<StopReason>>,
    pub(super) consecutive: AtomicU32,
    /// Until the first answer that is not a breaker answer, one request at a
    /// time: a wrong key then costs a few requests, not `concurrency` of them.
    pub(super) warm: AtomicBool,
    /// What a key check ([`Action::CheckKey`]) found, once per run: the
    /// AppKey is right (0), refused (1), or not checked yet (2).
    pub(super) app_key: std::sync::atomic::AtomicU8,
    pub(super) canary: Mutex<()>,
    /// When the request now holding the canary took it.
    pub(super) canary_since: Mutex<Option<Instant>>,
}

/// [`Control::app_key`]'s states.
pub(super) const KEY_RIGHT: u8 = 0;
pub(super) const KEY_REFUSED: u8 = 1;
pub(super) const KEY_UNCHECKED: u8 = 2;

impl Default for Control {
    fn default() -> Self {
        Control {
            stop: AtomicBool::new(false),
            hard: AtomicBool::new(false),
            reason: Mutex::new(None),
            consecutive: AtomicU32::new(0),
            warm: AtomicBool::new(false),
            app_key: std::sync::atomic::AtomicU8::new(KEY_UNCHECKED),
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
    pub(super) fn canary(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
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

    pub(super) fn answer_ok(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
        self.warm.store(true, Ordering::Release);
    }

    pub(super) fn answer_fatal(&self, why: String) {
        if self.consecutive.fetch_add(1, Ordering::SeqCst) + 1 >= BREAKER_THRESHOLD {
            self.stop(StopReason::Breaker(why));
        }
    }
}
