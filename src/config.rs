//! Turns flags, the config file and the environment into one validated
//! [`RunConfig`]. Nothing downstream reads flags or the environment.

use crate::api::ApiKind;
use crate::cli::{InputArgs, RunArgs};
use crate::engine::SendSettings;
use crate::input::{ColumnMapping, EncodingName, Input, InputConfig, MpSigMode, Rules, SessionKeys};
use crate::limits;
use crate::request::{Request, Signing};
use crate::secret::{Redactor, Secret};
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
    pub api: Option<ApiKind>,
    pub cancel_tag: Option<String>,
    pub user_ip: Option<std::net::IpAddr>,
    pub refund_reason: Option<i64>,
    pub settle_timeout: Option<i64>,
    pub poll_ms: Option<i64>,
    pub base_url: Option<String>,
    // Signed and wide, so that `rate = -5` reaches the range check and its
    // message instead of a deserialiser's.
    pub rate: Option<i64>,
    pub burst: Option<i64>,
    pub concurrency: Option<i64>,
    pub max_attempts: Option<i64>,
    pub timeout: Option<f64>,
    pub backoff_ms: Option<i64>,
    pub dry_run: Option<bool>,
    pub ts: Option<u64>,
    pub resume: Option<bool>,
    pub simulate: Option<bool>,
    /// FIELD = "HEADER" pairs, like `--column`.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Where it was read from.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// The config file's keys (the fields of [`FileConfig`]).
const KEYS: [&str; 25] = [
    "appid",
    "offer_id",
    "pf",
    "sandbox",
    "session_keys",
    "mp_sig",
    "encoding",
    "api",
    "cancel_tag",
    "user_ip",
    "refund_reason",
    "settle_timeout",
    "poll_ms",
    "base_url",
    "rate",
    "burst",
    "concurrency",
    "max_attempts",
    "timeout",
    "backoff_ms",
    "dry_run",
    "ts",
    "resume",
    "simulate",
    "columns",
];

/// The line of a top-level `key = ...` in a TOML text, for messages.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines().position(|l| l.split_once('=').is_some_and(|(k, _)| k.trim().trim_matches('"') == key)).map(|i| i + 1)
}

/// Key names that hold a secret: such a key in a config file is refused
/// (secrets come from the environment only) without repeating its value.
const SECRET_WORDS: [&str; 5] = ["secret", "token", "password", "app_key", "appkey"];

impl FileConfig {
    /// Reads a config file. Paths in it are relative to the file's folder.
    /// No message ever repeats a line of the file: a secret pasted into it by
    /// mistake must not reach the console.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let name = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read config file {name}: {e}"))?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e.span().map_or(0, |s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            anyhow::anyhow!("config file {name} is not valid TOML at line {line}: {}", e.message().trim())
        })?;
        // No message repeats a line of the file, a key or a value: a secret
        // pasted into it (as a value, or alone on a line, where it reads as
        // a key) must not reach a terminal or a ticket. Keys are named only
        // when they are this file's own.
        let at = |key: &str| line_of_key(&text, key).map_or_else(String::new, |n| format!(" line {n}"));
        if let Some(key) = table.keys().find(|k| SECRET_WORDS.iter().any(|w| k.to_ascii_lowercase().contains(w))) {
            anyhow::bail!(
                "config file {name}{}: that key looks like a secret: secrets belong in the \
                 environment (MIDAS_APP_KEY, WECHAT_APP_SECRET or WECHAT_ACCESS_TOKEN, or NAME_FILE naming a file \
                 that holds it), never in a config file. Remove that line",
                at(key)
            );
        }
        if let Some(key) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
            anyhow::bail!(
                "config file {name}{}: unknown key (not repeated here, in case it is a pasted secret). \
                 The keys are: {}",
                at(key),
                KEYS.join(", ")
            );
        }
        let mut cfg: FileConfig = toml::from_str(&text).map_err(|e: toml::de::Error| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let key = line.and_then(|n| text.lines().nth(n - 1)).and_then(|l| l.split_once('=')).map(|(k, _)| k.trim());
            let key = key.filter(|k| KEYS.contains(k)).map_or_else(String::new, |k| format!(" `{k}`"));
            // serde's "invalid type: string \"VALUE\", expected ..." quotes the
            // value: only what is expected is said.
            let message = e.message();
            let expected = message.rsplit_once("expected ").map_or("another value", |(_, x)| x.trim());
            let line = line.map_or_else(String::new, |n| format!(" line {n}"));
            anyhow::anyhow!(
                "config file {name}{line}:{key} has a value of the wrong kind (expected {expected}; the value is not \
                 repeated here)"
            )
        })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        cfg.session_keys = cfg.session_keys.map(|p| dir.join(p));
        cfg.path = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// How messages name a key of this file.
    fn key(&self, key: &str) -> String {
        match &self.path {
            Some(p) => format!("`{key}` in the config file {}", p.display()),
            None => format!("`{key}`"),
        }
    }
}

/// Looks a variable up in the environment; tests pass their own.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A secret from `NAME`, or from the file named by `NAME_FILE`. Both set to
/// different values is refused: silently preferring one could sign with the
/// wrong key.
pub fn secret_from_env(env: EnvLookup<'_>, name: &str) -> anyhow::Result<Option<Secret>> {
    let direct = env(name).filter(|v| !v.is_empty()).map(|v| Secret::new(v.trim()));
    let file_var = format!("{name}_FILE");
    let from_file = match env(&file_var).filter(|v| !v.is_empty()) {
        Some(path) => {
            let v =
                std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("cannot read {file_var}={path}: {e}"))?;
            let v = v.trim();
            if v.is_empty() {
                bail!("{file_var}={path} is empty");
            }
            Some(Secret::new(v))
        }
        None => None,
    };
    match (direct, from_file) {
        (Some(a), Some(b)) if a != b => bail!(
            "both {name} and {file_var} are set, to different values: unset one of them so that it is clear \
             which one is used"
        ),
        (a, b) => Ok(a.or(b)),
    }
}

impl InputConfig {
    /// `snapshot`: read a private, hashed copy of the input (a live run; see [`Input::open`]).
    /// `appid` and `offer_id`: the run's (what derived ids are made of: v2's
    /// offer_id, xpay's appid; `check` takes the config file's).
    pub fn resolve(
        path: &Path,
        args: &InputArgs,
        file: &FileConfig,
        (appid, offer_id): (Option<&str>, Option<&str>),
        snapshot: bool,
    ) -> anyhow::Result<InputConfig> {
        let mut columns = Vec::new();
        for (field, header) in &file.columns {
            let m: ColumnMapping =
                format!("{field}={header}").parse().map_err(|e| anyhow::anyhow!("{}: {e}", file.key("[columns]")))?;
            columns.push(m);
        }
        // Flags come last so that they win (the header lookup takes the last mapping).
        columns.extend(args.columns.iter().cloned());
        let encoding = args.encoding.or(file.encoding);
        // The input's scan and the keys' load each read a whole file before
        // the first row can be signed: done side by side.
        let (opened, session_keys) = std::thread::scope(|scope| {
            let keys = scope.spawn(|| match (&args.session_keys, &file.session_keys) {
                (Some(p), _) => SessionKeys::load(p).map(Arc::new).context("--session-keys"),
                (None, Some(p)) => SessionKeys::load(p).map(Arc::new).with_context(|| file.key("session_keys")),
                (None, None) => Ok(Arc::default()),
            });
            let opened = Input::open(path, encoding, args.sheet.as_deref(), snapshot);
            (opened, keys.join().expect("session-key loader panicked"))
        });
        let (opened, session_keys) = (Arc::new(opened?), session_keys?);
        let api = args.api.or(file.api).unwrap_or_default();
        let (appid, offer_id) = (appid.or(file.appid.as_deref()), offer_id.or(file.offer_id.as_deref()));
        Ok(InputConfig {
            path: path.to_path_buf(),
            opened,
            columns,
            session_keys,
            mp_sig: args.mp_sig.or(file.mp_sig).unwrap_or_default(),
            rules: Rules {
                api,
                api_named: args.api.or(file.api).is_some(),
                // What the API's own ids are derived from (v2: offer_id; xpay: appid).
                offer_id: api.id_scope(appid.unwrap_or_default(), offer_id.unwrap_or_default()).to_string(),
                user_ip: args.user_ip.or(file.user_ip).map(|ip| ip.to_string()),
                cancel_tag: args.cancel_tag.clone().or(file.cancel_tag.clone()).unwrap_or_default(),
                refund_reason: Some(
                    number(args.refund_reason, file.refund_reason, 1, &limits::REFUND_REASON)?.to_string(),
                ),
            },
        })
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
    /// `--log FILE.jsonl`: the attempt log.
    pub log: Option<PathBuf>,
}

impl RunConfig {
    /// What signs this run's requests.
    pub fn signing(&self) -> Signing {
        Signing::new(&self.request, &self.input.rules, self.input.mp_sig, &self.app_key)
    }

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

/// A numeric option: the flag, else the config file's key, else `default`,
/// checked against its bounds (a config value has not been checked yet).
fn number(flag: Option<u64>, file: Option<i64>, default: u64, bounds: &limits::Bounds) -> anyhow::Result<u64> {
    let v = flag.map(i128::from).or(file.map(i128::from)).unwrap_or(i128::from(default));
    bounds.check(v).map_err(|m| anyhow::anyhow!("{m} (from the flag or the config file)"))
}

fn send_settings(args: &RunArgs, file: &FileConfig) -> anyhow::Result<SendSettings> {
    // Each bound fits its type: at most 10_000, 512 and 100.
    let rate = number(args.rate, file.rate, 50, &limits::RATE)? as u32;
    let timeout = args.timeout.or(file.timeout).unwrap_or(10.0);
    limits::check_timeout(timeout).map_err(anyhow::Error::msg)?;
    Ok(SendSettings {
        rate: NonZeroU32::new(rate).context("--rate is at least 1")?,
        burst: number(args.burst, file.burst, 1, &limits::BURST)? as u32,
        concurrency: number(args.concurrency, file.concurrency, 16, &limits::CONCURRENCY)? as usize,
        max_attempts: number(args.max_attempts, file.max_attempts, 5, &limits::MAX_ATTEMPTS)? as u32,
        timeout: Duration::from_secs_f64(timeout),
        backoff: Duration::from_millis(number(args.backoff_ms, file.backoff_ms, 500, &limits::BACKOFF_MS)?),
        polling: crate::api::Polling {
            first: Duration::from_millis(number(args.poll_ms, file.poll_ms, 5000, &limits::POLL_MS)?),
            settle_timeout: Duration::from_secs(number(
                args.settle_timeout,
                file.settle_timeout,
                600,
                &limits::SETTLE_TIMEOUT,
            )?),
        },
    })
}

/// Checks `--base-url`: https, or plain http only to this machine (the
/// simulator), since the token and signed bodies travel in it; and no
/// `user:password@`, which would be printed in hints and logs. The URL is
/// not repeated in the message when it carries credentials.
pub fn check_base_url(raw: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(raw).map_err(|e| {
        anyhow::anyhow!("--base-url is not a URL ({e}): give it as https://host[:port], e.g. {DEFAULT_BASE_URL}")
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        bail!(
            "--base-url must not carry a user name or password (user:password@host): they would be printed and \
             logged; secrets come from the environment only"
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!(
            "--base-url `{raw}` must not have a query (?...) or fragment (#...): give only https://host[:port][/path]"
        );
    }
    let local = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if local => {}
        "http" => bail!(
            "--base-url `{raw}` is plain http to another machine: the access token and signed orders would \
             cross the network unencrypted. Use https:// (http:// is allowed only for a simulator on this \
             machine: 127.0.0.1, ::1 or localhost)"
        ),
        other => bail!("--base-url must start with https:// (or http:// for a local simulator), not {other}://"),
    }
    Ok(raw.trim_end_matches('/').to_string())
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
        // The Mini Program APIs (xpay, xpay-refund) have no offer_id.
        let needs_offer_id = !matches!(
            args.input_args.api.or(file.api),
            Some(crate::api::ApiKind::Xpay | crate::api::ApiKind::XpayRefund)
        );
        let offer_id = match args.offer_id.clone().or(file.offer_id.clone()) {
            // Not theirs: an offer_id given anyway (a shared config file) is
            // not part of the run, so it cannot make a resume look different.
            _ if !needs_offer_id => String::new(),
            Some(o) => o,
            None => anyhow::bail!(
                "no offer_id: pass --offer-id (or set offer_id in the --config file) to the Midas offer id"
            ),
        };
        let pf = args.pf.clone().or(file.pf.clone()).unwrap_or_else(|| "android".into());
        check_constant("appid", &appid, |c| c.is_ascii_alphanumeric() || c == '_')?;
        if needs_offer_id {
            check_constant("offer_id", &offer_id, |c| c.is_ascii_alphanumeric())?;
        }
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
        let base_url =
            check_base_url(args.base_url.as_deref().or(file.base_url.as_deref()).unwrap_or(DEFAULT_BASE_URL))?;

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
            // Both set is refused in every mode (a dry run included), so a
            // dry run and the live run it rehearses accept the same environment.
            match (&secret, &token) {
                (Some(_), Some(_)) => bail!(
                    "both WECHAT_APP_SECRET and WECHAT_ACCESS_TOKEN are set: unset one (WECHAT_APP_SECRET is \
                     preferred: the tool then fetches and refreshes tokens itself)"
                ),
                (None, None) if mode == Mode::Live => bail!(
                    "no access token: set WECHAT_APP_SECRET (the Mini Game's AppSecret; tokens are then fetched \
                     with stable_token and refreshed) or WECHAT_ACCESS_TOKEN (a ready token, used as given)"
                ),
                _ => {}
            }
            (app_key, secret, token)
        };
        // Last: the flags, config and secrets are checked before big files are read.
        let ids = (Some(appid.as_str()), Some(offer_id.as_str()));
        let input = InputConfig::resolve(&args.input, &args.input_args, &file, ids, mode != Mode::DryRun)?;
        // The process's own: what it scrubs, every message leaving the
        // process is scrubbed of (see `reporter::to_stderr`).
        let redactor = Redactor::process().clone();
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
            log: args.log.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::check_base_url;

    #[test]
    fn base_urls_are_checked_before_anything_is_sent() {
        for (url, want) in [
            ("https://api.weixin.qq.com/", Ok("https://api.weixin.qq.com")),
            ("http://127.0.0.1:8080", Ok("http://127.0.0.1:8080")),
            ("http://[::1]:8080/", Ok("http://[::1]:8080")),
            ("http://localhost:9", Ok("http://localhost:9")),
            ("https://example.com/?x=1", Err("must not have a query (?...) or fragment")),
            ("https://example.com/#frag", Err("must not have a query (?...) or fragment")),
            ("https://user:pw@example.com", Err("must not carry a user name or password")),
            ("http://10.0.0.5:8080", Err("plain http to another machine")),
            ("ftp://example.com", Err("must start with https://")),
            ("api.weixin.qq.com", Err("is not a URL")),
        ] {
            match (check_base_url(url), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{url}"),
                (Err(e), Err(w)) => {
                    let m = e.to_string();
                    assert!(m.contains(w), "{url}: {m}");
                    assert!(!m.contains("pw@"), "{url}: a password is never repeated: {m}");
                }
                (got, want) => panic!("{url}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// Every key named in KEYS is a field of the file (and so none is
    /// refused as unknown), and every field is in KEYS.
    #[test]
    fn the_key_list_is_the_config_files_fields() {
        for key in super::KEYS {
            let e = toml::from_str::<super::FileConfig>(&format!("{key} = []")).unwrap_err().to_string();
            assert!(!e.contains("unknown field"), "{key}: {e}");
        }
        let e = toml::from_str::<super::FileConfig>("nope = 1").unwrap_err().to_string();
        for field in e.split('`').skip(3).step_by(2) {
            assert!(super::KEYS.contains(&field), "{field} is missing from KEYS: {e}");
        }
    }

    /// Regression (config_errors_quoted_a_value): a type error repeated the
    /// value, an unknown key repeated the key (a pasted secret).
    #[test]
    fn config_errors_never_quote_a_value_or_an_unknown_key() {
        let dir = tempfile::tempdir().unwrap();
        for (text, want) in [
            ("appid = \"wx1\"\nrate = \"S3cr3tValue99\"\n", "line 2: `rate` has a value of the wrong kind"),
            ("S3cr3tValue99 = 1\n", "line 1: unknown key"),
            ("\"S3cr3tValue99\" = \"x\"\n", "line 1: unknown key"),
            ("[S3cr3tValue99]\n", "unknown key"),
            ("sandbox = \"S3cr3tValue99\"\n", "`sandbox` has a value of the wrong kind"),
        ] {
            let p = dir.path().join("c.toml");
            std::fs::write(&p, text).unwrap();
            let e = format!("{:#}", super::FileConfig::load(&p).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains("S3cr3t"), "{text:?}: {e}");
        }
    }
}
