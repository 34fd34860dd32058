//! Ephemeral keys against a real server: deleted (with a DELETE to
//! subscribers) when the owning connection ends, however it ends; a grace
//! period within which another ephemeral PUT takes the key over; a plain
//! PUT makes it ordinary; leader claims; never on disk, gone after a
//! restart.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{TestServer, Wire};
use nkv::protocol::{ClientCodec, ClientFrame, Condition, ErrorCode, Event, Request, Response};
use tokio_util::codec::Encoder;

fn ephemeral(key: &str, value: &str, condition: Condition, grace_ms: u32) -> Request {
    Request::PutEphemeral {
        key: key.into(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        condition,
        grace_ms,
    }
}

fn put_ephemeral(wire: &mut Wire, key: &str, value: &str, grace_ms: u32) -> u64 {
    match wire.call(ephemeral(key, value, Condition::None, grace_ms)) {
        Response::PutOk { revision } => revision,
        other => panic!("ephemeral PUT {key}: {other:?}"),
    }
}

/// Waits (with a timeout) until `key` is deleted, as the subscriber sees it.
fn expect_delete(wire: &mut Wire, key: &str) {
    match wire.event().1 {
        Event::Delete { key: got, .. } => assert_eq!(got, key),
        other => panic!("expected DELETE {key}, got {other:?}"),
    }
}

#[test]
fn the_key_goes_when_its_connection_closes() {
    let server = TestServer::start();
    let mut watcher = server.wire();
    watcher.subscribe("svc", false);
    let mut owner = server.wire();
    put_ephemeral(&mut owner, "svc.netd.alive", "1", 0);
    assert!(matches!(watcher.event().1, Event::Update { .. }));
    assert_eq!(
        watcher.get("svc.netd.alive").map(|(_, v)| v),
        Some("1".into())
    );
    assert_eq!(watcher.stat("ephemeral.keys"), 1);
    drop(owner);
    expect_delete(&mut watcher, "svc.netd.alive");
    assert_eq!(watcher.get("svc.netd.alive").map(|(_, v)| v), None);
    assert_eq!(watcher.stat("ephemeral.keys"), 0);
}

#[test]
fn the_key_goes_when_its_client_is_killed() {
    // A separate process owns the key; kill -9 of it must free the key.
    let server = TestServer::start();
    let mut frames = BytesMut::new();
    let mut codec = ClientCodec::new();
    for (id, request) in [
        (
            1,
            Request::Hello {
                version: 1,
                client_name: "victim".into(),
                token: None,
            },
        ),
        (2, ephemeral("svc.victim.alive", "1", Condition::None, 0)),
    ] {
        codec
            .encode(ClientFrame { id, request }, &mut frames)
            .unwrap();
    }
    let hex: String = frames.iter().map(|b| format!("{b:02x}")).collect();
    let script = format!(
        "import socket,sys,time\n\
         s=socket.socket(socket.AF_UNIX)\n\
         s.connect({:?})\n\
         s.sendall(bytes.fromhex('{hex}'))\n\
         print('sent', flush=True)\n\
         time.sleep(60)\n",
        server.socket().display().to_string()
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = [0u8; 5];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    let mut watcher = server.wire();
    let deadline = Instant::now() + Duration::from_secs(10);
    while watcher.get("svc.victim.alive").map(|(_, v)| v).is_none() {
        assert!(Instant::now() < deadline, "the child's PUT never landed");
        std::thread::sleep(Duration::from_millis(20));
    }
    watcher.subscribe("svc.victim", false);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    expect_delete(&mut watcher, "svc.victim.alive");
}

#[test]
fn a_grace_period_lets_a_reconnecting_client_take_its_key_back() {
    let server = TestServer::start();
    let mut watcher = server.wire();
    watcher.subscribe("svc", false);
    let mut owner = server.wire();
    put_ephemeral(&mut owner, "svc.a.alive", "1", 1500);
    put_ephemeral(&mut owner, "svc.b.alive", "1", 1500);
    for _ in 0..2 {
        assert!(matches!(watcher.event().1, Event::Update { .. }));
    }
    drop(owner);
    std::thread::sleep(Duration::from_millis(300));
    // Within the grace period both keys are still there.
    assert_eq!(watcher.get("svc.a.alive").map(|(_, v)| v), Some("1".into()));
    let mut back = server.wire();
    put_ephemeral(&mut back, "svc.a.alive", "2", 1500);
    assert!(matches!(watcher.event().1, Event::Update { .. }));
    // b was not taken back: it goes when the grace period ends; a stays.
    let started = Instant::now();
    expect_delete(&mut watcher, "svc.b.alive");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "not before the grace period"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(watcher.get("svc.a.alive").map(|(_, v)| v), Some("2".into()));
    // The new owner's close starts a new grace period for a.
    drop(back);
    expect_delete(&mut watcher, "svc.a.alive");
}

#[test]
fn a_plain_put_makes_the_key_ordinary() {
    let server = TestServer::start();
    let mut owner = server.wire();
    let mut other = server.wire();
    put_ephemeral(&mut owner, "cfg.mode", "auto", 0);
    other.put("cfg.mode", "manual");
    drop(owner);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(other.get("cfg.mode").map(|(_, v)| v), Some("manual".into()));
    assert_eq!(other.stat("ephemeral.keys"), 0);
}

#[test]
fn a_leader_claim_has_one_winner_and_frees_the_key_when_it_goes() {
    let server = TestServer::start();
    let mut a = server.wire();
    let mut b = server.wire();
    let claim = || ephemeral("svc.leader", "me", Condition::MustNotExist, 0);
    assert!(matches!(a.call(claim()), Response::PutOk { .. }));
    match b.call(claim()) {
        Response::Error(e) => assert_eq!(e.code, ErrorCode::ConditionFailed),
        other => panic!("two leaders: {other:?}"),
    }
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match b.call(claim()) {
            Response::PutOk { .. } => break,
            Response::Error(e) if e.code == ErrorCode::ConditionFailed => {
                assert!(Instant::now() < deadline, "the claim was never freed");
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn ephemeral_keys_never_reach_the_disk_and_a_restart_removes_them() {
    let mut server = TestServer::start();
    let mut wire = server.wire();
    wire.put("svc.old", "durable-before");
    wire.put("svc.keep", "durable");
    // An ephemeral PUT of a durable key replaces it; a restart must not
    // bring the old value back.
    put_ephemeral(&mut wire, "svc.old", "EPHEMERAL-VALUE-1", 0);
    put_ephemeral(&mut wire, "svc.new", "EPHEMERAL-VALUE-2", 60_000);
    let on_disk = common::files_contain(&server.data_dir(), b"EPHEMERAL-VALUE");
    assert!(!on_disk, "an ephemeral value was written to the data files");
    let before = wire.stat("revision");
    drop(wire);
    server.kill9_and_restart();
    let mut wire = server.wire();
    assert_eq!(wire.get("svc.old").map(|(_, v)| v), None);
    assert_eq!(wire.get("svc.new").map(|(_, v)| v), None);
    assert_eq!(wire.get("svc.keep").map(|(_, v)| v), Some("durable".into()));
    assert!(
        wire.stat("revision") >= before,
        "revisions are never reused"
    );
    // A resume from before the restart cannot be served from the log: the
    // memory keys vanished without tombstones. It gets RESET.
    let id = wire.send(Request::Subscribe {
        prefix: "svc".into(),
        since: Some(before),
    });
    assert_eq!(wire.response(), (id, Response::SubOk));
    assert_eq!(wire.event(), (id, Event::Reset));
}
