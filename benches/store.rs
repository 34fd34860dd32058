//! Store benchmark (not a test): prints a table of rates, open time,
//! resident memory and disk footprint, with ratios against baselines
//! measured in the same run.
//!
//! `cargo bench --bench store`; `NKV_BENCH_KEYS=100000` for a smaller run
//! (default 1,000,000 keys of 100-byte values).

use std::path::Path;
use std::time::{Duration, Instant};

use nkv::store::{Condition, FsyncPolicy, Options, Store};

const VALUE_LEN: usize = 100;
/// The put-rate runs overwrite this many keys in turn (a device's state is
/// a bounded set of keys), so both runs see the same index size and the
/// ratio measures group commit, not index growth.
const WRITE_KEYS: u64 = 10_000;

fn key(i: u64) -> String {
    format!("bench.{:03}.{i:08}", i % 1000)
}

/// Resident memory of this process in KiB (VmRSS), 0 if unknown.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes of every file in `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Puts per second with one writer (commit after every put) and with
/// batches of 64 (one commit per 64 puts). The two are measured in
/// alternating rounds on two stores, so a disk whose fsync latency drifts
/// during the run (a shared VM) affects both alike.
fn put_rates(policy: FsyncPolicy, commits: u64) -> (f64, f64) {
    const ROUNDS: u64 = 5;
    let value = [7u8; VALUE_LEN];
    let open = || {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            fsync: policy,
            ..Options::default()
        };
        let s = Store::open(dir.path(), opts).unwrap();
        (dir, s)
    };
    let (_d1, mut single_store) = open();
    let (_d2, mut batch_store) = open();
    let run = |s: &mut Store, batch: u64, round: u64| {
        let started = Instant::now();
        for c in round * commits / ROUNDS..(round + 1) * commits / ROUNDS {
            for b in 0..batch {
                s.put(&key((c * batch + b) % WRITE_KEYS), &value, Condition::None)
                    .unwrap();
            }
            s.commit().unwrap();
            if s.next_sync_deadline().is_some_and(|d| d <= Instant::now()) {
                s.sync().unwrap();
            }
        }
        started.elapsed()
    };
    let (mut single, mut batched) = (Duration::ZERO, Duration::ZERO);
    for round in 0..ROUNDS {
        single += run(&mut single_store, 1, round);
        batched += run(&mut batch_store, 64, round);
    }
    (rate(commits, single), rate(commits * 64, batched))
}

fn row(name: &str, value: String, ratio: String) {
    println!("| {name:<44} | {value:>16} | {ratio:>26} |");
}

/// Child mode: open the store in `dir`, print open time and memory.
fn open_child(dir: &str) {
    let before = rss_kib();
    let started = Instant::now();
    let s = Store::open(Path::new(dir), Options::default()).unwrap();
    let took = started.elapsed();
    let after = rss_kib();
    println!(
        "{} {} {} {}",
        took.as_micros(),
        before,
        after,
        s.stats().keys
    );
}

fn main() {
    if let Ok(dir) = std::env::var("NKV_BENCH_OPEN_DIR") {
        return open_child(&dir);
    }
    let n: u64 = std::env::var("NKV_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!("nkv store benchmark: {n} keys of {VALUE_LEN}-byte values\n");
    println!("| {:<44} | {:>16} | {:>26} |", "measure", "value", "ratio");
    println!("|{:-<46}|{:-<18}|{:-<28}|", "", "", "");

    let commits_always = (n / 500).clamp(100, 2000);
    let commits_fast = (n / 50).clamp(1000, 20_000);
    let policies = [
        ("always", FsyncPolicy::Always, commits_always),
        (
            "interval 10ms",
            FsyncPolicy::Interval(Duration::from_millis(10)),
            commits_fast,
        ),
        ("never", FsyncPolicy::Never, commits_fast),
    ];
    let mut baseline_single = None;
    for (name, policy, commits) in policies {
        let (single, batched) = put_rates(policy, commits);
        let base = *baseline_single.get_or_insert(single);
        row(
            &format!("puts/s, {name}, 1 writer"),
            format!("{single:.0}"),
            format!("{:.2}x always 1-writer", single / base),
        );
        row(
            &format!("puts/s, {name}, batches of 64"),
            format!("{batched:.0}"),
            format!("{:.1}x its 1-writer", batched / single),
        );
    }

    // Load the big store.
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        fsync: FsyncPolicy::Never,
        ..Options::default()
    };
    let mut s = Store::open(dir.path(), opts.clone()).unwrap();
    let value = [42u8; VALUE_LEN];
    let started = Instant::now();
    for i in 0..n {
        s.put(&key(i), &value, Condition::None).unwrap();
        if i % 1024 == 1023 {
            s.commit().unwrap();
        }
    }
    s.sync().unwrap();
    let load = rate(n, started.elapsed());
    row(
        "puts/s, loading (never, commit per 1024)",
        format!("{load:.0}"),
        "-".into(),
    );

    let gets = n.min(500_000);
    let mut x = 0x9e37_79b9u64;
    let started = Instant::now();
    for _ in 0..gets {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let e = s.get(&key((x >> 33) % n)).unwrap();
        assert!(e.is_some());
    }
    let get_rate = rate(gets, started.elapsed());
    row(
        "gets/s (random keys)",
        format!("{get_rate:.0}"),
        format!("{:.1}x loading puts/s", get_rate / load),
    );

    let scans = 200u64;
    let started = Instant::now();
    let mut scanned = 0u64;
    for p in 0..scans {
        scanned += s
            .scan_prefix(&format!("bench.{:03}", (p * 7) % 1000))
            .unwrap()
            .len() as u64;
    }
    let took = started.elapsed();
    row(
        &format!("prefix scans/s ({} keys each)", scanned / scans),
        format!("{:.0}", rate(scans, took)),
        format!("{:.2}x gets/s per key", rate(scanned, took) / get_rate),
    );

    // Overwrite everything once (half the log dead), then compact.
    for i in 0..n {
        s.put(&key(i), &value, Condition::None).unwrap();
    }
    s.sync().unwrap();
    let before = dir_bytes(dir.path());
    let started = Instant::now();
    let report = s.compact().unwrap();
    let compact_took = started.elapsed();
    let after = dir_bytes(dir.path());
    let raw = (0..n)
        .map(|i| key(i).len() as u64 + VALUE_LEN as u64)
        .sum::<u64>();
    row(
        "compaction time (ms)",
        format!("{}", compact_took.as_millis()),
        format!("{} records copied", report.records_copied),
    );
    row(
        "disk bytes/key before compaction",
        format!("{:.1}", before as f64 / n as f64),
        format!("{:.2}x raw", before as f64 / raw as f64),
    );
    row(
        "disk bytes/key after (segments + hints)",
        format!("{:.1}", after as f64 / n as f64),
        format!("{:.2}x raw (goal < 1.5x)", after as f64 / raw as f64),
    );
    row(
        "raw key + value bytes/key",
        format!("{:.1}", raw as f64 / n as f64),
        "1.00x".into(),
    );
    drop(s);

    // Open time and memory, measured in a fresh process.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("NKV_BENCH_OPEN_DIR", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<u64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    if let [micros, rss_before, rss_after, keys] = f[..] {
        assert_eq!(keys, n);
        row(
            "open time (ms), fresh process",
            format!("{:.1}", micros as f64 / 1000.0),
            format!("{:.2}x goal of 1 s", micros as f64 / 1e6),
        );
        row(
            "resident memory after open (MiB)",
            format!("{:.1}", rss_after as f64 / 1024.0),
            format!(
                "{:.0} B/key over start",
                (rss_after - rss_before) as f64 * 1024.0 / n as f64
            ),
        );
    } else {
        println!(
            "open child failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
