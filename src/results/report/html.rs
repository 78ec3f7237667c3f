//! `report RESULTS --html OUT.html [--log RUN.jsonl]`: one self-contained page
//! for the post-mortem (inline CSS and SVG, no script, nothing fetched), to
//! open offline or attach to the incident ticket.
//!
//! Built with maud, which escapes every value it is given: a bill_no, an
//! errmsg or a carried cell is untrusted text (`<script>` in a cell shows as
//! `<script>`). Charts are plotters' SVG; the only markup written by hand is
//! the tooltips added to them, escaped by maud too.

use super::timeline::{category_chart, Timeline, OUTCOMES};
use super::{open, Kind, Summary};
use crate::category::Category;
use crate::results::output::unguard;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use plotters::style::RGBColor;
use std::collections::BTreeMap;
use std::path::Path;

/// Rows listed under "needs attention" (the rest are counted).
const LISTED: usize = 300;

/// What the page shows of the rows that need attention.
struct Attention {
    rows: Vec<(String, String, Category, String, String)>,
    total: u64,
    categories: Vec<Category>,
}

/// Writes the page for `results` (`summary` is its summary, read once by the
/// caller; `log` its attempt log). Returns the rows listed.
pub fn write_html(
    results: &Path,
    summary: &Summary,
    log: Option<&Path>,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<u64> {
    let timeline = log.map(Timeline::read).transpose()?;
    let mut file = open(results)?;
    let col = |name: &str| file.cols.headers.iter().rposition(|h| h == name);
    let (bill_no, errcode, errmsg, ts, attempts) =
        (col("bill_no"), col("errcode"), col("errmsg"), col("ts"), col("attempts"));
    let row_col = file.cols.row;
    let mut attention = Attention { rows: Vec::new(), total: 0, categories: Vec::new() };
    let mut messages: BTreeMap<Option<i64>, (u64, String)> = BTreeMap::new();
    let (mut first, mut last, mut sent) = (i64::MAX, i64::MIN, 0u64);
    let dry = summary.kind == Kind::DryRun;
    file.lines(|category, rec| {
        let cell = |i: Option<usize>| {
            i.and_then(|i| rec.get(i)).map(|b| unguard(&String::from_utf8_lossy(b)).to_string()).unwrap_or_default()
        };
        if let Ok(t) = cell(ts).parse::<i64>() {
            (first, last) = (first.min(t), last.max(t));
        }
        sent += cell(attempts).parse::<u64>().unwrap_or(0);
        let code = cell(errcode).parse::<i64>().ok();
        let entry = messages.entry(code).or_insert((0, cell(errmsg)));
        entry.0 += 1;
        let fine = if dry { category == Category::Signed } else { category.is_success() };
        if !fine {
            attention.total += 1;
            if !attention.categories.contains(&category) {
                attention.categories.push(category);
            }
            if attention.rows.len() < LISTED {
                let row = String::from_utf8_lossy(rec.get(row_col).unwrap_or(b"")).into_owned();
                attention.rows.push((row, cell(bill_no), category, cell(errcode), cell(errmsg)));
            }
        }
        Ok(())
    })?;
    attention.rows.sort_by_key(|r| r.0.parse::<u64>().unwrap_or(u64::MAX));
    let page =
        page(results, summary, &file.fingerprint, timeline.as_ref(), &attention, &messages, (first, last, sent))?;
    out.write_all(page.into_string().as_bytes())?;
    Ok(attention.rows.len() as u64)
}

/// A category's colour in the bar chart: done, needs attention, not tried.
fn colour(c: Category) -> RGBColor {
    match c {
        // Done: whatever the verdict counts as done (refunds too).
        c if c.is_success() || c == Category::Signed => RGBColor(46, 139, 87),
        Category::Skipped => RGBColor(150, 150, 150),
        c if c.is_final() => RGBColor(200, 60, 60),
        _ => RGBColor(214, 120, 30),
    }
}

#[allow(clippy::too_many_arguments)]
fn page(
    results: &Path,
    summary: &Summary,
    fingerprint: &Option<crate::results::fingerprint::Fingerprint>,
    timeline: Option<&Timeline>,
    attention: &Attention,
    messages: &BTreeMap<Option<i64>, (u64, String)>,
    (first, last, sent): (i64, i64, u64),
) -> anyhow::Result<Markup> {
    let name = results.display().to_string();
    let verdict = summary.verdict_word();
    let bars: Vec<(&str, u64, RGBColor)> = summary.tally.nonzero().map(|(c, n)| (c.as_str(), n, colour(c))).collect();
    let chart = category_chart(&bars)?;
    let sums = summary.sums.as_ref();
    let (first, last) = match timeline {
        Some(t) if t.requests > 0 => (Some(t.first as i64), Some(t.last as i64)),
        _ if first <= last => (Some(first), Some(last)),
        _ => (None, None),
    };
    let charts = match timeline {
        Some(t) if t.requests > 0 => Some((t.requests_chart()?, t.pace_chart()?, t.latency_chart()?)),
        _ => None,
    };
    let settle = match timeline {
        Some(t) => t.settle_chart()?.map(|svg| (svg, t.settle_quantiles(), t.settles.len())),
        None => None,
    };
    let retry: Vec<&str> = attention.categories.iter().map(|c| c.as_str()).collect();
    Ok(html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // Nothing is fetched: no script, no font, no image from anywhere.
                meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'";
                title { "midas-cancel report: " (name) }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    h1 { "midas-cancel report" }
                    p.file { (name) }
                    p { span class=(format!("verdict {verdict}")) { (verdict.replace('_', " ")) } }
                }
                section {
                    h2 { "Summary" }
                    table {
                        thead { tr {
                            th { "category" } th.num { "rows" }
                            @if let Some(s) = sums { th.num { "Σ " (s.column) } }
                            th { "next step" }
                        } }
                        tbody {
                            @for (c, n) in summary.tally.nonzero() {
                                tr {
                                    td { code { (c.as_str()) } } td.num { (n) }
                                    @if let Some(s) = sums { td.num { (s.by_category.get(c.as_str()).copied().unwrap_or_default()) } }
                                    td { (c.advice()) }
                                }
                            }
                            tr.total {
                                td { "total" } td.num { (summary.tally.total()) }
                                @if let Some(s) = sums { td.num { (s.total) } }
                                td {}
                            }
                            @if let Some(m) = summary.missing.filter(|&m| m > 0) {
                                tr { td { "missing" } td.num { (m) } @if sums.is_some() { td {} } td { "not in the file yet: `--resume` sends them" } }
                            }
                        }
                    }
                    @if let Some(s) = sums.filter(|s| s.unparsable > 0) {
                        p.note { (s.unparsable) " cell(s) of " (s.column) " were not numbers and are not in the sums." }
                    }
                    div.chart { (PreEscaped(chart)) }
                }
                section {
                    h2 { "What the run was" }
                    table.facts {
                        tr { th { "results file" } td { (name) } }
                        tr { th { "kind" } td { @if summary.kind == Kind::DryRun { "dry run (nothing sent)" } @else { "live run" } } }
                        @if let Some(fp) = fingerprint {
                            tr { th { "environment" } td { (fp.environment) } }
                            tr { th { "appid" } td { (fp.appid) } }
                            // The Mini Program APIs have none.
                            @if !fp.offer_id.is_empty() { tr { th { "offer_id" } td { (fp.offer_id) } } }
                            tr { th { "API" } td { (fp.api) } }
                            tr { th { "input rows" } td { (fp.rows) } }
                            @if !fp.sheet.is_empty() { tr { th { "input sheet" } td { (fp.sheet) } } }
                            tr { th { "input SHA-256" } td { code { (fp.input_sha256) } } }
                        }
                        @if let (Some(f), Some(l)) = (first, last) {
                            tr { th { "first request" } td { (utc(f)) " · " (local(f)) } }
                            tr { th { "last request" } td { (utc(l)) " · " (local(l)) } }
                        }
                        @if summary.kind == Kind::Live { tr { th { "requests sent" } td { (sent) } } }
                        @if let Some(t) = timeline {
                            tr { th { "requests in the log" } td { (t.requests) } }
                            tr { th { "pace changes" } td { (t.paces.len()) } }
                            tr { th { "token fetches" } td { (t.tokens.len()) } }
                        }
                    }
                }
                @if let Some((requests, pace, latency)) = &charts {
                    section {
                        h2 { "Requests per second, by outcome" }
                        p.legend {
                            @for (what, c) in OUTCOMES {
                                span.key style=(format!("background: rgb({},{},{})", c.0, c.1, c.2)) {} (what)
                            }
                        }
                        div.chart { (PreEscaped(requests)) }
                        h2 { "Pace: asked for (blue) and achieved (green)" }
                        p.note { "Each change of pace is an orange mark, each token fetch a blue one at the bottom: hover over a mark for its reason." }
                        div.chart { (PreEscaped(pace)) }
                        @if let Some(t) = timeline {
                            @if !t.paces.is_empty() {
                                table {
                                    thead { tr { th { "at (s)" } th.num { "pace" } th { "why" } } }
                                    tbody { @for p in &t.paces { tr { td { (format!("{:.1}", p.at - t.first)) } td.num { (format!("{:.1}/s", p.to)) } td { (p.why) } } } }
                                }
                            }
                        }
                        h2 { "Latency: p50 (blue) and p95 (red)" }
                        div.chart { (PreEscaped(latency)) }
                    }
                }
                @if let Some((svg, (p50, p95, longest), n)) = &settle {
                    section {
                        h2 { "Time to settle (refunds)" }
                        p.note {
                            (format!(
                                "{n} refund(s) settled: half within {p50:.1} s, 95 % within {p95:.1} s, the longest {longest:.1} s \
                                 (from the refund's request to the poll whose answer said completed, green, or failed, red)."
                            ))
                        }
                        div.chart { (PreEscaped(svg)) }
                    }
                }
                section {
                    h2 { "Errcodes" }
                    @if timeline.is_some_and(|t| t.requests > 0) { p.note { "Answers per errcode over every request in the log; the message is the first one recorded in the results file." } }
                    @else { p.note { "The last answer of each row (run with --log for every answer); the message is the first one recorded." } }
                    table {
                        thead { tr { th { "errcode" } th.num { "count" } th { "WeChat's message" } } }
                        tbody {
                            @for (code, count, msg) in errcode_rows(timeline, messages) {
                                tr { td { @if let Some(c) = code { (c) } @else { "(none)" } } td.num { (count) } td.wrap { (msg) } }
                            }
                        }
                    }
                }
                section {
                    h2 { "Rows that need attention (" (attention.total) ")" }
                    @if attention.total == 0 {
                        p { "None: every row is done." }
                    } @else {
                        @if attention.total > attention.rows.len() as u64 {
                            p.note { "The first " (attention.rows.len()) " by row; the results file has them all." }
                        }
                        p { "To take them out and run them again (categories that are final, such as invalid_input, need fixing first):" }
                        pre { "midas-cancel report " (name) " --only " (retry.join(",")) " -o retry.csv\nmidas-cancel run retry.csv -o retry-results.csv --config game.toml" }
                        table.rows {
                            thead { tr { th.num { "row" } th { "bill_no" } th { "category" } th { "errcode" } th { "errmsg" } th { "next step" } } }
                            tbody {
                                @for (row, bill_no, category, errcode, errmsg) in &attention.rows {
                                    tr { td.num { (row) } td.wrap { code { (bill_no) } } td { (category.as_str()) } td { (errcode) } td.wrap { (errmsg) } td { (category.advice()) } }
                                }
                            }
                        }
                    }
                }
                footer { p { "Written by midas-cancel " (env!("CARGO_PKG_VERSION")) " from " (name) "." } }
            }
        }
    })
}

/// Errcodes with counts and messages: the log's when there is one.
fn errcode_rows(
    timeline: Option<&Timeline>,
    messages: &BTreeMap<Option<i64>, (u64, String)>,
) -> Vec<(Option<i64>, u64, String)> {
    let msg = |c: &Option<i64>| messages.get(c).map(|m| m.1.clone()).unwrap_or_default();
    match timeline.filter(|t| t.requests > 0) {
        Some(t) => t.errcodes.iter().map(|(c, n)| (*c, *n, msg(c))).collect(),
        None => messages.iter().map(|(c, (n, m))| (*c, *n, m.clone())).collect(),
    }
}

/// `2026-12-01 02:27:13 UTC`.
fn utc(ts: i64) -> String {
    let (days, secs) = (ts.div_euclid(86_400), ts.rem_euclid(86_400));
    let (y, m, d) = civil(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The same instant in this machine's time zone, `2026-12-01 10:27:13 +08:00`.
fn local(ts: i64) -> String {
    let t: libc::time_t = ts as libc::time_t;
    // SAFETY: `tm` is plain data filled by localtime_r from `t`; both are ours.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return String::new();
    }
    let off = tm.tm_gmtoff;
    let sign = if off < 0 { '-' } else { '+' };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {sign}{:02}:{:02} local",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        off.abs() / 3600,
        off.abs() / 60 % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Light by default, dark when the reader's system is; A4 landscape on paper
/// with charts kept whole.
const CSS: &str = r#"
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #ffffff; --muted: #5f6368; --line: #d9d9de; --head: #f3f4f6; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e8e8ea; --bg: #18191b; --muted: #a0a4aa; --line: #3a3c40; --head: #24262a; }
  .chart svg { background: #ffffff; border-radius: 4px; }
}
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "Noto Sans", "PingFang SC", "Microsoft YaHei", sans-serif; color: var(--fg); background: var(--bg); margin: 24px auto; max-width: 1040px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 24px 0 8px; }
.file { color: var(--muted); margin: 0 0 8px; word-break: break-all; }
.verdict { display: inline-block; padding: 2px 10px; border-radius: 12px; font-weight: 600; color: #fff; }
.verdict.done { background: #2e8b57; } .verdict.needs_attention { background: #d6781e; } .verdict.incomplete { background: #c83c3c; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th, td.num, td:first-child { white-space: nowrap; } td.wrap { overflow-wrap: anywhere; }
thead th { background: var(--head); } .num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; } table.facts th { width: 200px; }
.note { color: var(--muted); } pre { background: var(--head); padding: 8px; overflow-x: auto; white-space: pre-wrap; }
.chart svg { max-width: 100%; height: auto; display: block; } .legend .key { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: -1px; }
@page { size: A4 landscape; margin: 12mm; }
@media print { body { max-width: none; margin: 0; font-size: 11px; } section, .chart, tr { break-inside: avoid; } }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (refunded_rows_drawn_red): the bar chart's "done" colour
    /// was a list of cancel categories; refunded rows were drawn as failed.
    #[test]
    fn every_done_category_is_drawn_green() {
        let green = RGBColor(46, 139, 87);
        for c in crate::category::ALL {
            let done = c.is_success() || c == Category::Signed;
            assert_eq!(colour(c) == green, done, "{c}");
        }
    }

    #[test]
    fn dates_read_like_a_calendar() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_099_233), "2026-12-01 04:27:13 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
