//! The Rust client's side of transactions, ephemeral keys and grouped
//! subscriptions, against a scripted fake server (`common/fake.rs`): what
//! goes on the wire, how answers map to results, which ephemeral keys are
//! taken back after a reconnect and with which condition, and what a
//! grouped subscription's handler receives.

use std::sync::mpsc::{channel, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nkv::client::{Client, ClientOptions, ErrorKind, Handler, SubscriptionEvent, TxnOutcome};
use nkv::protocol::{
    Check, ClientFrame, Condition, ErrorCode, ErrorFrame, Event, Request, Response, Txn,
};

mod common;

use common::fake::{Fake, Peer, WAIT};

fn options() -> ClientOptions {
    ClientOptions {
        name: "client-txn-test".into(),
        timeout: WAIT,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..ClientOptions::default()
    }
}

fn collector() -> (Handler, Receiver<SubscriptionEvent>) {
    let (tx, rx) = channel();
    let handler: Handler = Box::new(move |_id: u32, event: &SubscriptionEvent| {
        let _ = tx.send(event.clone());
    });
    (handler, rx)
}

fn next_events(rx: &Receiver<SubscriptionEvent>, n: usize) -> Vec<SubscriptionEvent> {
    (0..n)
        .map(|i| {
            rx.recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("event {i} of {n} did not arrive"))
        })
        .collect()
}

fn update(key: &str, revision: u64) -> Event {
    Event::Update {
        revision,
        coalesced: 0,
        key: key.into(),
        value: Bytes::from_static(b"v"),
    }
}

fn seen(key: &str, revision: u64) -> SubscriptionEvent {
    SubscriptionEvent::Update {
        key: key.into(),
        value: Bytes::from_static(b"v"),
        revision,
        coalesced: 0,
    }
}

fn claim(key: &str, value: &'static [u8], condition: Condition, grace_ms: u32) -> Request {
    Request::PutEphemeral {
        key: key.into(),
        value: Bytes::from_static(value),
        condition,
        grace_ms,
    }
}

/// Expects `request` and answers it with `response`.
fn answer(peer: &mut Peer, request: Request, response: Response) {
    let frame = peer.expect();
    assert_eq!(frame.request, request);
    peer.respond(frame.id, response);
}

/// Waits until the client holds exactly `keys`.
fn holds(client: &Client, keys: &[&str]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let held = client.ephemeral_keys();
        if held == keys {
            return;
        }
        assert!(Instant::now() < deadline, "holds {held:?}, not {keys:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------
// Transactions.

#[test]
fn a_transaction_goes_out_in_order_and_its_answers_map_to_results() {
    let txn = Txn::new()
        .if_revision("net.x", 42)
        .if_absent("net.lock")
        .put("net.lock", "me")
        .delete("net.old")
        .delete_prefix("tmp");
    let expected = txn.clone();
    let fake = Fake::start(move |l| {
        let mut peer = l.accept();
        peer.handshake_as(1, 64, 100);
        answer(
            &mut peer,
            Request::Txn(expected.clone()),
            Response::TxnOk {
                revision: 44,
                deleted: 2,
            },
        );
        answer(
            &mut peer,
            Request::Txn(expected),
            Response::Error(ErrorFrame::txn_condition_failed(
                1,
                "net.lock",
                Check::Absent,
                40,
            )),
        );
        // Nothing the client refuses itself reaches the server.
        answer(&mut peer, Request::Ping, Response::Pong);
        peer.pong_until_closed();
    });
    let client = Client::connect(&fake.addr, options()).unwrap();
    assert_eq!(
        client.txn(&txn).unwrap(),
        TxnOutcome {
            revision: 44,
            deleted: 2
        }
    );
    let e = client.txn(&txn).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ConditionFailed);
    assert_eq!(e.failed_key.as_deref(), Some("net.lock"));
    assert_eq!(e.current_revision, Some(40));
    assert!(e.to_string().contains("net.lock must be absent"), "{e}");

    // Refused before sending: counts, keys, values.
    let many = (0..257).fold(Txn::new(), |t, i| t.if_absent(format!("k{i}")));
    assert_eq!(client.txn(&many).unwrap_err().kind, ErrorKind::Limit);
    let many = (0..1025).fold(Txn::new(), |t, i| t.delete(format!("k{i}")));
    assert_eq!(client.txn(&many).unwrap_err().kind, ErrorKind::Limit);
    let bad = Txn::new().if_present("a..b").put("x", "1");
    assert_eq!(client.txn(&bad).unwrap_err().kind, ErrorKind::InvalidKey);
    let bad = Txn::new().delete_prefix("net.*");
    assert_eq!(client.txn(&bad).unwrap_err().kind, ErrorKind::InvalidKey);
    let big = Txn::new().put("x", vec![0u8; 101]);
    assert_eq!(client.txn(&big).unwrap_err().kind, ErrorKind::TooLarge);
    client.ping().unwrap();
    client.close();
    fake.join();
}

// ---------------------------------------------------------------------------
// Ephemeral keys.

#[test]
fn an_ephemeral_put_carries_the_flag_and_its_grace() {
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        peer.handshake();
        answer(
            &mut peer,
            claim("svc.netd.alive", b"1", Condition::MustNotExist, 3000),
            Response::PutOk { revision: 43 },
        );
        answer(
            &mut peer,
            claim("svc.leader", b"me", Condition::MustNotExist, 0),
            Response::Error(ErrorFrame::condition_failed(12)),
        );
        peer.pong_until_closed();
    });
    let client = Client::connect(&fake.addr, options()).unwrap();
    let grace = Duration::from_secs(3);
    let rev = client
        .put_ephemeral("svc.netd.alive", b"1", Condition::MustNotExist, grace)
        .unwrap();
    assert_eq!(rev, 43);
    // Another holds the leader key: not ours.
    let e = client
        .put_ephemeral("svc.leader", b"me", Condition::MustNotExist, Duration::ZERO)
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::ConditionFailed);
    assert_eq!(e.current_revision, Some(12));
    assert_eq!(client.ephemeral_keys(), ["svc.netd.alive"]);
    // Over the protocol's 600 s: refused before sending.
    let e = client
        .put_ephemeral("svc.x", b"1", Condition::None, Duration::from_secs(601))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    client.close();
    fake.join();
}

/// The keys a client holds are put again on each new connection, with the
/// revision it last got as the condition; a failed re-assertion, a plain
/// put, a delete and a prefix delete each end the holding.
#[test]
fn held_keys_are_taken_back_after_a_reconnect_and_only_those() {
    let (step_tx, step_rx) = channel::<()>();
    let fake = Fake::start(move |l| {
        let grace = 2000;
        let mut peer = l.accept();
        peer.handshake();
        for (key, rev) in [("svc.a", 5), ("svc.b", 6), ("svc.c", 7), ("svc.d", 8)] {
            answer(
                &mut peer,
                claim(key, b"1", Condition::None, grace),
                Response::PutOk { revision: rev },
            );
        }
        // A plain put of c, a delete of d: no longer ephemeral.
        answer(
            &mut peer,
            Request::Put {
                key: "svc.c".into(),
                value: Bytes::from_static(b"2"),
                condition: Condition::None,
            },
            Response::PutOk { revision: 9 },
        );
        answer(
            &mut peer,
            Request::Delete {
                key: "svc.d".into(),
                condition: Condition::None,
            },
            Response::DelOk {
                revision: 10,
                deleted: 1,
            },
        );
        answer(&mut peer, Request::Ping, Response::Pong);
        drop(peer);

        // Second connection: a and b come back first, conditionally. b
        // was written by someone else meanwhile.
        let mut peer = l.accept();
        peer.handshake();
        answer(
            &mut peer,
            claim("svc.a", b"1", Condition::RevisionEquals(5), grace),
            Response::PutOk { revision: 11 },
        );
        answer(
            &mut peer,
            claim("svc.b", b"1", Condition::RevisionEquals(6), grace),
            Response::Error(ErrorFrame::condition_failed(12)),
        );
        answer(&mut peer, Request::Ping, Response::Pong);
        step_rx.recv_timeout(WAIT).unwrap();
        drop(peer);

        // Third: only a, with the revision of its re-assertion.
        let mut peer = l.accept();
        peer.handshake();
        answer(
            &mut peer,
            claim("svc.a", b"1", Condition::RevisionEquals(11), grace),
            Response::PutOk { revision: 13 },
        );
        answer(
            &mut peer,
            Request::DeletePrefix {
                prefix: "svc".into(),
            },
            Response::DelOk {
                revision: 14,
                deleted: 1,
            },
        );
        peer.pong_until_closed();
    });
    let client = Client::connect(&fake.addr, options()).unwrap();
    let grace = Duration::from_secs(2);
    for key in ["svc.a", "svc.b", "svc.c", "svc.d"] {
        client
            .put_ephemeral(key, b"1", Condition::None, grace)
            .unwrap();
    }
    assert_eq!(
        client.ephemeral_keys(),
        ["svc.a", "svc.b", "svc.c", "svc.d"]
    );
    client.put("svc.c", b"2", Condition::None).unwrap();
    client.delete("svc.d", Condition::None).unwrap();
    assert_eq!(client.ephemeral_keys(), ["svc.a", "svc.b"]);
    // The fake hangs up after this PING.
    client.ping().unwrap();
    holds(&client, &["svc.a"]);
    let deadline = Instant::now() + WAIT;
    while client.ping().is_err() {
        assert!(Instant::now() < deadline, "no reconnect");
        thread::sleep(Duration::from_millis(10));
    }
    step_tx.send(()).unwrap();
    // Lost again; after the third connection's re-assertion, a prefix
    // delete covering it ends the holding.
    let deadline = Instant::now() + WAIT;
    loop {
        match client.delete_prefix("svc") {
            Ok(done) => {
                assert_eq!(done, (14, 1));
                break;
            }
            Err(e) => assert_eq!(e.kind, ErrorKind::Connection, "{e}"),
        }
        assert!(Instant::now() < deadline, "no third connection");
        thread::sleep(Duration::from_millis(10));
    }
    assert!(client.ephemeral_keys().is_empty());
    client.close();
    fake.join();
}

#[test]
fn a_transaction_ends_the_holding_of_the_keys_it_writes() {
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        peer.handshake();
        for (key, rev) in [("svc.a", 1), ("svc.b", 2), ("tmp.c", 3)] {
            answer(
                &mut peer,
                claim(key, b"1", Condition::None, 0),
                Response::PutOk { revision: rev },
            );
        }
        let frame = peer.expect();
        assert!(matches!(frame.request, Request::Txn(_)));
        peer.respond(
            frame.id,
            Response::TxnOk {
                revision: 4,
                deleted: 1,
            },
        );
        peer.pong_until_closed();
    });
    let client = Client::connect(&fake.addr, options()).unwrap();
    for key in ["svc.a", "svc.b", "tmp.c"] {
        client
            .put_ephemeral(key, b"1", Condition::None, Duration::ZERO)
            .unwrap();
    }
    let txn = Txn::new()
        .if_present("svc.b")
        .put("svc.a", "2")
        .delete_prefix("tmp");
    client.txn(&txn).unwrap();
    assert_eq!(client.ephemeral_keys(), ["svc.b"]);
    client.close();
    fake.join();
}

#[test]
fn an_ephemeral_put_that_timed_out_is_held_once_its_answer_comes() {
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        peer.handshake();
        let frame = peer.expect();
        assert!(matches!(frame.request, Request::PutEphemeral { .. }));
        thread::sleep(Duration::from_millis(400));
        peer.respond(frame.id, Response::PutOk { revision: 3 });
        peer.pong_until_closed();
    });
    let client = Client::connect(
        &fake.addr,
        ClientOptions {
            timeout: Duration::from_millis(100),
            ..options()
        },
    )
    .unwrap();
    let e = client
        .put_ephemeral("svc.a", b"1", Condition::None, Duration::from_secs(1))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(client.ephemeral_keys().is_empty());
    client.set_timeout(WAIT);
    holds(&client, &["svc.a"]);
    client.close();
    fake.join();
}

// ---------------------------------------------------------------------------
// Grouped subscriptions.

#[test]
fn a_grouped_subscription_gets_groups_and_resumes_grouped() {
    let (resent_tx, resent_rx) = channel::<ClientFrame>();
    let fake = Fake::start(move |l| {
        let mut peer = l.accept();
        peer.handshake();
        let sub = peer.expect();
        assert_eq!(
            sub.request,
            Request::SubscribeGrouped {
                prefix: "net".into(),
                since: None
            }
        );
        peer.respond(sub.id, Response::SubOk);
        peer.event(sub.id, update("net.a", 3));
        peer.event(sub.id, Event::Synced { revision: 5 });
        peer.event(
            sub.id,
            Event::Group {
                count: 2,
                revision: 6,
            },
        );
        peer.event(sub.id, update("net.a", 6));
        peer.event(sub.id, update("net.b", 6));
        // A group the lost connection cuts after one event.
        peer.event(
            sub.id,
            Event::Group {
                count: 3,
                revision: 7,
            },
        );
        peer.event(sub.id, update("net.c", 7));
        drop(peer);

        let mut peer = l.accept();
        peer.handshake();
        let again = peer.expect();
        peer.respond(again.id, Response::SubOk);
        peer.event(again.id, update("net.c", 7));
        peer.event(again.id, update("net.d", 7));
        peer.event(again.id, update("net.e", 7));
        peer.event(again.id, Event::Synced { revision: 7 });
        resent_tx.send(again).unwrap();
        peer.pong_until_closed();
    });
    let client = Client::connect(&fake.addr, options()).unwrap();
    let (handler, rx) = collector();
    let id = client.subscribe_grouped("net", None, handler).unwrap();
    assert_eq!(
        next_events(&rx, 11),
        [
            seen("net.a", 3),
            SubscriptionEvent::Synced { revision: 5 },
            SubscriptionEvent::Group {
                count: 2,
                revision: 6
            },
            seen("net.a", 6),
            seen("net.b", 6),
            // What came of the cut group, on its own: no count that lies.
            seen("net.c", 7),
            SubscriptionEvent::Disconnected,
            // The resume from 6 delivers revision 7 again, whole.
            seen("net.c", 7),
            seen("net.d", 7),
            seen("net.e", 7),
            SubscriptionEvent::Synced { revision: 7 },
        ]
    );
    let resent = resent_rx.recv_timeout(WAIT).unwrap();
    assert_eq!(
        resent,
        ClientFrame {
            id,
            request: Request::SubscribeGrouped {
                prefix: "net".into(),
                since: Some(6),
            },
        }
    );
    client.close();
    fake.join();
}

#[test]
fn a_failed_grouped_subscribe_reports_the_server_error() {
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        peer.handshake();
        let sub = peer.expect();
        peer.respond(
            sub.id,
            Response::Error(ErrorFrame::new(ErrorCode::Unsupported, "not yet")),
        );
        peer.pong_until_closed();
    });
    let client = Client::connect(&fake.addr, options()).unwrap();
    let (handler, _rx) = collector();
    let e = client.subscribe_grouped("net", None, handler).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    client.close();
    fake.join();
}
