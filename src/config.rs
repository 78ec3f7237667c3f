//! Turns flags, the config file and the environment into one validated
//! [`RunConfig`]. Nothing downstream reads flags or the environment.

use crate::cli::{InputArgs, RunArgs};
use crate::input::{ColumnMapping, EncodingName, MpSigMode, SessionKeys};
use crate::secret::{Redactor, Secret};
use anyhow::{bail, Context as _};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    pub columns: Vec<ColumnMapping>,
    pub encoding: Option<EncodingName>,
    pub session_keys: Arc<SessionKeys>,
    pub mp_sig: MpSigMode,
}

impl InputConfig {
    pub fn resolve(path: &Path, args: &InputArgs, file: &FileConfig) -> anyhow::Result<InputConfig> {
        let mut columns = Vec::new();
        for (field, header) in &file.columns {
            let m: ColumnMapping =
                format!("{field}={header}").parse().map_err(|e| anyhow::anyhow!("config file, [columns]: {e}"))?;
            columns.push(m);
        }
        // Flags come last so that they win (the header lookup takes the last mapping).
        columns.extend(args.columns.iter().cloned());
        let session_keys = match args.session_keys.as_ref().or(file.session_keys.as_ref()) {
            Some(p) => Arc::new(SessionKeys::load(p)?),
            None => Arc::default(),
        };
        Ok(InputConfig {
            path: path.to_path_buf(),
            columns,
            encoding: args.encoding.or(file.encoding),
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

/// A fully validated `run`.
pub struct RunConfig {
    pub input: InputConfig,
    pub output: PathBuf,
    pub request: Request,
    pub app_key: Secret,
    /// A ready access token (`WECHAT_ACCESS_TOKEN`), if given.
    pub access_token: Option<Secret>,
    pub dry_run_ts: Option<u64>,
    pub redactor: Redactor,
}

fn check_constant(name: &str, v: &str, allowed: impl Fn(char) -> bool) -> anyhow::Result<()> {
    if v.is_empty() || !v.chars().all(allowed) || v.len() > 64 {
        bail!("{name} `{v}` is not valid: use the value from the WeChat / Midas console");
    }
    Ok(())
}

impl RunConfig {
    pub fn resolve(args: &RunArgs, env: EnvLookup<'_>) -> anyhow::Result<RunConfig> {
        let file = match &args.input_args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let input = InputConfig::resolve(&args.input, &args.input_args, &file)?;
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

        let app_key = secret_from_env(env, "MIDAS_APP_KEY")?.with_context(|| {
            format!(
                "MIDAS_APP_KEY is not set: export the Midas app key of the {} environment (or name a file holding it in MIDAS_APP_KEY_FILE)",
                if sandbox { "sandbox" } else { "production" }
            )
        })?;
        let access_token = secret_from_env(env, "WECHAT_ACCESS_TOKEN")?;
        let mut redactor = Redactor::default();
        redactor.add(&app_key);
        if let Some(t) = &access_token {
            redactor.add(t);
        }
        // Session keys are not added: there can be millions, and no message
        // ever carries one (the column is never written, validation never
        // repeats the value).
        Ok(RunConfig {
            input,
            output: args.output.clone(),
            request: Request { appid, offer_id, pf, sandbox },
            app_key,
            access_token,
            dry_run_ts: args.ts,
            redactor,
        })
    }
}
