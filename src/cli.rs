//! Command-line definitions (clap derive) only: no I/O, no logic.

use crate::input::{ColumnMapping, EncodingName, MpSigMode};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const ENV_HELP: &str = "\
Secrets come only from the environment (or a file named by NAME_FILE), never from flags:
  MIDAS_APP_KEY        Midas app key of the environment in use (the sandbox key with --sandbox)
  WECHAT_APP_SECRET    the Mini Game's AppSecret: tokens are fetched with stable_token and refreshed
  WECHAT_ACCESS_TOKEN  a ready access token, used as given (cannot be refreshed)";

/// Cancel WeChat Mini Game virtual-payment (Midas) orders in bulk.
///
/// Typical incident workflow: `check` the export, `run --dry-run`, rehearse
/// with `run --simulate`, try `--sandbox`, then `run` for real, `run --resume`
/// if it was interrupted, and `report` the results file.
#[derive(Debug, Parser)]
#[command(name = "midas-cancel", version, propagate_version = true, after_help = ENV_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sign and send one cancelpay per order (or only sign, with --dry-run).
    #[command(after_long_help = RUN_EXAMPLES)]
    Run(Box<RunArgs>),
    /// Validate an order export and list every bad row; sends nothing.
    #[command(after_long_help = "Example:\n  midas-cancel check orders.csv --column bill_no=订单号")]
    Check(CheckArgs),
}

const RUN_EXAMPLES: &str = "\
Examples:
  # rehearsal against the built-in simulator: no credentials, nothing leaves the machine
  midas-cancel run samples/orders.csv -o /tmp/rehearsal.csv --config samples/midas.toml --simulate
  # sign only, with a fixed ts for reproducible output
  MIDAS_APP_KEY=... midas-cancel run orders.csv -o signed.csv --config game.toml --dry-run --ts 1700000000
  # the real thing, then continue it after an interruption
  MIDAS_APP_KEY=... WECHAT_APP_SECRET=... midas-cancel run orders.csv -o results.csv --config game.toml
  midas-cancel run orders.csv -o results.csv --config game.toml --resume";

/// Options that say how to read the order export.
#[derive(Debug, Args, Clone, Default)]
pub struct InputArgs {
    /// Read FIELD from the column named HEADER (repeatable), e.g. bill_no=订单号.
    /// Fields: bill_no, openid, zone_id, session_key, user_ip, pay_item, pf.
    #[arg(long = "column", value_name = "FIELD=HEADER", help_heading = "Input")]
    pub columns: Vec<ColumnMapping>,

    /// Character encoding of the input (default: detected; UTF-8 with or without BOM, else GBK/GB18030).
    #[arg(long, value_enum, help_heading = "Input")]
    pub encoding: Option<EncodingName>,

    /// CSV of `openid,session_key` (instead of a session_key column).
    #[arg(long, value_name = "FILE", help_heading = "Input")]
    pub session_keys: Option<PathBuf>,

    /// When to send mp_sig: auto = when the row's session key is known;
    /// always = rows without a session key are not sent; never.
    #[arg(long, value_enum, help_heading = "Input")]
    pub mp_sig: Option<MpSigMode>,

    /// TOML config file (appid, offer_id, pf, sandbox, rate, ...); flags win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Orders CSV, or `-` for standard input.
    pub input: PathBuf,

    #[command(flatten)]
    pub input_args: InputArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Orders CSV, or `-` for standard input.
    pub input: PathBuf,

    /// Results CSV to write (must not exist yet, unless --resume).
    #[arg(short, long, value_name = "OUTPUT")]
    pub output: PathBuf,

    #[command(flatten)]
    pub input_args: InputArgs,

    /// Mini Program appid.
    #[arg(long, help_heading = "Request")]
    pub appid: Option<String>,

    /// Midas offer id.
    #[arg(long, help_heading = "Request")]
    pub offer_id: Option<String>,

    /// Platform for rows without a pf column [default: android].
    #[arg(long, help_heading = "Request")]
    pub pf: Option<String>,

    /// Use the sandbox endpoint, URI and key.
    #[arg(long, help_heading = "Request")]
    pub sandbox: bool,

    /// Sign only: write the signatures, send nothing.
    #[arg(long, help_heading = "Mode")]
    pub dry_run: bool,

    /// Dry run only: sign with this fixed ts (UNIX seconds) for reproducible output.
    #[arg(long, value_name = "UNIX", requires = "dry_run", help_heading = "Mode")]
    pub ts: Option<u64>,
}
