//! Results: the metric model, the goals, and the two outputs (a table for
//! people, JSON for programs).
//!
//! Every metric carries both sides' numbers (the median over rounds, and
//! each round's), so the ratio is always against a baseline measured in
//! the same run: on a shared, noisy machine absolute numbers drift, ratios
//! much less.

use serde_json::{json, Value as Json};

use crate::args::Row;

/// What a number counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Operations (or updates, or keys) per second.
    PerSec,
    /// Nanoseconds (printed as µs, ms or s).
    Nanos,
    /// Bytes (printed as MiB).
    Bytes,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::PerSec => "per_second",
            Unit::Nanos => "nanoseconds",
            Unit::Bytes => "bytes",
        }
    }

    /// A number in this unit, for people.
    pub fn show(self, v: f64) -> String {
        match self {
            Unit::PerSec => {
                if v >= 1e6 {
                    format!("{:.2}M/s", v / 1e6)
                } else if v >= 1e3 {
                    format!("{:.1}k/s", v / 1e3)
                } else {
                    format!("{v:.0}/s")
                }
            }
            Unit::Nanos => {
                if v >= 1e9 {
                    format!("{:.2}s", v / 1e9)
                } else if v >= 1e6 {
                    format!("{:.2}ms", v / 1e6)
                } else if v >= 1e3 {
                    format!("{:.1}µs", v / 1e3)
                } else {
                    format!("{v:.0}ns")
                }
            }
            Unit::Bytes => format!("{:.1}MiB", v / (1024.0 * 1024.0)),
        }
    }
}

/// One number, or the latency triple p50 / p99 / p99.9.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Values {
    /// A single number.
    One(f64),
    /// p50, p99, p99.9.
    Three([f64; 3]),
}

impl Values {
    /// The number goals and ratios are about (p50 for a triple).
    pub fn main(&self) -> f64 {
        match self {
            Values::One(v) => *v,
            Values::Three(t) => t[0],
        }
    }

    fn show(&self, unit: Unit) -> String {
        match self {
            Values::One(v) => unit.show(*v),
            Values::Three(t) => t.map(|v| unit.show(v)).join("/"),
        }
    }

    fn json(&self) -> Json {
        match self {
            Values::One(v) => json!(v),
            Values::Three(t) => json!({"p50": t[0], "p99": t[1], "p99.9": t[2]}),
        }
    }
}

/// A target from the issue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// nkv / baseline at least this.
    RatioAtLeast(f64),
    /// nkv / baseline at most this.
    RatioAtMost(f64),
    /// nkv's own number at most this (in the metric's unit).
    AtMost(f64),
}

/// Whether a goal is met.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Met.
    Met,
    /// Missed by this fraction (0.2 = 20% short of, or over, the goal).
    Missed(f64),
    /// Cannot be told (no baseline, no number).
    Unknown(String),
}

/// One line of results.
#[derive(Debug, Clone)]
pub struct Metric {
    /// Stable identifier, e.g. `get.1x16.ops`.
    pub id: String,
    /// What it measures, for people.
    pub label: String,
    /// Unit of both sides.
    pub unit: Unit,
    /// nkv's number (median over rounds).
    pub nkv: Option<Values>,
    /// The baseline's number (median over rounds).
    pub base: Option<Values>,
    /// What the baseline is: "Redis", "echo floor", "raw protocol".
    pub base_name: String,
    /// Why there is no baseline number, when there is none.
    pub base_missing: Option<String>,
    /// The goal, if the issue sets one.
    pub goal: Option<Goal>,
    /// nkv's number per round.
    pub nkv_rounds: Vec<Values>,
    /// The baseline's number per round.
    pub base_rounds: Vec<Values>,
}

impl Metric {
    /// A metric against Redis with no numbers yet.
    pub fn new(id: impl Into<String>, label: impl Into<String>, unit: Unit) -> Metric {
        Metric {
            id: id.into(),
            label: label.into(),
            unit,
            nkv: None,
            base: None,
            base_name: "Redis".into(),
            base_missing: None,
            goal: None,
            nkv_rounds: Vec::new(),
            base_rounds: Vec::new(),
        }
    }

    /// With a goal.
    pub fn goal(mut self, goal: Goal) -> Metric {
        self.goal = Some(goal);
        self
    }

    /// nkv / baseline, per value of the triple or for the one number.
    pub fn ratio(&self) -> Option<Values> {
        match (self.nkv?, self.base?) {
            (Values::One(n), Values::One(b)) if b > 0.0 => Some(Values::One(n / b)),
            (Values::Three(n), Values::Three(b)) if b.iter().all(|v| *v > 0.0) => {
                Some(Values::Three([n[0] / b[0], n[1] / b[1], n[2] / b[2]]))
            }
            _ => None,
        }
    }

    /// The goal as text.
    pub fn goal_text(&self) -> String {
        match self.goal {
            None => "-".into(),
            Some(Goal::RatioAtLeast(g)) => format!(">= {g:.1}x {}", self.base_name),
            Some(Goal::RatioAtMost(g)) => format!("<= {g:.1}x {}", self.base_name),
            Some(Goal::AtMost(v)) => format!("<= {}", self.unit.show(v)),
        }
    }

    /// Whether the goal is met, and by how much it is missed.
    pub fn verdict(&self) -> Option<Verdict> {
        let goal = self.goal?;
        let unknown = |why: &str| Some(Verdict::Unknown(why.to_owned()));
        let Some(nkv) = self.nkv else {
            return unknown("no nkv number");
        };
        let (value, limit, at_least) = match goal {
            Goal::AtMost(v) => (nkv.main(), v, false),
            Goal::RatioAtLeast(g) | Goal::RatioAtMost(g) => {
                let Some(r) = self.ratio() else {
                    return unknown(self.base_missing.as_deref().unwrap_or("no baseline"));
                };
                (r.main(), g, matches!(goal, Goal::RatioAtLeast(_)))
            }
        };
        Some(if at_least {
            if value >= limit {
                Verdict::Met
            } else {
                Verdict::Missed(1.0 - value / limit)
            }
        } else if value <= limit {
            Verdict::Met
        } else {
            Verdict::Missed(value / limit - 1.0)
        })
    }

    fn verdict_text(&self) -> String {
        let at_least = matches!(self.goal, Some(Goal::RatioAtLeast(_)));
        match self.verdict() {
            None => String::new(),
            Some(Verdict::Met) => "yes".into(),
            Some(Verdict::Missed(by)) if at_least => format!("NO, {:.0}% short", by * 100.0),
            Some(Verdict::Missed(by)) => format!("NO, {:.0}% over", by * 100.0),
            Some(Verdict::Unknown(_)) => "n/a".into(),
        }
    }

    fn json(&self) -> Json {
        let verdict = self.verdict();
        json!({
            "id": self.id,
            "label": self.label,
            "unit": self.unit.name(),
            "nkv": self.nkv.map(|v| v.json()),
            "baseline": self.base.map(|v| v.json()),
            "baseline_name": self.base_name,
            "baseline_missing": self.base_missing,
            "ratio": self.ratio().map(|v| v.json()),
            "goal": self.goal.map(|g| json!({
                "text": self.goal_text(),
                "kind": match g {
                    Goal::RatioAtLeast(_) => "ratio_at_least",
                    Goal::RatioAtMost(_) => "ratio_at_most",
                    Goal::AtMost(_) => "at_most",
                },
                "value": match g { Goal::RatioAtLeast(v) | Goal::RatioAtMost(v) | Goal::AtMost(v) => v },
            })),
            "met": match &verdict {
                Some(Verdict::Met) => json!(true),
                Some(Verdict::Missed(_)) => json!(false),
                _ => Json::Null,
            },
            "missed_by": match &verdict {
                Some(Verdict::Missed(by)) => json!(by),
                _ => Json::Null,
            },
            "nkv_rounds": self.nkv_rounds.iter().map(Values::json).collect::<Vec<_>>(),
            "baseline_rounds": self.base_rounds.iter().map(Values::json).collect::<Vec<_>>(),
        })
    }
}

/// How a row ended.
#[derive(Debug, Clone)]
pub enum Status {
    /// Measured.
    Ok,
    /// Not run, and why.
    Skipped(String),
    /// Failed, and why (an error answer, a server that died, ...).
    Failed(String),
}

/// One row of the list.
#[derive(Debug, Clone)]
pub struct RowReport {
    /// Which row.
    pub row: Row,
    /// Its heading.
    pub title: String,
    /// How it ended.
    pub status: Status,
    /// Its numbers (possibly some, when it failed part-way).
    pub metrics: Vec<Metric>,
    /// Remarks printed under it.
    pub notes: Vec<String>,
}

impl RowReport {
    /// An empty report for `row`.
    pub fn new(row: Row, title: impl Into<String>) -> RowReport {
        RowReport {
            row,
            title: title.into(),
            status: Status::Ok,
            metrics: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// One line of the table.
enum Line {
    /// A row's heading.
    Title(String),
    /// A remark spanning the width.
    Note(String),
    /// A metric's cells.
    Cells([String; 6]),
}

/// The whole table, for people.
pub fn table(rows: &[RowReport]) -> String {
    let header = ["", "nkv", "baseline", "nkv/base", "goal", "met"].map(String::from);
    let mut lines = Vec::new();
    for row in rows {
        lines.push(Line::Title(format!(
            "{}. {}",
            row_number(row.row),
            row.title
        )));
        for m in &row.metrics {
            let ratio = m.ratio().map_or_else(
                || "-".to_string(),
                |r| match r {
                    Values::One(v) => format!("{v:.2}x"),
                    Values::Three(t) => t.map(|v| format!("{v:.2}")).join("/") + "x",
                },
            );
            let base = match (&m.base, &m.base_missing) {
                (Some(b), _) => format!("{}{}", b.show(m.unit), short_base(&m.base_name)),
                // The install hint is in the header note and the JSON.
                (None, Some(why)) => format!("({})", why.split(':').next().unwrap_or(why)),
                (None, None) => "-".into(),
            };
            lines.push(Line::Cells([
                format!("  {}", m.label),
                m.nkv.map_or("-".into(), |v| v.show(m.unit)),
                base,
                ratio,
                m.goal_text(),
                m.verdict_text(),
            ]));
        }
        match &row.status {
            Status::Ok => {}
            Status::Skipped(why) => lines.push(Line::Note(format!("  skipped: {why}"))),
            Status::Failed(why) => lines.push(Line::Note(format!("  FAILED: {why}"))),
        }
        for note in &row.notes {
            lines.push(Line::Note(format!("  note: {note}")));
        }
    }
    let mut width = header.clone().map(|h| h.chars().count());
    for line in &lines {
        if let Line::Cells(cells) = line {
            for (w, c) in width.iter_mut().zip(cells) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    // Text columns left-aligned, numbers right-aligned.
    let fmt = |cells: &[String; 6]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            let pad = " ".repeat(w.saturating_sub(c.chars().count()));
            if i > 0 {
                s.push_str("  ");
            }
            if i == 0 || i >= 4 {
                s.push_str(c);
                s.push_str(&pad);
            } else {
                s.push_str(&pad);
                s.push_str(c);
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = fmt(&header);
    out.push('\n');
    out.push_str(&"-".repeat(width.iter().sum::<usize>() + 2 * (width.len() - 1)));
    out.push('\n');
    for line in &lines {
        match line {
            Line::Title(t) | Line::Note(t) => out.push_str(t),
            Line::Cells(cells) => out.push_str(&fmt(cells)),
        }
        out.push('\n');
    }
    out
}

fn short_base(name: &str) -> &str {
    match name {
        "Redis" => "",
        "echo floor" => " (echo)",
        "raw protocol" => " (raw)",
        _ => "",
    }
}

/// The 1-based number of a row, as in the issue.
pub fn row_number(row: Row) -> usize {
    Row::ALL.iter().position(|r| *r == row).map_or(0, |i| i + 1)
}

/// How many goals are met, missed, and cannot be told.
pub fn goal_counts(rows: &[RowReport]) -> (usize, usize, usize) {
    let (mut met, mut missed, mut unknown) = (0, 0, 0);
    for m in rows.iter().flat_map(|r| &r.metrics) {
        match m.verdict() {
            Some(Verdict::Met) => met += 1,
            Some(Verdict::Missed(_)) => missed += 1,
            Some(Verdict::Unknown(_)) => unknown += 1,
            None => {}
        }
    }
    (met, missed, unknown)
}

/// The rows as JSON.
pub fn rows_json(rows: &[RowReport]) -> Json {
    Json::Array(
        rows.iter()
            .map(|r| {
                let (status, reason) = match &r.status {
                    Status::Ok => ("ok", None),
                    Status::Skipped(why) => ("skipped", Some(why.clone())),
                    Status::Failed(why) => ("failed", Some(why.clone())),
                };
                json!({
                    "row": r.row.name(),
                    "number": row_number(r.row),
                    "title": r.title,
                    "status": status,
                    "reason": reason,
                    "metrics": r.metrics.iter().map(Metric::json).collect::<Vec<_>>(),
                    "notes": r.notes,
                })
            })
            .collect(),
    )
}
