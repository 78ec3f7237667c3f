//! Access tokens as WeChat hands them out: `stable_token` (the same token
//! while valid, renewed in its last stretch, forced at most as allowed) and
//! the gate every cancel passes (the token, the frequency limit).

use super::server::{answer, json, Response};
use super::state::State;
use crate::api::{StableTokenAnswer, StableTokenRequest};
use std::time::{Duration, Instant};

pub(super) struct Issued {
    pub(super) expires: Instant,
    pub(super) revoked: bool,
}

pub(super) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 86400)
}

impl State {
    /// What every cancel meets first, whatever the API: the frequency
    /// limit, injected server faults, and the access token.
    pub(super) fn gate(&mut self, token: &str, arrived: Instant) -> Option<Response> {
        let faults = &self.cfg.faults;
        if let Some(limit) = faults.frequency_limit {
            while self.window.front().is_some_and(|t| arrived.duration_since(*t) >= Duration::from_secs(1)) {
                self.window.pop_front();
            }
            self.window.push_back(arrived);
            if self.window.len() > limit as usize {
                return Some(answer(45009, "reach max api daily quota limit"));
            }
        }
        if self.rng.f64() < faults.error_rate {
            return Some(Response::Json(502, "<html>502 Bad Gateway</html>".into()));
        }
        if self.rng.f64() < faults.throttle_rate {
            return Some(Response::Json(429, "<html>429 Too Many Requests</html>".into()));
        }
        if self.rng.f64() < faults.busy_rate {
            return Some(answer(-1, "system error"));
        }
        match self.tokens.get(token) {
            None => Some(answer(40001, "invalid credential, access_token is invalid or not latest")),
            Some(t) if t.revoked => Some(answer(40001, "invalid credential, access_token is invalid or not latest")),
            Some(t) if arrived > t.expires => Some(answer(42001, "access_token expired")),
            Some(_) => None,
        }
    }
}

impl State {
    pub(super) fn stable_token(&mut self, body: &[u8]) -> Response {
        self.stats.stable_token_calls += 1;
        let Ok(req) = serde_json::from_slice::<StableTokenRequest>(body) else {
            return answer(40002, "invalid grant_type or body");
        };
        if req.grant_type != "client_credential" {
            return answer(40002, "invalid grant_type");
        }
        if self.cfg.token_echo_after.is_some_and(|n| self.stats.stable_token_calls > n) {
            return answer(40125, &format!("invalid appsecret {}, rid: 1", req.secret));
        }
        if self.cfg.app_secret.is_empty() || req.secret != self.cfg.app_secret {
            return answer(40125, "invalid appsecret");
        }
        let now = Instant::now();
        let lifetime = self.cfg.token_lifetime;
        // Like WeChat: the same token while it is valid, a new one in its last
        // stretch (5 minutes, or half the lifetime when that is shorter).
        let renew = Duration::from_secs(300).min(lifetime / 2);
        if req.force_refresh {
            self.stats.force_refreshes += 1;
            if let Some((old, _)) = self.current.take() {
                if let Some(t) = self.tokens.get_mut(&old) {
                    t.revoked = true;
                }
            }
        }
        let token = match &self.current {
            Some((t, expires)) if *expires > now + renew => t.clone(),
            _ => {
                self.generation += 1;
                let t = format!("SIMTOKEN{}x{:016x}", self.generation, self.rng.u64(..));
                self.tokens.insert(t.clone(), Issued { expires: now + lifetime, revoked: false });
                self.current = Some((t.clone(), now + lifetime));
                t
            }
        };
        let expires = self.current.as_ref().map_or(now, |c| c.1);
        json(&StableTokenAnswer {
            access_token: token,
            expires_in: self
                .cfg
                .announced_lifetime
                .unwrap_or_else(|| expires.saturating_duration_since(now).as_secs().max(1)),
        })
    }
}
