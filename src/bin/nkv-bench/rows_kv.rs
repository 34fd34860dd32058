//! Rows 1 to 3: GET and PUT at four shapes (connections x requests in
//! flight), and PUT with an fsync per write at 1, 16 and 64 clients.

use std::sync::Arc;

use crate::args::Row;
use crate::loadgen::{Keys, Load, LoadResult};
use crate::report::{Goal, Metric, RowReport, Unit, Values};
use crate::sides::{self, NkvServer, Side, REDIS_MISSING};
use crate::stats;
use crate::svg::Series;
use crate::wire::{value, OpKind, Target};
use crate::Ctx;

/// The shapes of rows 1 and 2: (connections, requests in flight each).
const SHAPES: [(usize, usize); 4] = [(1, 1), (1, 16), (50, 1), (50, 16)];

/// Row 1 or 2: GET or PUT, in-memory servers.
pub fn get_put(ctx: &mut Ctx, kind: OpKind) -> RowReport {
    let (row, name) = match kind {
        OpKind::Get => (Row::Get, "GET"),
        OpKind::Put => (Row::Put, "PUT (Redis SET)"),
    };
    let title = format!(
        "{name}, {}-byte values, {} keys; nkv --fsync never vs Redis without persistence",
        ctx.sizes.value_size, ctx.sizes.keys
    );
    let mut report = RowReport::new(row, title);
    let r = (|| {
        let nkv = NkvServer::start(ctx, "never", &[])?;
        let redis = sides::start_redis(ctx, &["--appendonly", "no"])?;
        let targets = Targets {
            nkv: nkv.target().clone(),
            redis: redis.as_ref().map(|r| r.target.clone()),
        };
        let v = Arc::new(value(ctx.sizes.value_size, 0));
        ctx.progress(&format!(
            "{}: preloading {} keys",
            row.name(),
            ctx.sizes.keys
        ));
        for side in targets.sides() {
            sides::preload(
                side,
                targets.of(side),
                ctx.sizes.keys,
                v.clone(),
                ctx.sizes.client_threads,
            )?;
        }
        for (conns, depth) in SHAPES {
            let label = format!(
                "{} {conns} conn{} x {depth} in flight",
                kind_name(kind),
                plural(conns)
            );
            let id = format!("{}.{conns}x{depth}", row.name());
            let results = measure_rounds(ctx, &targets, kind, conns, depth, &label)?;
            push_throughput(
                &mut report,
                &id,
                &label,
                &results,
                Goal::RatioAtLeast(1.0),
                ctx.redis,
            );
            if (conns, depth) == (1, 1) {
                ctx.add_panel(&label, curve_series(&results));
            }
        }
        Ok::<_, String>(())
    })();
    if let Err(e) = r {
        report.status = crate::report::Status::Failed(e);
    }
    report
}

/// Row 3: PUT answered only after an fsync, at 1, 16 and 64 clients.
pub fn durable(ctx: &mut Ctx) -> RowReport {
    let title = format!(
        "PUT with durability, {}-byte values: nkv --fsync always vs Redis appendfsync always",
        ctx.sizes.value_size
    );
    let mut report = RowReport::new(Row::PutDurable, title);
    if ctx.addr.is_some() {
        report.status = crate::report::Status::Skipped(
            "needs a server started with --fsync always (not possible with --addr)".into(),
        );
        return report;
    }
    let r = (|| {
        let nkv = NkvServer::start(ctx, "always", &[])?;
        let redis = sides::start_redis(ctx, &["--appendonly", "yes", "--appendfsync", "always"])?;
        let targets = Targets {
            nkv: nkv.target().clone(),
            redis: redis.as_ref().map(|r| r.target.clone()),
        };
        for clients in [1usize, 16, 64] {
            let label = format!("PUT+fsync {clients} client{}", plural(clients));
            let id = format!("put-durable.{clients}");
            let results = measure_rounds(ctx, &targets, OpKind::Put, clients, 1, &label)?;
            let goal = if clients == 1 { 1.0 } else { 1.3 };
            push_throughput(
                &mut report,
                &id,
                &label,
                &results,
                Goal::RatioAtLeast(goal),
                ctx.redis,
            );
        }
        Ok::<_, String>(())
    })();
    if let Err(e) = r {
        report.status = crate::report::Status::Failed(e);
    }
    report
}

/// Both sides' sockets.
pub struct Targets {
    /// nkv.
    pub nkv: Target,
    /// Redis, when installed.
    pub redis: Option<Target>,
}

impl Targets {
    /// The sides present.
    pub fn sides(&self) -> Vec<Side> {
        let mut v = vec![Side::Nkv];
        if self.redis.is_some() {
            v.push(Side::Redis);
        }
        v
    }

    /// One side's socket.
    pub fn of(&self, side: Side) -> &Target {
        match side {
            Side::Nkv => &self.nkv,
            Side::Redis => self.redis.as_ref().expect("only asked when present"),
        }
    }
}

/// Alternating rounds of one shape on both sides.
pub fn measure_rounds(
    ctx: &Ctx,
    targets: &Targets,
    kind: OpKind,
    conns: usize,
    depth: usize,
    label: &str,
) -> Result<(Vec<LoadResult>, Vec<LoadResult>), String> {
    let value = Arc::new(value(ctx.sizes.value_size, 1));
    sides::alternate(ctx.sizes.rounds, targets.redis.is_some(), |side, round| {
        let load = Load {
            target: targets.of(side).clone(),
            conns,
            depth,
            threads: ctx.sizes.client_threads,
            kind,
            keys: Keys::Random(ctx.sizes.keys),
            ops: ctx.sizes.ops,
            max_time: ctx.sizes.round_time,
            stop: None,
            value: value.clone(),
        };
        let r = sides::run_load(side, &load, ctx.sizes.value_size)
            .map_err(|e| format!("{label}, {}: {e}", side.name()))?;
        ctx.progress(&format!(
            "{label}: round {}/{} {}: {:.0} ops/s (load generator {:.0}% busy)",
            round + 1,
            ctx.sizes.rounds,
            side.name(),
            r.ops_per_sec(),
            r.client_busy() * 100.0
        ));
        Ok(r)
    })
}

/// Adds the ops/s metric (with `goal`) and the latency metric of one shape.
pub fn push_throughput(
    report: &mut RowReport,
    id: &str,
    label: &str,
    (nkv, redis): &(Vec<LoadResult>, Vec<LoadResult>),
    goal: Goal,
    redis_installed: bool,
) {
    let ops = |rs: &[LoadResult]| {
        rs.iter()
            .map(|r| Values::One(r.ops_per_sec()))
            .collect::<Vec<_>>()
    };
    let lat = |rs: &[LoadResult]| {
        rs.iter()
            .filter_map(|r| stats::percentiles(&r.latencies).map(Values::Three))
            .collect::<Vec<_>>()
    };
    // Flag a side whose generator was near a whole core per thread: its
    // number may be the client's limit rather than the server's.
    for (side, rs) in [("nkv", nkv), ("Redis", redis)] {
        let busy = rs.iter().map(LoadResult::client_busy).fold(0.0, f64::max);
        if busy > 0.85 {
            report.notes.push(format!(
                "{label}, {side} side: the load generator was {:.0}% busy, it may be the limit",
                busy * 100.0
            ));
        }
    }
    let mut m =
        Metric::new(format!("{id}.ops"), format!("{label}: ops/s"), Unit::PerSec).goal(goal);
    fill(&mut m, ops(nkv), ops(redis), redis_installed);
    report.metrics.push(m);
    let mut m = Metric::new(
        format!("{id}.latency"),
        "  latency p50/p99/p99.9",
        Unit::Nanos,
    );
    fill(&mut m, lat(nkv), lat(redis), redis_installed);
    report.metrics.push(m);
}

/// Sets both sides' per-round values and medians; without Redis, says so.
pub fn fill(m: &mut Metric, nkv: Vec<Values>, base: Vec<Values>, redis_installed: bool) {
    m.nkv = median_of(&nkv);
    m.base = median_of(&base);
    m.nkv_rounds = nkv;
    m.base_rounds = base;
    if !redis_installed && m.base_name == "Redis" {
        m.base_missing = Some(REDIS_MISSING.into());
    }
}

/// The median of per-round values (element-wise for triples).
pub fn median_of(values: &[Values]) -> Option<Values> {
    match values.first()? {
        Values::One(_) => {
            stats::median(&values.iter().map(Values::main).collect::<Vec<_>>()).map(Values::One)
        }
        Values::Three(_) => {
            let t: Vec<[f64; 3]> = values
                .iter()
                .filter_map(|v| match v {
                    Values::Three(t) => Some(*t),
                    Values::One(_) => None,
                })
                .collect();
            stats::median3(&t).map(Values::Three)
        }
    }
}

/// CDF series of every round pooled, per side.
fn curve_series((nkv, redis): &(Vec<LoadResult>, Vec<LoadResult>)) -> Vec<Series> {
    let pooled = |rs: &[LoadResult]| {
        let mut all: Vec<u64> = rs
            .iter()
            .flat_map(|r| r.latencies.iter().copied())
            .collect();
        all.sort_unstable();
        stats::cdf_points(&all)
    };
    let mut v = vec![Series::new("nkv", pooled(nkv))];
    if !redis.is_empty() {
        v.push(Series::new("Redis", pooled(redis)));
    }
    v
}

fn kind_name(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Get => "GET",
        OpKind::Put => "PUT",
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
