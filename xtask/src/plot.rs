//! Charts of benchmark figures: `cargo xtask bench <kind> --plot` writes the
//! figures it printed as JSON (`target/bench/<kind>.json`) and an SVG chart
//! of them next to it; `cargo xtask plot <json>` renders a saved JSON again.
//!
//! A small hand-written SVG writer rather than a plotting crate: the charts
//! are grouped bars and line series on linear or log axes, and the SVG uses
//! only the generic `sans-serif` family, so it needs no font files at build
//! or view time and stays self-contained. Text widths are estimated from the
//! character count (no font metrics), which is enough for the margins.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// One chart file: a title line, where the figures came from, and panels
/// stacked vertically.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// What the chart shows.
    pub title: String,
    /// The command that measured the figures.
    pub command: String,
    /// UTC date of the run (YYYY-MM-DD).
    pub date: String,
    /// Lines printed under the title (machine, run length, caveats).
    #[serde(default)]
    pub notes: Vec<String>,
    /// The charts, top to bottom.
    pub panels: Vec<Panel>,
}

/// One chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Panel {
    /// Grouped bars: one group per category, one bar per series in a group.
    Bars {
        title: String,
        y_label: String,
        categories: Vec<String>,
        series: Vec<BarSeries>,
        /// Draw a dashed horizontal line at this value (e.g. 1.0 for ratios).
        #[serde(default)]
        reference: Option<f64>,
        /// A log value axis (latency percentiles span decades); bars rise
        /// from the axis' low end.
        #[serde(default)]
        log_y: bool,
    },
    /// Line series over a numeric x axis.
    Lines {
        title: String,
        x_label: String,
        y_label: String,
        #[serde(default)]
        log_x: bool,
        #[serde(default)]
        log_y: bool,
        series: Vec<LineSeries>,
    },
}

/// The bars of one series, one value per category (`None`: not measured).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BarSeries {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

/// The points of one line, `(x, y)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineSeries {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Figure {
    /// A figure titled `title`, stamped with the running command and today's date.
    pub fn new(title: impl Into<String>) -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        Self {
            title: title.into(),
            command: format!("cargo xtask {}", args.join(" ")),
            date: today(),
            notes: vec![machine()],
            panels: Vec::new(),
        }
    }

    /// Writes `target/bench/<kind>.json` and `.svg` under `root` and prints
    /// both paths.
    pub fn write(&self, root: &Path, kind: &str) -> Result<PathBuf> {
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("bench");
        let svg = dir.join(format!("{kind}.svg"));
        self.write_to(&svg)?;
        Ok(svg)
    }

    /// Writes the chart to `svg` and the figures next to it (`.json`).
    pub fn write_to(&self, svg: &Path) -> Result<()> {
        if let Some(dir) = svg.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = svg.with_extension("json");
        std::fs::write(&json, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", json.display()))?;
        std::fs::write(svg, render(self)?).with_context(|| format!("writing {}", svg.display()))?;
        println!("\nfigures: {}\nchart:   {}", json.display(), svg.display());
        Ok(())
    }
}

/// `cargo xtask plot <json> [-o <svg>]`: renders saved figures again; the
/// SVG goes next to the JSON unless `out` says otherwise.
pub fn replot(json: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let text =
        std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    let fig: Figure = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a bench figures file", json.display()))?;
    let out = out.map_or_else(|| json.with_extension("svg"), Path::to_path_buf);
    std::fs::write(&out, render(&fig)?).with_context(|| format!("writing {}", out.display()))?;
    println!("chart: {}", out.display());
    Ok(out)
}

/// The machine's size and how busy it was when the figures were taken: a
/// chart must not look like an idle-machine result when it is not one.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "machine: {cpus} CPUs, load average {} (1/5/15 min) when the run ended",
        load.join(" / ")
    )
}

/// Where the chart of a bench binary's raw figures goes by default:
/// `xdp-raw.json` → `xdp.svg` (as `bench xdp --plot` names it), else
/// `<name>-chart.svg`; never onto the raw file itself.
pub fn raw_chart_path(raw: &Path) -> PathBuf {
    let stem = raw
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    match stem.strip_suffix("-raw") {
        Some(kind) if !kind.is_empty() => raw.with_file_name(format!("{kind}.svg")),
        _ => raw.with_file_name(format!("{stem}-chart.svg")),
    }
}

/// Today's UTC date, from the system clock (civil-from-days conversion).
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift to a calendar starting on 0000-03-01 so leap days end a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

// ---------------------------------------------------------------- scales

/// A value axis: maps data values to 0..=1 and proposes tick values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    Linear { min: f64, max: f64 },
    Log { min: f64, max: f64 },
}

impl Scale {
    /// A linear axis from `min` (0 unless data go below) to a round value ≥ the data.
    pub fn linear(values: impl IntoIterator<Item = f64>) -> Self {
        let (lo, hi) = bounds(values).unwrap_or((0.0, 1.0));
        let lo = lo.min(0.0);
        let hi = if hi > lo { hi } else { lo + 1.0 };
        let step = nice_step((hi - lo) / 5.0);
        Scale::Linear {
            min: (lo / step).floor() * step,
            max: (hi / step).ceil() * step,
        }
    }

    /// A log axis over whole decades around the positive data.
    pub fn log(values: impl IntoIterator<Item = f64>) -> Self {
        let (lo, hi) = bounds(values.into_iter().filter(|v| *v > 0.0)).unwrap_or((1.0, 10.0));
        let min = 10f64.powf(lo.log10().floor());
        let mut max = 10f64.powf(hi.log10().ceil());
        if max <= min {
            max = min * 10.0;
        }
        Scale::Log { min, max }
    }

    /// The position of `v` on the axis, 0 at the low end and 1 at the high end
    /// (clamped, so a value off the axis draws at its edge).
    pub fn map(&self, v: f64) -> f64 {
        let t = match *self {
            Scale::Linear { min, max } => (v - min) / (max - min),
            Scale::Log { min, max } => (v.max(min).ln() - min.ln()) / (max.ln() - min.ln()),
        };
        t.clamp(0.0, 1.0)
    }

    /// Tick values, ascending, from the low to the high end.
    pub fn ticks(&self) -> Vec<f64> {
        match *self {
            Scale::Linear { min, max } => {
                let step = nice_step((max - min) / 5.0);
                let n = ((max - min) / step).round() as i64;
                (0..=n).map(|i| min + i as f64 * step).collect()
            }
            Scale::Log { min, max } => {
                let decades = (max / min).log10().round() as i32;
                // Few decades: 1-2-5 steps, else decades only.
                let mults: &[f64] = if decades <= 2 {
                    &[1.0, 2.0, 5.0]
                } else {
                    &[1.0]
                };
                let mut out = Vec::new();
                for k in 0..=decades {
                    let base = min * 10f64.powi(k);
                    for m in mults {
                        let v = base * m;
                        if v <= max * (1.0 + 1e-9) {
                            out.push(v);
                        }
                    }
                }
                out
            }
        }
    }
}

fn bounds(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// 1, 2, 2.5 or 5 × a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw.is_nan() || raw <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * p)
}

/// A tick or value label: 3 significant digits, k/M for large numbers.
pub fn format_number(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if x == x.round() || x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    };
    format!("{s}{suffix}")
}

// ---------------------------------------------------------------- SVG

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 330.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const PANEL_TOP: f64 = 34.0;
const PANEL_BOTTOM: f64 = 62.0;
const FONT: &str = "font-family=\"sans-serif\"";
/// Distinguishable on white, also in grey print.
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Series colours by name, the same in every panel of a figure (a target
/// missing from one panel must not shift the others' colours).
struct Palette(Vec<String>);

impl Palette {
    fn of(fig: &Figure) -> Self {
        let mut names: Vec<String> = Vec::new();
        let mut add = |n: &String| {
            if !names.contains(n) {
                names.push(n.clone());
            }
        };
        for p in &fig.panels {
            match p {
                Panel::Bars { series, .. } => series.iter().for_each(|s| add(&s.name)),
                Panel::Lines { series, .. } => series.iter().for_each(|s| add(&s.name)),
            }
        }
        Palette(names)
    }

    fn color(&self, name: &str) -> &'static str {
        let i = self.0.iter().position(|n| n == name).unwrap_or(0);
        COLORS[i % COLORS.len()]
    }
}

/// Escapes text for SVG element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn text(out: &mut String, x: f64, y: f64, size: f64, anchor: &str, extra: &str, s: &str) {
    let _ = writeln!(
        out,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" font-size=\"{size}\" text-anchor=\"{anchor}\" {FONT}{extra}>{}</text>",
        esc(s)
    );
}

/// Renders the figure as a standalone SVG document.
pub fn render(fig: &Figure) -> Result<String> {
    ensure!(!fig.panels.is_empty(), "{}: no panels to draw", fig.title);
    for p in &fig.panels {
        if let Panel::Bars {
            title,
            categories,
            series,
            ..
        } = p
        {
            for s in series {
                ensure!(
                    s.values.len() == categories.len(),
                    "panel {title:?}: series {:?} has {} values for {} categories",
                    s.name,
                    s.values.len(),
                    categories.len()
                );
            }
        }
    }
    let header = 56.0 + 16.0 * fig.notes.len() as f64;
    let bottoms: Vec<f64> = fig.panels.iter().map(bottom_margin).collect();
    let height = header + bottoms.iter().map(|b| PANEL_HEIGHT + b).sum::<f64>() + 10.0;
    let width = figure_width(fig);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\">"
    );
    let _ = writeln!(out, "<title>{}</title>", esc(&fig.title));
    let _ = writeln!(out, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    text(
        &mut out,
        12.0,
        22.0,
        16.0,
        "start",
        " font-weight=\"bold\"",
        &fig.title,
    );
    text(
        &mut out,
        12.0,
        40.0,
        11.0,
        "start",
        " fill=\"#444\"",
        &format!("{} — {}", fig.command, fig.date),
    );
    for (i, n) in fig.notes.iter().enumerate() {
        text(
            &mut out,
            12.0,
            56.0 + 16.0 * i as f64,
            11.0,
            "start",
            " fill=\"#444\"",
            n,
        );
    }
    let palette = Palette::of(fig);
    let mut top = header;
    for (p, bottom) in fig.panels.iter().zip(&bottoms) {
        let _ = writeln!(out, "<g transform=\"translate(0,{top:.1})\">");
        top += PANEL_HEIGHT + bottom;
        match p {
            Panel::Bars {
                title,
                y_label,
                categories,
                series,
                reference,
                log_y,
            } => {
                let y = bar_scale(series, *reference, *log_y);
                bars(
                    &mut out, &palette, title, y_label, categories, series, *reference, &y,
                )
            }
            Panel::Lines {
                title,
                x_label,
                y_label,
                log_x,
                log_y,
                series,
            } => lines(
                &mut out, &palette, title, x_label, y_label, *log_x, *log_y, series,
            ),
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    Ok(out)
}

/// The plot area of a panel: x0..x1 left to right, y0 (top) .. y1 (bottom).
struct Area {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Area {
    fn of_panel() -> Self {
        Area {
            x0: LEFT,
            x1: WIDTH - RIGHT,
            y0: PANEL_TOP,
            y1: PANEL_HEIGHT - PANEL_BOTTOM,
        }
    }

    fn y(&self, scale: &Scale, v: f64) -> f64 {
        self.y1 - scale.map(v) * (self.y1 - self.y0)
    }

    fn x(&self, scale: &Scale, v: f64) -> f64 {
        self.x0 + scale.map(v) * (self.x1 - self.x0)
    }
}

/// Panel title, y axis with grid and label, frame, legend.
fn frame(
    out: &mut String,
    palette: &Palette,
    a: &Area,
    title: &str,
    y_label: &str,
    y: &Scale,
    names: &[&str],
) {
    text(
        out,
        a.x0,
        a.y0 - 12.0,
        13.0,
        "start",
        " font-weight=\"bold\"",
        title,
    );
    for t in y.ticks() {
        let py = a.y(y, t);
        let _ = writeln!(
            out,
            "<line x1=\"{:.1}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#ddd\"/>",
            a.x0, a.x1
        );
        text(
            out,
            a.x0 - 6.0,
            py + 4.0,
            11.0,
            "end",
            "",
            &format_number(t),
        );
    }
    let (cx, cy) = (18.0, (a.y0 + a.y1) / 2.0);
    text(
        out,
        cx,
        cy,
        12.0,
        "middle",
        &format!(" transform=\"rotate(-90 {cx:.1} {cy:.1})\""),
        y_label,
    );
    let _ = writeln!(
        out,
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#333\"/>",
        a.x0,
        a.y0,
        a.x1 - a.x0,
        a.y1 - a.y0
    );
    for (i, name) in names.iter().enumerate() {
        let ly = a.y0 + 6.0 + 18.0 * i as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{ly:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>",
            a.x1 + 14.0,
            palette.color(name)
        );
        text(out, a.x1 + 32.0, ly + 10.0, 11.0, "start", "", name);
    }
}

/// The plot areas keep [`WIDTH`]; the document widens so that long legend
/// entries and titles are not cut off at its right edge.
fn figure_width(fig: &Figure) -> f64 {
    let legend = Palette::of(fig)
        .0
        .iter()
        .map(|n| text_width(n))
        .fold(0.0, f64::max);
    let titles = fig.panels.iter().map(|p| match p {
        Panel::Bars { title, .. } | Panel::Lines { title, .. } => LEFT + text_width(title) * 1.2,
    });
    let header = std::iter::once(12.0 + text_width(&fig.title) * 1.45);
    titles
        .chain(header)
        .fold(WIDTH - RIGHT + 32.0 + legend + 12.0, f64::max)
        .max(WIDTH)
}

/// Estimated width of `s` at 11 px sans-serif (no font metrics at hand).
fn text_width(s: &str) -> f64 {
    6.2 * s.chars().count() as f64
}

/// Category labels wider than their group are drawn slanted.
fn rotate_labels(categories: &[String]) -> bool {
    let group_w = (WIDTH - LEFT - RIGHT) / categories.len().max(1) as f64;
    categories.iter().any(|c| text_width(c) > group_w * 0.95)
}

/// Room under a panel's plot area besides [`PANEL_HEIGHT`]: slanted
/// category labels need their projected height.
fn bottom_margin(p: &Panel) -> f64 {
    match p {
        Panel::Bars { categories, .. } if rotate_labels(categories) => {
            let longest = categories.iter().map(|c| text_width(c)).fold(0.0, f64::max);
            (longest * 0.55 + 24.0 - PANEL_BOTTOM).max(0.0)
        }
        _ => 0.0,
    }
}

/// The value axis of a bar panel: from 0, or whole decades with `log`.
fn bar_scale(series: &[BarSeries], reference: Option<f64>, log: bool) -> Scale {
    let values = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().copied())
        .chain(reference);
    if log {
        Scale::log(values)
    } else {
        Scale::linear(values)
    }
}

#[allow(clippy::too_many_arguments)]
fn bars(
    out: &mut String,
    palette: &Palette,
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[BarSeries],
    reference: Option<f64>,
    y: &Scale,
) {
    let a = Area::of_panel();
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    frame(out, palette, &a, title, y_label, y, &names);
    let floor = match *y {
        Scale::Linear { .. } => 0.0,
        Scale::Log { min, .. } => min,
    };
    let groups = categories.len().max(1) as f64;
    let group_w = (a.x1 - a.x0) / groups;
    let bar_w = group_w * 0.8 / series.len().max(1) as f64;
    for (c, cat) in categories.iter().enumerate() {
        let gx = a.x0 + group_w * c as f64 + group_w * 0.1;
        let cx = gx + group_w * 0.4;
        if rotate_labels(categories) {
            // Slanted down to the right, starting under the group.
            let cy = a.y1 + 14.0;
            let rot = format!(" transform=\"rotate(40 {cx:.1} {cy:.1})\"");
            text(out, cx, cy, 11.0, "start", &rot, cat);
        } else {
            text(out, cx, a.y1 + 18.0, 11.0, "middle", "", cat);
        }
        for (k, s) in series.iter().enumerate() {
            let Some(v) = s.values[c] else { continue };
            let (top, base) = (a.y(y, v), a.y(y, floor));
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {}</title></rect>",
                gx + bar_w * k as f64,
                top.min(base),
                (bar_w - 1.0).max(1.0),
                (base - top).abs(),
                palette.color(&s.name),
                esc(&format!("{} {cat}", s.name)),
                format_number(v)
            );
        }
    }
    if let Some(r) = reference {
        let py = a.y(y, r);
        let _ = writeln!(
            out,
            "<line x1=\"{:.1}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#000\" stroke-dasharray=\"5 4\"/>",
            a.x0, a.x1
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn lines(
    out: &mut String,
    palette: &Palette,
    title: &str,
    x_label: &str,
    y_label: &str,
    log_x: bool,
    log_y: bool,
    series: &[LineSeries],
) {
    let a = Area::of_panel();
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let x = if log_x {
        Scale::log(xs)
    } else {
        Scale::linear(xs)
    };
    let y = if log_y {
        Scale::log(ys)
    } else {
        Scale::linear(ys)
    };
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    frame(out, palette, &a, title, y_label, &y, &names);
    for t in x.ticks() {
        let px = a.x(&x, t);
        let _ = writeln!(
            out,
            "<line x1=\"{px:.1}\" y1=\"{:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>",
            a.y0, a.y1
        );
        text(out, px, a.y1 + 16.0, 11.0, "middle", "", &format_number(t));
    }
    text(
        out,
        (a.x0 + a.x1) / 2.0,
        a.y1 + 40.0,
        12.0,
        "middle",
        "",
        x_label,
    );
    for s in series {
        let mut pts: Vec<(f64, f64)> = s.points.clone();
        pts.sort_by(|p, q| p.0.total_cmp(&q.0));
        let path: Vec<String> = pts
            .iter()
            .map(|&(px, py)| format!("{:.1},{:.1}", a.x(&x, px), a.y(&y, py)))
            .collect();
        let _ = writeln!(
            out,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>",
            path.join(" "),
            palette.color(&s.name)
        );
        for &(px, py) in &pts {
            let _ = writeln!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{}\"><title>{}: {}, {}</title></circle>",
                a.x(&x, px),
                a.y(&y, py),
                palette.color(&s.name),
                esc(&s.name),
                format_number(px),
                format_number(py)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Figure {
        Figure {
            title: "Latency <p99> & more".into(),
            command: "cargo xtask bench proxy --plot".into(),
            date: "2026-12-07".into(),
            notes: vec!["short run".into()],
            panels: vec![
                Panel::Bars {
                    title: "h1 latency".into(),
                    y_label: "latency (µs)".into(),
                    categories: vec!["p50".into(), "p99".into()],
                    series: vec![
                        BarSeries {
                            name: "sluice".into(),
                            values: vec![Some(80.0), Some(400.0)],
                        },
                        BarSeries {
                            name: "nginx".into(),
                            values: vec![Some(70.0), None],
                        },
                    ],
                    reference: Some(100.0),
                    log_y: false,
                },
                Panel::Lines {
                    title: "route change".into(),
                    x_label: "routes".into(),
                    y_label: "p50 (ms)".into(),
                    log_x: true,
                    log_y: false,
                    series: vec![LineSeries {
                        name: "kube".into(),
                        points: vec![(100.0, 20.0), (5000.0, 35.0), (1000.0, 22.0)],
                    }],
                },
            ],
        }
    }

    /// Every opened element is closed (or self-closed) in order.
    fn well_formed(svg: &str) -> std::result::Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(i) = rest.find('<') {
            let end = rest[i..].find('>').ok_or("unterminated tag")? + i;
            let tag = &rest[i + 1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("</{name}> without opening"))?;
                if open != name {
                    return Err(format!("<{open}> closed by </{name}>"));
                }
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().ok_or("empty tag")?;
                stack.push(name.to_owned());
            }
        }
        if stack.is_empty() {
            Ok(())
        } else {
            Err(format!("unclosed: {stack:?}"))
        }
    }

    #[test]
    fn svg_is_well_formed_and_names_everything() {
        let svg = render(&sample()).unwrap();
        well_formed(&svg).unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        for s in [
            ">sluice<",
            ">nginx<",
            ">kube<",
            ">latency (µs)<",
            ">routes<",
            ">p50 (ms)<",
            ">p99<",
            "cargo xtask bench proxy --plot — 2026-12-07",
        ] {
            assert!(svg.contains(s), "{s:?} missing");
        }
        // Escaped, never raw markup from the data.
        assert!(svg.contains("Latency &lt;p99&gt; &amp; more"));
        assert!(!svg.contains("<p99>"));
        // Self-contained: no external references.
        assert!(!svg.contains("href"));
        assert!(!svg.contains("@import"));
        // Three bars (one value missing), three points.
        assert_eq!(svg.matches("</title></rect>").count(), 3);
        assert_eq!(svg.matches("<circle").count(), 3);
    }

    #[test]
    fn new_figures_say_what_ran_and_on_what() {
        let f = Figure::new("t");
        assert!(f.command.starts_with("cargo xtask "), "{}", f.command);
        assert_eq!(f.date.len(), 10);
        assert!(f.notes[0].starts_with("machine: "), "{:?}", f.notes);
        assert!(f.notes[0].contains("load average"), "{:?}", f.notes);
    }

    #[test]
    fn raw_figures_chart_next_to_them_without_overwriting() {
        let p = |s: &str| raw_chart_path(Path::new(s));
        assert_eq!(p("/t/bench/xdp-raw.json"), Path::new("/t/bench/xdp.svg"));
        assert_eq!(p("/t/runs.json"), Path::new("/t/runs-chart.svg"));
        assert_ne!(
            p("/t/-raw.json").with_extension("json"),
            Path::new("/t/-raw.json")
        );
    }

    #[test]
    fn long_legends_widen_the_document_not_the_plot() {
        let mut f = sample();
        assert_eq!(figure_width(&f), WIDTH);
        if let Panel::Lines { series, .. } = &mut f.panels[1] {
            series[0].name = "x".repeat(60);
        }
        let w = figure_width(&f);
        assert!(
            w >= WIDTH - RIGHT + 32.0 + text_width(&"x".repeat(60)),
            "{w}"
        );
        assert!(render(&f).unwrap().contains(&format!("width=\"{w:.0}\"")));
    }

    #[test]
    fn well_formedness_check_catches_breakage() {
        assert!(well_formed("<svg><g></svg>").is_err());
        assert!(well_formed("<svg><g/></svg>").is_ok());
    }

    #[test]
    fn bars_mismatched_with_categories_are_refused() {
        let mut f = sample();
        if let Panel::Bars { series, .. } = &mut f.panels[0] {
            series[0].values.pop();
        }
        let e = render(&f).unwrap_err().to_string();
        assert!(
            e.contains("series \"sluice\" has 1 values for 2 categories"),
            "{e}"
        );
    }

    #[test]
    fn taller_values_draw_taller_bars() {
        let svg = render(&sample()).unwrap();
        let height = |needle: &str| -> f64 {
            let line = svg.lines().find(|l| l.contains(needle)).unwrap();
            let h = line.split("height=\"").nth(1).unwrap();
            h[..h.find('"').unwrap()].parse().unwrap()
        };
        assert!(height("sluice p99") > height("sluice p50"));
        assert!(height("sluice p50") > height("nginx p50"));
    }

    #[test]
    fn log_bars_rise_from_the_low_end_and_keep_colours_by_name() {
        let mut f = sample();
        if let Panel::Bars { log_y, series, .. } = &mut f.panels[0] {
            *log_y = true;
            series.swap(0, 1);
        }
        let svg = render(&f).unwrap();
        well_formed(&svg).unwrap();
        let attr = |needle: &str, name: &str| -> String {
            let line = svg.lines().find(|l| l.contains(needle)).unwrap();
            let v = line.split(&format!(" {name}=\"")).nth(1).unwrap();
            v[..v.find('"').unwrap()].to_owned()
        };
        // 80 and 400 on a 10..1000 axis: both visible, the larger taller.
        let h = |n: &str| attr(n, "height").parse::<f64>().unwrap();
        assert!(h("sluice p50") > 0.0);
        assert!(h("sluice p99") > h("sluice p50"));
        // Colours follow the name, not the position in the panel: nginx
        // alone in a panel keeps its colour from the first panel.
        f.panels.push(Panel::Bars {
            title: "nginx only".into(),
            y_label: "x".into(),
            categories: vec!["q".into()],
            series: vec![BarSeries {
                name: "nginx".into(),
                values: vec![Some(1.0)],
            }],
            reference: None,
            log_y: false,
        });
        let svg = render(&f).unwrap();
        let colour = |needle: &str| -> String {
            let line = svg.lines().find(|l| l.contains(needle)).unwrap();
            let v = line.split(" fill=\"").nth(1).unwrap();
            v[..v.find('"').unwrap()].to_owned()
        };
        assert_eq!(colour("nginx q"), colour("nginx p50"));
        assert_ne!(colour("sluice p50"), colour("nginx p50"));
    }

    #[test]
    fn linear_scale_is_monotonic_and_covers_the_data() {
        let s = Scale::linear([3.0, 97.0, 41.0]);
        let ticks = s.ticks();
        assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{ticks:?}");
        assert_eq!(ticks[0], 0.0);
        assert!(*ticks.last().unwrap() >= 97.0);
        let mapped: Vec<f64> = [0.0, 3.0, 41.0, 97.0].map(|v| s.map(v)).to_vec();
        assert!(mapped.windows(2).all(|w| w[0] < w[1]), "{mapped:?}");
        assert!(mapped.iter().all(|t| (0.0..=1.0).contains(t)));
    }

    #[test]
    fn log_scale_is_monotonic_over_decades() {
        let s = Scale::log([100.0, 50_000.0]);
        assert_eq!(
            s,
            Scale::Log {
                min: 100.0,
                max: 100_000.0
            }
        );
        assert_eq!(s.ticks(), vec![100.0, 1_000.0, 10_000.0, 100_000.0]);
        let m: Vec<f64> = [100.0, 1_000.0, 5_000.0, 50_000.0]
            .map(|v| s.map(v))
            .to_vec();
        assert!(m.windows(2).all(|w| w[0] < w[1]), "{m:?}");
        // Equal ratios, equal distances.
        assert!(
            ((s.map(1_000.0) - s.map(100.0)) - (s.map(10_000.0) - s.map(1_000.0))).abs() < 1e-9
        );
    }

    #[test]
    fn numbers_and_dates_are_formatted() {
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(2.5), "2.5");
        assert_eq!(format_number(0.95), "0.95");
        assert_eq!(format_number(12_500.0), "12.5k");
        assert_eq!(format_number(1_000.0), "1k");
        assert_eq!(format_number(2_000_000.0), "2M");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_794), (2026, 12, 7));
    }

    #[test]
    fn figures_survive_json_and_replot() {
        let dir = std::env::temp_dir().join(format!("xtask-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("f.json");
        std::fs::write(&json, serde_json::to_string(&sample()).unwrap()).unwrap();
        let out = replot(&json, Some(&dir.join("out.svg"))).unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(svg, render(&sample()).unwrap());
        let back: Figure =
            serde_json::from_str(&serde_json::to_string(&sample()).unwrap()).unwrap();
        assert_eq!(back, sample());
    }
}
