//! `nkv-server check --data-dir DIR`: verifies every record without
//! changing a byte, beside a running server too; the exit status tells a
//! script the verdict (0 clean, 1 damaged, 2 unreadable), and the repair
//! command it prints works as printed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use common::TestServer;
use nkv::protocol::{Condition, Request, Response};

fn check(dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nkv-server"))
        .args(["check", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap()
}

fn fill(server: &TestServer, n: u32) {
    let mut wire = server.wire();
    for i in 0..n {
        let put = Request::Put {
            key: format!("c.k{i}"),
            value: Bytes::from(format!("value-{i:04}")),
            condition: Condition::None,
        };
        assert!(matches!(wire.call(put), Response::PutOk { .. }));
    }
}

/// Every file of the directory with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "LOCK"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_clean_store_checks_clean_even_while_the_server_runs() {
    let server = TestServer::start();
    fill(&server, 50);
    let out = check(&server.data_dir());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = text(&out);
    assert!(report.contains("50 valid record(s)"), "{report}");
    assert!(report.contains("ok: no damage"), "{report}");
}

#[test]
fn damage_is_found_named_and_left_alone_and_the_printed_repair_works() {
    let mut server = TestServer::start();
    fill(&server, 40);
    server.kill9();
    let dir = server.data_dir();
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let written = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[written / 2] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();

    let before = snapshot(&dir);
    let out = check(&dir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = text(&out);
    let name = segment.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        report.contains("DAMAGED") && report.contains(&name),
        "{report}"
    );
    assert!(
        report.contains("valid record(s)") && !report.contains(" 0 valid record(s)"),
        "the records after the damage are still checked: {report}"
    );
    assert_eq!(snapshot(&dir), before, "check changed the data directory");

    // The repair command exactly as printed, then a clean check.
    let printed = report
        .split('`')
        .find(|part| part.starts_with("nkv-server repair"))
        .unwrap_or_else(|| panic!("no repair command in: {report}"));
    let words: Vec<&str> = printed.split_whitespace().collect();
    let repair = Command::new(env!("CARGO_BIN_EXE_nkv-server"))
        .args(&words[1..])
        .output()
        .unwrap();
    assert!(repair.status.success(), "{}", text(&repair));
    let out = check(&dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn a_torn_tail_is_a_note_not_damage() {
    let mut server = TestServer::start();
    fill(&server, 10);
    server.kill9();
    let dir = server.data_dir();
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .unwrap();
    // Half a record after the last one: what a crash mid-write leaves.
    let mut bytes = std::fs::read(&segment).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[end..end + 12].copy_from_slice(&[0, 0, 0, 40, 1, 2, 3, 4, 5, 6, 7, 8]);
    std::fs::write(&segment, &bytes).unwrap();
    let out = check(&dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("torn tail"), "{}", text(&out));
}

#[test]
fn an_unreadable_directory_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(&dir.path().join("missing"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("missing"), "{}", text(&out));
}
