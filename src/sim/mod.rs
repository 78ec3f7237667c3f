//! The Midas simulator: a real HTTP server on loopback that implements
//! cancelpay (production and sandbox paths) and stable_token the way SPEC §1
//! describes, with order state and fault knobs. It is the project's test peer
//! (`midas-cancel simulate`, the integration tests) and the operator's
//! rehearsal stage (`run --simulate`).
//!
//! This module is the shared engine (the server, tokens, the frequency limit
//! and injected faults, order state, the log); each cancel API's route lives
//! in its own module: [`v1`] and [`v2`].

mod v1;
mod v2;

use crate::api::{self, Answer, StableTokenAnswer, StableTokenRequest};
use crate::input::SessionKeys;
use crate::sign;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The state of one order on the simulated Midas side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderState {
    /// Coins deducted: a cancel succeeds (0) and returns them.
    Deducted,
    /// Already returned: 90015.
    Cancelled,
    /// Paid and confirmed: 90014.
    Confirmed,
    /// 90016 for this many more attempts, then deducted.
    Processing(u32),
    /// No such order: 90000.
    Unknown,
    /// Always answers this errcode (to rehearse any category).
    Errcode(i64),
    /// v2: a deduction with this many coins left to return.
    Remaining(u64),
    /// Answers errcode 90013 with an errmsg that echoes the request's query
    /// string and [`SimConfig::echo`], like a proxy that repeats what it got.
    Echo,
}

impl FromStr for OrderState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Ok(match s {
            "deducted" => OrderState::Deducted,
            "cancelled" | "returned" => OrderState::Cancelled,
            "confirmed" => OrderState::Confirmed,
            "processing" => OrderState::Processing(2),
            "unknown" => OrderState::Unknown,
            "echo" => OrderState::Echo,
            _ => {
                if let Some(n) = s.strip_prefix("processing:") {
                    OrderState::Processing(n.parse().map_err(|_| format!("bad count in `{s}`"))?)
                } else if let Some(n) = s.strip_prefix("remaining:") {
                    OrderState::Remaining(n.parse().map_err(|_| format!("bad amount in `{s}`"))?)
                } else if let Some(c) = s.strip_prefix("errcode:") {
                    OrderState::Errcode(c.parse().map_err(|_| format!("bad errcode in `{s}`"))?)
                } else {
                    return Err(format!(
                        "unknown order state `{s}` (deducted, cancelled, confirmed, processing[:N], unknown, errcode:N, echo, remaining:N)"
                    ));
                }
            }
        })
    }
}

/// Loads `bill_no,state` rows.
pub fn load_orders(path: &Path) -> anyhow::Result<HashMap<String, OrderState>> {
    use anyhow::Context as _;
    let mut rdr =
        csv::ReaderBuilder::new().trim(csv::Trim::All).from_path(path).with_context(|| path.display().to_string())?;
    let mut orders = HashMap::new();
    for rec in rdr.records() {
        let rec = rec.with_context(|| path.display().to_string())?;
        let state = rec.get(1).unwrap_or("deducted").parse().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        orders.insert(rec.get(0).unwrap_or("").to_string(), state);
    }
    Ok(orders)
}

/// Injected faults.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Delay before every answer.
    pub latency: Duration,
    /// Share of cancels answered -1 (system busy), not processed.
    pub busy_rate: f64,
    /// Share of cancels answered HTTP 502, not processed.
    pub error_rate: f64,
    /// Share of cancels processed but never answered (the client times out).
    pub drop_rate: f64,
    /// WeChat's frequency limit: more cancels than this in any second get 45009.
    pub frequency_limit: Option<u32>,
    /// Share of cancels processed but answered HTTP 200 with [`Faults::bogus_body`]
    /// (a proxy's answer without an errcode).
    pub bogus_rate: f64,
    /// The body of a bogus answer [default: `{}`].
    pub bogus_body: Option<String>,
    /// Answer every request (cancelpay and stable_token) with HTTP 307 to this URL.
    pub redirect_to: Option<String>,
    /// Share of cancels answered HTTP 429, not processed.
    pub throttle_rate: f64,
    /// Share of orders (chosen by a hash of the bill_no, so the same ones
    /// every time) that answer 90016 (processing) on every try.
    pub processing_share: f64,
    /// Process every order's (v2: cancellation's) first cancel but never
    /// answer it: the client's re-send must learn the outcome.
    pub drop_first: bool,
}

/// Whether `bill_no` is one of the `share` of orders picked by its hash.
pub fn picked(bill_no: &str, share: f64) -> bool {
    share > 0.0 && (xxhash_rust::xxh3::xxh3_64(bill_no.as_bytes()) % 10_000) < (share * 10_000.0) as u64
}

/// How the simulator treats mp_sig.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionPolicy {
    /// mp_sig optional; checked when the user's session key is known.
    Lenient,
    /// mp_sig required (90010 without it); unknown users' sessions are expired.
    Strict,
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
        }
    }
}

/// One cancelpay request as the simulator saw it.
#[derive(Clone, Debug, Serialize)]
pub struct LogEntry {
    /// Arrival, seconds since the simulator started.
    pub at: f64,
    pub sandbox: bool,
    pub bill_no: String,
    /// Arrival time minus the request's ts, in seconds.
    pub ts_lag: Option<f64>,
    pub mp_sig: bool,
    /// HTTP status sent (0 when the reply was dropped).
    pub status: u16,
    pub errcode: Option<i64>,
}

impl LogEntry {
    /// A cancel's entry as it arrived, before it is answered: the parts of
    /// its body that parsed (`bill_no`, `ts`).
    fn arrived(at: Instant, started: Instant, sandbox: bool, parsed: Option<(&str, u64)>, mp_sig: bool) -> LogEntry {
        LogEntry {
            at: at.duration_since(started).as_secs_f64(),
            sandbox,
            bill_no: parsed.map(|(b, _)| b.to_string()).unwrap_or_default(),
            ts_lag: parsed.map(|(_, ts)| crate::clock::unix_now_f64() - ts as f64),
            mp_sig,
            status: 200,
            errcode: None,
        }
    }

    /// The entry with the HTTP status and errcode of `response` (status 0:
    /// never answered).
    fn answered(mut self, response: &Response) -> LogEntry {
        (self.status, self.errcode) = match response {
            Response::Json(status, text) => (*status, serde_json::from_str::<Answer>(text).ok().map(|a| a.errcode)),
            Response::Redirect(_) => (307, None),
            Response::Drop => (0, None),
        };
        self
    }
}

/// The value of `name` in a query string.
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
}

/// What the simulator has seen.
#[derive(Clone, Debug, Default)]
pub struct SimStats {
    pub log: Vec<LogEntry>,
    /// Successful cancels (errcode 0) per bill_no.
    pub cancels: HashMap<String, u32>,
    pub stable_token_calls: u64,
    pub force_refreshes: u64,
    /// Calls of the forbidden `GET /cgi-bin/token`.
    pub get_token_calls: u64,
    /// Every request that arrived, as `METHOD path` (cancels and tokens alike).
    pub requests: Vec<String>,
    /// The most cancel requests being handled at once (arrived, not yet answered).
    pub max_in_flight: usize,
}

impl SimStats {
    /// Arrival times of the cancel requests, sorted.
    pub fn arrivals(&self) -> Vec<f64> {
        let mut at: Vec<f64> = self.log.iter().map(|e| e.at).collect();
        at.sort_by(f64::total_cmp);
        at
    }

    /// The most cancel requests that arrived in any sliding one-second window.
    pub fn busiest_second(&self) -> usize {
        let at = self.arrivals();
        let mut end = 0;
        (0..at.len())
            .map(|start| {
                while end < at.len() && at[end] < at[start] + 1.0 {
                    end += 1;
                }
                end - start
            })
            .max()
            .unwrap_or(0)
    }

    /// True when every bill_no in `expected` was cancelled exactly once and
    /// no other order was.
    pub fn cancelled_once(&self, expected: usize) -> bool {
        self.cancels.len() == expected && self.cancels.values().all(|&n| n == 1)
    }
}

/// The state of order `bill_no` in production or the sandbox (kept apart),
/// from the maps of [`State`] (borrowed apart from its other fields).
fn order_state<'a>(
    cfg: &SimConfig,
    orders: &'a mut HashMap<String, OrderState>,
    sandbox_orders: &'a mut HashMap<String, OrderState>,
    sandbox: bool,
    bill_no: &str,
) -> &'a mut OrderState {
    let start = cfg.orders.get(bill_no).unwrap_or(&cfg.default_state).clone();
    let orders = if sandbox { sandbox_orders } else { orders };
    orders.entry(bill_no.to_string()).or_insert(start)
}

struct Issued {
    expires: Instant,
    revoked: bool,
}

struct State {
    cfg: SimConfig,
    orders: HashMap<String, OrderState>,
    /// The sandbox's own orders: a sandbox cancel never changes production's
    /// (each starts from the configured state, or the default).
    sandbox_orders: HashMap<String, OrderState>,
    tokens: HashMap<String, Issued>,
    current: Option<(String, Instant)>,
    window: VecDeque<Instant>,
    stats: SimStats,
    rng: fastrand::Rng,
    generation: u64,
    log_file: Option<std::fs::File>,
    in_flight: usize,
    /// v2: cancellation ids processed, with their amounts.
    cancellations: HashMap<String, u64>,
    /// Keys whose first answer was dropped (`drop_first`).
    dropped: std::collections::HashSet<String>,
}

/// A running simulator; stops when dropped.
///
/// It serves HTTP/1.1 with hyper on a small tokio runtime of its own: every
/// connection is a task and latency is an async sleep, so any number of
/// requests can be in flight at once. (A fixed pool of server threads, as
/// tiny_http has, could leave a new connection queued behind kept-alive ones
/// until the client timed out.)
pub struct Simulator {
    url: String,
    state: Arc<Mutex<State>>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// What a handled request turns into.
enum Response {
    Json(u16, String),
    /// HTTP 307 to this location.
    Redirect(String),
    /// Processed, but the answer is never sent.
    Drop,
}

fn json<T: Serialize>(v: &T) -> Response {
    Response::Json(200, serde_json::to_string(v).expect("serialisable"))
}

fn answer(errcode: i64, errmsg: &str) -> Response {
    json(&Answer { errcode, errmsg: errmsg.to_string() })
}

impl Simulator {
    /// Binds 127.0.0.1:`cfg.port` (0 = any free port) and starts serving.
    pub fn start(cfg: SimConfig, log_path: Option<&Path>) -> anyhow::Result<Simulator> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", cfg.port))
            .map_err(|e| anyhow::anyhow!("simulator: cannot listen on 127.0.0.1:{}: {e}", cfg.port))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let log_file = match log_path {
            Some(p) => Some(std::fs::File::create(p)?),
            None => None,
        };
        let state = Arc::new(Mutex::new(State {
            orders: cfg.orders.clone(),
            sandbox_orders: HashMap::new(),
            rng: fastrand::Rng::with_seed(cfg.seed),
            tokens: cfg
                .fixed_tokens
                .iter()
                .map(|t| (t.clone(), Issued { expires: far_future(), revoked: false }))
                .collect(),
            current: None,
            window: VecDeque::new(),
            stats: SimStats::default(),
            generation: 0,
            log_file,
            in_flight: 0,
            cancellations: HashMap::new(),
            dropped: Default::default(),
            cfg,
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("midas-simulator")
            .enable_all()
            .build()?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        runtime.spawn(accept_loop(listener, state.clone(), Instant::now()));
        Ok(Simulator { url: format!("http://127.0.0.1:{port}"), state, runtime: Some(runtime) })
    }

    /// The base URL to give `run --base-url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A copy of what the simulator has seen so far.
    pub fn stats(&self) -> SimStats {
        self.state.lock().expect("sim lock").stats.clone()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        // Stops at once: held (dropped-reply) connections are simply closed.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 86400)
}

type Reply = hyper::Response<http_body_util::Full<hyper::body::Bytes>>;

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<Mutex<State>>, started: Instant) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, state.clone(), started));
            // A client that goes away mid-request is not the simulator's concern.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    state: Arc<Mutex<State>>,
    started: Instant,
) -> std::io::Result<Reply> {
    use http_body_util::BodyExt as _;
    let (parts, body) = req.into_parts();
    let body = http_body_util::Limited::new(body, 1 << 20)
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    let post = parts.method == hyper::Method::POST;
    let arrived = Instant::now();
    let is_cancel = path == sign::PROD_URI || path == sign::SANDBOX_URI || path == api::v2::URI;
    let (response, latency) = {
        let mut st = state.lock().expect("sim lock");
        if is_cancel {
            st.in_flight += 1;
            st.stats.max_in_flight = st.stats.max_in_flight.max(st.in_flight);
        }
        let latency = st.cfg.faults.latency;
        st.stats.requests.push(format!("{} {path}", parts.method));
        let r = match (post, path) {
            _ if st.cfg.faults.redirect_to.is_some() => {
                Response::Redirect(st.cfg.faults.redirect_to.clone().unwrap_or_default())
            }
            (true, sign::PROD_URI) => st.cancel(false, query, &body, arrived, started),
            (true, api::v2::URI) => st.cancel_v2(query, &body, arrived, started),
            (true, sign::SANDBOX_URI) => st.cancel(true, query, &body, arrived, started),
            (true, "/cgi-bin/stable_token") => st.stable_token(&body),
            (_, "/cgi-bin/token") => {
                st.stats.get_token_calls += 1;
                answer(-1, "GET /cgi-bin/token would revoke the game's token: the simulator refuses it")
            }
            _ => Response::Json(404, "not found".into()),
        };
        (r, latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if is_cancel {
        state.lock().expect("sim lock").in_flight -= 1;
    }
    match response {
        Response::Json(status, text) => hyper::Response::builder()
            .status(status)
            .header("Content-Type", "application/json")
            .body(text.into())
            .map_err(std::io::Error::other),
        Response::Redirect(to) => hyper::Response::builder()
            .status(307)
            .header("Location", to)
            .body(String::new().into())
            .map_err(std::io::Error::other),
        Response::Drop => {
            // Hold the connection without answering until the client gives
            // up (or the simulator stops), then close it.
            tokio::time::sleep(Duration::from_secs(60)).await;
            Err(std::io::Error::other("reply dropped on purpose"))
        }
    }
}

impl State {
    fn log(&mut self, entry: LogEntry) {
        if let Some(f) = self.log_file.as_mut() {
            let _ = writeln!(f, "{}", serde_json::to_string(&entry).expect("serialisable"));
        }
        if self.cfg.keep_log {
            self.stats.log.push(entry);
        }
    }

    /// What every cancel meets first, whatever the API: the frequency
    /// limit, injected server faults, and the access token.
    fn gate(&mut self, token: &str, arrived: Instant) -> Option<Response> {
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

    /// What every processed cancel of `key` may meet last: a lost or
    /// mangled reply.
    fn deliver(&mut self, key: &str, reply: Response) -> Response {
        if self.cfg.faults.drop_first && self.dropped.insert(key.to_string()) {
            return Response::Drop;
        }
        if self.rng.f64() < self.cfg.faults.drop_rate {
            return Response::Drop;
        }
        if self.rng.f64() < self.cfg.faults.bogus_rate {
            return Response::Json(200, self.cfg.faults.bogus_body.clone().unwrap_or_else(|| "{}".into()));
        }
        reply
    }

    fn stable_token(&mut self, body: &[u8]) -> Response {
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
