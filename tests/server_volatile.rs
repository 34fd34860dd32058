//! `nkv-server --volatile PREFIX`: keys under it are served and notified
//! like any other, share the one revision counter, never reach the disk,
//! and are gone after a restart (clean or kill -9), after which a resume
//! from before gets RESET.

mod common;

use common::{TestServer, Wire};
use nkv::protocol::{Event, Request, Response};

fn list(wire: &mut Wire, prefix: &str) -> Vec<(String, u64)> {
    let id = wire.send(Request::List {
        prefix: prefix.into(),
    });
    let mut out = Vec::new();
    loop {
        match wire.response() {
            (got, Response::ListItem { key, revision, .. }) if got == id => {
                out.push((key, revision))
            }
            (got, Response::ListOk { .. }) if got == id => return out,
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn volatile_keys_are_served_and_notified_under_one_revision() {
    let server = TestServer::start_with(&["--volatile", "run", "--volatile", "tmp.cache"]);
    let mut wire = server.wire();
    let mut watcher = server.wire();
    let sub = watcher.send(Request::Subscribe {
        prefix: String::new(),
        since: None,
    });
    assert_eq!(watcher.response(), (sub, Response::SubOk));
    assert!(matches!(watcher.event().1, Event::Synced { .. }));

    let r1 = wire.put("persist.a", "1");
    let r2 = wire.put("run.netd.pid", "VOLATILE-PID");
    let r3 = wire.put("runner", "durable: not under run");
    let r4 = wire.put("tmp.cache.x", "VOLATILE-CACHE");
    assert!(r1 < r2 && r2 < r3 && r3 < r4, "{r1} {r2} {r3} {r4}");
    for (key, rev) in [
        ("persist.a", r1),
        ("run.netd.pid", r2),
        ("runner", r3),
        ("tmp.cache.x", r4),
    ] {
        match watcher.event().1 {
            Event::Update {
                key: k, revision, ..
            } => assert_eq!((k.as_str(), revision), (key, rev)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(wire.get("run.netd.pid"), Some((r2, "VOLATILE-PID".into())));
    assert_eq!(
        list(&mut wire, ""),
        [
            ("persist.a".to_string(), r1),
            ("run.netd.pid".into(), r2),
            ("runner".into(), r3),
            ("tmp.cache.x".into(), r4)
        ],
        "LIST merges both sides in key order"
    );
    assert_eq!(wire.stat("keys"), 4);
    assert_eq!(wire.stat("memory.keys"), 2);
    // A prefix delete spans both sides at one revision.
    let (rev, deleted) = match wire.call(Request::DeletePrefix {
        prefix: String::new(),
    }) {
        Response::DelOk { revision, deleted } => (revision, deleted),
        other => panic!("{other:?}"),
    };
    assert_eq!(deleted, 4);
    for _ in 0..4 {
        match watcher.event().1 {
            Event::Delete { revision, .. } => assert_eq!(revision, rev),
            other => panic!("{other:?}"),
        }
    }
    assert!(list(&mut wire, "").is_empty());
    assert!(
        !common::files_contain(&server.data_dir(), b"VOLATILE-"),
        "volatile values on disk"
    );
}

#[test]
fn a_restart_drops_volatile_keys_and_resumes_from_before_get_reset() {
    let mut server = TestServer::start_with(&["--volatile", "run"]);
    let mut wire = server.wire();
    wire.put("persist.a", "1");
    wire.put("run.x", "1");
    let seen = wire.put("run.x", "2");
    // A resume works while the server runs: changes since, across sides.
    wire.put("persist.b", "1");
    let id = wire.send(Request::Subscribe {
        prefix: String::new(),
        since: Some(seen - 1),
    });
    assert_eq!(wire.response(), (id, Response::SubOk));
    let mut keys = Vec::new();
    loop {
        match wire.event().1 {
            Event::Update { key, .. } => keys.push(key),
            Event::Synced { .. } => break,
            other => panic!("{other:?}"),
        }
    }
    keys.sort();
    assert_eq!(keys, ["persist.b", "run.x"]);
    drop(wire);

    server.kill9_and_restart();
    let mut wire = server.wire();
    assert_eq!(wire.get("run.x"), None, "volatile keys are gone");
    assert!(wire.get("persist.b").is_some());
    let revision = wire.stat("revision");
    assert!(
        revision > seen,
        "no revision is reused ({revision} < {seen})"
    );
    for since in [seen - 1, seen, revision] {
        let id = wire.send(Request::Subscribe {
            prefix: String::new(),
            since: Some(since),
        });
        assert_eq!(wire.response(), (id, Response::SubOk));
        assert_eq!(wire.event(), (id, Event::Reset), "resume from {since}");
        loop {
            if let Event::Synced { .. } = wire.event().1 {
                break;
            }
        }
        assert!(matches!(
            wire.call(Request::Unsubscribe { subscription: id }),
            Response::UnsubOk
        ));
    }
    // New writes take revisions above every one handed out before.
    assert!(wire.put("run.y", "1") > seen);
    // A clean restart does the same.
    drop(wire);
    assert!(server.terminate().success());
    server.restart();
    let mut wire = server.wire();
    assert_eq!(wire.get("run.y"), None);
}

#[test]
fn a_server_without_volatile_keys_still_resumes_across_restarts() {
    let mut server = TestServer::start();
    let mut wire = server.wire();
    let seen = wire.put("a", "1");
    wire.put("b", "1");
    drop(wire);
    server.kill9_and_restart();
    let mut wire = server.wire();
    let id = wire.send(Request::Subscribe {
        prefix: String::new(),
        since: Some(seen),
    });
    assert_eq!(wire.response(), (id, Response::SubOk));
    match wire.event().1 {
        Event::Update { key, .. } => assert_eq!(key, "b"),
        other => panic!("expected the change since, not {other:?}"),
    }
}

#[test]
fn a_bad_volatile_prefix_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nkv-server"))
        .args(["--volatile", "bad..prefix", "--listen"])
        .arg(format!(
            "unix:{}",
            std::env::temp_dir().join("nkv-never.sock").display()
        ))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--volatile \"bad..prefix\""), "{stderr}");
}

#[test]
fn a_prefix_delete_across_both_sides_is_not_bounded_by_the_value_limit() {
    // The log side of a prefix delete stays one small record however many
    // keys it covers, with memory keys beside it.
    let server = TestServer::start_with(&["--volatile", "run", "--max-value", "1024"]);
    let mut wire = server.wire();
    for i in 0..200 {
        wire.put(&format!("bulk.key{i:04}"), "v");
    }
    wire.put("run.x", "1");
    match wire.call(Request::DeletePrefix {
        prefix: String::new(),
    }) {
        Response::DelOk { deleted, .. } => assert_eq!(deleted, 201),
        other => panic!("{other:?}"),
    }
    assert!(list(&mut wire, "").is_empty());
}

#[test]
fn a_damaged_memory_state_file_skips_revisions_instead_of_refusing_to_start() {
    let mut server = TestServer::start_with(&["--volatile", "run"]);
    let mut wire = server.wire();
    wire.put("persist.a", "1");
    let seen = wire.put("run.x", "1");
    drop(wire);
    server.kill9();
    std::fs::write(server.data_dir().join("memory.state"), b"\x00garbage").unwrap();
    server.restart();
    let mut wire = server.wire();
    assert!(wire.get("persist.a").is_some(), "the store opened");
    let revision = wire.stat("revision");
    assert!(
        revision > seen + (1 << 39),
        "revisions skip far ahead: {revision}"
    );
    let id = wire.send(Request::Subscribe {
        prefix: String::new(),
        since: Some(seen),
    });
    assert_eq!(wire.response(), (id, Response::SubOk));
    assert_eq!(wire.event(), (id, Event::Reset));
}
