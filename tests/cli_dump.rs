//! `nkv dump` / `nkv restore` between two real servers, and `nkv get` on
//! a terminal.

mod common;

use std::io::Write;
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

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "nkv failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn put_bytes(server: &TestServer, key: &str, value: &[u8]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nkv"))
        .args(["--addr", &server.addr(), "put", key])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(value).unwrap();
    assert!(child.wait().unwrap().success());
}

/// Every key and value, from `list --json` (values as the JSON has them).
fn listing(server: &TestServer) -> Vec<(String, String)> {
    ok(nkv(server, &["--json", "list"]))
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let value = v.get("value").or(v.get("value_hex")).unwrap();
            (v["key"].as_str().unwrap().to_owned(), value.to_string())
        })
        .collect()
}

#[test]
fn a_dump_restores_into_an_empty_server_exactly() {
    let source = TestServer::start_with(&["--max-value", "4096"]);
    ok(nkv(&source, &["put", "net.eth0.state", "up"]));
    ok(nkv(
        &source,
        &["put", "cfg.name", "with \"quotes\" and \\ and\nnewline"],
    ));
    put_bytes(&source, "blob.bin", &[0xff, 0x00, 0x10, 0x80]);
    // Enough keys for several transactions on a 4 KiB limit, and a value
    // too large for any transaction.
    for i in 0..200 {
        ok(nkv(
            &source,
            &["put", &format!("bulk.k{i:03}"), &"x".repeat(40)],
        ));
    }
    put_bytes(&source, "big", &vec![b'b'; 4096]);
    let dump = ok(nkv(&source, &["dump"]));
    assert_eq!(dump.lines().count(), 204, "one line per key");
    let first: serde_json::Value = serde_json::from_str(dump.lines().next().unwrap()).unwrap();
    assert!(
        first["revision"].as_u64().unwrap() > 0,
        "revisions are in the dump"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.jsonl");
    std::fs::write(&file, &dump).unwrap();

    let target = TestServer::start_with(&["--max-value", "4096"]);
    let said = ok(nkv(&target, &["restore", file.to_str().unwrap()]));
    assert!(said.starts_with("restored 204 keys"), "{said}");
    assert_eq!(listing(&target), listing(&source));
    // The prefix form dumps a subtree only; stdin works for restore.
    let net = ok(nkv(&source, &["dump", "net"]));
    assert_eq!(net.lines().count(), 1);
    let third = TestServer::start();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nkv"))
        .args(["--addr", &third.addr(), "--json", "restore"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(net.as_bytes())
        .unwrap();
    let said = ok(child.wait_with_output().unwrap());
    let said: serde_json::Value = serde_json::from_str(said.trim()).unwrap();
    assert_eq!(said["restored"], 1);
    assert_eq!(ok(nkv(&third, &["get", "net.eth0.state"])), "up");
}

#[test]
fn a_broken_dump_writes_nothing_and_names_the_line() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.jsonl");
    std::fs::write(
        &file,
        "{\"key\":\"a\",\"value\":\"1\"}\n{\"key\":\"b\",\"value_hex\":\"zz\"}\n",
    )
    .unwrap();
    let out = nkv(&server, &["restore", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(listing(&server).is_empty(), "nothing of it was written");
}

#[test]
fn get_ends_with_a_newline_on_a_terminal_only() {
    let server = TestServer::start();
    ok(nkv(&server, &["put", "k", "value"]));
    // In a pipe: the bytes exactly.
    assert_eq!(ok(nkv(&server, &["get", "k"])), "value");
    // On a terminal (a pseudo-terminal from `script`): a newline follows.
    let command = format!(
        "{} --addr {} get k",
        env!("CARGO_BIN_EXE_nkv"),
        server.addr()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("script (util-linux)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("value\r\n"), "{text:?}");
}
