//! Rows 4 and 5: notification latency (closed loop, 1 and 100
//! subscribers) and fan-out (pipelined updates to 1,000 subscribers), nkv
//! SUB against Redis SUBSCRIBE. The driver is in [`crate::pubsub`].

use crate::args::Row;
use crate::pubsub::{self, Mode, Outcome, Plan};
use crate::report::{Goal, Metric, RowReport, Status, Unit, Values};
use crate::rows_kv::{fill, median_of};
use crate::sides::{self, NkvServer};
use crate::stats;
use crate::svg::Series;
use crate::Ctx;

/// Row 4: closed-loop notification latency at 1 and 100 subscribers.
pub fn notify(ctx: &mut Ctx) -> RowReport {
    let mut report = RowReport::new(
        Row::Notify,
        format!(
            "notification latency, closed loop, {} updates per side; nkv SUB vs Redis SUBSCRIBE",
            ctx.sizes.updates
        ),
    );
    let r = (|| {
        let nkv = NkvServer::start(ctx, "never", &[])?;
        let redis = sides::start_redis(ctx, &["--appendonly", "no"])?;
        let targets = [
            Some(nkv.target().clone()),
            redis.as_ref().map(|r| r.target.clone()),
        ];
        for subs in [1usize, 100] {
            let label = format!(
                "notify {subs} subscriber{}",
                if subs == 1 { "" } else { "s" }
            );
            let rounds = ctx.sizes.rounds;
            let per_round = ctx.sizes.updates.div_ceil(rounds as u64);
            let (n, r) = sides::alternate(rounds, targets[1].is_some(), |side, round| {
                let target = targets[side as usize].as_ref().expect("side present");
                let out = pubsub::run(&Plan {
                    side,
                    target,
                    subs,
                    mode: Mode::Closed { updates: per_round },
                    value_size: ctx.sizes.value_size,
                    client_threads: ctx.sizes.client_threads,
                    server_pid: None,
                })
                .map_err(|e| format!("{label}, {}: {e}", side.name()))?;
                ctx.progress(&format!(
                    "{label}: round {}/{rounds} {}: p50 {:.1} µs",
                    round + 1,
                    side.name(),
                    stats::quantile(&out.latencies, 0.5).unwrap_or(0) as f64 / 1e3
                ));
                Ok(out.latencies)
            })?;
            let pooled = |rounds: &[Vec<u64>]| {
                let mut all: Vec<u64> = rounds.iter().flatten().copied().collect();
                all.sort_unstable();
                all
            };
            let per = |rs: &[Vec<u64>]| {
                rs.iter()
                    .filter_map(|l| stats::percentiles(l).map(Values::Three))
                    .collect::<Vec<_>>()
            };
            let (pn, pr) = (pooled(&n), pooled(&r));
            let id = format!("notify.{subs}");
            let mut m = Metric::new(
                format!("{id}.latency"),
                format!("{label}: latency p50/p99/p99.9"),
                Unit::Nanos,
            )
            .goal(Goal::RatioAtMost(1.0));
            fill(&mut m, per(&n), per(&r), ctx.redis);
            // Over every update of every round, not a median of rounds.
            m.nkv = stats::percentiles(&pn).map(Values::Three);
            m.base = stats::percentiles(&pr).map(Values::Three);
            report.metrics.push(m);
            let mut m = Metric::new(
                format!("{id}.vs_echo"),
                format!("{label}: latency vs echo floor"),
                Unit::Nanos,
            )
            .goal(Goal::RatioAtMost(2.0));
            m.base_name = "echo floor".into();
            m.nkv = stats::percentiles(&pn).map(Values::Three);
            match &ctx.echo {
                Some(floor) => m.base = Some(Values::Three(floor.percentiles)),
                None => m.base_missing = Some("no echo floor measured".into()),
            }
            report.metrics.push(m);
            let mut series = vec![Series::new("nkv", stats::cdf_points(&pn))];
            if !pr.is_empty() {
                series.push(Series::new("Redis", stats::cdf_points(&pr)));
            }
            ctx.add_panel(&label, series);
        }
        Ok::<_, String>(())
    })();
    if let Err(e) = r {
        report.status = Status::Failed(e);
    }
    report
}

/// Row 5: fan-out of pipelined updates of one key to many subscribers.
pub fn fanout(ctx: &mut Ctx) -> RowReport {
    let subs = ctx.sizes.subscribers;
    let updates = ctx.sizes.fanout_updates;
    let mut report = RowReport::new(
        Row::Fanout,
        format!("fan-out: {updates} updates of one key, pipelined, to {subs} subscribers"),
    );
    if ctx.addr.is_some() {
        report.status = Status::Skipped(
            "needs a server started with --max-connections 2000 whose CPU time the bench can read"
                .into(),
        );
        return report;
    }
    let r = (|| {
        let mut nkv = NkvServer::start(ctx, "never", &["--max-connections=2000"])?;
        let nkv_pid = nkv.own().and_then(|s| s.pid());
        let redis = sides::start_redis(ctx, &["--appendonly", "no", "--maxclients", "4000"])?;
        let redis_pid = redis.as_ref().and_then(|s| s.pid());
        let targets = [
            Some(nkv.target().clone()),
            redis.as_ref().map(|r| r.target.clone()),
        ];
        let (n, r) = sides::alternate(ctx.sizes.rounds, redis.is_some(), |side, round| {
            let target = targets[side as usize].as_ref().expect("side present");
            let pid = [nkv_pid, redis_pid][side as usize];
            let out = pubsub::run(&Plan {
                side,
                target,
                subs,
                mode: Mode::Fanout { updates },
                value_size: ctx.sizes.value_size,
                client_threads: ctx.sizes.client_threads,
                server_pid: pid,
            })
            .map_err(|e| format!("fan-out, {}: {e}", side.name()))?;
            ctx.progress(&format!(
                "fan-out: round {}/{} {}: {:.0} updates/s, {:.1} messages per subscriber, \
                 load generator {:.0}% busy",
                round + 1,
                ctx.sizes.rounds,
                side.name(),
                updates as f64 / out.elapsed.as_secs_f64(),
                out.delivered as f64 / subs as f64,
                out.client_busy * 100.0
            ));
            Ok(out)
        })?;
        let rate = |rs: &[Outcome]| {
            rs.iter()
                .map(|o| Values::One(updates as f64 / o.elapsed.as_secs_f64().max(1e-9)))
                .collect::<Vec<_>>()
        };
        let cpu = |rs: &[Outcome]| {
            rs.iter()
                .filter_map(|o| o.server_cpu.map(|c| Values::One(c * 1e9 / updates as f64)))
                .collect::<Vec<_>>()
        };
        let mut m = Metric::new(
            "fanout.rate",
            format!("fan-out to {subs}: updates/s"),
            Unit::PerSec,
        )
        .goal(Goal::RatioAtLeast(1.0));
        fill(&mut m, rate(&n), rate(&r), ctx.redis);
        report.metrics.push(m);
        let mut m = Metric::new("fanout.cpu", "  server CPU per update", Unit::Nanos)
            .goal(Goal::RatioAtMost(1.0));
        fill(&mut m, cpu(&n), cpu(&r), ctx.redis);
        report.metrics.push(m);
        let per_sub = |rs: &[Outcome]| {
            median_of(
                &rs.iter()
                    .map(|o| Values::One(o.delivered as f64 / subs as f64))
                    .collect::<Vec<_>>(),
            )
            .map_or(0.0, |v| v.main())
        };
        report.notes.push(format!(
            "messages received per subscriber: nkv {:.1} (conflated), Redis {}",
            per_sub(&n),
            if r.is_empty() {
                "-".into()
            } else {
                format!("{:.1}", per_sub(&r))
            }
        ));
        report.notes.push(if cpu(&n).is_empty() {
            "CPU per update: the run was too short for /proc's 10 ms ticks (need 50 ms)".into()
        } else {
            "CPU per update is utime+stime of the server process over the row (10 ms ticks)".into()
        });
        for (side, rs) in [("nkv", &n), ("Redis", &r)] {
            let busy = rs.iter().map(|o| o.client_busy).fold(0.0, f64::max);
            if busy > 0.85 {
                report.notes.push(format!(
                    "{side} side: the subscribers' client was {:.0}% busy, it may be the limit",
                    busy * 100.0
                ));
            }
        }
        Ok::<_, String>(())
    })();
    if let Err(e) = r {
        report.status = Status::Failed(e);
    }
    report
}
