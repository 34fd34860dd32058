//! A hand-written SVG of latency distributions: one panel per row of
//! interest, each with the CDF of nkv, Redis and the echo floor on a log
//! time axis. The fraction axis is stretched toward the tail (evenly
//! spaced 0, 0.9, 0.99, 0.999, 0.9999), so p99 and p99.9 are as readable
//! as the median. No plotting dependency: a few hundred points per curve
//! are a polyline each.

use std::fmt::Write as _;

/// One curve: `(quantile, nanoseconds)` points in quantile order.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// The CDF.
    pub points: Vec<(f64, u64)>,
}

impl Series {
    /// A named curve.
    pub fn new(name: &str, points: Vec<(f64, u64)>) -> Series {
        Series {
            name: name.to_owned(),
            points,
        }
    }
}

/// One plot.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Heading.
    pub title: String,
    /// Its curves.
    pub series: Vec<Series>,
}

const PANEL_W: f64 = 520.0;
const PANEL_H: f64 = 320.0;
const MARGIN_L: f64 = 50.0;
const MARGIN_R: f64 = 15.0;
const MARGIN_T: f64 = 30.0;
const MARGIN_B: f64 = 45.0;
const COLUMNS: usize = 2;

fn color(name: &str) -> &'static str {
    match name {
        "nkv" => "#1f6fb4",
        "Redis" => "#c62828",
        _ => "#2e7d32",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn time_label(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{}s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{}ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{}µs", ns / 1e3)
    } else {
        format!("{ns}ns")
    }
}

/// Decades of `1 - q` the fraction axis shows (down to 0.9999).
const TAIL_DECADES: f64 = 4.0;

/// Position of fraction `q` on the stretched axis: `-log10(1 - q)`, so
/// 0.9 -> 1, 0.99 -> 2, 0.999 -> 3; capped at [`TAIL_DECADES`].
fn tail_scale(q: f64) -> f64 {
    (-(1.0 - q).max(1e-12).log10()).clamp(0.0, TAIL_DECADES)
}

/// The whole picture: panels in a grid, a caption on top.
pub fn render(panels: &[Panel], caption: &str) -> String {
    let rows = panels.len().div_ceil(COLUMNS).max(1);
    let width = PANEL_W * COLUMNS as f64;
    let height = PANEL_H * rows as f64 + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="13">{}</text>"#,
        escape(caption)
    );
    for (i, panel) in panels.iter().enumerate() {
        let x0 = (i % COLUMNS) as f64 * PANEL_W;
        let y0 = 40.0 + (i / COLUMNS) as f64 * PANEL_H;
        draw_panel(&mut s, panel, x0, y0);
    }
    s.push_str("</svg>\n");
    s
}

fn draw_panel(s: &mut String, panel: &Panel, x0: f64, y0: f64) {
    let (pl, pt) = (x0 + MARGIN_L, y0 + MARGIN_T);
    let (pw, ph) = (PANEL_W - MARGIN_L - MARGIN_R, PANEL_H - MARGIN_T - MARGIN_B);
    let values = panel
        .series
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1.max(1) as f64));
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(0.0, f64::max);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" font-size="12" font-weight="bold">{}</text>"#,
        pl,
        y0 + 18.0,
        escape(&panel.title)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{pl}" y="{pt}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
    );
    if !lo.is_finite() || hi <= 0.0 {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">no data</text>"#,
            pl + 10.0,
            pt + 20.0
        );
        return;
    }
    // Whole decades around the data.
    let (dlo, dhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let x = |ns: f64| pl + (ns.max(1.0).log10() - dlo) / (dhi - dlo) * pw;
    let y = |q: f64| pt + (1.0 - tail_scale(q) / TAIL_DECADES) * ph;
    let mut d = dlo;
    while d <= dhi + 1e-9 {
        let ns = 10f64.powf(d);
        let xi = x(ns);
        let _ = writeln!(
            s,
            r##"<line x1="{xi:.1}" y1="{pt}" x2="{xi:.1}" y2="{}" stroke="#ddd"/><text x="{xi:.1}" y="{}" text-anchor="middle">{}</text>"##,
            pt + ph,
            pt + ph + 14.0,
            time_label(ns)
        );
        d += 1.0;
    }
    for q in [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999] {
        let yi = y(q);
        let _ = writeln!(
            s,
            r##"<line x1="{pl}" y1="{yi:.1}" x2="{}" y2="{yi:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{q}</text>"##,
            pl + pw,
            pl - 4.0,
            yi + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">latency (log scale); y: fraction at or below (tail stretched)</text>"#,
        pl + pw / 2.0,
        pt + ph + 32.0
    );
    for (k, series) in panel.series.iter().enumerate() {
        let pts: Vec<String> = series
            .points
            .iter()
            .map(|(q, ns)| format!("{:.1},{:.1}", x(*ns as f64), y(*q)))
            .collect();
        let c = color(&series.name);
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="1.6" points="{}"/>"#,
            pts.join(" ")
        );
        let ly = pt + ph - 12.0 - 14.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            pl + pw - 120.0,
            pl + pw - 100.0,
            pl + pw - 95.0,
            ly + 4.0,
            escape(&series.name)
        );
    }
}
