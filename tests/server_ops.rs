//! End to end over a Unix socket and over TCP: every operation, conditions,
//! prefix subscriptions on segment boundaries, prefix deletes.

mod common;

use bytes::Bytes;
use common::{TestServer, Wire};
use nkv::protocol::{Condition, ErrorCode, Event, Request, Response};

fn put(wire: &mut Wire, key: &str, value: &str) -> u64 {
    match wire.call(Request::Put {
        key: key.into(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        condition: Condition::None,
    }) {
        Response::PutOk { revision } => revision,
        other => panic!("PUT {key}: {other:?}"),
    }
}

fn error_code(response: Response) -> ErrorCode {
    match response {
        Response::Error(e) => e.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Runs the whole operation tour over one connection.
fn tour(wire: &mut Wire) {
    assert_eq!(wire.call(Request::Ping), Response::Pong);

    let r1 = put(wire, "net.eth0.state", "up");
    let r2 = put(wire, "net.eth1.state", "down");
    let r3 = put(wire, "network", "other");
    assert!(r1 < r2 && r2 < r3, "revisions increase: {r1} {r2} {r3}");

    assert_eq!(
        wire.call(Request::Get {
            key: "net.eth0.state".into()
        }),
        Response::GetOk {
            revision: r1,
            value: Bytes::from_static(b"up")
        }
    );
    assert_eq!(
        error_code(wire.call(Request::Get {
            key: "net.eth9".into()
        })),
        ErrorCode::NotFound
    );

    // LIST on segment boundaries: `net` does not cover `network`.
    let id = wire.send(Request::List {
        prefix: "net".into(),
    });
    let mut keys = Vec::new();
    loop {
        let (got, response) = wire.response();
        assert_eq!(got, id);
        match response {
            Response::ListItem { key, .. } => keys.push(key),
            Response::ListOk { count, revision } => {
                assert_eq!(count as usize, keys.len());
                assert_eq!(revision, r3);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(keys, ["net.eth0.state", "net.eth1.state"]);

    // Conditions.
    let create = |c| Request::Put {
        key: "lock".into(),
        value: Bytes::from_static(b"me"),
        condition: c,
    };
    let Response::PutOk { revision: lock_rev } = wire.call(create(Condition::MustNotExist)) else {
        panic!("create failed")
    };
    match wire.call(create(Condition::MustNotExist)) {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::ConditionFailed);
            assert_eq!(e.current_revision, Some(lock_rev));
        }
        other => panic!("{other:?}"),
    }
    match wire.call(create(Condition::RevisionEquals(lock_rev + 100))) {
        Response::Error(e) => assert_eq!(e.current_revision, Some(lock_rev)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        wire.call(create(Condition::RevisionEquals(lock_rev))),
        Response::PutOk { .. }
    ));
    match wire.call(Request::Delete {
        key: "lock".into(),
        condition: Condition::RevisionEquals(1),
    }) {
        Response::Error(e) => assert_eq!(e.code, ErrorCode::ConditionFailed),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        wire.call(Request::Delete {
            key: "lock".into(),
            condition: Condition::None
        }),
        Response::DelOk { deleted: 1, .. }
    ));
    assert_eq!(
        error_code(wire.call(Request::Delete {
            key: "lock".into(),
            condition: Condition::None
        })),
        ErrorCode::NotFound
    );

    // Prefix delete: one revision, both keys, `network` survives.
    match wire.call(Request::DeletePrefix {
        prefix: "net".into(),
    }) {
        Response::DelOk { deleted, .. } => assert_eq!(deleted, 2),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        wire.call(Request::Get {
            key: "network".into()
        }),
        Response::GetOk { .. }
    ));
    match wire.call(Request::DeletePrefix {
        prefix: "nothing.here".into(),
    }) {
        Response::DelOk { deleted: 0, .. } => {}
        other => panic!("{other:?}"),
    }

    // A subscription on this same connection: snapshot, SYNCED, live event.
    let sub = wire.send(Request::Subscribe {
        prefix: "network".into(),
        since: None,
    });
    assert_eq!(wire.response(), (sub, Response::SubOk));
    assert!(matches!(wire.event(), (s, Event::Update { key, .. }) if s == sub && key == "network"));
    assert!(matches!(wire.event(), (s, Event::Synced { .. }) if s == sub));
    let live = put(wire, "network.lan", "on");
    match wire.event() {
        (s, Event::Update { key, revision, .. }) => {
            assert_eq!((s, key.as_str(), revision), (sub, "network.lan", live));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        wire.call(Request::Unsubscribe { subscription: sub }),
        Response::UnsubOk
    );

    // STATS names the counters protocol.md lists.
    match wire.call(Request::Stats) {
        Response::StatsOk { stats } => {
            let get = |name: &str| stats.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            assert_eq!(get("keys"), Some(2));
            assert!(get("ops.put").unwrap() >= 3);
            assert!(get("connections").unwrap() >= 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_operation_over_a_unix_socket() {
    let server = TestServer::start();
    tour(&mut server.wire());
}

/// `--threads 1`: one thread serves every connection (and every
/// subscription's events), and the whole tour still works; `--threads 0`
/// is refused with a message naming the flag.
#[test]
fn every_operation_with_one_serving_thread() {
    let server = TestServer::start_with(&["--threads=1"]);
    tour(&mut server.wire());
    let workers = std::fs::read_dir(format!("/proc/{}/task", server.pid()))
        .unwrap()
        .filter(|t| {
            let comm = t.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).unwrap_or_default().trim() == "tokio-rt-worker"
        })
        .count();
    assert_eq!(workers, 1, "serving threads");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nkv-server"))
        .args(["--threads=0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--threads"), "{err}");
}

#[test]
fn every_operation_over_tcp() {
    let server = TestServer::start_with_tcp();
    let mut wire = Wire::connect_tcp(server.tcp_port.unwrap());
    wire.hello();
    tour(&mut wire);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start();
    let mut wire = server.wire();
    let ids: Vec<u32> = (0..200)
        .map(|i| {
            wire.send(Request::Put {
                key: format!("k.{i}"),
                value: Bytes::from(vec![b'x'; i]),
                condition: Condition::None,
            })
        })
        .collect();
    let mut last = 0;
    for id in ids {
        let (got, response) = wire.response();
        assert_eq!(got, id);
        let Response::PutOk { revision } = response else {
            panic!("{response:?}")
        };
        assert!(revision > last);
        last = revision;
    }
}

/// Reads events of one subscription until SYNCED; returns the keys seen.
fn snapshot_keys(wire: &mut Wire, subscription: u32) -> (Vec<String>, u64) {
    let mut keys = Vec::new();
    loop {
        let (sub, event) = wire.event();
        assert_eq!(sub, subscription);
        match event {
            Event::Update { key, .. } => keys.push(key),
            Event::Synced { revision } => return (keys, revision),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn subscription_covers_prefix_on_segment_boundaries() {
    let server = TestServer::start();
    let mut writer = server.wire();
    put(&mut writer, "net", "root");
    put(&mut writer, "net.eth0", "up");
    put(&mut writer, "network", "not covered");

    let mut watcher = server.wire();
    let sub = watcher.send(Request::Subscribe {
        prefix: "net".into(),
        since: None,
    });
    assert_eq!(watcher.response(), (sub, Response::SubOk));
    let (keys, synced) = snapshot_keys(&mut watcher, sub);
    assert_eq!(keys, ["net", "net.eth0"]);

    put(&mut writer, "network.x", "not covered either");
    let rev = put(&mut writer, "net.eth1", "down");
    assert!(rev > synced);
    match watcher.event() {
        (
            s,
            Event::Update {
                key,
                value,
                revision,
                coalesced,
            },
        ) => {
            assert_eq!(s, sub);
            assert_eq!(key, "net.eth1");
            assert_eq!(value, Bytes::from_static(b"down"));
            assert_eq!(revision, rev);
            assert_eq!(coalesced, 0);
        }
        other => panic!("{other:?}"),
    }

    assert_eq!(
        watcher.call(Request::Unsubscribe { subscription: sub }),
        Response::UnsubOk
    );
    put(&mut writer, "net.eth2", "after unsubscribe");
    // No event may follow UNSUB_OK: the next frame is the PONG.
    assert_eq!(watcher.call(Request::Ping), Response::Pong);
    assert_eq!(
        error_code(watcher.call(Request::Unsubscribe { subscription: sub })),
        ErrorCode::NotFound
    );
}

#[test]
fn prefix_delete_notifies_every_covered_subscriber() {
    let server = TestServer::start();
    let mut writer = server.wire();
    for key in ["a.x", "a.y.z", "ab"] {
        put(&mut writer, key, "v");
    }
    let mut watchers: Vec<(Wire, u32, Vec<String>)> = Vec::new();
    for (prefix, expect) in [
        ("a", vec!["a.x", "a.y.z"]),
        ("a.y", vec!["a.y.z"]),
        ("", vec!["a.x", "a.y.z"]),
        ("ab", vec![]),
    ] {
        let mut wire = server.wire();
        let sub = wire.send(Request::Subscribe {
            prefix: prefix.into(),
            since: None,
        });
        assert_eq!(wire.response(), (sub, Response::SubOk));
        snapshot_keys(&mut wire, sub);
        watchers.push((wire, sub, expect.into_iter().map(String::from).collect()));
    }
    let Response::DelOk { revision, deleted } =
        writer.call(Request::DeletePrefix { prefix: "a".into() })
    else {
        panic!()
    };
    assert_eq!(deleted, 2);
    for (wire, sub, expect) in &mut watchers {
        let mut got = Vec::new();
        for _ in 0..expect.len() {
            match wire.event() {
                (
                    s,
                    Event::Delete {
                        key, revision: r, ..
                    },
                ) => {
                    assert_eq!(s, *sub);
                    assert_eq!(r, revision);
                    got.push(key);
                }
                other => panic!("{other:?}"),
            }
        }
        got.sort();
        assert_eq!(&got, expect);
        // Nothing else for this subscriber.
        assert_eq!(wire.call(Request::Ping), Response::Pong);
    }
}

#[test]
fn duplicate_subscription_id_is_refused_and_connection_lives() {
    let server = TestServer::start();
    let mut wire = server.wire();
    wire.send_with_id(
        7,
        Request::Subscribe {
            prefix: "x".into(),
            since: None,
        },
    );
    assert_eq!(wire.response(), (7, Response::SubOk));
    assert!(matches!(wire.event(), (7, Event::Synced { .. })));
    wire.send_with_id(
        7,
        Request::Subscribe {
            prefix: "y".into(),
            since: None,
        },
    );
    let (id, response) = wire.response();
    assert_eq!(id, 7);
    assert_eq!(error_code(response), ErrorCode::InvalidArgument);
    assert_eq!(wire.call(Request::Ping), Response::Pong);
}
