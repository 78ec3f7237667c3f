//! The HTTP side: a hyper server on loopback, one task per connection,
//! latency as an async sleep; the routes and their answers.

use super::state::{SimStats, State};
use super::tokens::{far_future, Issued};
use super::SimConfig;
use crate::api::{self, Answer};
use crate::sign;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The value of `name` in a query string.
pub(super) fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
}

/// A running simulator; stops when dropped.
///
/// It serves HTTP/1.1 with hyper on a small tokio runtime of its own: every
/// connection is a task and latency is an async sleep, so any number of
/// requests can be in flight at once. (A fixed pool of server threads, as
/// tiny_http has, could leave a new connection queued behind kept-alive ones
/// until the client timed out.)
pub struct Simulator {
    pub(super) url: String,
    pub(super) state: Arc<Mutex<State>>,
    pub(super) runtime: Option<tokio::runtime::Runtime>,
}

/// What a handled request turns into.
pub(super) enum Response {
    Json(u16, String),
    /// HTTP 307 to this location.
    Redirect(String),
    /// Processed, but the answer is never sent.
    Drop,
}

pub(super) fn json<T: Serialize>(v: &T) -> Response {
    Response::Json(200, serde_json::to_string(v).expect("serialisable"))
}

pub(super) fn answer(errcode: i64, errmsg: &str) -> Response {
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
            refunds: Default::default(),
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

pub(super) type Reply = hyper::Response<http_body_util::Full<hyper::body::Bytes>>;

pub(super) async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<Mutex<State>>, started: Instant) {
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

pub(super) async fn handle(
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
    // Every API call (cancels, and xpay's queries and refunds) is counted in flight.
    let is_cancel = [sign::PROD_URI, sign::SANDBOX_URI, api::v2::URI, api::xpay::CANCEL_URI]
        .into_iter()
        .chain([api::xpay::QUERY_URI, api::xpay::REFUND_URI])
        .any(|p| p == path);
    let (response, latency) = {
        let mut st = state.lock().expect("sim lock");
        if is_cancel {
            st.in_flight += 1;
            st.stats.max_in_flight = st.stats.max_in_flight.max(st.in_flight);
        }
        let latency = st.cfg.faults.latency;
        st.stats.requests.push(format!("{} {path}", parts.method));
        if st.cfg.keep_log && path.starts_with("/xpay/") {
            let pay_sig = query_param(query, "pay_sig").unwrap_or("").to_string();
            st.stats.bodies.push((path.to_string(), String::from_utf8_lossy(&body).into_owned(), pay_sig));
        }
        let r = match (post, path) {
            _ if st.cfg.faults.redirect_to.is_some() => {
                Response::Redirect(st.cfg.faults.redirect_to.clone().unwrap_or_default())
            }
            (true, sign::PROD_URI) => st.cancel(false, query, &body, arrived, started),
            (true, api::v2::URI) => st.cancel_v2(query, &body, arrived, started),
            (true, sign::SANDBOX_URI) => st.cancel(true, query, &body, arrived, started),
            (true, api::xpay::CANCEL_URI) => st.cancel_xpay(query, &body, arrived, started),
            (true, api::xpay::QUERY_URI) => st.query_xpay(query, &body, arrived, started),
            (true, api::xpay::REFUND_URI) => st.refund_xpay(query, &body, arrived, started),
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
