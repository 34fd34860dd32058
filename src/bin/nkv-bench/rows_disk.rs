//! Rows 6 and 7, a million keys: load rate, memory, disk, restart; then
//! the longest stall while compacting.
//!
//! One store per side serves both rows: load it, measure RSS and disk,
//! restart it (row 6); overwrite every key once so that about half of the
//! data is dead, then compact while a reader and a writer (one request in
//! flight each) time every request (row 7). nkv runs first, then Redis, one
//! round each: loading a million keys three times per side would dominate
//! the run, and these numbers are far above the noise.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::args::Row;
use crate::loadgen::{Keys, Load, LoadResult};
use crate::nkvwire::NkvConn;
use crate::report::{Goal, Metric, RowReport, Status, Unit, Values};
use crate::resp::{Owned, RedisConn};
use crate::rows_kv::fill;
use crate::servers::{dir_bytes, Server};
use crate::sides::{self, Side};
use crate::wire::{key_name, value, OpKind};
use crate::Ctx;

/// Everything measured on one side.
#[derive(Debug, Default, Clone)]
struct Big {
    load_rate: f64,
    rss: f64,
    disk: f64,
    disk_allocated: f64,
    restart: Option<Duration>,
    compaction: Option<Duration>,
    stall_get: Option<u64>,
    stall_put: Option<u64>,
    compact_note: Option<String>,
}

/// Rows 6 and 7 (either or both, as selected).
pub fn rows(ctx: &mut Ctx, million: bool, compaction: bool) -> Vec<RowReport> {
    let keys = ctx.sizes.big_keys;
    let mut r6 = RowReport::new(
        Row::Million,
        format!(
            "{keys} keys: load (4 conns x 64 in flight), RSS, disk, restart; nkv --fsync never vs Redis AOF appendfsync no"
        ),
    );
    let mut r7 = RowReport::new(
        Row::Compaction,
        format!("longest stall while compacting {keys} keys, half of the data dead; 1 reader + 1 writer"),
    );
    if ctx.addr.is_some() {
        let why =
            "needs a fresh server the bench can restart and measure (not possible with --addr)";
        r6.status = Status::Skipped(why.into());
        r7.status = Status::Skipped(why.into());
    } else {
        let mut sides = vec![Side::Nkv];
        if ctx.redis {
            sides.push(Side::Redis);
        }
        let mut got = Vec::new();
        let mut failure = None;
        for side in sides {
            match measure(ctx, side, million, compaction) {
                Ok(b) => got.push(b),
                Err(e) => {
                    failure = Some(format!("{}: {e}", side.name()));
                    break;
                }
            }
        }
        let (n, r) = (got.first().cloned(), got.get(1).cloned());
        let metric =
            |id: &str, label: &str, unit, goal: Option<Goal>, f: &dyn Fn(&Big) -> Option<f64>| {
                let mut m = Metric::new(id, label, unit);
                m.goal = goal;
                let one = |b: &Option<Big>| {
                    b.as_ref()
                        .and_then(f)
                        .map(Values::One)
                        .into_iter()
                        .collect()
                };
                fill(&mut m, one(&n), one(&r), ctx.redis);
                m
            };
        if million {
            r6.metrics = vec![
                metric(
                    "million.load",
                    "load: keys/s",
                    Unit::PerSec,
                    Some(Goal::RatioAtLeast(1.0)),
                    &|b| Some(b.load_rate),
                ),
                metric(
                    "million.rss",
                    "RSS after load",
                    Unit::Bytes,
                    Some(Goal::RatioAtMost(1.0)),
                    &|b| Some(b.rss),
                ),
                metric(
                    "million.disk",
                    "disk after load (AOF for Redis)",
                    Unit::Bytes,
                    Some(Goal::RatioAtMost(1.2)),
                    &|b| Some(b.disk),
                ),
                metric(
                    "million.restart",
                    "restart until GET answers",
                    Unit::Nanos,
                    Some(Goal::AtMost(0.5e9)),
                    &|b| b.restart.map(|d| d.as_nanos() as f64),
                ),
            ];
            let alloc = |b: &Option<Big>| {
                b.as_ref().map_or("-".into(), |b| {
                    format!("{:.1} MiB", b.disk_allocated / 1048576.0)
                })
            };
            r6.notes.push(format!(
                "disk is apparent file sizes; allocated blocks: nkv {}, Redis {}",
                alloc(&n),
                alloc(&r)
            ));
        }
        if compaction {
            r7.metrics = vec![
                metric(
                    "compaction.stall_get",
                    "longest GET during compaction",
                    Unit::Nanos,
                    Some(Goal::AtMost(10e6)),
                    &|b| b.stall_get.map(|v| v as f64),
                ),
                metric(
                    "compaction.stall_put",
                    "longest PUT during compaction",
                    Unit::Nanos,
                    Some(Goal::AtMost(10e6)),
                    &|b| b.stall_put.map(|v| v as f64),
                ),
                metric(
                    "compaction.time",
                    "compaction time (Redis: BGREWRITEAOF)",
                    Unit::Nanos,
                    None,
                    &|b| b.compaction.map(|d| d.as_nanos() as f64),
                ),
            ];
            r7.notes.push(
                "automatic compaction off for the overwrite, so half the data is dead when asked \
                 (nkv --compaction-ratio=1; Redis auto-aof-rewrite-percentage 0)"
                    .into(),
            );
            for b in got.iter() {
                if let Some(note) = &b.compact_note {
                    r7.notes.push(note.clone());
                }
            }
        }
        if let Some(e) = failure {
            r6.status = Status::Failed(e.clone());
            r7.status = Status::Failed(e);
        }
    }
    let mut out = Vec::new();
    if million {
        out.push(r6);
    }
    if compaction {
        out.push(r7);
    }
    out
}

fn measure(ctx: &Ctx, side: Side, million: bool, compaction: bool) -> Result<Big, String> {
    let keys = ctx.sizes.big_keys;
    let mut server = match side {
        // Automatic compaction off (it needs dead bytes >= 100% of all
        // bytes, never reached by overwrites): otherwise it runs by itself
        // during the overwrite and COMPACT finds nothing dead. The initial
        // load, restart and the sizes of row 6 are unaffected: a first
        // load leaves nothing dead.
        Side::Nkv => Server::nkv(ctx, "never", &["--compaction-ratio=1"])?,
        Side::Redis => Server::redis(&["--appendonly", "yes", "--appendfsync", "no"])?,
    };
    let v0 = Arc::new(value(ctx.sizes.value_size, 0));
    ctx.progress(&format!(
        "million keys, {}: loading {keys} keys",
        side.name()
    ));
    let load = sides::preload(
        side,
        &server.target,
        keys,
        v0.clone(),
        ctx.sizes.client_threads,
    )?;
    check_loaded(&load, keys)?;
    let mut big = Big {
        load_rate: load.ops_per_sec(),
        ..Big::default()
    };
    if side == Side::Redis {
        wait_no_rewrite(&server)?;
    }
    big.rss = server.rss_bytes()? as f64;
    let files = match side {
        Side::Nkv => server.data_dir.clone(),
        Side::Redis => server.dir().join("appendonlydir"),
    };
    big.disk = dir_bytes(&files) as f64;
    big.disk_allocated = allocated_bytes(&files) as f64;
    if million {
        ctx.progress(&format!("million keys, {}: restart", side.name()));
        big.restart = Some(restart(&mut server, side, &key_name(keys - 1), &v0)?);
    }
    if compaction {
        if side == Side::Redis {
            // Likewise no automatic AOF rewrite during the overwrite (set
            // only now: row 6 measures Redis with its defaults).
            RedisConn::connect(&server.target)?.ok(&[
                b"CONFIG",
                b"SET",
                b"auto-aof-rewrite-percentage",
                b"0",
            ])?;
        }
        ctx.progress(&format!(
            "compaction, {}: overwriting {keys} keys",
            side.name()
        ));
        let v1 = Arc::new(value(ctx.sizes.value_size, 1));
        let load = sides::preload(side, &server.target, keys, v1, ctx.sizes.client_threads)?;
        check_loaded(&load, keys)?;
        if side == Side::Redis {
            wait_no_rewrite(&server)?;
        }
        compact_under_load(ctx, &server, side, &mut big)?;
    }
    server.check_alive()?;
    Ok(big)
}

fn check_loaded(load: &LoadResult, keys: u64) -> Result<(), String> {
    if load.ops != keys {
        return Err(format!("loaded {} of {keys} keys", load.ops));
    }
    Ok(())
}

/// Bytes of the blocks allocated to the files under `dir`.
fn allocated_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => allocated_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            _ => 0,
        })
        .sum()
}

/// Polls Redis until no AOF rewrite is running or scheduled.
fn wait_no_rewrite(server: &Server) -> Result<(), String> {
    let mut conn = RedisConn::connect(&server.target)?;
    let start = Instant::now();
    loop {
        let info = conn.info("persistence")?;
        let busy = info.iter().any(|(k, v)| {
            (k == "aof_rewrite_in_progress" || k == "aof_rewrite_scheduled") && v != "0"
        });
        if !busy {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(600) {
            return Err("the AOF rewrite did not finish within 10 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGTERM, wait for the exit, start again; the time from the start until
/// a GET of `key` answers `expected` (not LOADING, not missing).
fn restart(
    server: &mut Server,
    side: Side,
    key: &[u8],
    expected: &[u8],
) -> Result<Duration, String> {
    server.terminate(Duration::from_secs(120))?;
    server.respawn_nowait()?;
    let start = Instant::now();
    loop {
        let answer = match side {
            Side::Nkv => NkvConn::connect(&server.target).and_then(|mut c| c.get(key).map(Some)),
            Side::Redis => RedisConn::connect(&server.target).and_then(|mut c| {
                match c.command(&[b"GET", key])? {
                    Owned::Error(e) if e.starts_with("LOADING") => Ok(None),
                    Owned::Error(e) => Err(format!("Redis answered GET with -{e}")),
                    Owned::Bulk(v) => Ok(Some(v)),
                    other => Err(format!("Redis answered GET with {other:?}")),
                }
            }),
        };
        match answer {
            Ok(Some(Some(v))) if v == expected => return Ok(start.elapsed()),
            Ok(Some(_)) => return Err("after the restart the last key is missing or wrong".into()),
            Ok(None) | Err(_) => {}
        }
        server.check_alive()?;
        if start.elapsed() > Duration::from_secs(300) {
            return Err("the server did not answer within 5 minutes of its restart".into());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Compacts (nkv: COMPACT; Redis: BGREWRITEAOF until it is done) while a
/// reader and a writer run, and records their longest request.
fn compact_under_load(ctx: &Ctx, server: &Server, side: Side, big: &mut Big) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let one = |kind| Load {
        target: server.target.clone(),
        conns: 1,
        depth: 1,
        threads: 1,
        kind,
        keys: Keys::Random(ctx.sizes.big_keys),
        ops: u64::MAX,
        max_time: Duration::from_secs(3600),
        stop: Some(stop.clone()),
        value: Arc::new(value(ctx.sizes.value_size, 2)),
    };
    let (reader, writer) = (one(OpKind::Get), one(OpKind::Put));
    let vs = ctx.sizes.value_size;
    ctx.progress(&format!(
        "compaction, {}: compacting under load",
        side.name()
    ));
    let (compacted, r, w) = std::thread::scope(|scope| {
        let r = scope.spawn(|| sides::run_load(side, &reader, vs));
        let w = scope.spawn(|| sides::run_load(side, &writer, vs));
        // Let both connect and settle before the compaction starts.
        std::thread::sleep(Duration::from_millis(50));
        let compacted = compact(server, side);
        stop.store(true, Ordering::Relaxed);
        (
            compacted,
            r.join().unwrap_or_else(|_| Err("reader panicked".into())),
            w.join().unwrap_or_else(|_| Err("writer panicked".into())),
        )
    });
    let (took, note) = compacted?;
    let (r, w) = (r?, w?);
    big.compaction = Some(took);
    big.stall_get = r.latencies.last().copied();
    big.stall_put = w.latencies.last().copied();
    big.compact_note = Some(format!(
        "{}: {note}; {} GETs and {} PUTs during it",
        side.name(),
        r.ops,
        w.ops
    ));
    Ok(())
}

fn compact(server: &Server, side: Side) -> Result<(Duration, String), String> {
    match side {
        Side::Nkv => {
            let mut conn = NkvConn::connect(&server.target)?;
            let start = Instant::now();
            let (before, after) = conn.compact()?;
            Ok((
                start.elapsed(),
                format!(
                    "COMPACT: data files {:.1} MiB -> {:.1} MiB",
                    before as f64 / 1048576.0,
                    after as f64 / 1048576.0
                ),
            ))
        }
        Side::Redis => {
            let mut conn = RedisConn::connect(&server.target)?;
            let before = dir_bytes(&server.dir().join("appendonlydir"));
            let start = Instant::now();
            conn.ok(&[b"BGREWRITEAOF"])?;
            wait_no_rewrite(server)?;
            let took = start.elapsed();
            let after = dir_bytes(&server.dir().join("appendonlydir"));
            Ok((
                took,
                format!(
                    "BGREWRITEAOF: AOF {:.1} MiB -> {:.1} MiB",
                    before as f64 / 1048576.0,
                    after as f64 / 1048576.0
                ),
            ))
        }
    }
}
