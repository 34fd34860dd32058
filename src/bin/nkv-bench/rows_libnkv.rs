//! Row 8: libnkv from C against the same calls in the raw protocol.
//!
//! The C side is `benches/c/libnkv_bench.c`, compiled here with `cc`
//! against `include/nkv.h` and the `libnkv.so` next to the bench's own
//! executable: T threads share one `nkv_client`. The raw side is T threads
//! each with its own blocking Unix-socket connection, one request at a
//! time, speaking the protocol with [`NkvWire`]. Both run for the same
//! fixed time and count the operations done.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::args::Row;
use crate::nkvwire::NkvWire;
use crate::report::{Goal, Metric, RowReport, Status, Unit, Values};
use crate::rows_kv::median_of;
use crate::servers::{on_path, TempDir};
use crate::sides::{self, NkvServer, Side};
use crate::wire::{key_name, value, OpKind, Rng, Target, Wire};
use crate::Ctx;

/// `cargo run --bin nkv-bench` builds the library as an rlib for the bench
/// but leaves `libnkv.so` as it was: measuring an old C library would
/// report the wrong code. Compares it with the rlib built with the bench.
fn stale(lib_dir: &Path) -> Option<String> {
    let modified = |name: &str| std::fs::metadata(lib_dir.join(name)).ok()?.modified().ok();
    let (so, rlib) = (modified("libnkv.so")?, modified("libnkv.rlib")?);
    let behind = rlib.duration_since(so).ok()?;
    (behind > std::time::Duration::from_secs(5)).then(|| {
        format!(
            "{} is older than the library nkv-bench was built with; \
             build it first: cargo build --release",
            lib_dir.join("libnkv.so").display()
        )
    })
}

/// Row 8.
pub fn row(ctx: &mut Ctx) -> RowReport {
    let mut report = RowReport::new(
        Row::Libnkv,
        "libnkv from C (T threads, one shared nkv_client) vs raw protocol (T blocking connections)",
    );
    let (source, header_dir) = (
        Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/c/libnkv_bench.c"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("include"),
    );
    let lib_dir = ctx.lib_dir.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
            .unwrap_or_default()
    });
    let missing = if !on_path("cc") {
        Some("no C compiler (cc) on PATH".to_owned())
    } else if !lib_dir.join("libnkv.so").is_file() {
        Some(format!(
            "no libnkv.so in {} (cargo build builds it)",
            lib_dir.display()
        ))
    } else if let Some(why) = stale(&lib_dir) {
        Some(why)
    } else if !source.is_file() || !header_dir.join("nkv.h").is_file() {
        Some(format!("{} or include/nkv.h is missing", source.display()))
    } else {
        None
    };
    if let Some(why) = missing {
        report.status = Status::Skipped(why);
        return report;
    }
    if let Err(e) = run(ctx, &mut report, &source, &header_dir, &lib_dir) {
        report.status = Status::Failed(e);
    }
    report
}

fn run(
    ctx: &Ctx,
    report: &mut RowReport,
    source: &Path,
    header_dir: &Path,
    lib_dir: &Path,
) -> Result<(), String> {
    let dir = TempDir::new().map_err(|e| format!("temp dir: {e}"))?;
    let exe = compile(source, header_dir, lib_dir, dir.path())?;
    let server = NkvServer::start(ctx, "never", &[])?;
    let target = server.target().clone();
    let vs = ctx.sizes.value_size;
    sides::preload(
        Side::Nkv,
        &target,
        ctx.sizes.keys,
        value(vs, 0).into(),
        ctx.sizes.client_threads,
    )?;
    let secs = ctx.sizes.round_time.as_secs_f64();
    for threads in [1usize, 50] {
        for kind in [OpKind::Get, OpKind::Put] {
            let name = if kind == OpKind::Get { "GET" } else { "PUT" };
            let label = format!(
                "{name} from {threads} thread{}",
                if threads == 1 { "" } else { "s" }
            );
            let (mut c_rounds, mut raw_rounds) = (Vec::new(), Vec::new());
            for round in 0..ctx.sizes.rounds {
                // Alternate which side goes first.
                for c_side in [round % 2 == 0, round % 2 == 1] {
                    if c_side {
                        let r = run_c(&exe, &target, threads, secs, kind, ctx.sizes.keys, vs)?;
                        ctx.progress(&format!(
                            "libnkv {label}: round {}: libnkv {r:.0} ops/s",
                            round + 1
                        ));
                        c_rounds.push(Values::One(r));
                    } else {
                        let r = run_raw(
                            &target,
                            threads,
                            ctx.sizes.round_time,
                            kind,
                            ctx.sizes.keys,
                            vs,
                        )?;
                        ctx.progress(&format!(
                            "libnkv {label}: round {}: raw {r:.0} ops/s",
                            round + 1
                        ));
                        raw_rounds.push(Values::One(r));
                    }
                }
            }
            let mut m = Metric::new(
                format!("libnkv.{}.{threads}", name.to_lowercase()),
                format!("{label}: ops/s"),
                Unit::PerSec,
            )
            .goal(Goal::RatioAtLeast(0.9));
            m.base_name = "raw protocol".into();
            m.nkv = median_of(&c_rounds);
            m.base = median_of(&raw_rounds);
            m.nkv_rounds = c_rounds;
            m.base_rounds = raw_rounds;
            report.metrics.push(m);
        }
    }
    report
        .notes
        .push("the nkv column is libnkv; the baseline is the raw protocol".into());
    Ok(())
}

/// `cc` the C program into `dir`.
fn compile(
    source: &Path,
    header_dir: &Path,
    lib_dir: &Path,
    dir: &Path,
) -> Result<PathBuf, String> {
    let exe = dir.join("libnkv_bench");
    let out = Command::new("cc")
        .args(["-O2", "-std=c11", "-Wall", "-Wextra", "-pthread", "-I"])
        .arg(header_dir)
        .arg(source)
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(lib_dir)
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lnkv")
        .output()
        .map_err(|e| format!("cannot run cc: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "compiling {} failed:\n{}",
            source.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(exe)
}

/// Runs the C program; its ops/s.
fn run_c(
    exe: &Path,
    target: &Target,
    threads: usize,
    secs: f64,
    kind: OpKind,
    keys: u64,
    vs: usize,
) -> Result<f64, String> {
    let out = Command::new(exe)
        .arg(target.address())
        .arg(threads.to_string())
        .arg(format!("{secs}"))
        .arg(if kind == OpKind::Get { "get" } else { "put" })
        .arg(keys.to_string())
        .arg(vs.to_string())
        // cargo run and cargo test set it, and it beats the rpath.
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "libnkv_bench failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse::<f64>().ok())
    };
    match (field("ops="), field("elapsed_ns=")) {
        (Some(ops), Some(ns)) if ns > 0.0 && ops > 0.0 => Ok(ops / (ns / 1e9)),
        _ => Err(format!("libnkv_bench printed {text:?}")),
    }
}

/// The same calls in the raw protocol: `threads` threads, each with its
/// own blocking connection, one request at a time, for `time`. Its ops/s.
fn run_raw(
    target: &Target,
    threads: usize,
    time: Duration,
    kind: OpKind,
    keys: u64,
    vs: usize,
) -> Result<f64, String> {
    let stop = AtomicBool::new(false);
    let go = AtomicBool::new(false);
    let ops = AtomicU64::new(0);
    let ready = AtomicUsize::new(0);
    let value = value(vs, 1);
    let mut first_error = None;
    let elapsed = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for t in 0..threads {
            let (stop, go, ops, value, ready) = (&stop, &go, &ops, &value, &ready);
            handles.push(scope.spawn(move || -> Result<(), String> {
                // Counted as ready however it ends, so the clock never
                // waits for a thread that failed.
                struct Ready<'a>(&'a AtomicUsize, bool);
                impl Ready<'_> {
                    fn set(&mut self) {
                        if !self.1 {
                            self.1 = true;
                            self.0.fetch_add(1, Ordering::Release);
                        }
                    }
                }
                impl Drop for Ready<'_> {
                    fn drop(&mut self) {
                        self.set();
                    }
                }
                let mut ready = Ready(ready, false);
                let mut stream = target.connect().map_err(|e| format!("connect: {e}"))?;
                let mut wire = NkvWire::new(vs);
                let mut out = Vec::with_capacity(256);
                let mut buf = vec![0u8; 4096];
                let mut filled = 0;
                // HELLO, then requests.
                wire.hello(&mut out);
                stream.write_all(&out).map_err(|e| e.to_string())?;
                out.clear();
                loop {
                    if let Some(used) = wire.parse_hello(&buf[..filled])? {
                        buf.copy_within(used..filled, 0);
                        filled -= used;
                        break;
                    }
                    read(&mut stream, &mut buf, &mut filled)?;
                }
                ready.set();
                let mut rng = Rng::new(0x5eed + t as u64);
                let mut mine = 0u64;
                while !go.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
                while !stop.load(Ordering::Relaxed) {
                    wire.encode(kind, &key_name(rng.below(keys)), value, &mut out);
                    stream.write_all(&out).map_err(|e| e.to_string())?;
                    out.clear();
                    loop {
                        if let Some(used) = wire.parse(kind, &buf[..filled])? {
                            buf.copy_within(used..filled, 0);
                            filled -= used;
                            break;
                        }
                        read(&mut stream, &mut buf, &mut filled)?;
                    }
                    mine += 1;
                }
                ops.fetch_add(mine, Ordering::Relaxed);
                Ok(())
            }));
        }
        // Connections are made before the clock starts, as libnkv's is.
        while ready.load(Ordering::Acquire) < threads {
            std::thread::sleep(Duration::from_millis(1));
        }
        let start = Instant::now();
        go.store(true, Ordering::Release);
        std::thread::sleep(time);
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            if let Err(e) = h
                .join()
                .unwrap_or_else(|_| Err("raw client thread panicked".into()))
            {
                first_error.get_or_insert(e);
            }
        }
        start.elapsed()
    });
    if let Some(e) = first_error {
        return Err(format!("raw protocol: {e}"));
    }
    Ok(ops.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}

/// Reads more into `buf[filled..]`, growing it when full.
fn read(
    stream: &mut crate::wire::Stream,
    buf: &mut Vec<u8>,
    filled: &mut usize,
) -> Result<(), String> {
    if *filled == buf.len() {
        buf.resize(buf.len() * 2, 0);
    }
    match stream.read(&mut buf[*filled..]) {
        Ok(0) => Err("the server closed the connection".into()),
        Ok(n) => {
            *filled += n;
            Ok(())
        }
        Err(e) => Err(format!("read: {e}")),
    }
}
