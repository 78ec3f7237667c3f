//! `simulate`: the Midas simulator on 127.0.0.1, for tests and rehearsals
//! in a second terminal, until Ctrl-C.

use crate::cli::SimulateArgs;
use crate::exit::Exit;
use crate::{config, input, say, sim};
use std::sync::Arc;

pub fn command(args: &SimulateArgs) -> anyhow::Result<Exit> {
    let env = |n: &str| config::secret_from_env(&config::process_env, n);
    let app_key = env("MIDAS_APP_KEY")?.map(|s| s.expose().to_string());
    let mut sc = sim::SimConfig::new(app_key.as_deref().unwrap_or(config::REHEARSAL_APP_KEY));
    if let Some(k) = env("MIDAS_SANDBOX_APP_KEY")? {
        sc.sandbox_app_key = k.expose().into();
    }
    if let Some(s) = env("WECHAT_APP_SECRET")? {
        sc.app_secret = s.expose().into();
    }
    if let Some(t) = env("WECHAT_ACCESS_TOKEN")? {
        sc.fixed_tokens.push(t.expose().into());
    }
    sc.port = args.port;
    if let Some(p) = &args.orders {
        sc.orders = sim::load_orders(p)?;
    }
    sc.default_state = args.default_state.parse().map_err(|e: String| anyhow::anyhow!("--default-state: {e}"))?;
    if let Some(p) = &args.session_keys {
        sc.session_keys = Arc::new(input::SessionKeys::load(p)?);
    }
    if args.strict_sessions {
        sc.sessions = sim::SessionPolicy::Strict;
    }
    anyhow::ensure!(args.token_lifetime >= 1, "--token-lifetime must be at least 1 second");
    sc.token_lifetime = std::time::Duration::from_secs(args.token_lifetime);
    for (name, p) in [
        ("--busy-rate", args.busy_rate),
        ("--error-rate", args.error_rate),
        ("--drop-rate", args.drop_rate),
        ("--bogus-rate", args.bogus_rate),
        ("--throttle-rate", args.throttle_rate),
        ("--processing-share", args.processing_share),
        ("--refund-fail-rate", args.refund_fail_rate),
    ] {
        anyhow::ensure!((0.0..=1.0).contains(&p), "{name} must be between 0 and 1");
    }
    sc.faults = sim::Faults {
        latency: std::time::Duration::from_millis(args.latency_ms),
        busy_rate: args.busy_rate,
        error_rate: args.error_rate,
        drop_rate: args.drop_rate,
        frequency_limit: args.frequency_limit,
        bogus_rate: args.bogus_rate,
        bogus_body: Some(args.bogus_body.clone()),
        redirect_to: args.redirect_to.clone(),
        throttle_rate: args.throttle_rate,
        processing_share: args.processing_share,
        drop_first: args.drop_first,
    };
    sc.echo = args.echo.clone();
    sc.refund_settle = std::time::Duration::from_millis(args.refund_settle_ms);
    sc.refund_fail_rate = args.refund_fail_rate;
    sc.announced_lifetime = args.announce_lifetime;
    sc.seed = args.seed;
    let sim = sim::Simulator::start(sc, args.log.as_deref())?;
    if app_key.is_none() {
        say!("MIDAS_APP_KEY not set: verifying sig with the rehearsal key");
    }
    println!("midas-cancel simulator listening on {}", sim.url());
    use std::io::Write as _;
    std::io::stdout().flush()?;
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })?;
    let _ = rx.recv();
    say!("simulator stopped");
    Ok(Exit::Done)
}
