//! Atomic multi-key transactions (TXN) against a real server: all or
//! nothing under one revision, the failed condition named, limits, and
//! grouped subscriptions that can apply a transaction at once even when
//! coalescing merges it with later writes.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::{TestServer, Wire};
use nkv::protocol::{Check, ErrorCode, Event, Request, Response, Txn, TxnCondition, TxnOp};

fn cond(key: &str, check: Check) -> TxnCondition {
    TxnCondition {
        key: key.into(),
        check,
    }
}

fn put_op(key: &str, value: &str) -> TxnOp {
    TxnOp::Put {
        key: key.into(),
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

#[test]
fn a_transaction_applies_everything_under_one_revision() {
    let mut server = TestServer::start();
    let mut wire = server.wire();
    let r_state = wire.put("net.eth0.state", "down");
    wire.put("net.eth1.a", "1");
    wire.put("net.eth1.b", "2");
    wire.put("old", "x");
    let txn = Txn {
        conditions: vec![
            cond("net.eth0.state", Check::RevisionEquals(r_state)),
            cond("net.lock", Check::Absent),
            cond("old", Check::Present),
        ],
        ops: vec![
            put_op("net.eth0.state", "up"),
            TxnOp::DeletePrefix {
                prefix: "net.eth1".into(),
            },
            TxnOp::Delete { key: "old".into() },
            TxnOp::Delete {
                key: "never.existed".into(),
            },
            put_op("net.lock", "me"),
            // Written then deleted within the transaction: no change.
            put_op("tmp.scratch", "x"),
            TxnOp::Delete {
                key: "tmp.scratch".into(),
            },
        ],
    };
    let (rev, deleted) = match wire.call(Request::Txn(txn)) {
        Response::TxnOk { revision, deleted } => (revision, deleted),
        other => panic!("TXN: {other:?}"),
    };
    assert_eq!(deleted, 3, "net.eth1.a, net.eth1.b, old");
    assert_eq!(wire.get("net.eth0.state"), Some((rev, "up".into())));
    assert_eq!(wire.get("net.lock"), Some((rev, "me".into())));
    for gone in ["net.eth1.a", "net.eth1.b", "old", "tmp.scratch"] {
        assert_eq!(wire.get(gone), None, "{gone}");
    }
    assert_eq!(
        wire.stat("revision"),
        rev,
        "one revision for the whole write"
    );

    // Durable like any write: a kill -9 keeps all of it.
    server.kill9_and_restart();
    let mut wire = server.wire();
    assert_eq!(wire.get("net.eth0.state"), Some((rev, "up".into())));
    assert_eq!(wire.get("net.lock"), Some((rev, "me".into())));
    assert_eq!(wire.get("net.eth1.a"), None);
}

#[test]
fn a_failed_condition_is_named_and_nothing_is_written() {
    let server = TestServer::start();
    let mut wire = server.wire();
    let lock_rev = wire.put("net.lock", "them");
    wire.put("a", "1");
    let before = wire.stat("revision");
    let txn = Txn {
        conditions: vec![
            cond("a", Check::Present),
            cond("net.lock", Check::Absent),
            cond("nothing", Check::Present),
        ],
        ops: vec![put_op("a", "2"), put_op("net.lock", "me")],
    };
    match wire.call(Request::Txn(txn)) {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::ConditionFailed);
            assert_eq!(e.key.as_deref(), Some("net.lock"), "the first failing one");
            assert_eq!(e.current_revision, Some(lock_rev));
            assert!(e.message.contains("condition 1"), "{}", e.message);
        }
        other => panic!("expected CONDITION_FAILED, got {other:?}"),
    }
    assert_eq!(wire.get("a"), Some((lock_rev + 1, "1".into())));
    assert_eq!(wire.get("net.lock"), Some((lock_rev, "them".into())));
    assert_eq!(wire.stat("revision"), before, "no revision taken");

    // A revision-equals condition on an absent key reports revision 0.
    let txn = Txn {
        conditions: vec![cond("ghost", Check::RevisionEquals(3))],
        ops: vec![put_op("ghost", "boo")],
    };
    match wire.call(Request::Txn(txn)) {
        Response::Error(e) => {
            assert_eq!(
                (e.code, e.current_revision),
                (ErrorCode::ConditionFailed, Some(0))
            );
            assert_eq!(e.key.as_deref(), Some("ghost"));
        }
        other => panic!("{other:?}"),
    }
    // A transaction that changes nothing writes nothing.
    let txn = Txn {
        conditions: vec![cond("a", Check::Present)],
        ops: vec![TxnOp::Delete { key: "nope".into() }],
    };
    assert_eq!(
        wire.call(Request::Txn(txn)),
        Response::TxnOk {
            revision: before,
            deleted: 0
        }
    );
}

#[test]
fn limits_and_bad_keys_are_refused_whole() {
    let server = TestServer::start_with(&["--max-value", "1024"]);
    let mut wire = server.wire();
    let big = "v".repeat(400);
    let txn = Txn {
        conditions: vec![],
        ops: (0..3).map(|i| put_op(&format!("k{i}"), &big)).collect(),
    };
    match wire.call(Request::Txn(txn)) {
        Response::Error(e) => assert_eq!(e.code, ErrorCode::TooLarge, "{}", e.message),
        other => panic!("{other:?}"),
    }
    assert_eq!(wire.get("k0"), None);
    let txn = Txn {
        conditions: vec![],
        ops: vec![put_op("good", "1"), put_op("bad..key", "2")],
    };
    match wire.call(Request::Txn(txn)) {
        Response::Error(e) => assert_eq!(e.code, ErrorCode::InvalidKey),
        other => panic!("{other:?}"),
    }
    assert_eq!(wire.get("good"), None, "nothing of it was written");
    let txn = Txn {
        conditions: (0..=nkv::protocol::wire::MAX_TXN_CONDITIONS)
            .map(|i| cond(&format!("c{i}"), Check::Absent))
            .collect(),
        ops: vec![],
    };
    match wire.call(Request::Txn(txn)) {
        Response::Error(e) => assert_eq!(e.code, ErrorCode::Limit),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        wire.call(Request::Ping),
        Response::Pong,
        "the connection lives"
    );
}

/// Reads a grouped subscription's live events: returns each unit a client
/// would apply at once (a GROUP's events, or one event alone).
fn read_units(wire: &mut Wire, sub: u32, mut events: usize) -> Vec<Vec<Event>> {
    let mut units = Vec::new();
    while events > 0 {
        let (id, event) = wire.event();
        assert_eq!(id, sub);
        match event {
            Event::Group { count, revision } => {
                let mut unit = Vec::new();
                for _ in 0..count {
                    let (_, e) = wire.event();
                    assert!(
                        matches!(e, Event::Update { .. } | Event::Delete { .. }),
                        "{e:?}"
                    );
                    unit.push(e);
                }
                let last = match unit.last().unwrap() {
                    Event::Update { revision, .. } | Event::Delete { revision, .. } => *revision,
                    _ => unreachable!(),
                };
                assert_eq!(last, revision, "GROUP's revision is its last event's");
                events = events.saturating_sub(unit.len());
                units.push(unit);
            }
            e @ (Event::Update { .. } | Event::Delete { .. }) => {
                events -= 1;
                units.push(vec![e]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    units
}

#[test]
fn grouped_subscribers_get_a_transaction_as_one_group() {
    let server = TestServer::start();
    let mut writer = server.wire();
    let mut grouped = server.wire();
    let mut plain = server.wire();
    let g = grouped.subscribe("cfg", true);
    let p = plain.subscribe("cfg", false);
    writer.put("cfg.single", "1");
    let txn = Txn {
        conditions: vec![],
        ops: vec![
            put_op("cfg.a", "1"),
            put_op("cfg.b", "1"),
            put_op("other.c", "1"),
        ],
    };
    let rev = match writer.call(Request::Txn(txn)) {
        Response::TxnOk { revision, .. } => revision,
        other => panic!("{other:?}"),
    };
    let units = read_units(&mut grouped, g, 3);
    assert_eq!(units.len(), 2, "{units:?}");
    assert_eq!(units[0].len(), 1, "a single write stands alone");
    let keys: Vec<_> = units[1]
        .iter()
        .map(|e| match e {
            Event::Update { key, revision, .. } => {
                assert_eq!(*revision, rev);
                key.clone()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(keys, ["cfg.a", "cfg.b"], "only the covered keys, one group");
    // Without the flag: the same events, no GROUP.
    for _ in 0..3 {
        let (id, event) = plain.event();
        assert_eq!(id, p);
        assert!(matches!(event, Event::Update { .. }), "{event:?}");
    }
    assert_eq!(plain.call(Request::Ping), Response::Pong);
}

#[test]
fn a_slow_grouped_subscriber_never_sees_half_a_transaction() {
    // Transactions write overlapping sets of keys, each with its own value.
    // A grouped subscriber that reads late (so its mailbox coalesces) and
    // applies each unit (a GROUP's events, or a lone event) at once must,
    // after every unit, hold exactly the state the store had at that
    // unit's revision: replaying the transactions up to it says which.
    let server = TestServer::start();
    let mut writer = server.wire();
    let mut reader = server.wire();
    let sub = reader.subscribe("k", true);
    // Values large enough that the socket fills and the mailbox coalesces.
    let value = |i: usize| format!("{i:0>2000}");
    let keys = ["k.0", "k.1", "k.2", "k.3", "k.4"];
    let mut history: Vec<(u64, Vec<&str>, String)> = Vec::new();
    for i in 0..400 {
        // 1 to 3 keys, overlapping differently each time.
        let picked: Vec<&str> = (0..1 + i % 3).map(|j| keys[(i * 7 + j * 3) % 5]).collect();
        let txn = Txn {
            conditions: vec![],
            ops: picked.iter().map(|k| put_op(k, &value(i))).collect(),
        };
        let revision = match writer.call(Request::Txn(txn)) {
            Response::TxnOk { revision, .. } => revision,
            other => panic!("{other:?}"),
        };
        history.push((revision, picked, value(i)));
    }
    let state_at = |revision: u64| {
        let mut state = BTreeMap::new();
        for (r, keys, value) in &history {
            if *r <= revision {
                for k in keys {
                    state.insert(k.to_string(), value.clone());
                }
            }
        }
        state
    };
    let final_revision = history.last().unwrap().0;
    let mut view: BTreeMap<String, String> = BTreeMap::new();
    let (mut coalesced, mut groups, mut at) = (0, 0, 0);
    while at < final_revision {
        let (id, event) = reader.event();
        assert_eq!(id, sub);
        let unit = match event {
            Event::Group { count, revision } => {
                groups += 1;
                at = revision;
                (0..count).map(|_| reader.event().1).collect()
            }
            single => vec![single],
        };
        for event in unit {
            match event {
                Event::Update {
                    key,
                    value,
                    coalesced: c,
                    revision,
                } => {
                    coalesced += c;
                    at = at.max(revision);
                    view.insert(key, String::from_utf8(value.to_vec()).unwrap());
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(
            view == state_at(at),
            "after a unit at revision {at} the view is a state the store never had"
        );
    }
    assert!(coalesced > 0, "the test must make the mailbox coalesce");
    assert!(groups > 0);
}
