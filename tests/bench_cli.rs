//! `nkv-bench` runs end to end in tiny configurations (seconds, not
//! minutes): its JSON holds the rows with positive nkv numbers; without
//! redis-server on PATH it says Redis is not installed instead of failing;
//! it leaves no server and no temporary directory behind, also when
//! interrupted; and the command lines BENCHMARKS.md shows parse.
//!
//! No timing is asserted: these runs check the program, not the servers.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

const BENCH: &str = env!("CARGO_BIN_EXE_nkv-bench");
const SERVER: &str = env!("CARGO_BIN_EXE_nkv-server");

/// Flags that make every selected row tiny.
const TINY: &[&str] = &[
    "--short",
    "--rounds=1",
    "--ops=300",
    "--seconds=0.2",
    "--keys=50",
    "--updates=20",
    "--big-keys=500",
    "--subscribers=5",
    "--fanout-updates=20",
];

/// A bench command with its own TMPDIR, so leftovers can be checked.
fn bench(tmp: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BENCH);
    // The libnkv.so this test run built (cargo test leaves it in deps/).
    cmd.arg(format!("--server-bin={SERVER}"))
        .arg(format!("--lib-dir={}", common::lib_dir().display()))
        .args(TINY)
        .args(args)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null());
    cmd
}

/// Runs and returns the output, failing with both streams when it fails.
fn run_ok(mut cmd: Command) -> Output {
    let out = cmd.output().expect("run nkv-bench");
    assert!(
        out.status.success(),
        "nkv-bench failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every process whose command line mentions `tmp` (a server the bench
/// started there).
fn processes_under(tmp: &Path) -> Vec<String> {
    let needle = tmp.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(&needle) {
                found.push(text);
            }
        }
    }
    found
}

/// The bench cleaned up: no temporary directory, no process.
fn assert_clean(tmp: &Path) {
    let left: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind in TMPDIR: {left:?}");
    let procs = processes_under(tmp);
    assert!(procs.is_empty(), "servers still running: {procs:?}");
}

fn row<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["row"] == name)
        .unwrap_or_else(|| panic!("no row {name} in {doc}"))
}

/// Every metric of the row has a positive nkv number (a number, or a
/// p50/p99/p99.9 object).
fn assert_positive_nkv(row: &Value) {
    assert_eq!(row["status"], "ok", "row {row}");
    let metrics = row["metrics"].as_array().expect("metrics");
    assert!(!metrics.is_empty(), "row without metrics: {row}");
    let notes = row["notes"].to_string();
    for m in metrics {
        if m["nkv"].is_null() && m["id"].as_str().unwrap().ends_with(".cpu") {
            // CPU time comes in 10 ms ticks: a tiny run may be too short,
            // and then the row must say so rather than print 0.
            assert!(notes.contains("too short for /proc's 10 ms ticks"), "{row}");
            continue;
        }
        let values: Vec<f64> = match &m["nkv"] {
            Value::Number(n) => vec![n.as_f64().unwrap()],
            Value::Object(o) => o.values().map(|v| v.as_f64().unwrap()).collect(),
            other => panic!("metric {} has nkv = {other}", m["id"]),
        };
        assert!(
            values.iter().all(|v| *v > 0.0),
            "metric {} has nkv = {}",
            m["id"],
            m["nkv"]
        );
    }
}

#[test]
fn json_has_every_selected_row_with_nkv_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_ok({
        let mut c = bench(tmp.path(), &["--only=get,put,notify,libnkv,echo", "--json"]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    });
    let doc: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    for name in ["get", "put", "notify", "echo"] {
        assert_positive_nkv(row(&doc, name));
    }
    // The C program builds against include/nkv.h and the libnkv.so next to
    // the binaries, unless there is no C compiler.
    let libnkv = row(&doc, "libnkv");
    if libnkv["status"] == "skipped" {
        assert!(
            libnkv["reason"].as_str().unwrap().contains("cc"),
            "{libnkv}"
        );
    } else {
        assert_positive_nkv(libnkv);
    }
    assert_eq!(doc["rows"].as_array().unwrap().len(), 5);
    // The machine and the exact command line are part of the record.
    assert!(doc["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(doc["machine"]["command"]
        .as_str()
        .unwrap()
        .contains("--only=get,put,notify,libnkv,echo"));
    // Every goal-bearing metric says whether it is met (or why not).
    let get = row(&doc, "get");
    let ops = &get["metrics"][0];
    assert_eq!(ops["id"], "get.1x1.ops");
    assert!(ops["goal"]["text"].as_str().unwrap().contains("1.0x"));
    if doc["redis"]["installed"] == true {
        assert!(ops["baseline"].as_f64().unwrap() > 0.0);
        assert!(ops["ratio"].as_f64().unwrap() > 0.0);
        assert!(ops["met"].is_boolean());
    }
    assert_clean(tmp.path());
}

#[test]
fn without_redis_on_path_it_says_so_and_measures_nkv() {
    let tmp = tempfile::tempdir().unwrap();
    let empty_path = tempfile::tempdir().unwrap();
    let out = run_ok({
        let mut c = bench(tmp.path(), &["--only=get,fanout", "--json"]);
        c.env("PATH", empty_path.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    });
    let doc: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(doc["redis"]["installed"], false);
    let note = doc["redis"]["note"].as_str().unwrap();
    assert!(note.contains("Redis not installed"), "{note}");
    assert!(note.contains("apt-get install redis-server"), "{note}");
    for name in ["get", "fanout"] {
        let r = row(&doc, name);
        assert_positive_nkv(r);
        for m in r["metrics"].as_array().unwrap() {
            assert!(m["baseline"].is_null() && m["ratio"].is_null(), "{m}");
            assert!(m["baseline_missing"]
                .as_str()
                .unwrap()
                .contains("Redis not installed"));
        }
    }
    let table = String::from_utf8_lossy(&out.stderr);
    assert!(table.contains("Redis not installed"), "{table}");
    assert_clean(tmp.path());
}

#[test]
fn the_table_names_goals_and_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_ok({
        let mut c = bench(tmp.path(), &["--only=echo,million,compaction"]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    });
    let table = String::from_utf8_lossy(&out.stdout);
    for text in [
        "9. echo floor",
        "6. 500 keys",
        "7. longest stall",
        "restart until GET answers",
        "<= 500.00ms",
        "goals:",
    ] {
        assert!(table.contains(text), "{text:?} missing from:\n{table}");
    }
    assert_clean(tmp.path());
}

#[test]
fn an_interrupted_run_stops_its_servers_and_removes_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    // A run long enough to be interrupted in the middle.
    let mut child = Command::new(BENCH)
        .args([
            &format!("--server-bin={SERVER}"),
            "--only=get",
            "--rounds=50",
            "--seconds=1",
        ])
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while processes_under(tmp.path()).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no server started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let it get into a measurement.
    std::thread::sleep(Duration::from_millis(300));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("nkv-bench did not exit after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130), "{status}");
    assert_clean(tmp.path());
}

/// The command lines of every `sh` block of BENCHMARKS.md that run the
/// bench.
fn documented_commands() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md"))
        .expect("BENCHMARKS.md at the repository root");
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if let Some(info) = line.strip_prefix("```") {
            inside = !inside && info.trim() == "sh";
            continue;
        }
        let line = line.trim();
        if inside && (line.starts_with("cargo run") || line.starts_with("target/release/nkv-bench"))
        {
            out.push(line.to_owned());
        }
    }
    // The README names the bench in inline code.
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let mut fenced = false;
    let mut inline = 0;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for span in line.split('`').skip(1).step_by(2) {
            if span.starts_with("cargo run --release --bin nkv-bench") {
                out.push(span.to_owned());
                inline += 1;
            }
        }
    }
    assert!(inline > 0, "README.md no longer names an nkv-bench command");
    out
}

#[test]
fn the_commands_in_benchmarks_md_parse() {
    let commands = documented_commands();
    assert!(
        commands
            .iter()
            .any(|c| c == "cargo run --release --bin nkv-bench"),
        "BENCHMARKS.md must show the plain command: {commands:?}"
    );
    for command in &commands {
        // The bench's own arguments: after `--` for cargo run.
        let args: Vec<&str> = match command.strip_prefix("cargo run --release --bin nkv-bench") {
            Some(rest) => {
                let rest = rest.trim();
                if rest.is_empty() {
                    Vec::new()
                } else {
                    let rest = rest
                        .strip_prefix("--")
                        .unwrap_or_else(|| panic!("{command}: cargo flags after --bin?"));
                    rest.split_whitespace().collect()
                }
            }
            None => command
                .strip_prefix("target/release/nkv-bench")
                .unwrap_or_else(|| panic!("unexpected command {command}"))
                .split_whitespace()
                .collect(),
        };
        // clap checks every argument before it reaches --help.
        let out = Command::new(BENCH)
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: nkv-bench"));
    }
}
