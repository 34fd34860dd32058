//! File descriptors, for real: the server runs under `prlimit` with a low
//! open-file limit. It raises its soft limit to the hard one, refuses a
//! connection cap that cannot fit, lowers a default one, and idle clients
//! can never take the descriptors the store needs.

mod common;

use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::{Setup, TestServer, Wire};
use nkv::protocol::{Condition, ErrorCode, Request, Response};

fn prlimit_available() -> bool {
    let ok = Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: prlimit (util-linux) is not installed");
    }
    ok
}

fn limited(nofile: &str, extra: &[&str]) -> TestServer {
    TestServer::start_setup(
        extra,
        Setup {
            wrapper: vec!["prlimit".into(), format!("--nofile={nofile}"), "--".into()],
            capture_log: true,
            ..Setup::default()
        },
    )
}

fn stat(wire: &mut Wire, name: &str) -> u64 {
    match wire.call(Request::Stats) {
        Response::StatsOk { stats } => stats
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {name}")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_soft_limit_is_raised_to_the_hard_limit() {
    if !prlimit_available() {
        return;
    }
    let server = limited("100:2048", &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["2048", "2048"], "{line}");
}

#[test]
fn an_explicit_cap_that_does_not_fit_refuses_to_start() {
    if !prlimit_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("prlimit")
        .args(["--nofile=100:100", "--"])
        .arg(env!("CARGO_BIN_EXE_nkv-server"))
        .arg("--listen")
        .arg(format!("unix:{}", dir.path().join("s.sock").display()))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--max-connections", "500"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--max-connections 500"), "{stderr}");
    assert!(stderr.contains("ulimit -n"), "{stderr}");
}

/// 300 idle connections (no HELLO) against a limit of 200 descriptors: the
/// default cap is lowered to leave the store its reserve, the idle
/// connections over it are refused, and the store still creates files
/// (a compaction, segment rolls) and never poisons.
#[test]
fn idle_connections_cannot_take_the_stores_descriptors() {
    if !prlimit_available() {
        return;
    }
    common::raise_own_fd_limit();
    let server = limited("200:200", &["--fsync", "never"]);
    let log = server.log();
    assert!(log.contains("serving at most"), "{log}");
    let mut control = server.wire();
    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..300 {
        let stream = UnixStream::connect(server.socket()).unwrap();
        idle.push(stream);
    }
    std::thread::sleep(Duration::from_millis(300));
    for stream in &mut idle {
        stream.set_nonblocking(true).unwrap();
        let mut header = [0u8; 9];
        if let Ok(9) = std::io::Read::read(stream, &mut header) {
            assert_eq!(header[4], nkv::protocol::wire::frame_type::ERROR);
            assert_eq!(&header[5..9], &[0, 0, 0, 0], "LIMIT carries id 0");
            refused += 1;
        }
    }
    assert!(refused >= 300 - 136, "only {refused} refused");
    let open = stat(&mut control, "connections");
    assert!(open <= 136, "{open} connections open");

    // The store still gets its descriptors: writes, and a compaction that
    // creates several files.
    for i in 0..200u32 {
        match control.call(Request::Put {
            key: format!("k.{}", i % 10),
            value: Bytes::from(vec![b'v'; 1000]),
            condition: Condition::None,
        }) {
            Response::PutOk { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    match control.call(Request::Compact) {
        Response::CompactOk {
            bytes_before,
            bytes_after,
        } => assert!(bytes_after < bytes_before),
        other => panic!("{other:?}"),
    }
    match control.call(Request::Put {
        key: "after".into(),
        value: Bytes::from_static(b"compaction"),
        condition: Condition::None,
    }) {
        Response::PutOk { .. } => {}
        Response::Error(e) => assert_ne!(e.code, ErrorCode::Storage, "{}", e.message),
        other => panic!("{other:?}"),
    }
    assert_eq!(stat(&mut control, "compaction.count"), 1);
    drop(idle);
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// When accept itself fails (out of descriptors), the server backs off
/// instead of spinning, and accepts again once descriptors are back.
#[test]
fn accept_failures_back_off_instead_of_spinning() {
    if !prlimit_available() {
        return;
    }
    let server = limited("256:256", &[]);
    let mut control = server.wire();
    let pid = server.pid().to_string();
    // Lower the running server's limit below what it has open: every
    // accept now fails with EMFILE.
    let status = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=8:256"])
        .status()
        .unwrap();
    assert!(status.success());
    let mut pending = Vec::new();
    for _ in 0..5 {
        pending.push(UnixStream::connect(server.socket()).unwrap());
    }
    let before = cpu_ticks(server.pid());
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(server.pid()) - before;
    // A spinning accept loop burns ~200 ticks (100 per second) here.
    assert!(spent < 60, "{spent} ticks of CPU in 2 s while accept fails");
    // The open connection is served all along.
    assert_eq!(control.call(Request::Ping), Response::Pong);
    // Descriptors are back: the waiting clients get in.
    let status = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=256:256"])
        .status()
        .unwrap();
    assert!(status.success());
    let mut late = Wire::connect_unix(&server.socket());
    late.hello();
    assert_eq!(late.call(Request::Ping), Response::Pong);
    assert!(server.log().contains("accept failed"), "{}", server.log());
    drop(pending);
}
