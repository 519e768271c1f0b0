//! Line charts as self-contained SVG, for `--plot DIR`.

use std::fmt::Write;

use dynamo_mocker::{RequestRecord, Summary};

use crate::sweep::FixedRun;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One named line, or a set of marks.
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
    /// A text beside each point (none if empty).
    pub(crate) labels: Vec<String>,
    /// Marks only, no line through them.
    pub(crate) marks_only: bool,
}

impl Series {
    /// A line through `points`.
    pub(crate) fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            labels: Vec::new(),
            marks_only: false,
        }
    }
}

/// The distribution of time to first token per router, as a CDF over a logarithmic axis.
pub(crate) fn ttft_cdf(runs: &[(String, Vec<RequestRecord>)]) -> String {
    let series: Vec<Series> = runs
        .iter()
        .map(|(name, records)| {
            let mut ttft: Vec<f64> = records
                .iter()
                .filter_map(RequestRecord::ttft_ms)
                .map(|t| t.max(0.1))
                .collect();
            ttft.sort_by(f64::total_cmp);
            let n = ttft.len().max(1) as f64;
            // At most about 400 points a line: enough for the eye, small enough to commit.
            let every = (ttft.len() / 400).max(1);
            Series::line(
                name.clone(),
                ttft.iter()
                    .enumerate()
                    .filter(|(i, _)| i % every == 0 || *i + 1 == ttft.len())
                    .map(|(i, t)| (t.log10(), (i + 1) as f64 / n))
                    .collect(),
            )
        })
        .collect();
    line_chart(
        "Time to first token (CDF)",
        "TTFT, ms (log scale)",
        "share of requests",
        &series,
        true,
    )
}

/// The prefix-cache reuse ratio over time, in 50 windows of arrival time.
pub(crate) fn reuse_over_time(runs: &[(String, Vec<RequestRecord>)]) -> String {
    let series: Vec<Series> = runs
        .iter()
        .map(|(name, records)| {
            let end = records
                .iter()
                .map(|r| r.arrival_ms)
                .fold(0.0, f64::max)
                .max(1.0);
            let mut windows = [(0u64, 0u64); 50];
            for record in records {
                let w = ((record.arrival_ms / end * 49.999) as usize).min(49);
                windows[w].0 += record.cached_tokens;
                windows[w].1 += record.input_tokens;
            }
            Series::line(
                name.clone(),
                windows
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, input))| *input > 0)
                    .map(|(w, (cached, input))| {
                        (
                            (w as f64 + 0.5) / 50.0 * end / 1000.0,
                            *cached as f64 / *input as f64,
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    line_chart(
        "Prefix cache reuse over time",
        "arrival time, s",
        "cached / prompt tokens",
        &series,
        false,
    )
}

/// The load (arrivals per second, in 100 windows) above the pool's size (ready and desired
/// workers) of each planner run, on one time axis.
pub(crate) fn replicas(runs: &[(String, Vec<RequestRecord>)], summaries: &[Summary]) -> String {
    let planned: Vec<&Summary> = summaries.iter().filter(|s| s.replicas.is_some()).collect();
    let end_s = summaries
        .iter()
        .map(|s| s.duration_ms / 1000.0)
        .fold(1.0, f64::max);
    let mut load = Vec::new();
    if let Some((name, records)) = runs
        .iter()
        .find(|(name, _)| planned.iter().any(|s| &s.router == name))
    {
        let width = end_s / 100.0;
        let mut counts = [0u64; 100];
        for record in records.iter().filter(|r| !r.arrival_ms.is_nan()) {
            let w = ((record.arrival_ms / 1000.0 / width) as usize).min(99);
            counts[w] += 1;
        }
        // Each window's rate from its start, and the last one's to the end, so that the two
        // charts share their time axis.
        load.push(Series::line(
            format!("{} arrivals", name.split('+').next().unwrap_or(name)),
            counts
                .iter()
                .enumerate()
                .map(|(w, &n)| (w as f64 * width, n as f64 / width))
                .chain(std::iter::once((end_s, counts[99] as f64 / width)))
                .collect(),
        ));
    }
    let mut sizes = Vec::new();
    for s in &planned {
        let Some(points) = &s.replicas else { continue };
        let step = |value: fn(&dynamo_mocker::ReplicaPoint) -> usize| {
            let mut line: Vec<(f64, f64)> = Vec::new();
            // Planning steps after the last finish are not on the load's time axis.
            for p in points.iter().filter(|p| p.at_ms / 1000.0 <= end_s) {
                if let Some(&(_, previous)) = line.last() {
                    line.push((p.at_ms / 1000.0, previous));
                }
                line.push((p.at_ms / 1000.0, value(p) as f64));
            }
            if let Some(&(_, last)) = line.last() {
                line.push((end_s, last));
            }
            line
        };
        // In a disaggregated run `ready` and `desired` are the decode pool's.
        let disaggregated = points.iter().any(|p| p.prefill_ready.is_some());
        let pool = if disaggregated { " decode" } else { "" };
        sizes.push(Series::line(
            format!("{}{pool} ready", s.router),
            step(|p| p.ready),
        ));
        sizes.push(Series::line(
            format!("{}{pool} desired", s.router),
            step(|p| p.desired),
        ));
        if disaggregated {
            sizes.push(Series::line(
                format!("{} prefill ready", s.router),
                step(|p| p.prefill_ready.unwrap_or(0)),
            ));
            sizes.push(Series::line(
                format!("{} prefill desired", s.router),
                step(|p| p.prefill_desired.unwrap_or(0)),
            ));
        }
    }
    let top = line_chart("Load", "time, s", "arrivals per s", &load, false);
    let bottom = line_chart("Workers", "time, s", "workers", &sizes, false);
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{}">{}{}</svg>
"#,
        2.0 * HEIGHT,
        top.trim_end(),
        bottom
            .trim_end()
            .replacen("<svg ", &format!(r#"<svg y="{HEIGHT}" "#), 1)
    )
}

/// SLA attainment against GPU-hours: the fixed pools' frontier as a line and the pools it
/// leaves behind as marks, each labelled with its size (`4`, or `3+1` prefill + decode), and
/// each planner run a point.
pub(crate) fn frontier(fixed: &[FixedRun], summaries: &[Summary]) -> String {
    let point = |s: &Summary| (s.gpu_hours.unwrap_or(0.0), s.sla_attainment.unwrap_or(0.0));
    let pools = |on_frontier: bool, name: &str| {
        let mut runs: Vec<&FixedRun> = fixed
            .iter()
            .filter(|r| r.on_frontier == on_frontier)
            .collect();
        runs.sort_by(|a, b| point(&a.summary).0.total_cmp(&point(&b.summary).0));
        Series {
            name: name.into(),
            points: runs.iter().map(|r| point(&r.summary)).collect(),
            labels: runs.iter().map(|r| r.size.to_string()).collect(),
            marks_only: !on_frontier,
        }
    };
    let mut series = vec![pools(true, "fixed pools: frontier")];
    let behind = pools(false, "fixed pools: behind it");
    if !behind.points.is_empty() {
        series.push(behind);
    }
    for s in summaries.iter().filter(|s| s.replicas.is_some()) {
        series.push(Series::line(s.router.clone(), vec![point(s)]));
    }
    line_chart(
        "SLA attainment against GPU-hours",
        "GPU-hours",
        "share of requests within the SLA",
        &series,
        false,
    )
}

fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series], log_x: bool) -> String {
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 > 0.0 { y1 * 1.05 } else { 1.0 };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * plot_w;
    let sy = |y: f64| TOP + plot_h - y / y1 * plot_h;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="22" font-size="15" text-anchor="middle">{title}</text>"#,
        LEFT + plot_w / 2.0
    );
    let _ = write!(
        svg,
        r#"<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="black"/>"#,
        TOP + plot_h,
        LEFT + plot_w,
        TOP + plot_h,
        TOP + plot_h
    );
    for tick in 0..=5 {
        let x = x0 + (x1 - x0) * f64::from(tick) / 5.0;
        let label = if log_x {
            format!("{:.0}", 10f64.powf(x))
        } else if x1 - x0 < 10.0 {
            format!("{x:.2}")
        } else {
            format!("{x:.0}")
        };
        let y = y1 * f64::from(tick) / 5.0;
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{label}</text><text x="{:.1}" y="{:.1}" text-anchor="end">{y:.2}</text><line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            sx(x),
            TOP + plot_h + 18.0,
            LEFT - 6.0,
            sy(y) + 4.0,
            sy(y),
            LEFT + plot_w,
            sy(y)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{x_label}</text><text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{y_label}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 12.0,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let legend_y = TOP + 16.0 + 20.0 * i as f64;
        let stroke = if s.marks_only { "none" } else { color };
        // A long name gets a smaller font, to fit the room right of the chart (a character
        // is about 0.55 of the font size wide).
        let room = RIGHT - 45.0;
        let fit = if s.name.len() as f64 * 0.55 * 12.0 > room {
            format!(r#" font-size="{:.1}""#, room / (s.name.len() as f64 * 0.55))
        } else {
            String::new()
        };
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{stroke}" stroke-width="1.8" points="{}"/><line x1="{:.1}" y1="{legend_y:.1}" x2="{:.1}" y2="{legend_y:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}"{fit}>{}</text>"#,
            path.join(" "),
            LEFT + plot_w + 14.0,
            LEFT + plot_w + 34.0,
            LEFT + plot_w + 40.0,
            legend_y + 4.0,
            s.name
        );
        // Few points (a frontier, a single run): mark each.
        if s.points.len() <= 32 || s.marks_only {
            for &(x, y) in &s.points {
                let _ = write!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="{}" fill="{color}"/>"#,
                    sx(x),
                    sy(y),
                    if s.points.len() == 1 { 6.0 } else { 3.5 }
                );
            }
        }
    }
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        for (&(x, y), label) in s.points.iter().zip(&s.labels) {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" fill="{color}">{label}</text>"#,
                sx(x) + 5.0,
                sy(y) - 5.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}
