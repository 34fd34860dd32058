//! Every command line the README shows works as written: the tour's `nkv`
//! commands against a real server (`watch` until its SYNCED line, `put
//! --hold` until it printed its revision, then SIGTERM), `nkv-server` with
//! no flags at all, the repair command, and every flag of the usage block
//! exists.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The lines of every fenced block with this info string.
fn blocks(text: &str, info: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("```") {
            inside = !inside && rest.trim() == info;
            continue;
        }
        if inside {
            out.push(line.to_owned());
        }
    }
    out
}

/// Lines covered elsewhere, with where.
const COVERED_ELSEWHERE: [(&str, &str); 10] = [
    ("cargo test", "this very command"),
    (
        "cc app.c",
        "tests/examples.rs builds examples/watch.c the same way",
    ),
    (
        "sed -e",
        "tests/examples.rs writes nkv.pc from nkv.pc.in the same way",
    ),
    (
        "pip install",
        "tests/python_packaging.rs installs ./bindings/python into a fresh venv",
    ),
    ("NKV_LIB=", "tests/examples.rs runs examples/watch.py"),
    // "Running under systemd": every line, in a scratch root.
    ("install -m ", SYSTEMD_BLOCK),
    ("install -D ", SYSTEMD_BLOCK),
    ("systemd-sysusers", SYSTEMD_BLOCK),
    ("systemctl ", SYSTEMD_BLOCK),
    ("NKV_ADDR=unix:/run/nkv/", SYSTEMD_BLOCK),
];

const SYSTEMD_BLOCK: &str = "tests/systemd.rs (the_readme_install_commands_work_in_a_scratch_root)";

#[test]
fn the_tour_commands_work_as_written() {
    let server = TestServer::start();
    let mut ran = 0;
    for line in blocks(&readme(), "sh") {
        let line = line.split(" #").next().unwrap().trim().to_owned();
        if line.is_empty() || COVERED_ELSEWHERE.iter().any(|(p, _)| line.starts_with(p)) {
            continue;
        }
        if line == "cargo run --release --bin nkv-server" {
            continue; // the_server_starts_with_no_flags_at_all
        }
        let args = line
            .strip_prefix("cargo run --release --bin nkv -- ")
            .unwrap_or_else(|| panic!("README command not covered by a test: {line}"));
        let args: Vec<&str> = args.split_whitespace().collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nkv"));
        cmd.args(&args).env("NKV_ADDR", server.addr());
        if args[0] == "watch" {
            // Runs until interrupted: check it prints the snapshot's end.
            let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
            let mut out = child.stdout.take().unwrap();
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !String::from_utf8_lossy(&seen).contains("SYNCED") {
                assert!(Instant::now() < deadline, "{line}: no SYNCED line");
                let mut chunk = [0u8; 256];
                let n = std::io::Read::read(&mut out, &mut chunk).unwrap();
                seen.extend_from_slice(&chunk[..n]);
            }
            child.kill().unwrap();
            child.wait().unwrap();
        } else if args.contains(&"--hold") {
            // Holds its key until SIGTERM: it prints the revision, the key
            // is there, and SIGTERM ends it with status 0.
            let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
            let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut first = String::new();
            std::io::BufRead::read_line(&mut out, &mut first).unwrap();
            assert!(
                first.trim().parse::<u64>().is_ok(),
                "{line}: printed {first:?}"
            );
            let key = args[args.len() - 2];
            let get = Command::new(env!("CARGO_BIN_EXE_nkv"))
                .args(["get", key])
                .env("NKV_ADDR", server.addr())
                .output()
                .unwrap();
            assert!(get.status.success(), "{line}: {key} is not there");
            let term = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(term.success());
            assert_eq!(child.wait().unwrap().code(), Some(0), "{line}");
        } else {
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{line}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ran += 1;
    }
    assert!(ran >= 7, "only {ran} tour commands found");
}

/// `cargo run --release --bin nkv-server`: no flags, the documented default
/// socket and data directory.
#[test]
fn the_server_starts_with_no_flags_at_all() {
    assert!(blocks(&readme(), "sh")
        .iter()
        .any(|l| l.trim() == "cargo run --release --bin nkv-server"));
    let home = tempfile::tempdir().unwrap();
    let runtime = home.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_nkv-server"))
        .env_clear()
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = runtime.join("nkv.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "no socket at {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_nkv"))
        .env_clear()
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["put", "readme.key", "up"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
    assert!(home.path().join(".local/share/nkv").is_dir());

    // `nkv-server repair --data-dir DIR`, as the usage block shows it.
    let usage = blocks(&readme(), "text").join("\n");
    assert!(
        usage.contains("nkv-server repair --data-dir DIR"),
        "{usage}"
    );
    let data = home.path().join(".local/share/nkv");
    let out = Command::new(env!("CARGO_BIN_EXE_nkv-server"))
        .args(["repair", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every flag in the README's usage block is one `nkv-server` knows.
#[test]
fn every_documented_server_flag_exists() {
    let help = Command::new(env!("CARGO_BIN_EXE_nkv-server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let usage = blocks(&readme(), "text").join("\n");
    let flags: Vec<&str> = usage
        .split(|c: char| c.is_whitespace() || c == '[' || c == ']')
        .filter(|w| w.starts_with("--"))
        .collect();
    assert!(flags.len() >= 15, "{flags:?}");
    for flag in flags {
        assert!(help.contains(flag), "{flag} is documented but unknown");
    }
}
