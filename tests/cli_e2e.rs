//! The `nkv` command line against a real server: the README's tour.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use common::TestServer;

fn nkv(server: &TestServer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nkv"))
        .arg("--addr")
        .arg(server.addr())
        .args(args)
        .output()
        .expect("run nkv")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "nkv failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn put_get_list_delete_and_stats() {
    let server = TestServer::start();
    let rev: u64 = stdout(&nkv(&server, &["put", "net.eth0.state", "up"]))
        .trim()
        .parse()
        .expect("put prints the revision");
    assert_eq!(stdout(&nkv(&server, &["get", "net.eth0.state"])), "up");

    // Value from stdin when omitted.
    let mut child = Command::new(env!("CARGO_BIN_EXE_nkv"))
        .args(["--addr", &server.addr(), "put", "net.eth1.state"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"down\n").unwrap();
    drop(child.stdin.take());
    assert!(child.wait_with_output().unwrap().status.success());
    assert_eq!(stdout(&nkv(&server, &["get", "net.eth1.state"])), "down\n");

    let listing = stdout(&nkv(&server, &["list", "net"]));
    assert!(listing.contains("net.eth0.state"), "{listing}");
    assert!(listing.contains("net.eth1.state"), "{listing}");

    let json = stdout(&nkv(&server, &["--json", "get", "net.eth0.state"]));
    assert!(
        json.contains("\"revision\":") && json.contains(&rev.to_string()),
        "{json}"
    );

    let missing = nkv(&server, &["get", "net.eth9"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(!missing.stderr.is_empty());

    let stale = nkv(
        &server,
        &["put", "--if-revision", "999", "net.eth0.state", "x"],
    );
    assert_eq!(stale.status.code(), Some(2));

    stdout(&nkv(&server, &["del", "--prefix", "net"]));
    assert_eq!(
        nkv(&server, &["get", "net.eth0.state"]).status.code(),
        Some(1)
    );
    assert_eq!(
        nkv(&server, &["del", "net.eth0.state"]).status.code(),
        Some(1)
    );

    let stats = stdout(&nkv(&server, &["stats"]));
    assert!(stats.contains("revision"), "{stats}");
}

#[test]
fn watch_prints_snapshot_synced_then_changes() {
    let server = TestServer::start();
    stdout(&nkv(&server, &["put", "net.a", "1"]));
    let mut watch = Command::new(env!("CARGO_BIN_EXE_nkv"))
        .args(["--addr", &server.addr(), "watch", "net"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = || lines.next().expect("a line").expect("utf-8");
    let first = next();
    assert!(first.starts_with("UPDATE net.a"), "{first}");
    assert!(next().starts_with("SYNCED"));
    stdout(&nkv(&server, &["put", "network", "not covered"]));
    stdout(&nkv(&server, &["put", "net.b", "2"]));
    let change = next();
    assert!(change.starts_with("UPDATE net.b"), "{change}");
    stdout(&nkv(&server, &["del", "net.a"]));
    assert!(next().starts_with("DELETE net.a"));
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn unreachable_server_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_nkv"))
        .arg("--addr")
        .arg(format!("unix:{}", dir.path().join("none.sock").display()))
        .args(["get", "k"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("nkv:"), "{stderr}");
}

/// `nkv wait`: a shell gate for start-up ordering. Exit 0 once the state
/// holds (now or later), 1 on timeout.
#[test]
fn wait_exits_zero_when_the_state_holds_and_one_on_timeout() {
    let server = TestServer::start();
    let out = nkv(&server, &["wait", "svc.netd.alive", "--timeout", "0.2"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out waiting for svc.netd.alive"));

    // Written while the gate waits (no --timeout: no limit).
    let waiter = std::process::Command::new(env!("CARGO_BIN_EXE_nkv"))
        .args([
            "--addr",
            &server.addr(),
            "wait",
            "svc.netd.alive",
            "--value",
            "yes",
        ])
        .spawn()
        .unwrap();
    let mut waiter = Waiter(waiter);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        waiter.0.try_wait().unwrap().is_none(),
        "returned before the write"
    );
    assert!(nkv(&server, &["put", "svc.netd.alive", "no"])
        .status
        .success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        waiter.0.try_wait().unwrap().is_none(),
        "a different value opened the gate"
    );
    assert!(nkv(&server, &["put", "svc.netd.alive", "yes"])
        .status
        .success());
    let status = waiter.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    // Already true: at once; absent after a delete.
    assert!(nkv(&server, &["wait", "svc.netd.alive"]).status.success());
    assert!(nkv(&server, &["del", "svc.netd.alive"]).status.success());
    let out = nkv(
        &server,
        &["wait", "svc.netd.alive", "--absent", "--timeout", "5"],
    );
    assert!(out.status.success(), "{out:?}");
    let out = nkv(&server, &["wait", "x", "--absent", "--value", "v"]);
    assert_eq!(out.status.code(), Some(2), "--absent and --value together");
}

/// Kills the process at the end, whatever the test did.
struct Waiter(std::process::Child);

impl Drop for Waiter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
