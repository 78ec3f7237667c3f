//! `run`: a live run (WeChat, its sandbox, or a rehearsal against the
//! in-process simulator): the checks that can refuse it, the question before
//! production money moves, the engine, and what is said at the end.

use super::{create_output, human_duration, no_data_rows, EXISTS_RUN};
use crate::api::{self, token};
use crate::category::Category;
use crate::cli::RunArgs;
use crate::config::{self, Mode, RunConfig};
use crate::exit::Exit;
use crate::reporter::{self, Reporter};
use crate::results::{journal, output, report, resume};
use crate::{attempt_log, engine, input, lock, say, sim};
use anyhow::Context as _;
use std::sync::Arc;

/// `run`: the configuration resolved once, then a dry run or a live one.
pub fn command(args: &RunArgs) -> anyhow::Result<Exit> {
    let cfg = RunConfig::resolve(args, &config::process_env)?;
    let reporter = Reporter::stderr(cfg.quiet);
    match cfg.mode {
        Mode::DryRun => super::dry_run::command(&cfg, &reporter),
        Mode::Live | Mode::Rehearsal => live(&cfg, &reporter),
    }
}

/// The in-process simulator of a rehearsal: every order deducted, the
/// rehearsal keys, the run's own session keys.
fn rehearsal_simulator(cfg: &RunConfig) -> anyhow::Result<sim::Simulator> {
    let mut sc = sim::SimConfig::new(config::REHEARSAL_APP_KEY);
    sc.app_secret = config::REHEARSAL_APP_SECRET.into();
    sc.session_keys = cfg.input.session_keys.clone();
    sim::Simulator::start(sc, None)
}

/// The guard before real money moves: a production run started on a
/// terminal says what it is about to do and asks for `yes`.
fn confirm(cfg: &RunConfig, reporter: &Reporter, total: u64, ready: u64) -> anyhow::Result<bool> {
    use std::io::IsTerminal as _;
    let interactive = std::io::stdin().is_terminal() && reporter.is_terminal();
    if cfg.mode != Mode::Live || cfg.request.sandbox || cfg.yes || !interactive || cfg.input.path.as_os_str() == "-" {
        return Ok(true);
    }
    // A refund row takes four requests at least (find, query, refund, poll)
    // and settles a poll interval after its refund.
    let api = cfg.input.rules.api;
    let (per_row, settle) = if api.has_steps() { (4.0, cfg.send.polling.first.as_secs_f64()) } else { (1.0, 0.0) };
    let secs = ready as f64 * per_row / f64::from(cfg.send.rate.get()) + settle;
    let base = if cfg.base_url == config::DEFAULT_BASE_URL {
        String::new()
    } else {
        format!("\n  base URL  {} (not WeChat's default)", cfg.base_url)
    };
    reporter.notice(&format!(
        "About to {} in WeChat PRODUCTION ({} API):\n  appid     {}{}\n  input     {} ({total} rows, {ready} to send{})\n  rate      {}/s, {} in flight\n  estimate  {}\n  results   {}{base}",
        if api.has_steps() { "refund paid orders in cash" } else { "cancel orders" },
        api.name(),
        cfg.request.appid,
        // The Mini Program APIs have none.
        if cfg.request.offer_id.is_empty() { String::new() } else { format!("\n  offer_id  {}", cfg.request.offer_id) },
        cfg.input.path.display(),
        if cfg.resume { ", fewer if resuming" } else { "" },
        cfg.send.rate,
        cfg.send.concurrency,
        human_duration(secs),
        cfg.output.display()
    ));
    reporter::to_stderr(format_args!("Type yes to send, anything else to stop: "));
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer.trim().eq_ignore_ascii_case("yes"))
}

/// The command line to continue an interrupted run.
fn resume_command() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--resume") {
        args.push("--resume".into());
    }
    args.join(" ")
}

pub fn live(cfg: &RunConfig, reporter: &Reporter) -> anyhow::Result<Exit> {
    // Opened and hashed with the config: a bad file stopped the run before
    // a token was fetched or a file created.
    let input = &*cfg.input.opened;
    let mut rows = input.rows(&cfg.input.columns, &cfg.input.rules, None)?;
    let header = rows.header().clone();
    // One pass to count rows and the ones that will be sent (for progress,
    // the confirmation and the estimate); cheap next to the sending itself.
    let api = cfg.input.rules.api;
    let (mut total, mut ready) = (0u64, 0u64);
    let mut classifier = input::Classifier::for_run(cfg.input.mp_sig, &header);
    for row in rows.by_ref() {
        let row = row?;
        total += 1;
        if matches!(classifier.classify(&header, &row, &cfg.input.session_keys), input::Verdict::Ready(_)) {
            ready += 1;
        }
    }
    drop(classifier);
    // Said before the question, so that it is read before `yes`.
    for w in input.warnings(&header) {
        reporter.notice(&w);
    }
    if total == 0 {
        reporter.notice(&no_data_rows(&cfg.input.path));
        return Ok(Exit::Attention);
    }
    let fingerprint = resume::Fingerprint {
        input_sha256: input.sha256().unwrap_or_default().to_string(),
        rows: total,
        appid: cfg.request.appid.clone(),
        offer_id: cfg.request.offer_id.clone(),
        environment: cfg.environment().to_string(),
        pf: cfg.request.pf.clone(),
        api: api.name().into(),
        cancel_tag: cfg.input.rules.cancel_tag.clone(),
        columns: cfg.input.columns.iter().map(ToString::to_string).collect(),
        sheet: input.sheet_name().unwrap_or_default().to_string(),
    };
    // Held until this function returns: no other run may create, read for
    // resuming, or append to this results file meanwhile.
    let _lock = lock::RunLock::acquire(&cfg.output)?;
    if cfg.resume && !cfg.output.exists() {
        anyhow::bail!(
            "nothing to resume: {} does not exist. Start the run without --resume (or check the -o name)",
            cfg.output.display()
        );
    }
    if cfg.resume {
        for diff in resume::check_fingerprint(&cfg.output, &fingerprint, cfg.force_resume)? {
            reporter.notice(&format!("warning: resuming although {diff} (--force-resume)"));
        }
    }
    // What the results file holds, one line per row, each matched to its
    // input row; and the ids already sent (v2).
    let resumed = match cfg.resume {
        true => Some(resume::prepare(&cfg.output, &header, total)?),
        false => None,
    };
    let own_ids = api.has_own_ids();
    let journal = match (own_ids, cfg.resume) {
        (true, true) => Some(journal::Journal::open(&cfg.output)?),
        (true, false) => {
            // Refused before anything is created or asked. (With the results
            // file there too, creating it says "add --resume".)
            let leftover = std::fs::symlink_metadata(journal::journal_path(&cfg.output)).is_ok();
            if leftover && !cfg.output.exists() {
                return Err(journal::taken(&cfg.output));
            }
            None
        }
        (false, _) => None,
    };
    if let Some((found, _)) = &resumed {
        check_identity(cfg, found, journal.as_ref())?;
        // Nothing left to send: no token is fetched, nothing is asked.
        if found.done.iter().all(|&d| d) {
            reporter.notice(&format!(
                "nothing to resume: every row of {} is final already, so nothing was sent",
                cfg.output.display()
            ));
            let summary = report::summarize(&cfg.output, cfg.sum.as_deref())?;
            reporter.notice(&summary.table());
            return Ok(summary.verdict());
        }
    }
    // Everything that can refuse the run is checked before the question.
    if !confirm(cfg, reporter, total, ready)? {
        anyhow::bail!("not confirmed: nothing was sent");
    }
    let simulator = match cfg.mode {
        Mode::Rehearsal => {
            let s = rehearsal_simulator(cfg)?;
            Some(s)
        }
        _ => None,
    };
    let base = simulator.as_ref().map_or(cfg.base_url.as_str(), |s| s.url());
    let transport: Arc<dyn api::Transport> =
        Arc::new(api::HttpTransport::new(base, cfg.send.timeout, cfg.send.concurrency)?);
    let log = match &cfg.log {
        Some(p) => Some(Arc::new(attempt_log::AttemptLog::open(p)?)),
        None => None,
    };
    let tokens = match (&cfg.app_secret, &cfg.access_token) {
        (Some(secret), _) => token::Tokens::stable(
            transport.clone(),
            &cfg.request.appid,
            secret.clone(),
            cfg.redactor.clone(),
            log.clone(),
        )
        .map_err(|e| anyhow::anyhow!(cfg.redactor.redact(&e.to_string())))?,
        (None, Some(t)) => token::Tokens::fixed(t.clone()),
        (None, None) => anyhow::bail!("no access token source"),
    };
    let mut layout = output::Layout::for_header(&header, false);
    let (file, done, prior, unfinished, journal) = match resumed {
        Some((found, file)) => {
            layout = found.layout;
            reporter.info(&format!(
                "resuming {}: {} rows final already, {} to attempt again{}",
                cfg.output.display(),
                found.tally.total(),
                total - found.tally.total(),
                if found.torn { " (a torn last line was dropped)" } else { "" }
            ));
            (file, found.done, found.tally, found.unfinished, journal)
        }
        None => {
            let file = create_output(&cfg.output, EXISTS_RUN)?;
            let journal = match own_ids {
                true => Some(journal::Journal::create(&cfg.output)?),
                false => None,
            };
            (file, Vec::new(), Default::default(), Default::default(), journal)
        }
    };
    let compact_at_end = !unfinished.is_empty();
    resume::write_fingerprint(&cfg.output, &fingerprint)?;
    // Announced only now that every check has passed: nothing before this
    // line could have sent anything.
    if let Some(s) = &simulator {
        reporter.info(&format!("rehearsal: sending to the in-process simulator at {}", s.url()));
    }
    // A resumed file already has its header.
    let writer = output::ResultsWriter::new(file, &header, layout, !cfg.resume)?;
    let target = engine::Target { writer, done, prior, unfinished, journal };
    let control = Arc::new(engine::Control::default());
    let handler_control = control.clone();
    let presses = std::sync::atomic::AtomicU32::new(0);
    ctrlc::set_handler(move || {
        if presses.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            say!("\nStopping: finishing the requests in flight and recording them (Ctrl-C again quits at once)");
            handler_control.stop(engine::StopReason::Interrupted);
        } else {
            handler_control.hard_stop();
        }
    })
    .context("cannot install the Ctrl-C handler")?;
    let signing = cfg.signing();
    let settings = engine::Settings { send: &cfg.send, input: &cfg.input, signing: &signing, redactor: &cfg.redactor };
    let report =
        match engine::run(&settings, transport, &tokens, &control, input, total, target, reporter, log.as_deref()) {
            Ok(r) => r,
            // Requests may have been sent: not exit 2 ("nothing was sent") but 3.
            Err(e) => {
                reporter.notice(&format!(
                    "Error: the run stopped: {}. Rows finished so far are in {}; continue with:\n  {}",
                    cfg.redactor.redact(&format!("{e:#}")),
                    cfg.output.display(),
                    resume_command()
                ));
                return Ok(Exit::Stopped);
            }
        };
    // A resumed row's new line replaced its earlier one: one line per row.
    if compact_at_end {
        if let Err(e) = resume::compact(&cfg.output, &header, total) {
            reporter.notice(&format!("warning: {e:#} (the file is complete; `--resume` or `report` read it as it is)"));
        }
    }
    // The summary is read back from the results file, so it says exactly
    // what `midas-cancel report` will say.
    match report::summarize(&cfg.output, cfg.sum.as_deref()) {
        Ok(s) => reporter.notice(&s.table()),
        Err(e) => reporter.notice(&format!("{}\n(--sum: {e:#})", report.tally.table())),
    }
    reporter.notice(&pace_summary(&report));
    reporter.notice(&format!("results: {} (one line per row)", cfg.output.display()));
    Ok(match report.stop {
        Some(engine::StopReason::Breaker(why)) => {
            reporter.notice(&format!(
                "Stopped early: {why}\nRows not attempted are `skipped`. After fixing the cause, continue with:\n  {}",
                resume_command()
            ));
            Exit::Stopped
        }
        Some(engine::StopReason::Interrupted) => {
            reporter.notice(&format!(
                "Interrupted: requests in flight were finished and recorded; rows not attempted are `skipped`. Continue with:\n  {}",
                resume_command()
            ));
            Exit::Interrupted
        }
        None if report.tally.all_in(Category::is_success) => Exit::Done,
        None => Exit::Attention,
    })
}

/// Refuses a resume whose results file or ids journal records rows that no
/// longer match the input: a line matched to another order by number alone
/// would mark that order done, and a changed amount or tag would give a row
/// a second cancellation id. Nothing overrides this.
fn check_identity(cfg: &RunConfig, found: &resume::Resumed, journal: Option<&journal::Journal>) -> anyhow::Result<()> {
    const SHOWN: usize = 10;
    let input = &*cfg.input.opened;
    let mut rows = input.rows(&cfg.input.columns, &cfg.input.rules, None)?;
    let header = rows.header().clone();
    let mut classifier = input::Classifier::for_run(cfg.input.mp_sig, &header);
    let (mut refused, mut count) = (Vec::new(), 0usize);
    let tag = cfg.input.rules.cancel_tag.as_str();
    for raw in rows.by_ref() {
        let raw = raw?;
        let verdict = classifier.classify(&header, &raw, &cfg.input.session_keys);
        let bill_no = header.order_cell(&raw);
        let mut problem = None;
        if !found.same_order(raw.row, bill_no) {
            let was = resume::recorded_bill_no(&cfg.output, &header, raw.row).unwrap_or_default();
            problem = Some(format!(
                "row {}: the results file records bill_no `{was}` for it, the input now has `{bill_no}`",
                raw.row
            ));
        } else if let (input::Verdict::Ready(order), false) =
            (&verdict, found.done.get(raw.row as usize - 1).copied().unwrap_or(false))
        {
            if let Some(id) = order.cancel_id.as_deref() {
                let entry = journal::Entry { row: raw.row, bill_no, amount: order.amount, tag, id };
                if let Some(j) = journal {
                    problem = j.check(&entry)?.err();
                }
                // A file from before the journal: its line names the id.
                let recorded = found.unfinished.get(&raw.row).and_then(|(_, id)| id.as_deref());
                if problem.is_none() && !journal.is_some_and(|j| j.has(raw.row)) {
                    if let Some(was) = recorded.filter(|was| *was != id) {
                        problem = Some(format!(
                            "row {}: cancellation id `{was}` was sent for it; now it would be `{id}`",
                            raw.row
                        ));
                    }
                }
            }
        }
        if let Some(p) = problem {
            count += 1;
            if refused.len() < SHOWN {
                refused.push(p);
            }
        }
    }
    if count == 0 {
        return Ok(());
    }
    let more = if count > SHOWN { format!("\n  ... and {} more", count - SHOWN) } else { String::new() };
    anyhow::bail!(
        "refusing to resume {}: {count} row(s) no longer match what the run recorded:\n  {}{more}\n\
         A line matched to another order would mark that order done, and a second cancellation id would return \
         the coins twice, so no flag overrides this. Resume with the input as the run started it (the same rows \
         in the same order, the same amounts and --cancel-tag). Rows that must change: check first in WeChat's \
         bills what their recorded ids did, then run them into a new -o",
        cfg.output.display(),
        refused.join("\n  ")
    )
}

/// How the pace went: requested, achieved, the limit found and what it cost.
fn pace_summary(report: &engine::LiveReport) -> String {
    let secs = report.elapsed.as_secs_f64();
    let p = &report.pace;
    // A short run's first burst (rate + burst at once) is over in a moment:
    // its average would read as more than the rate, which is never exceeded.
    let achieved = (report.requests as f64 / secs.max(0.001)).min(f64::from(report.requested_rate));
    let mut s = format!(
        "pace: {} requests in {secs:.1} s, {achieved:.1}/s achieved of {}/s requested; {} token fetch(es)",
        report.requests, report.requested_rate, report.token_refreshes
    );
    match p.limit_found {
        Some(limit) => s.push_str(&format!(
            "
WeChat's frequency limit found near {limit:.0}/s: {} request(s) rejected by it (45009/429), \
             pace slowed {} time(s), {:.0}/s at the end",
            p.limit_answers, p.cuts, p.pace
        )),
        None if p.cuts > 0 || p.limit_answers > 0 => s.push_str(&format!(
            "
slowed {} time(s) by WeChat's overload signals; {} request(s) rejected by the frequency limit",
            p.cuts, p.limit_answers
        )),
        None => s.push_str("; never slowed by WeChat's overload signals"),
    }
    s
}
