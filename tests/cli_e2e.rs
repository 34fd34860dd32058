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

/// The example line of `nkv txn --help`, run as printed.
#[test]
fn txn_applies_its_words_in_order_and_names_a_failed_condition() {
    let server = TestServer::start();
    let help = stdout(&nkv(&server, &["txn", "--help"]));
    let example = help
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("nkv txn "))
        .expect("an example in nkv txn --help");
    let words: Vec<&str> = example
        .strip_prefix("nkv ")
        .unwrap()
        .split_whitespace()
        .collect();
    stdout(&nkv(&server, &["put", "net.old", "o"]));
    stdout(&nkv(&server, &["put", "tmp.a", "a"]));
    stdout(&nkv(&server, &["put", "tmp.b", "b"]));
    let applied = stdout(&nkv(&server, &words));
    let (rev, deleted) = applied
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("{applied}"));
    assert_eq!(deleted, "(3 deleted)", "{applied}");
    let lock = stdout(&nkv(&server, &["--json", "get", "net.lock"]));
    assert!(lock.contains(&format!("\"revision\":{rev}")), "{lock}");
    assert!(lock.contains("\"value\":\"me\""), "{lock}");
    assert_eq!(nkv(&server, &["get", "net.old"]).status.code(), Some(1));
    assert_eq!(stdout(&nkv(&server, &["list", "tmp"])), "");

    // Again: net.lock exists. Exit 2, nothing changed, the key named.
    let failed = nkv(&server, &words);
    assert_eq!(failed.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("CONDITION_FAILED") && stderr.contains("net.lock"),
        "{stderr}"
    );
    assert!(stderr.contains(rev), "{stderr}");
    let mut json_words = vec!["--json"];
    json_words.extend(&words);
    let failed = nkv(&server, &json_words);
    assert_eq!(failed.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&failed.stdout).trim(),
        format!("{{\"current_revision\":{rev},\"failed_key\":\"net.lock\"}}")
    );

    // if-rev and if-present; a value starting with '-'.
    let ok = stdout(&nkv(
        &server,
        &[
            "--json",
            "txn",
            "if-rev",
            "net.lock",
            rev,
            "if-present",
            "net.lock",
            "put",
            "net.t",
            "-1",
            "del",
            "net.lock",
        ],
    ));
    assert!(ok.contains("\"deleted\":1"), "{ok}");
    assert_eq!(stdout(&nkv(&server, &["get", "net.t"])), "-1");

    // Usage mistakes: exit 2 before anything is sent.
    for bad in [
        &["txn", "bogus"][..],
        &["txn", "put", "k"],
        &["txn", "if-rev", "k", "x"],
        &["txn", "del-prefix"],
    ] {
        let out = nkv(&server, bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("nkv txn --help"),
            "{bad:?}"
        );
    }
}

#[test]
fn an_ephemeral_put_lasts_as_long_as_its_command() {
    let server = TestServer::start();
    stdout(&nkv(&server, &["put", "svc.once", "1", "--ephemeral"]));
    // The command exited: its key is gone (grace 0).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while nkv(&server, &["get", "svc.once"]).status.code() != Some(1) {
        assert!(std::time::Instant::now() < deadline, "svc.once still there");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // --hold keeps it until SIGTERM, then exits 0 and the key goes.
    let mut holder = Command::new(env!("CARGO_BIN_EXE_nkv"))
        .args(["--addr", &server.addr()])
        .args(["put", "--ephemeral", "--hold", "svc.netd.alive", "up"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let rev: u64 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let held = stdout(&nkv(&server, &["--json", "get", "svc.netd.alive"]));
    assert!(held.contains(&format!("\"revision\":{rev}")), "{held}");
    let kill = Command::new("kill")
        .args(["-TERM", &holder.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(holder.wait().unwrap().code(), Some(0));
    assert_eq!(
        nkv(&server, &["get", "svc.netd.alive"]).status.code(),
        Some(1)
    );

    // With a grace period the key outlives the command for that long.
    stdout(&nkv(
        &server,
        &["put", "svc.grace", "1", "--ephemeral", "--grace", "1.5"],
    ));
    assert_eq!(stdout(&nkv(&server, &["get", "svc.grace"])), "1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while nkv(&server, &["get", "svc.grace"]).status.code() != Some(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "svc.grace still there"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // A holder whose key someone else overwrites says so and exits 2.
    let mut holder = Command::new(env!("CARGO_BIN_EXE_nkv"))
        .args(["--addr", &server.addr()])
        .args(["put", "--ephemeral", "--hold", "svc.leader", "me"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    lines.next().unwrap().unwrap();
    stdout(&nkv(&server, &["put", "svc.leader", "you"]));
    let out = holder.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("lost the ephemeral key svc.leader"),
        "{stderr}"
    );

    // --hold and --grace need --ephemeral; a grace over 600 s is refused.
    assert_eq!(
        nkv(&server, &["put", "--hold", "k", "v"]).status.code(),
        Some(2)
    );
    assert_eq!(
        nkv(&server, &["put", "--ephemeral", "--grace", "601", "k", "v"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn watch_grouped_prints_a_group_line_before_a_transaction() {
    let server = TestServer::start();
    for json in [false, true] {
        let mut args = vec!["--addr".to_owned(), server.addr()];
        if json {
            args.push("--json".into());
        }
        args.extend(["watch", "--grouped", "net"].map(String::from));
        let mut watch = Command::new(env!("CARGO_BIN_EXE_nkv"))
            .args(&args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
        let mut next = || lines.next().expect("a line").expect("utf-8");
        while !next().to_lowercase().contains("synced") {}
        let done = stdout(&nkv(
            &server,
            &["txn", "put", "net.a", "1", "put", "net.b", "2"],
        ));
        let rev = done.split(' ').next().unwrap().trim().to_owned();
        let group = next();
        if json {
            assert_eq!(
                group,
                format!("{{\"count\":2,\"event\":\"group\",\"revision\":{rev}}}")
            );
            let a = next();
            assert!(a.contains("\"key\":\"net.a\"") && a.contains(&rev), "{a}");
            let b = next();
            assert!(b.contains("\"key\":\"net.b\""), "{b}");
        } else {
            assert_eq!(group, format!("GROUP of 2 at rev {rev}"));
            assert_eq!(next(), format!("UPDATE net.a = 1 (rev {rev})"));
            assert_eq!(next(), format!("UPDATE net.b = 2 (rev {rev})"));
        }
        // A lone put has no group line.
        stdout(&nkv(&server, &["put", "net.c", "3"]));
        let lone = next();
        assert!(lone.contains("net.c") && !lone.contains("roup"), "{lone}");
        let _ = watch.kill();
        let _ = watch.wait();
    }
}
