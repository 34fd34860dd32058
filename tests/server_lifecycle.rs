//! Races, slow subscribers, restarts and shutdown, against a real server
//! process.

mod common;

use std::collections::HashMap;
use std::os::unix::net::UnixListener;

use bytes::Bytes;
use common::{TestServer, Wire};
use nkv::protocol::{Condition, ErrorCode, Event, Request, Response};

fn put(wire: &mut Wire, key: &str, value: &[u8]) -> u64 {
    match wire.call(Request::Put {
        key: key.into(),
        value: Bytes::copy_from_slice(value),
        condition: Condition::None,
    }) {
        Response::PutOk { revision } => revision,
        other => panic!("PUT {key}: {other:?}"),
    }
}

fn subscribe(wire: &mut Wire, prefix: &str, since: Option<u64>) -> u32 {
    let id = wire.send(Request::Subscribe {
        prefix: prefix.into(),
        since,
    });
    assert_eq!(wire.response(), (id, Response::SubOk));
    id
}

/// A subscriber's view: key → (value, revision).
type View = HashMap<String, (Bytes, u64)>;

/// Applies one event to a view, checking per-key revision order.
fn apply(view: &mut View, event: Event) {
    match event {
        Event::Update {
            key,
            value,
            revision,
            ..
        } => {
            if let Some((_, old)) = view.get(&key) {
                assert!(revision > *old, "{key}: revision {revision} after {old}");
            }
            view.insert(key, (value, revision));
        }
        Event::Delete { key, .. } => {
            view.remove(&key);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn subscribers_racing_a_writer_converge_to_the_final_value() {
    let server = TestServer::start();
    let socket = server.socket();
    const WRITES: u32 = 2_000;
    let writer = std::thread::spawn(move || {
        let mut wire = Wire::connect_unix(&socket);
        wire.hello();
        let mut last = 0;
        for i in 0..WRITES {
            last = put(&mut wire, "race.key", i.to_string().as_bytes());
        }
        last
    });
    let mut subscribers = Vec::new();
    for _ in 0..8 {
        let mut wire = server.wire();
        let id = subscribe(&mut wire, "race", None);
        subscribers.push((wire, id));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let last = writer.join().unwrap();
    for (mut wire, id) in subscribers {
        let mut view = View::new();
        let mut synced = false;
        // Read until SYNCED and the final revision are both seen.
        while !synced || view.get("race.key").map(|(_, r)| *r) != Some(last) {
            let (sub, event) = wire.event();
            assert_eq!(sub, id);
            match event {
                Event::Synced { .. } => synced = true,
                other => apply(&mut view, other),
            }
        }
        assert_eq!(view["race.key"].0, (WRITES - 1).to_string().as_bytes());
    }
}

#[test]
fn a_subscriber_that_never_reads_costs_bounded_memory() {
    let server = TestServer::start_with(&["--fsync", "never"]);
    let mut stuck = server.wire();
    let stuck_id = subscribe(&mut stuck, "hot", None);
    let mut writer = server.wire();
    // Warm up, then measure the growth over 100,000 updates to 10 keys.
    for i in 0..1_000u32 {
        put(&mut writer, &format!("hot.{}", i % 10), &[0u8; 100]);
    }
    let before = server.rss_kib();
    let mut last = HashMap::new();
    for i in 0..100_000u32 {
        let key = format!("hot.{}", i % 10);
        let value = format!("{i:0100}");
        let revision = put(&mut writer, &key, value.as_bytes());
        last.insert(key, (value, revision));
    }
    let after = server.rss_kib();
    // 100,000 queued events of ~130 bytes would be >= 13 MB; allow 8 MB of
    // allocator noise but not a queue.
    assert!(
        after < before + 8 * 1024,
        "server grew from {before} KiB to {after} KiB"
    );
    // Other clients were served all along (the writer above) and still are.
    let mut other = server.wire();
    assert_eq!(other.call(Request::Ping), Response::Pong);

    // When it reads again it converges to the latest values, some coalesced.
    let mut view = View::new();
    let mut coalesced_total = 0u64;
    while last
        .iter()
        .any(|(k, (_, r))| view.get(k).map(|(_, got)| got) != Some(r))
    {
        let (sub, event) = stuck.event();
        assert_eq!(sub, stuck_id);
        match event {
            Event::Synced { .. } => {}
            Event::Update { coalesced, .. } => {
                coalesced_total += u64::from(coalesced);
                apply(&mut view, event);
            }
            other => apply(&mut view, other),
        }
    }
    for (key, (value, _)) in &last {
        assert_eq!(view[key].0, value.as_bytes());
    }
    assert!(
        coalesced_total > 0,
        "a stuck subscriber must see coalescing"
    );
}

#[test]
fn acknowledged_puts_survive_kill_9_and_resume_delivers_exactly_the_changes() {
    let mut server = TestServer::start();
    let mut wire = server.wire();
    let mut acked = HashMap::new();
    for i in 0..200u32 {
        let key = format!("dur.k{}", i % 50);
        let revision = put(&mut wire, &key, format!("v{i}").as_bytes());
        acked.insert(key, (format!("v{i}"), revision));
    }
    put(&mut wire, "dur.gone", b"x");
    let seen = put(&mut wire, "dur.k0", b"before-kill");
    acked.insert("dur.k0".into(), ("before-kill".into(), seen));
    drop(wire);

    server.kill9_and_restart();
    let mut wire = server.wire();
    for (key, (value, revision)) in &acked {
        assert_eq!(
            wire.call(Request::Get { key: key.clone() }),
            Response::GetOk {
                revision: *revision,
                value: Bytes::copy_from_slice(value.as_bytes())
            }
        );
    }

    // Changes after `seen`: one update, one delete, one new key.
    let r1 = put(&mut wire, "dur.k1", b"after");
    let Response::DelOk { revision: r2, .. } = wire.call(Request::Delete {
        key: "dur.gone".into(),
        condition: Condition::None,
    }) else {
        panic!()
    };
    let r3 = put(&mut wire, "dur.new", b"fresh");
    server.kill9_and_restart();

    let mut wire = server.wire();
    let id = subscribe(&mut wire, "dur", Some(seen));
    let mut got = Vec::new();
    loop {
        match wire.event() {
            (s, Event::Synced { revision }) => {
                assert_eq!(s, id);
                assert_eq!(revision, r3);
                break;
            }
            (_, Event::Update { key, revision, .. }) => got.push((key, revision, true)),
            (_, Event::Delete { key, revision, .. }) => got.push((key, revision, false)),
            (_, other) => panic!("{other:?}"),
        }
    }
    got.sort_by_key(|(_, r, _)| *r);
    assert_eq!(
        got,
        [
            ("dur.k1".to_string(), r1, true),
            ("dur.gone".to_string(), r2, false),
            ("dur.new".to_string(), r3, true)
        ]
    );
}

#[test]
fn resume_from_the_future_gets_reset_and_a_full_snapshot() {
    let server = TestServer::start();
    let mut wire = server.wire();
    let rev = put(&mut wire, "p.a", b"1");
    let id = subscribe(&mut wire, "p", Some(rev + 1_000));
    assert_eq!(wire.event(), (id, Event::Reset));
    assert!(matches!(wire.event(), (_, Event::Update { key, .. }) if key == "p.a"));
    assert_eq!(wire.event(), (id, Event::Synced { revision: rev }));
}

#[test]
fn sigterm_closes_subscriptions_and_exits_cleanly() {
    let mut server = TestServer::start();
    let mut wire = server.wire();
    let id = subscribe(&mut wire, "s", None);
    assert!(matches!(wire.event(), (_, Event::Synced { .. })));
    let rev = put(&mut wire, "s.k", b"kept");
    assert!(matches!(wire.event(), (_, Event::Update { .. })));

    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    match wire.event() {
        (s, Event::Closed { code, .. }) => {
            assert_eq!(s, id);
            assert_eq!(code, ErrorCode::ShuttingDown);
        }
        other => panic!("{other:?}"),
    }
    assert!(wire.closed());
    assert!(!server.socket().exists(), "socket removed at exit");

    server.restart();
    let mut wire = server.wire();
    assert_eq!(
        wire.call(Request::Get { key: "s.k".into() }),
        Response::GetOk {
            revision: rev,
            value: Bytes::from_static(b"kept")
        }
    );
}

#[test]
fn stale_socket_is_replaced_but_live_ones_and_files_are_not() {
    // A stale socket: bound, then its listener dropped without unlinking.
    let mut server = TestServer::start();
    server.kill9();
    {
        let path = server.socket();
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        drop(listener);
        assert!(path.exists());
    }
    server.restart();
    assert_eq!(server.wire().call(Request::Ping), Response::Pong);

    // A second server on the live socket fails and leaves it alone.
    let other_data = server.dir.path().join("other-data");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nkv-server"))
        .arg("--listen")
        .arg(server.addr())
        .arg("--data-dir")
        .arg(&other_data)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already listening"), "{stderr}");
    assert_eq!(server.wire().call(Request::Ping), Response::Pong);

    // A regular file at the socket path is never deleted.
    let file = server.dir.path().join("not-a-socket");
    std::fs::write(&file, b"precious").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nkv-server"))
        .arg("--listen")
        .arg(format!("unix:{}", file.display()))
        .arg("--data-dir")
        .arg(&other_data)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
}

#[test]
fn second_server_on_the_same_data_dir_fails_naming_it() {
    let server = TestServer::start();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nkv-server"))
        .arg("--listen")
        .arg(format!(
            "unix:{}",
            server.dir.path().join("b.sock").display()
        ))
        .arg("--data-dir")
        .arg(server.data_dir())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&server.data_dir().display().to_string()),
        "{stderr}"
    );
}

#[test]
fn damaged_log_refuses_to_start_and_repair_salvages_the_rest() {
    let mut server = TestServer::start();
    let mut wire = server.wire();
    for i in 0..40u32 {
        put(
            &mut wire,
            &format!("r.k{i}"),
            format!("value-{i:04}").as_bytes(),
        );
    }
    drop(wire);
    server.kill9();

    // Flip one byte in the middle of the written part of the log.
    let segment = std::fs::read_dir(server.data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a segment file");
    let mut bytes = std::fs::read(&segment).unwrap();
    let written = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[written / 2] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();

    let start = std::process::Command::new(env!("CARGO_BIN_EXE_nkv-server"))
        .arg("--listen")
        .arg(server.addr())
        .arg("--data-dir")
        .arg(server.data_dir())
        .output()
        .unwrap();
    assert!(!start.status.success());
    let stderr = String::from_utf8_lossy(&start.stderr);
    let file_name = segment.file_name().unwrap().to_string_lossy();
    assert!(stderr.contains(file_name.as_ref()), "{stderr}");
    // Run the repair command exactly as the message prints it.
    let printed = stderr
        .split('`')
        .find(|part| part.starts_with("nkv-server repair"))
        .unwrap_or_else(|| panic!("no repair command in: {stderr}"));
    let words: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(
        words[1..],
        ["repair", "--data-dir", server.data_dir().to_str().unwrap()],
        "{printed}"
    );
    let repair = std::process::Command::new(env!("CARGO_BIN_EXE_nkv-server"))
        .args(&words[1..])
        .output()
        .unwrap();
    assert!(
        repair.status.success(),
        "{}",
        String::from_utf8_lossy(&repair.stderr)
    );
    assert!(!repair.stdout.is_empty());

    server.restart();
    let mut wire = server.wire();
    let mut intact = 0;
    for i in 0..40u32 {
        match wire.call(Request::Get {
            key: format!("r.k{i}"),
        }) {
            Response::GetOk { value, .. } => {
                assert_eq!(
                    value,
                    format!("value-{i:04}").as_bytes(),
                    "never a wrong value"
                );
                intact += 1;
            }
            Response::Error(e) => assert_eq!(e.code, ErrorCode::NotFound),
            other => panic!("{other:?}"),
        }
    }
    assert!(intact >= 38, "repair kept {intact} of 40 records");
}
