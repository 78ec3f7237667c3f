//! Command-line definitions (clap derive) only: no I/O, no logic.

use crate::input::{ColumnMapping, EncodingName, MpSigMode};
use crate::limits;
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
#[command(name = "midas-cancel", version, propagate_version = true, args_override_self = true, after_help = ENV_HELP)]
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
    /// Summarise a results file (also one still being written); --only extracts rows to run again.
    #[command(after_long_help = REPORT_HELP)]
    Report(ReportArgs),
    /// Serve a local Midas simulator (the tests' peer and a rehearsal stage).
    #[command(after_long_help = SIMULATE_HELP)]
    Simulate(SimulateArgs),
    /// Print a shell completion script to standard output.
    #[command(after_long_help = "Example:\n  midas-cancel completions bash > /etc/bash_completion.d/midas-cancel")]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print a manual page (roff), or write every page into a directory.
    #[command(
        after_long_help = "Examples:\n  midas-cancel man > midas-cancel.1 && man ./midas-cancel.1\n  midas-cancel man run | man -l -\n  midas-cancel man --dir /usr/local/share/man/man1"
    )]
    Man {
        /// The subcommand whose page to print [default: the main page].
        // The names are listed so that shell completion offers them;
        // `manual::page` still names the pages there are when given another.
        #[arg(conflicts_with = "dir", value_parser = clap::builder::PossibleValuesParser::new(PAGES))]
        page: Option<String>,
        /// Write every page (midas-cancel.1, midas-cancel-run.1, ...) into DIR.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The subcommands with a manual page (a test keeps this list whole).
pub const PAGES: [&str; 6] = ["run", "check", "report", "simulate", "completions", "man"];

const SIMULATE_HELP: &str = "\
The simulator implements cancelpay (production and sandbox paths) and stable_token on
127.0.0.1, keeps order state (deducted -> cancelled -> 90015 on repeat), checks the token,
the fields (90018), sig (90011) and mp_sig (90009), and injects the faults asked for.
It prints the URL it listens on; point `run --base-url` at it.

Keys come from the environment, like the tool's own:
  MIDAS_APP_KEY          production app key it verifies sig with [default: a rehearsal key]
  MIDAS_SANDBOX_APP_KEY  sandbox app key [default: MIDAS_APP_KEY]
  WECHAT_APP_SECRET      the AppSecret stable_token accepts
  WECHAT_ACCESS_TOKEN    a token accepted as given

Rehearsal without a separate process: `midas-cancel run ... --simulate`.

Example, in two terminals:
  export MIDAS_APP_KEY=test-app-key-0001 WECHAT_APP_SECRET=test-app-secret-01
  midas-cancel simulate --port 8080 --orders samples/sim_orders.csv --busy-rate 0.05
  URL=http://127.0.0.1:8080
  midas-cancel run samples/orders.csv -o out.csv --config samples/midas.toml --base-url $URL";

const REPORT_HELP: &str = "\
Exit status: 0 every row done, 1 some rows need attention, 3 rows never attempted
(skipped, or not in the file yet), 2 the file cannot be read.

Examples:
  midas-cancel report results.csv --sum amount_fen
  midas-cancel report results.csv --json
  # a workbook for finance: Summary and Results sheets
  midas-cancel report results.csv --sum amount_fen --xlsx results.xlsx
  # run the users whose sessions expired again, with fresh session keys
  midas-cancel report results.csv --only session_expired,mp_sig_error -o retry.csv
  midas-cancel run retry.csv -o retry-results.csv --config game.toml --session-keys fresh.csv";

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A results file written by `run` (or `run --dry-run`).
    pub results: PathBuf,

    /// Print the summary as JSON (counts per category, sums, verdict).
    #[arg(long, conflicts_with = "only")]
    pub json: bool,

    /// Write the input columns of the rows in these categories as a CSV (or, with -o FILE.xlsx, a
    /// workbook) that `run` takes back.
    #[arg(long, value_enum, value_name = "CATEGORY", value_delimiter = ',')]
    pub only: Vec<crate::category::Category>,

    /// With --only: write to FILE instead of standard output; a name ending in .xlsx gets a
    /// workbook (every cell text) that `run` takes back.
    #[arg(short, long, value_name = "FILE", requires = "only")]
    pub output: Option<PathBuf>,

    /// With --only: write CSV with a UTF-8 byte-order mark, so that a double-click opens it in
    /// Excel with Chinese text intact (`run` reads it back all the same).
    #[arg(long, requires = "only")]
    pub excel_csv: bool,

    /// Write the report as a workbook for finance: a Summary sheet (categories, rows, sums, next
    /// steps, what the run was) and a Results sheet (every line, in input order, as text).
    #[arg(long, value_name = "FILE.xlsx", conflicts_with_all = ["only", "json"])]
    pub xlsx: Option<PathBuf>,

    /// Write the report as one self-contained web page for the post-mortem (verdict, summary and
    /// chart, what the run was, errcodes, the rows that need attention; with --log, the run's
    /// timeline): inline CSS and SVG, nothing fetched, so it opens offline and from a mail.
    #[arg(long, value_name = "FILE.html", conflicts_with_all = ["only", "json", "xlsx"])]
    pub html: Option<PathBuf>,

    /// With --html: the run's attempt log (`run --log FILE.jsonl`), drawn as its timeline:
    /// requests per second by outcome, the pace and its changes, latency, token fetches.
    #[arg(long, value_name = "RUN.jsonl", requires = "html")]
    pub log: Option<PathBuf>,

    /// Total this numeric input column per category (e.g. amount_fen), to reconcile money.
    #[arg(long, value_name = "COLUMN")]
    pub sum: Option<String>,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,

    /// CSV `bill_no,state`; states: deducted, cancelled, confirmed, processing[:N], unknown, errcode:N.
    #[arg(long, value_name = "FILE")]
    pub orders: Option<PathBuf>,

    /// State of orders not in --orders.
    #[arg(long, value_name = "STATE", default_value = "deducted")]
    pub default_state: String,

    /// CSV `openid,session_key`: the sessions mp_sig is checked against.
    #[arg(long, value_name = "FILE")]
    pub session_keys: Option<PathBuf>,

    /// Require mp_sig, and treat users without a known session key as logged out (90010).
    #[arg(long)]
    pub strict_sessions: bool,

    /// Lifetime of tokens handed out by stable_token, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 7200)]
    pub token_lifetime: u64,

    /// Delay before every answer, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0, help_heading = "Faults")]
    pub latency_ms: u64,

    /// Share of cancels answered -1 (system busy).
    #[arg(long, value_name = "P", default_value_t = 0.0, help_heading = "Faults")]
    pub busy_rate: f64,

    /// Share of cancels answered HTTP 502.
    #[arg(long, value_name = "P", default_value_t = 0.0, help_heading = "Faults")]
    pub error_rate: f64,

    /// Share of cancels processed but never answered.
    #[arg(long, value_name = "P", default_value_t = 0.0, help_heading = "Faults")]
    pub drop_rate: f64,

    /// More cancels than N in any second get 45009 (frequency limit).
    #[arg(long, value_name = "N", help_heading = "Faults")]
    pub frequency_limit: Option<u32>,

    /// Share of cancels answered HTTP 429 (not processed).
    #[arg(long, value_name = "P", default_value_t = 0.0, help_heading = "Faults")]
    pub throttle_rate: f64,

    /// Share of orders (picked by a hash of the bill_no) that answer 90016 (processing) on every try.
    #[arg(long, value_name = "P", default_value_t = 0.0, help_heading = "Faults")]
    pub processing_share: f64,

    /// Process each order's (v2: cancellation's) first cancel but never answer it.
    #[arg(long, help_heading = "Faults")]
    pub drop_first: bool,

    /// Share of cancels processed but answered HTTP 200 with --bogus-body (no errcode).
    #[arg(long, value_name = "P", default_value_t = 0.0, help_heading = "Faults")]
    pub bogus_rate: f64,

    /// The body of a bogus answer.
    #[arg(long, value_name = "JSON", default_value = "{}", help_heading = "Faults")]
    pub bogus_body: String,

    /// Answer every request with HTTP 307 to this URL (a client must not follow it).
    #[arg(long, value_name = "URL", help_heading = "Faults")]
    pub redirect_to: Option<String>,

    /// Text that orders in the `echo` state repeat in their errmsg (with the request's query string).
    #[arg(long, value_name = "TEXT", default_value = "", help_heading = "Faults")]
    pub echo: String,

    /// xpay-refund: how long a refund stays in progress before it settles, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 3000, help_heading = "Refunds")]
    pub refund_settle_ms: u64,

    /// xpay-refund: share of refunds that fail (status 7) instead of completing.
    #[arg(long, value_name = "P", default_value_t = 0.0, help_heading = "Refunds")]
    pub refund_fail_rate: f64,

    /// Announce this expires_in from stable_token instead of the real lifetime (e.g. 0).
    #[arg(long, value_name = "SECS", help_heading = "Faults")]
    pub announce_lifetime: Option<u64>,

    /// Append every API request as a JSON line (arrival, call, bill_no or id, ts lag, errcode) to FILE.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// Seed of the fault dice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

const RUN_EXAMPLES: &str = "\
Examples:
  # rehearsal against the built-in simulator: no credentials, nothing leaves the machine
  midas-cancel run samples/orders.csv -o rehearsal.csv --config samples/midas.toml --simulate
  # sign only, with a fixed ts for reproducible output
  export MIDAS_APP_KEY=...
  midas-cancel run orders.csv -o signed.csv --config game.toml --dry-run --ts 1700000000
  # the real thing, then continue it after an interruption
  export MIDAS_APP_KEY=... WECHAT_APP_SECRET=...
  midas-cancel run orders.csv -o results.csv --config game.toml
  midas-cancel run orders.csv -o results.csv --config game.toml --resume
  # Virtual Payment 2.0
  midas-cancel run orders.csv -o results.csv --config game.toml --api v2
  # Mini Program cash refunds, followed until WeChat's record settles (then --resume the pending)
  midas-cancel run paid.csv -o refunds.csv --config mp.toml --api xpay-refund
  # the export as it is: a workbook, its sheet named
  midas-cancel run orders.xlsx --sheet 订单 -o results.csv --config game.toml";

/// Options that say how to read the order export.
#[derive(Debug, Args, Clone, Default)]
pub struct InputArgs {
    /// Read FIELD from the column named HEADER (repeatable), e.g. bill_no=订单号.
    /// Fields: bill_no, openid, zone_id, session_key, user_ip, pay_item, pf (v1), amount and
    /// cancel_bill_no (v2, xpay), wx_order_id, refund_bill_no, refund_reason, req_from, biz_meta
    /// (xpay-refund).
    #[arg(long = "column", value_name = "FIELD=HEADER", help_heading = "Input")]
    pub columns: Vec<ColumnMapping>,

    /// Character encoding of the input (default: detected; UTF-8 with or without BOM, else GBK/GB18030).
    #[arg(long, value_enum, help_heading = "Input")]
    pub encoding: Option<EncodingName>,

    /// The sheet to read when the input is a workbook (.xlsx, .xls, .xlsb, .ods) [default: the first].
    #[arg(long, value_name = "NAME", help_heading = "Input")]
    pub sheet: Option<String>,

    /// CSV of `openid,session_key` (instead of a session_key column).
    #[arg(long, value_name = "FILE", help_heading = "Input")]
    pub session_keys: Option<PathBuf>,

    /// When to send mp_sig: auto = when the row's session key is known;
    /// always = rows without a session key are not sent; never.
    #[arg(long, value_enum, help_heading = "Input")]
    pub mp_sig: Option<MpSigMode>,

    /// Which API: v1 = /cgi-bin/midas/cancelpay; v2 = Virtual Payment 2.0 /wxa/game/cancelpay
    /// (games that enabled virtual payment after 2022-11-05); xpay = Mini Program coin cancels;
    /// xpay-refund = Mini Program cash refunds, polled until settled [default: v1].
    #[arg(long, value_enum, help_heading = "Input")]
    pub api: Option<crate::api::ApiKind>,

    /// v2, xpay, xpay-refund: mixed into derived cancel and refund ids; give one when the same
    /// order must be cancelled or refunded again in a later incident [default: empty].
    #[arg(long, value_name = "TAG", help_heading = "Input")]
    pub cancel_tag: Option<String>,

    /// --api xpay: the user's IP for rows without a user_ip cell (the API requires one).
    #[arg(long, value_name = "IP", help_heading = "Input")]
    pub user_ip: Option<std::net::IpAddr>,

    /// --api xpay-refund: the refund_reason of rows without one: 0 none, 1 product problem,
    /// 2 after-sale, 3 user request, 4 price, 5 other [default: 1].
    #[arg(long, value_name = "N", help_heading = "Input", allow_negative_numbers = true,
          value_parser = |s: &str| limits::REFUND_REASON.parse(s))]
    pub refund_reason: Option<u64>,

    /// TOML config file (appid, offer_id, pf, sandbox, rate, ...); flags win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Orders CSV or workbook (.xlsx, .xls, .xlsb, .ods), or `-` for standard input.
    pub input: PathBuf,

    #[command(flatten)]
    pub input_args: InputArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Orders CSV or workbook (.xlsx, .xls, .xlsb, .ods), or `-` for standard input.
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

    /// Continue into an existing OUTPUT: rows whose category is final are kept, the others are sent again.
    #[arg(long, conflicts_with = "dry_run", help_heading = "Mode")]
    pub resume: bool,

    /// With --resume: continue even though the input or settings differ from the first run.
    #[arg(long, requires = "resume", help_heading = "Mode")]
    pub force_resume: bool,

    /// Rehearse against an in-process simulator instead of WeChat (fake keys; nothing leaves the machine).
    #[arg(long, conflicts_with_all = ["dry_run", "base_url"], help_heading = "Mode")]
    pub simulate: bool,

    /// API base, also used for stable_token [default: https://api.weixin.qq.com].
    #[arg(long, value_name = "URL", help_heading = "Sending")]
    pub base_url: Option<String>,

    /// Cancel requests per second, all workers and retries together (1-10000) [default: 50].
    #[arg(long, value_name = "N", help_heading = "Sending", allow_negative_numbers = true,
          value_parser = |s: &str| limits::RATE.parse(s))]
    pub rate: Option<u64>,

    /// Extra requests allowed at once above the steady pace (0-10000) [default: 1].
    #[arg(long, value_name = "N", help_heading = "Sending", allow_negative_numbers = true,
          value_parser = |s: &str| limits::BURST.parse(s))]
    pub burst: Option<u64>,

    /// Requests in flight at once (1-512) [default: 16].
    #[arg(long, value_name = "N", help_heading = "Sending", allow_negative_numbers = true,
          value_parser = |s: &str| limits::CONCURRENCY.parse(s))]
    pub concurrency: Option<u64>,

    /// Tries per row for retryable answers (1-100) [default: 5].
    #[arg(long, value_name = "N", help_heading = "Sending", allow_negative_numbers = true,
          value_parser = |s: &str| limits::MAX_ATTEMPTS.parse(s))]
    pub max_attempts: Option<u64>,

    /// Per-request timeout in seconds (more than 0, at most 600) [default: 10].
    #[arg(long, value_name = "SECS", help_heading = "Sending", allow_negative_numbers = true,
          value_parser = limits::parse_timeout)]
    pub timeout: Option<f64>,

    /// First retry delay in milliseconds; doubles per attempt, with jitter (0-600000) [default: 500].
    #[arg(long, value_name = "MS", help_heading = "Sending", allow_negative_numbers = true,
          value_parser = |s: &str| limits::BACKOFF_MS.parse(s))]
    pub backoff_ms: Option<u64>,

    /// --api xpay-refund: how long to poll a started refund before leaving it refund_pending
    /// (`--resume` polls it again) (1-86400) [default: 600].
    #[arg(long, value_name = "SECS", help_heading = "Sending", allow_negative_numbers = true,
          value_parser = |s: &str| limits::SETTLE_TIMEOUT.parse(s))]
    pub settle_timeout: Option<u64>,

    /// First poll of a started refund, in milliseconds; then doubling to 12 times it (rehearsals
    /// and tests: WeChat's refunds are polled at 5, 10, 20, 40, 60 s).
    #[arg(long, value_name = "MS", hide = true, value_parser = |s: &str| limits::POLL_MS.parse(s))]
    pub poll_ms: Option<u64>,

    /// Append one JSON line per request (and per pace change and token fetch) to FILE, for the post-mortem.
    #[arg(long, value_name = "FILE.jsonl", help_heading = "Sending")]
    pub log: Option<PathBuf>,

    /// Print only warnings, errors and the final summary.
    #[arg(short, long)]
    pub quiet: bool,

    /// In the final summary, total this numeric input column per category (e.g. amount_fen).
    #[arg(long, value_name = "COLUMN")]
    pub sum: Option<String>,

    /// Skip the confirmation a production run asks for on a terminal.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definitions_are_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    /// `man PAGE` offers (and completes) every subcommand with a page.
    #[test]
    fn every_subcommand_with_a_page_is_a_man_value() {
        let cmd = <Cli as clap::CommandFactory>::command();
        let mut subs: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).filter(|n| *n != "help").collect();
        let mut pages = PAGES.to_vec();
        subs.sort_unstable();
        pages.sort_unstable();
        assert_eq!(subs, pages);
    }
}
