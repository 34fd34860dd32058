//! The server on a full disk, end to end (root only: a small tmpfs): puts
//! fail with STORAGE and the CLI says "disk full", nothing acknowledged is
//! lost (before and after a kill -9), reads and LIST keep working, and
//! writes resume by themselves once space is freed.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use bytes::Bytes;
use common::disk::SmallDisk;
use common::{Setup, TestServer, Wire};
use nkv::protocol::{Condition, ErrorCode, Request, Response};

fn value(i: u32) -> Vec<u8> {
    let mut v = format!("value {i}:").into_bytes();
    v.resize(4096, b'a' + (i % 26) as u8);
    v
}

fn check(wire: &mut Wire, acked: &BTreeMap<String, Vec<u8>>) {
    for (key, want) in acked {
        match wire.call(Request::Get { key: key.clone() }) {
            Response::GetOk { value, .. } => assert_eq!(&value[..], &want[..], "{key}"),
            other => panic!("{key}: {other:?}"),
        }
    }
    let id = wire.send(Request::List { prefix: "".into() });
    let mut listed = 0;
    loop {
        match wire.response() {
            (got, Response::ListItem { .. }) if got == id => listed += 1,
            (got, Response::ListOk { count, .. }) if got == id => {
                assert_eq!(count as usize, listed);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        listed,
        acked.len(),
        "LIST sees exactly the acknowledged keys"
    );
}

fn nkv(server: &TestServer, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nkv"))
        .arg("--addr")
        .arg(server.addr())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_full_disk_refuses_puts_and_loses_nothing() {
    let Some(disk) = SmallDisk::tmpfs(8) else {
        return;
    };
    let filler = disk.fill_leaving(3 << 20);
    let mut server = TestServer::start_setup(
        &[],
        Setup {
            data: Some(disk.path().join("data")),
            ..Setup::default()
        },
    );
    let mut wire = server.wire();
    let mut acked = BTreeMap::new();
    let mut refused = 0;
    for i in 0..3000u32 {
        let key = format!("k.{i}");
        match wire.call(Request::Put {
            key: key.clone(),
            value: Bytes::from(value(i)),
            condition: Condition::None,
        }) {
            Response::PutOk { .. } => {
                acked.insert(key, value(i));
            }
            Response::Error(e) => {
                assert_eq!(e.code, ErrorCode::Storage, "{}", e.message);
                assert!(e.message.contains("disk full"), "{}", e.message);
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(refused > 0 && acked.len() > 100, "{} acked", acked.len());
    assert!(acked.len() * 4096 <= 3 << 20, "more acknowledged than fits");
    check(&mut wire, &acked);
    // The CLI says so, with its documented exit status.
    let out = nkv(&server, &["put", "cli.key", &"x".repeat(100_000)]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("disk full"), "{stderr}");

    // Nothing acknowledged is lost across a crash.
    drop(wire);
    server.kill9_and_restart();
    let mut wire = server.wire();
    check(&mut wire, &acked);

    // Space is freed: writes go through again, no restart needed.
    std::fs::remove_file(filler).unwrap();
    let out = nkv(&server, &["put", "after.freeing", "works"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = nkv(&server, &["get", "after.freeing"]);
    assert_eq!(out.stdout, b"works");
    check(&mut wire, &{
        let mut all = acked.clone();
        all.insert("after.freeing".into(), b"works".to_vec());
        all
    });
}

/// `nkv compact` as documented: the output line and what it reclaims.
#[test]
fn nkv_compact_reclaims_overwritten_values() {
    let server = TestServer::start_with(&["--fsync", "never"]);
    let mut wire = server.wire();
    for i in 0..200u32 {
        match wire.call(Request::Put {
            key: "same.key".into(),
            value: Bytes::from(value(i)),
            condition: Condition::None,
        }) {
            Response::PutOk { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    let out = nkv(&server, &["compact"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    assert!(line.starts_with("compacted: "), "{line}");
    assert!(numbers[0] > 200 * 4096 && numbers[1] < 3 * 4096, "{line}");
    let out = nkv(&server, &["--json", "compact"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["bytes_after"].as_u64().unwrap() <= numbers[1]);
    match wire.call(Request::Get {
        key: "same.key".into(),
    }) {
        Response::GetOk { value: got, .. } => assert_eq!(&got[..], &value(199)[..]),
        other => panic!("{other:?}"),
    }
}
