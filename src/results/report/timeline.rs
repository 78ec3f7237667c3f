//! The run's timeline, from its attempt log (`--log`): requests per interval
//! by outcome, the pace asked for and achieved with every change of pace,
//! latency percentiles, token fetches, and the errcodes WeChat answered.
//! Aggregated per interval (at most [`POINTS`] of them), so a million
//! requests make a page of a few hundred kilobytes.

use anyhow::Context as _;
use plotters::prelude::*;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::Path;

/// The most intervals a chart shows.
const POINTS: u64 = 240;
const WIDTH: u32 = 960;

/// One line of the attempt log, as far as the timeline reads it.
#[derive(Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Line {
    Request {
        sent: f64,
        #[serde(default)]
        answered: f64,
        #[serde(default)]
        row: u64,
        latency_ms: f64,
        pace: f64,
        category: String,
        #[serde(default)]
        call: String,
        http_status: Option<u16>,
        errcode: Option<i64>,
    },
    Pace {
        at: f64,
        to: f64,
        why: String,
    },
    Token {
        at: f64,
        ok: bool,
        forced: bool,
    },
}

/// What an answer was, for the stacked chart: (name, colour).
pub const OUTCOMES: [(&str, RGBColor); 7] = [
    ("done", RGBColor(46, 139, 87)),
    ("already done", RGBColor(120, 190, 140)),
    ("frequency limit", RGBColor(214, 120, 30)),
    ("busy / 5xx", RGBColor(200, 60, 60)),
    ("unusable answer", RGBColor(140, 80, 160)),
    ("token", RGBColor(60, 110, 200)),
    ("other", RGBColor(130, 130, 130)),
];

fn outcome(category: &str, http_status: Option<u16>) -> usize {
    match category {
        "cancelled" | "refunded" | "next_step" => 0,
        "already_returned" => 1,
        "rate_limited" => 2,
        "system_busy" => 3,
        "network_error" if http_status.is_some_and(|s| s >= 500) => 3,
        "network_error" => 4,
        "token_error" => 5,
        _ => 6,
    }
}

/// One interval: its first second, requests by outcome, latency p50 and p95 (ms).
type Interval = (u64, [u32; 7], f64, f64);

/// A change of pace: when, to what, and why.
pub struct PaceChange {
    pub at: f64,
    pub to: f64,
    pub why: String,
}

/// Everything the log says, aggregated.
#[derive(Default)]
pub struct Timeline {
    /// UNIX seconds of the first and last request sent.
    pub first: f64,
    pub last: f64,
    pub requests: u64,
    /// The pace when the first request left: `--rate` (or a resumed run's).
    pub start_pace: f64,
    /// Requests per whole second since `first`, by outcome, and latencies.
    seconds: BTreeMap<u64, ([u32; 7], Vec<f32>)>,
    pub paces: Vec<PaceChange>,
    /// Token fetches: (when, ok, forced).
    pub tokens: Vec<(f64, bool, bool)>,
    /// Answers per errcode (`None`: no answer).
    pub errcodes: BTreeMap<Option<i64>, u64>,
    /// Refunds (xpay-refund): seconds from a row's first `refund_order` to
    /// the answer that said it settled, and whether it failed.
    pub settles: Vec<(f64, bool)>,
}

impl Timeline {
    /// Reads an attempt log; lines it does not know (another version's) are
    /// passed over, a line that is not JSON is an error naming it.
    pub fn read(path: &Path) -> anyhow::Result<Timeline> {
        let name = path.display();
        let file = std::fs::File::open(path).with_context(|| format!("cannot read the log {name}"))?;
        let mut t = Timeline { first: f64::MAX, last: f64::MIN, ..Timeline::default() };
        let mut requests = Vec::new();
        // Row → when its refund was first sent.
        let mut refund_sent: std::collections::HashMap<u64, f64> = Default::default();
        for line in std::io::BufReader::new(file).lines() {
            let line = line.with_context(|| format!("cannot read the log {name}"))?;
            if line.trim().is_empty() {
                continue;
            }
            // A torn last line (a run killed mid-line), an event this version
            // does not draw, another tool's line: passed over.
            let Ok(parsed) = serde_json::from_str::<Line>(&line) else { continue };
            match parsed {
                Line::Request { sent, answered, row, latency_ms, pace, category, call, http_status, errcode } => {
                    if call == "refund_order" {
                        refund_sent.entry(row).or_insert(sent);
                    }
                    let settled = matches!(category.as_str(), "refunded" | "refund_failed");
                    if let (true, Some(from)) = (settled, refund_sent.get(&row)) {
                        t.settles.push(((answered - from).max(0.0), category == "refund_failed"));
                    }
                    if sent < t.first {
                        t.start_pace = pace;
                    }
                    t.first = t.first.min(sent);
                    t.last = t.last.max(sent);
                    *t.errcodes.entry(errcode).or_default() += 1;
                    requests.push((sent, outcome(&category, http_status) as u8, latency_ms as f32));
                }
                Line::Pace { at, to, why } => t.paces.push(PaceChange { at, to, why }),
                Line::Token { at, ok, forced } => t.tokens.push((at, ok, forced)),
            }
        }
        t.requests = requests.len() as u64;
        for (sent, class, latency) in requests {
            let second = (sent - t.first).max(0.0) as u64;
            let bucket = t.seconds.entry(second).or_default();
            bucket.0[usize::from(class)] += 1;
            bucket.1.push(latency);
        }
        Ok(t)
    }

    /// Seconds per interval: whole seconds, at most [`POINTS`] intervals.
    fn width(&self) -> u64 {
        let span = (self.last - self.first).max(0.0) as u64 + 1;
        span.div_ceil(POINTS).max(1)
    }

    /// The intervals: (start second, requests by outcome, p50 and p95 ms).
    fn intervals(&self) -> Vec<Interval> {
        let w = self.width();
        let mut out: BTreeMap<u64, ([u32; 7], Vec<f32>)> = BTreeMap::new();
        for (second, (counts, latencies)) in &self.seconds {
            let slot = out.entry(second / w * w).or_default();
            for (a, b) in slot.0.iter_mut().zip(counts) {
                *a += b;
            }
            slot.1.extend(latencies);
        }
        out.into_iter()
            .map(|(at, (counts, mut lat))| {
                lat.sort_by(f32::total_cmp);
                let pick = |q: f64| lat.get(((lat.len() as f64 - 1.0) * q).round() as usize).map_or(0.0, |v| *v as f64);
                (at, counts, pick(0.5), pick(0.95))
            })
            .collect()
    }

    fn span(&self) -> f64 {
        ((self.last - self.first).max(0.0) + self.width() as f64).max(1.0)
    }

    /// How long refunds took to settle: rows per interval of seconds from
    /// the refund to WeChat's record saying it completed (or failed).
    pub fn settle_chart(&self) -> anyhow::Result<Option<String>> {
        if self.settles.is_empty() {
            return Ok(None);
        }
        let longest = self.settles.iter().map(|s| s.0).fold(1.0, f64::max);
        let bins = 30u32;
        let w = (longest / f64::from(bins)).max(0.1);
        let mut counts = vec![[0u32; 2]; bins as usize + 1];
        for (secs, failed) in &self.settles {
            counts[((secs / w) as usize).min(bins as usize)][usize::from(*failed)] += 1;
        }
        let top = counts.iter().map(|c| c[0] + c[1]).max().unwrap_or(1) as f64 * 1.1;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, 240)).into_drawing_area();
            root.fill(&WHITE).map_err(chart_err)?;
            let mut chart = ChartBuilder::on(&root)
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(0.0..w * f64::from(bins + 1), 0.0..top)
                .map_err(chart_err)?;
            chart
                .configure_mesh()
                .x_desc("seconds from refund to settled")
                .y_desc("refunds")
                .disable_x_mesh()
                .draw()
                .map_err(chart_err)?;
            for (i, c) in counts.iter().enumerate() {
                let x = i as f64 * w;
                let done = Rectangle::new([(x, 0.0), (x + w * 0.9, f64::from(c[0]))], OUTCOMES[0].1.filled());
                let failed = Rectangle::new(
                    [(x, f64::from(c[0])), (x + w * 0.9, f64::from(c[0] + c[1]))],
                    RGBColor(200, 60, 60).filled(),
                );
                if c[0] + c[1] > 0 {
                    chart.draw_series([done, failed]).map_err(chart_err)?;
                }
            }
            root.present().map_err(chart_err)?;
        }
        Ok(Some(svg))
    }

    /// The median, 95th percentile and longest time to settle, in seconds.
    pub fn settle_quantiles(&self) -> (f64, f64, f64) {
        let mut s: Vec<f64> = self.settles.iter().map(|s| s.0).collect();
        s.sort_by(f64::total_cmp);
        let pick = |q: f64| s.get(((s.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
        (pick(0.5), pick(0.95), s.last().copied().unwrap_or(0.0))
    }

    /// Requests per second over time, stacked by outcome.
    pub fn requests_chart(&self) -> anyhow::Result<String> {
        let intervals = self.intervals();
        let w = self.width() as f64;
        let top = intervals.iter().map(|i| i.1.iter().sum::<u32>() as f64 / w).fold(1.0, f64::max) * 1.1;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, 280)).into_drawing_area();
            let mut chart = over_time(&root, self.span(), top, "requests / s")?;
            for (at, counts, _, _) in &intervals {
                let mut base = 0.0;
                for (k, n) in counts.iter().enumerate() {
                    if *n == 0 {
                        continue;
                    }
                    let h = f64::from(*n) / w;
                    let x = *at as f64;
                    let rect = Rectangle::new([(x, base), (x + w * 0.9, base + h)], OUTCOMES[k].1.filled());
                    chart.draw_series(std::iter::once(rect)).map_err(chart_err)?;
                    base += h;
                }
            }
            root.present().map_err(chart_err)?;
        }
        Ok(svg)
    }

    /// The pace asked for (each change marked, its reason on hover) and the
    /// pace achieved; token fetches marked on the time axis.
    pub fn pace_chart(&self) -> anyhow::Result<String> {
        let requested = self.start_pace;
        let intervals = self.intervals();
        let w = self.width() as f64;
        // An interval the run's end cuts short counts over the time it
        // covered; one it barely began is left out (its count is no rate).
        let end = self.last - self.first;
        let achieved: Vec<(f64, f64)> = intervals
            .iter()
            .filter_map(|(at, c, _, _)| {
                let covered = (end - *at as f64).min(w);
                (covered >= w / 2.0).then(|| (*at as f64 + w / 2.0, c.iter().sum::<u32>() as f64 / covered))
            })
            .collect();
        let mut steps = vec![(0.0, requested)];
        for p in &self.paces {
            let x = (p.at - self.first).max(0.0);
            steps.push((x, steps.last().map_or(requested, |s| s.1)));
            steps.push((x, p.to));
        }
        steps.push((self.span(), steps.last().map_or(requested, |s| s.1)));
        let top = achieved.iter().map(|a| a.1).chain(steps.iter().map(|s| s.1)).fold(1.0, f64::max) * 1.1;
        let mut svg = String::new();
        let mut marks = Vec::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, 260)).into_drawing_area();
            let mut chart = over_time(&root, self.span(), top, "pace / s")?;
            chart.draw_series(LineSeries::new(steps, BLUE.stroke_width(2))).map_err(chart_err)?;
            chart.draw_series(LineSeries::new(achieved, RGBColor(46, 139, 87).stroke_width(2))).map_err(chart_err)?;
            for p in &self.paces {
                let (x, y) = chart.backend_coord(&((p.at - self.first).max(0.0), p.to));
                marks.push((x, y, format!("{:.1}/s: {}", p.to, p.why), "#d6781e"));
            }
            for (at, ok, forced) in &self.tokens {
                let (x, y) = chart.backend_coord(&((at - self.first).max(0.0), 0.0));
                let what = match (ok, forced) {
                    (true, true) => "token fetched (forced refresh)",
                    (true, false) => "token fetched",
                    (false, _) => "token fetch failed",
                };
                marks.push((x, y, what.to_string(), "#3c6ec8"));
            }
            root.present().map_err(chart_err)?;
        }
        Ok(with_marks(svg, &marks))
    }

    /// Latency p50 and p95 per interval.
    pub fn latency_chart(&self) -> anyhow::Result<String> {
        let intervals = self.intervals();
        let w = self.width() as f64;
        let top = intervals.iter().map(|i| i.3).fold(1.0, f64::max) * 1.1;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, 220)).into_drawing_area();
            let mut chart = over_time(&root, self.span(), top, "latency ms")?;
            let line = |pick: fn(&Interval) -> f64| {
                intervals.iter().map(move |i| (i.0 as f64 + w / 2.0, pick(i))).collect::<Vec<_>>()
            };
            chart.draw_series(LineSeries::new(line(|i| i.2), BLUE.stroke_width(2))).map_err(chart_err)?;
            chart.draw_series(LineSeries::new(line(|i| i.3), RED.stroke_width(2))).map_err(chart_err)?;
            root.present().map_err(chart_err)?;
        }
        Ok(svg)
    }
}

/// A chart over the run's time (seconds since the first request, up to
/// `span`) of values up to `top`, its axes drawn.
fn over_time<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    span: f64,
    top: f64,
    unit: &str,
) -> anyhow::Result<
    ChartContext<
        'a,
        SVGBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
> {
    let mut chart = ChartBuilder::on(root)
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..span, 0f64..top)
        .map_err(chart_err)?;
    chart.configure_mesh().x_desc("seconds since the first request").y_desc(unit).draw().map_err(chart_err)?;
    Ok(chart)
}

/// Markers with a tooltip (an SVG `<title>`, shown on hover), added to a
/// chart plotters drew: (x, y, text, colour). The text is escaped.
fn with_marks(svg: String, marks: &[(i32, i32, String, &str)]) -> String {
    let Some(end) = svg.rfind("</svg>") else { return svg };
    let mut out = String::with_capacity(svg.len() + marks.len() * 120);
    out.push_str(&svg[..end]);
    for (x, y, text, colour) in marks {
        let title = maud::html! { title { (text) } }.into_string();
        out.push_str(&format!(r#"<circle cx="{x}" cy="{y}" r="5" fill="{colour}" stroke="white">{title}</circle>"#));
    }
    out.push_str(&svg[end..]);
    out
}

fn chart_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("cannot draw a chart: {e:?}")
}

/// Bars of rows per category: (name, rows, colour).
pub fn category_chart(bars: &[(&str, u64, RGBColor)]) -> anyhow::Result<String> {
    let top = bars.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64 * 1.15;
    let height = 40 + 28 * bars.len().max(1) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        let (labels, plot) = root.split_horizontally(170);
        let n = bars.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&plot)
            .margin(8)
            .x_label_area_size(24)
            .build_cartesian_2d(0f64..top, 0f64..n)
            .map_err(chart_err)?;
        chart.configure_mesh().disable_y_mesh().y_labels(0).x_desc("rows").draw().map_err(chart_err)?;
        for (i, (name, rows, colour)) in bars.iter().enumerate() {
            let y = n - i as f64 - 1.0;
            let bar = Rectangle::new([(0.0, y + 0.15), (*rows as f64, y + 0.85)], colour.filled());
            chart.draw_series(std::iter::once(bar)).map_err(chart_err)?;
            let (_, py) = chart.backend_coord(&(0.0, y + 0.5));
            labels
                .draw(&Text::new(format!("{name} ({rows})"), (4, py - 6), ("sans-serif", 13).into_font()))
                .map_err(chart_err)?;
        }
        root.present().map_err(chart_err)?;
    }
    Ok(svg)
}
