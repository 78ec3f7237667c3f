//! Turns flags, the config file and the environment into one validated
//! [`RunConfig`]. Nothing downstream reads flags or the environment.

use crate::cli::{InputArgs, RunArgs};
use crate::input::{ColumnMapping, EncodingName, Input, MpSigMode, OrderRef, SessionKeys};
use crate::secret::{Redactor, Secret};
use crate::send::SendSettings;
use crate::sign::CancelParams;
use anyhow::{bail, Context as _};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The TOML config file. Every key is optional; flags win.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub appid: Option<String>,
    pub offer_id: Option<String>,
    pub pf: Option<String>,
    pub sandbox: Option<bool>,
    pub session_keys: Option<PathBuf>,
    pub mp_sig: Option<MpSigMode>,
    pub encoding: Option<EncodingName>,
    pub base_url: Option<String>,
    pub rate: Option<u32>,
    pub burst: Option<u32>,
    pub concurrency: Option<usize>,
    pub max_attempts: Option<u32>,
    pub timeout: Option<f64>,
    pub backoff_ms: Option<u64>,
    pub dry_run: Option<bool>,
    pub ts: Option<u64>,
    pub resume: Option<bool>,
    pub simulate: Option<bool>,
    /// FIELD = "HEADER" pairs, like `--column`.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display()))
    }
}

/// Looks a variable up in the environment; tests pass their own.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A secret from `NAME`, or from the file named by `NAME_FILE`.
pub fn secret_from_env(env: EnvLookup<'_>, name: &str) -> anyhow::Result<Option<Secret>> {
    if let Some(v) = env(name).filter(|v| !v.is_empty()) {
        return Ok(Some(Secret::new(v.trim())));
    }
    let file_var = format!("{name}_FILE");
    match env(&file_var).filter(|v| !v.is_empty()) {
        Some(path) => {
            let v = std::fs::read_to_string(&path).with_context(|| format!("cannot read {file_var}={path}"))?;
            let v = v.trim();
            if v.is_empty() {
                bail!("{file_var}={path} is empty");
            }
            Ok(Some(Secret::new(v)))
        }
        None => Ok(None),
    }
}

/// How the input is read: shared by `run` and `check`.
#[derive(Clone)]
pub struct InputConfig {
    pub path: PathBuf,
    /// The input, opened and scanned (encoding, size and, when asked for,
    /// its SHA-256): a bad file is refused here, before anything else.
    pub opened: Arc<Input>,
    pub columns: Vec<ColumnMapping>,
    pub session_keys: Arc<SessionKeys>,
    pub mp_sig: MpSigMode,
}

impl InputConfig {
    /// `hash`: compute the input's SHA-256 (a live run's fingerprint).
    pub fn resolve(path: &Path, args: &InputArgs, file: &FileConfig, hash: bool) -> anyhow::Result<InputConfig> {
        let mut columns = Vec::new();
        for (field, header) in &file.columns {
            let m: ColumnMapping =
                format!("{field}={header}").parse().map_err(|e| anyhow::anyhow!("config file, [columns]: {e}"))?;
            columns.push(m);
        }
        // Flags come last so that they win (the header lookup takes the last mapping).
        columns.extend(args.columns.iter().cloned());
        let encoding = args.encoding.or(file.encoding);
        // The input's scan and the keys' load each read a whole file before
        // the first row can be signed: done side by side.
        let (opened, session_keys) = std::thread::scope(|scope| {
            let keys = scope.spawn(|| match args.session_keys.as_ref().or(file.session_keys.as_ref()) {
                Some(p) => SessionKeys::load(p).map(Arc::new),
                None => Ok(Arc::default()),
            });
            let opened = Input::open(path, encoding, hash);
            (opened, keys.join().expect("session-key loader panicked"))
        });
        let (opened, session_keys) = (Arc::new(opened?), session_keys?);
        Ok(InputConfig {
            path: path.to_path_buf(),
            opened,
            columns,
            session_keys,
            mp_sig: args.mp_sig.or(file.mp_sig).unwrap_or_default(),
        })
    }
}

/// Constants every request carries.
#[derive(Clone, Debug)]
pub struct Request {
    pub appid: String,
    pub offer_id: String,
    pub pf: String,
    pub sandbox: bool,
}

impl Request {
    /// The signed fields of one request for `order`, sent at `ts`; rows
    /// without a pf take the configured one.
    pub fn params<'a>(&'a self, order: &OrderRef<'a>, ts: u64) -> CancelParams<'a> {
        CancelParams {
            openid: order.openid,
            appid: &self.appid,
            offer_id: &self.offer_id,
            ts,
            zone_id: order.zone_id,
            pf: order.pf.unwrap_or(&self.pf),
            bill_no: order.bill_no,
            user_ip: order.user_ip,
            pay_item: order.pay_item,
        }
    }
}

/// The app key and secret used by `run --simulate` (rehearsals never use real secrets).
pub const REHEARSAL_APP_KEY: &str = "REHEARSAL-app-key-not-a-secret";
pub const REHEARSAL_APP_SECRET: &str = "REHEARSAL-app-secret-not-a-secret";
/// WeChat's API base.
pub const DEFAULT_BASE_URL: &str = "https://api.weixin.qq.com";

/// What kind of run this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    DryRun,
    Live,
    /// Live, against the in-process simulator.
    Rehearsal,
}

/// A fully validated `run`.
pub struct RunConfig {
    pub mode: Mode,
    pub input: InputConfig,
    pub output: PathBuf,
    pub request: Request,
    pub app_key: Secret,
    /// `WECHAT_APP_SECRET`: tokens come from stable_token.
    pub app_secret: Option<Secret>,
    /// `WECHAT_ACCESS_TOKEN`: a ready access token, used as given.
    pub access_token: Option<Secret>,
    pub dry_run_ts: Option<u64>,
    pub base_url: String,
    pub send: SendSettings,
    pub quiet: bool,
    pub resume: bool,
    pub force_resume: bool,
    /// `--sum COLUMN` for the final summary.
    pub sum: Option<String>,
    /// `--yes`: no confirmation prompt.
    pub yes: bool,
    pub redactor: Redactor,
}

impl RunConfig {
    /// `production`, `sandbox` or `rehearsal`: where requests go.
    pub fn environment(&self) -> &'static str {
        match (self.mode, self.request.sandbox) {
            (Mode::Rehearsal, _) => "rehearsal",
            (_, true) => "sandbox",
            (_, false) => "production",
        }
    }
}

fn check_constant(name: &str, v: &str, allowed: impl Fn(char) -> bool) -> anyhow::Result<()> {
    if v.is_empty() || !v.chars().all(allowed) || v.len() > 64 {
        bail!("{name} `{v}` is not valid: use the value from the WeChat / Midas console");
    }
    Ok(())
}

fn send_settings(args: &RunArgs, file: &FileConfig) -> anyhow::Result<SendSettings> {
    let rate = args.rate.or(file.rate).unwrap_or(50);
    let rate = NonZeroU32::new(rate).context("--rate must be at least 1 request per second")?;
    let concurrency = args.concurrency.or(file.concurrency).unwrap_or(16);
    if !(1..=512).contains(&concurrency) {
        bail!("--concurrency must be between 1 and 512");
    }
    let max_attempts = args.max_attempts.or(file.max_attempts).unwrap_or(5);
    if max_attempts == 0 {
        bail!("--max-attempts must be at least 1");
    }
    let timeout = args.timeout.or(file.timeout).unwrap_or(10.0);
    if !(timeout.is_finite() && timeout > 0.0 && timeout <= 600.0) {
        bail!("--timeout must be between 0 and 600 seconds");
    }
    Ok(SendSettings {
        rate,
        burst: args.burst.or(file.burst).unwrap_or(1),
        concurrency,
        max_attempts,
        timeout: Duration::from_secs_f64(timeout),
        backoff: Duration::from_millis(args.backoff_ms.or(file.backoff_ms).unwrap_or(500)),
    })
}

impl RunConfig {
    pub fn resolve(args: &RunArgs, env: EnvLookup<'_>) -> anyhow::Result<RunConfig> {
        let file = match &args.input_args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let appid = args.appid.clone().or(file.appid.clone()).context(
            "no appid: pass --appid (or set appid in the --config file) to the Mini Game's appid, e.g. wx1234567",
        )?;
        let offer_id = args
            .offer_id
            .clone()
            .or(file.offer_id.clone())
            .context("no offer_id: pass --offer-id (or set offer_id in the --config file) to the Midas offer id")?;
        let pf = args.pf.clone().or(file.pf.clone()).unwrap_or_else(|| "android".into());
        check_constant("appid", &appid, |c| c.is_ascii_alphanumeric() || c == '_')?;
        check_constant("offer_id", &offer_id, |c| c.is_ascii_alphanumeric())?;
        check_constant("pf", &pf, |c| c.is_ascii_alphanumeric() || c == '_' || c == '-')?;
        let sandbox = args.sandbox || file.sandbox.unwrap_or(false);
        // Modes may come from the config file too; the flags' conflicts are
        // checked again here for that case.
        let dry_run = args.dry_run || file.dry_run.unwrap_or(false);
        let simulate = args.simulate || file.simulate.unwrap_or(false);
        let resume = args.resume || file.resume.unwrap_or(false);
        let ts = args.ts.or(file.ts);
        if dry_run && (simulate || resume) {
            bail!("--dry-run cannot be combined with --simulate or --resume (check the config file too)");
        }
        if ts.is_some() && !dry_run {
            bail!("--ts only applies to --dry-run (a live request is always signed with the current time)");
        }
        if simulate && (args.base_url.is_some() || file.base_url.is_some()) {
            bail!("--simulate sends to the in-process simulator: remove --base-url (or base_url from the config file)");
        }
        let mode = match (dry_run, simulate) {
            (true, _) => Mode::DryRun,
            (false, true) => Mode::Rehearsal,
            (false, false) => Mode::Live,
        };
        let send = send_settings(args, &file)?;
        let base_url = args.base_url.clone().or(file.base_url.clone()).unwrap_or_else(|| DEFAULT_BASE_URL.into());
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            bail!("--base-url `{base_url}` must start with https:// (or http:// for a local simulator)");
        }

        let (app_key, app_secret, access_token) = if mode == Mode::Rehearsal {
            // A rehearsal never touches real secrets, even when they are set.
            (Secret::new(REHEARSAL_APP_KEY), Some(Secret::new(REHEARSAL_APP_SECRET)), None)
        } else {
            let app_key = secret_from_env(env, "MIDAS_APP_KEY")?.with_context(|| {
                format!(
                    "MIDAS_APP_KEY is not set: export the Midas app key of the {} environment (or name a file holding it in MIDAS_APP_KEY_FILE)",
                    if sandbox { "sandbox" } else { "production" }
                )
            })?;
            let secret = secret_from_env(env, "WECHAT_APP_SECRET")?;
            let token = secret_from_env(env, "WECHAT_ACCESS_TOKEN")?;
            if mode == Mode::Live {
                match (&secret, &token) {
                    (Some(_), Some(_)) => bail!(
                        "both WECHAT_APP_SECRET and WECHAT_ACCESS_TOKEN are set: unset one (WECHAT_APP_SECRET is \
                         preferred: the tool then fetches and refreshes tokens itself)"
                    ),
                    (None, None) => bail!(
                        "no access token: set WECHAT_APP_SECRET (the Mini Game's AppSecret; tokens are then fetched \
                         with stable_token and refreshed) or WECHAT_ACCESS_TOKEN (a ready token, used as given)"
                    ),
                    _ => {}
                }
            }
            (app_key, secret, token)
        };
        // Last: the flags, config and secrets are checked before big files are read.
        let input = InputConfig::resolve(&args.input, &args.input_args, &file, mode != Mode::DryRun)?;
        let mut redactor = Redactor::default();
        for s in [Some(&app_key), app_secret.as_ref(), access_token.as_ref()].into_iter().flatten() {
            redactor.add(s);
        }
        // Session keys are not added: there can be millions, and no message
        // ever carries one (the column is never written, validation never
        // repeats the value).
        Ok(RunConfig {
            mode,
            input,
            output: args.output.clone(),
            request: Request { appid, offer_id, pf, sandbox },
            app_key,
            app_secret,
            access_token,
            dry_run_ts: ts,
            base_url,
            send,
            quiet: args.quiet,
            resume,
            force_resume: args.force_resume,
            sum: args.sum.clone(),
            yes: args.yes,
            redactor,
        })
    }
}
