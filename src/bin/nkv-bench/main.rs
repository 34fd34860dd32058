//! `nkv-bench`: nkv against Redis, side by side, in the same run.
//!
//! The bench starts its own servers (nkv-server and redis-server, on Unix
//! sockets in temporary directories), drives both with its own load
//! generator (RESP and nkv's protocol spoken by the bench itself, never
//! redis-benchmark), and prints, per row, both numbers, their ratio, the
//! issue's goal and whether it is met. Ratios against a baseline measured
//! in the same run, in alternating rounds, are what stays meaningful on a
//! shared, noisy machine. See BENCHMARKS.md for how to read the output.
//!
//! Modules, one job each: [`args`] (flags and sizes), [`wire`] (the
//! protocol seam, targets, keys), [`nkvwire`] and [`resp`] (the two
//! protocols), [`loadgen`] (the load generator), [`pubsub`] (the
//! notification driver), [`servers`] (start, stop, RSS, CPU, cleanup),
//! [`sides`] (both sides of a row, alternating rounds), the rows
//! ([`rows_kv`], [`rows_notify`], [`rows_disk`], [`rows_libnkv`],
//! [`echo`]), [`report`] (table and JSON), [`svg`] and [`machine`].

mod args;
mod echo;
mod loadgen;
mod machine;
mod nkvwire;
mod pubsub;
mod report;
mod resp;
mod rows_disk;
mod rows_kv;
mod rows_libnkv;
mod rows_notify;
mod servers;
mod sides;
mod stats;
mod svg;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use serde_json::json;

use args::{Args, Row, Sizes};
use report::{RowReport, Status};
use sides::REDIS_MISSING;
use svg::{Panel, Series};
use wire::{OpKind, Target};

/// What every row needs: sizes, where the servers are, what was measured
/// so far that other rows use (the echo floor), and the plot panels.
pub struct Ctx {
    /// Sizes of every row.
    pub sizes: Sizes,
    /// The nkv-server binary.
    pub server_bin: PathBuf,
    /// `--server-arg`: extra flags for every nkv-server started.
    pub server_args: Vec<String>,
    /// `--lib-dir`: where libnkv.so is, if not next to the bench.
    pub lib_dir: Option<PathBuf>,
    /// `--addr`: an nkv server already running.
    pub addr: Option<Target>,
    /// Whether redis-server is on PATH.
    pub redis: bool,
    /// The echo floor, once row 9 ran.
    pub echo: Option<echo::Floor>,
    /// Latency plots collected by the rows.
    pub panels: Vec<Panel>,
    started: Instant,
}

impl Ctx {
    /// A progress line on stderr (stdout is for the table or the JSON).
    pub fn progress(&self, message: &str) {
        wait_if_interrupted();
        eprintln!("[{:6.1}s] {message}", self.started.elapsed().as_secs_f64());
    }

    /// Adds a plot panel (the echo floor is added to every panel at the end).
    pub fn add_panel(&mut self, title: &str, series: Vec<Series>) {
        self.panels.push(Panel {
            title: title.to_owned(),
            series,
        });
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(message) => {
            wait_if_interrupted();
            servers::cleanup_all();
            eprintln!("nkv-bench: {message}");
            ExitCode::from(2)
        }
    }
}

/// Kills the servers and removes the temporary directories on SIGINT or
/// SIGTERM, then exits: `Drop` does not run when a signal ends a process.
fn install_signal_cleanup() -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    // Registered here, before any server starts, so no signal is missed.
    let (mut int, mut term) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })
        .map_err(|e| format!("signal handlers: {e}"))?;
    std::thread::spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        servers::set_interrupted();
        eprintln!("nkv-bench: interrupted; stopping the servers and removing temporary files");
        servers::cleanup_all();
        std::process::exit(130);
    });
    Ok(())
}

/// Once interrupted, the signal thread cleans up and exits the process;
/// meanwhile the rows see their servers die, and must not report that.
fn wait_if_interrupted() {
    while servers::interrupted() {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn run(args: Args) -> Result<ExitCode, String> {
    let started = Instant::now();
    let sizes = args.sizes()?;
    let rows = args.rows()?;
    let addr = args.addr.as_deref().map(Target::parse).transpose()?;
    let server_bin = match &args.server_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this executable: {e}"))?
            .with_file_name("nkv-server"),
    };
    if addr.is_none() && !server_bin.is_file() {
        return Err(format!(
            "no nkv-server at {} (build it: cargo build --release, or pass --server-bin)",
            server_bin.display()
        ));
    }
    install_signal_cleanup()?;
    let nofile = servers::raise_nofile();
    let redis = servers::on_path("redis-server");
    let machine = machine::Machine::probe(redis);
    eprint!("{}", machine.lines());
    let mut ctx = Ctx {
        sizes,
        server_bin,
        server_args: args.server_arg.clone(),
        lib_dir: args.lib_dir.clone(),
        addr,
        redis,
        echo: None,
        panels: Vec::new(),
        started,
    };
    let mut notes = Vec::new();
    if !redis {
        notes.push(format!(
            "{REDIS_MISSING}; only the nkv side was measured, no ratios"
        ));
    }
    if (nofile as usize) < ctx.sizes.subscribers * 2 + 64 && rows.contains(&Row::Fanout) {
        notes.push(format!(
            "open-file limit {nofile} is low for {} fan-out subscribers",
            ctx.sizes.subscribers
        ));
    }

    let mut reports: Vec<RowReport> = Vec::new();
    // The echo floor first: the notification goal is relative to it.
    if rows.contains(&Row::Echo) || rows.contains(&Row::Notify) {
        reports.push(echo::row(&mut ctx));
    }
    for row in &rows {
        match row {
            Row::Get => reports.push(rows_kv::get_put(&mut ctx, OpKind::Get)),
            Row::Put => reports.push(rows_kv::get_put(&mut ctx, OpKind::Put)),
            Row::PutDurable => reports.push(rows_kv::durable(&mut ctx)),
            Row::Notify => reports.push(rows_notify::notify(&mut ctx)),
            Row::Fanout => reports.push(rows_notify::fanout(&mut ctx)),
            Row::Million => {
                let compaction = rows.contains(&Row::Compaction);
                reports.extend(rows_disk::rows(&mut ctx, true, compaction));
            }
            Row::Compaction if !rows.contains(&Row::Million) => {
                reports.extend(rows_disk::rows(&mut ctx, false, true));
            }
            Row::Compaction | Row::Echo => {}
            Row::Libnkv => reports.push(rows_libnkv::row(&mut ctx)),
        }
    }
    wait_if_interrupted();
    reports.sort_by_key(|r| r.row);
    for r in &reports {
        if let Status::Failed(e) = &r.status {
            ctx.progress(&format!("row {} FAILED: {e}", r.row.name()));
        }
    }

    let wall = started.elapsed();
    let (met, missed, unknown) = report::goal_counts(&reports);
    let mut text = String::new();
    text.push_str(&machine.lines());
    for n in &notes {
        text.push_str(&format!("note: {n}\n"));
    }
    text.push('\n');
    text.push_str(&report::table(&reports));
    text.push_str(&format!(
        "\ngoals: {met} met, {missed} missed{}; wall time {:.1}s\n\
         ratios are nkv / baseline, medians of {} alternating rounds; see BENCHMARKS.md\n",
        if unknown > 0 {
            format!(", {unknown} not measurable")
        } else {
            String::new()
        },
        wall.as_secs_f64(),
        ctx.sizes.rounds
    ));
    if args.json {
        eprint!("{text}");
        let doc = json!({
            "machine": machine.json(),
            "short": args.short,
            "wall_seconds": wall.as_secs_f64(),
            "sizes": {
                "rounds": ctx.sizes.rounds,
                "ops": ctx.sizes.ops,
                "round_seconds": ctx.sizes.round_time.as_secs_f64(),
                "keys": ctx.sizes.keys,
                "big_keys": ctx.sizes.big_keys,
                "updates": ctx.sizes.updates,
                "subscribers": ctx.sizes.subscribers,
                "fanout_updates": ctx.sizes.fanout_updates,
                "value_size": ctx.sizes.value_size,
                "client_threads": ctx.sizes.client_threads,
            },
            "redis": {
                "installed": redis,
                "note": if redis { None } else { Some(REDIS_MISSING) },
            },
            "notes": notes,
            "goals": {"met": met, "missed": missed, "unknown": unknown},
            "rows": report::rows_json(&reports),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?
        );
    } else {
        print!("{text}");
    }
    if let Some(path) = &args.svg {
        let mut panels = ctx.panels.clone();
        if let Some(floor) = &ctx.echo {
            for p in &mut panels {
                p.series.push(Series::new("echo floor", floor.cdf.clone()));
            }
        }
        let caption = format!(
            "nkv-bench latency CDFs ({}; {})",
            machine.cpu, machine.command
        );
        std::fs::write(path, svg::render(&panels, &caption))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        ctx.progress(&format!("wrote {}", path.display()));
    }
    let failed = reports
        .iter()
        .any(|r| matches!(r.status, Status::Failed(_)));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
