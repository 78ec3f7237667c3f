//! Access tokens (SPEC §1.4): a static `WECHAT_ACCESS_TOKEN`, or tokens from
//! `POST /cgi-bin/stable_token` refreshed before they run out and again when
//! WeChat rejects one. `GET /cgi-bin/token` is never called: it would revoke
//! the token the live game's servers are using.

use crate::api::Transport;
use crate::attempt_log::{AttemptLog, Event};
use crate::secret::{Redactor, Secret};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why no usable token can be had; the run must stop.
#[derive(Debug, thiserror::Error)]
pub enum TokenFailure {
    #[error(
        "WeChat rejected WECHAT_ACCESS_TOKEN and a given token cannot be refreshed: set WECHAT_APP_SECRET \
         (the tool then fetches and refreshes tokens itself) or export a fresh token, then --resume"
    )]
    StaticRejected,
    #[error(
        "WeChat rejected the access token again after a forced refresh: check that WECHAT_APP_SECRET and \
         --appid belong to the same Mini Game, then --resume"
    )]
    RefreshExhausted,
    #[error("could not get an access token: {0}. Check WECHAT_APP_SECRET and --appid")]
    Fetch(String),
}

/// A lifetime stable_token announced that cannot be real (`0`, a few
/// seconds, more than a day) is replaced by [`FALLBACK_LIFETIME`]: taken at
/// its word, `expires_in: 0` made the tool fetch before every request.
const PLAUSIBLE_LIFETIME: std::ops::RangeInclusive<u64> = 60..=86_400;
const FALLBACK_LIFETIME: Duration = Duration::from_secs(60);
/// stable_token is never called more often than this, whatever it answers.
const MIN_FETCH_GAP: Duration = Duration::from_secs(3);

/// The lifetime to plan with for an announced `expires_in`.
fn planned_lifetime(announced: Duration) -> Duration {
    if PLAUSIBLE_LIFETIME.contains(&announced.as_secs()) {
        announced
    } else {
        FALLBACK_LIFETIME
    }
}

struct Current {
    token: Secret,
    fetched: Instant,
    lifetime: Duration,
    last_call: Instant,
}

impl Current {
    /// Refresh ahead of expiry: WeChat renews a stable token in its last five
    /// minutes, so asking earlier would only hand back the same token.
    fn due(&self, now: Instant) -> bool {
        let margin = Duration::from_secs(300).min(self.lifetime / 2);
        let min_gap = Duration::from_secs(30).min(self.lifetime / 10);
        now + margin >= self.fetched + self.lifetime && now >= self.last_call + min_gap
    }
}

enum Source {
    Static(Secret),
    Stable {
        transport: Arc<dyn Transport>,
        appid: String,
        secret: Secret,
        state: Mutex<StableState>,
        /// Every fetched token joins it, so no output can carry one.
        redactor: Redactor,
        log: Option<Arc<AttemptLog>>,
    },
}

struct StableState {
    current: Option<Current>,
    force_used: bool,
    calls: u64,
    last_fetch: Option<Instant>,
    /// A rejected token no replacement could be had for, and why: the other
    /// workers whose requests it failed are told at once, instead of each
    /// fetching again (3 s apart) while the breaker stops the run.
    failed: Option<Box<(Secret, String)>>,
}

/// The access tokens of one run, shared by every worker.
pub struct Tokens {
    source: Source,
}

impl Tokens {
    pub fn fixed(token: Secret) -> Tokens {
        Tokens { source: Source::Static(token) }
    }

    /// Tokens from stable_token; fetches the first one now, so a wrong secret
    /// stops the run before anything is sent.
    pub fn stable(
        transport: Arc<dyn Transport>,
        appid: &str,
        secret: Secret,
        redactor: Redactor,
        log: Option<Arc<AttemptLog>>,
    ) -> Result<Tokens, TokenFailure> {
        let tokens = Tokens {
            source: Source::Stable {
                transport,
                appid: appid.to_string(),
                secret,
                state: Mutex::new(StableState {
                    current: None,
                    force_used: false,
                    calls: 0,
                    last_fetch: None,
                    failed: None,
                }),
                redactor,
                log,
            },
        };
        tokens.current()?;
        Ok(tokens)
    }

    /// The token to sign and send with now (refreshed first when due).
    pub fn current(&self) -> Result<Secret, TokenFailure> {
        match &self.source {
            Source::Static(t) => Ok(t.clone()),
            Source::Stable { state, .. } => {
                let mut st = state.lock().expect("token lock");
                let now = Instant::now();
                match &st.current {
                    Some(c) if !c.due(now) => Ok(c.token.clone()),
                    Some(c) => {
                        let old = c.token.clone();
                        // A failed proactive refresh is not fatal: the old
                        // token is still valid for a while.
                        match self.fetch(&mut st, false) {
                            Ok(t) => Ok(t),
                            Err(_) => Ok(old),
                        }
                    }
                    None => self.fetch(&mut st, false),
                }
            }
        }
    }

    /// WeChat rejected `token` (40001/42001/40014): get another one, or say
    /// why that is impossible.
    pub fn rejected(&self, token: &Secret) -> Result<(), TokenFailure> {
        let Source::Stable { state, .. } = &self.source else {
            return Err(TokenFailure::StaticRejected);
        };
        let mut st = state.lock().expect("token lock");
        if st.current.as_ref().is_some_and(|c| &c.token != token) {
            return Ok(()); // another worker already replaced it
        }
        if let Some((_, why)) = st.failed.as_deref().filter(|(t, _)| t == token) {
            return Err(TokenFailure::Fetch(why.clone()));
        }
        let fetched = match self.fetch(&mut st, false) {
            Err(TokenFailure::Fetch(why)) => {
                st.failed = Some(Box::new((token.clone(), why.clone())));
                return Err(TokenFailure::Fetch(why));
            }
            other => other?,
        };
        if &fetched != token {
            return Ok(());
        }
        // The normal call handed back the very token just rejected: force a
        // new one, at most once per run (WeChat allows 20 a day, 30 s apart).
        if st.force_used {
            return Err(TokenFailure::RefreshExhausted);
        }
        st.force_used = true;
        if &self.fetch(&mut st, true)? != token {
            Ok(())
        } else {
            Err(TokenFailure::RefreshExhausted)
        }
    }

    fn fetch(&self, st: &mut StableState, force: bool) -> Result<Secret, TokenFailure> {
        let Source::Stable { transport, appid, secret, redactor, log, .. } = &self.source else {
            unreachable!("only stable tokens are fetched")
        };
        // Every worker needs a token to go on, so waiting here under the
        // lock holds up nothing that could have been sent.
        if let Some(wait) = st.last_fetch.and_then(|t| (t + MIN_FETCH_GAP).checked_duration_since(Instant::now())) {
            std::thread::sleep(wait);
        }
        st.calls += 1;
        let now = Instant::now();
        st.last_fetch = Some(now);
        if let Some(c) = st.current.as_mut() {
            c.last_call = now;
        }
        let grant = transport.stable_token(appid, secret.expose(), force);
        if let Some(log) = log {
            log.write(&Event::Token { at: crate::clock::unix_now_f64(), ok: grant.is_ok(), forced: force });
        }
        let grant = grant.map_err(TokenFailure::Fetch)?;
        redactor.add(&grant.token);
        let lifetime = planned_lifetime(grant.expires_in);
        st.current = Some(Current { token: grant.token.clone(), fetched: now, lifetime, last_call: now });
        Ok(grant.token)
    }

    /// How many times stable_token was called (for the summary).
    pub fn refreshes(&self) -> u64 {
        match &self.source {
            Source::Static(_) => 0,
            Source::Stable { state, .. } => state.lock().expect("token lock").calls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_due_in_the_last_five_minutes_only() {
        let t0 = Instant::now();
        let c = Current { token: Secret::new("t"), fetched: t0, lifetime: Duration::from_secs(7200), last_call: t0 };
        assert!(!c.due(t0 + Duration::from_secs(6800)));
        assert!(c.due(t0 + Duration::from_secs(6901)));
        let short = Current { token: Secret::new("t"), fetched: t0, lifetime: Duration::from_secs(4), last_call: t0 };
        assert!(!short.due(t0 + Duration::from_secs(1)));
        assert!(short.due(t0 + Duration::from_millis(2100)));
    }

    #[test]
    fn an_implausible_lifetime_is_planned_as_a_short_fixed_one() {
        for secs in [0, 1, 59, 86_401, u64::MAX / 2] {
            assert_eq!(planned_lifetime(Duration::from_secs(secs)), FALLBACK_LIFETIME, "{secs}");
        }
        assert_eq!(planned_lifetime(Duration::from_secs(7200)), Duration::from_secs(7200));
    }

    #[test]
    fn a_static_token_cannot_be_refreshed() {
        let t = Tokens::fixed(Secret::new("given"));
        assert_eq!(t.current().unwrap(), Secret::new("given"));
        assert!(matches!(t.rejected(&Secret::new("given")), Err(TokenFailure::StaticRejected)));
    }
}
