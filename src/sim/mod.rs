//! The Midas simulator: a real HTTP server on loopback that implements
//! cancelpay (production and sandbox paths) and stable_token the way SPEC §1
//! describes, with order state and fault knobs. It is the project's test peer
//! (`midas-cancel simulate`, the integration tests) and the operator's
//! rehearsal stage (`run --simulate`).
//!
//! Its rooms: the HTTP server ([`server`]), tokens and the gate every
//! cancel passes ([`tokens`]), injected faults ([`faults`]), order state and
//! the log ([`state`]); each cancel API's route lives in its own module:
//! [`v1`], [`v2`], [`xpay`] (coin cancels and `query_order`) and
//! [`refunds`] (paid orders and refunds that settle). This file holds the
//! configuration.

mod faults;
mod refunds;
mod server;
mod state;
mod tokens;
mod v1;
mod v2;
mod xpay;

pub use self::faults::{picked, Faults, SessionPolicy};
pub use self::server::Simulator;
use self::server::*;
use self::state::*;
pub use self::state::{load_orders, LogEntry, OrderState, SimStats};

use crate::input::SessionKeys;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A cancel body's JSON object, with typed readers of its fields as the
/// routes check them (strings non-empty, numbers whole).
struct JsonBody(serde_json::Value);

impl JsonBody {
    fn parse(bytes: &[u8]) -> Result<JsonBody, String> {
        serde_json::from_slice(bytes).map(JsonBody).map_err(|_| "body is not JSON".to_string())
    }

    fn has(&self, k: &str) -> bool {
        self.0.get(k).is_some()
    }

    fn str(&self, k: &str) -> Result<String, String> {
        match self.0.get(k) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(serde_json::Value::String(_)) | None => Err(format!("{k} missing")),
            Some(_) => Err(format!("{k} must be a string")),
        }
    }

    fn num(&self, k: &str) -> Result<u64, String> {
        match self.0.get(k) {
            Some(serde_json::Value::Number(n)) => n.as_u64().ok_or(format!("{k} must be a whole number")),
            Some(_) => Err(format!("{k} must be a number")),
            None => Err(format!("{k} missing")),
        }
    }
}

#[derive(Clone)]
pub struct SimConfig {
    pub port: u16,
    pub app_key: String,
    pub sandbox_app_key: String,
    /// The AppSecret stable_token accepts.
    pub app_secret: String,
    /// Tokens accepted as given (like a WECHAT_ACCESS_TOKEN).
    pub fixed_tokens: Vec<String>,
    pub token_lifetime: Duration,
    /// The `expires_in` stable_token announces, when it should differ from
    /// the real lifetime (an implausible `0`, say).
    pub announced_lifetime: Option<u64>,
    pub orders: HashMap<String, OrderState>,
    /// State of orders not listed.
    pub default_state: OrderState,
    pub session_keys: Arc<SessionKeys>,
    pub sessions: SessionPolicy,
    pub faults: Faults,
    /// Keep a request log in memory (tests read it).
    pub keep_log: bool,
    /// Text that orders in the `echo` state repeat in their errmsg.
    pub echo: String,
    /// v2: coins left on a deduction not listed with `remaining:N`.
    pub v2_remaining: u64,
    pub seed: u64,
    /// Adversarial: stable_token calls after this many answer 40125 with an
    /// errmsg that repeats the AppSecret it was sent (a leaky proxy).
    pub token_echo_after: Option<u64>,
    /// xpay-refund: how long a refund stays in progress before it settles.
    pub refund_settle: Duration,
    /// xpay-refund: share of refunds that fail (status 7) instead of completing.
    pub refund_fail_rate: f64,
}

impl SimConfig {
    /// A simulator that accepts the given app key in both environments.
    pub fn new(app_key: &str) -> SimConfig {
        SimConfig {
            port: 0,
            app_key: app_key.to_string(),
            sandbox_app_key: app_key.to_string(),
            app_secret: String::new(),
            fixed_tokens: Vec::new(),
            token_lifetime: Duration::from_secs(7200),
            announced_lifetime: None,
            orders: HashMap::new(),
            default_state: OrderState::Deducted,
            session_keys: Arc::default(),
            sessions: SessionPolicy::Lenient,
            faults: Faults::default(),
            keep_log: false,
            echo: String::new(),
            v2_remaining: 1_000_000,
            seed: 1,
            token_echo_after: None,
            refund_settle: Duration::from_secs(3),
            refund_fail_rate: 0.0,
        }
    }
}
