//! The Rust client against a scripted fake server on a Unix socket.
//!
//! The real server is not needed: each test starts a small blocking fake
//! that speaks the wire protocol through `ServerCodec` and answers what the
//! test scripts, so the client's behaviour (mapping, pipelining, timeouts,
//! reconnects, handler contract) is checked exactly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nkv::addr::Address;
use nkv::client::{Client, ClientOptions, Entry, ErrorKind, Handler, ListEntry, SubscriptionEvent};
use nkv::protocol::{ClientFrame, Condition, ErrorCode, ErrorFrame, Event, Request, Response};

mod common;

use common::fake::{Fake, WAIT};

// ---------------------------------------------------------------------------
// Helpers on the client side.

fn options() -> ClientOptions {
    ClientOptions {
        name: "client-test".into(),
        timeout: WAIT,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..ClientOptions::default()
    }
}

/// A handler that forwards every event to a channel and counts its drops.
fn collector() -> (Handler, Receiver<SubscriptionEvent>, Arc<AtomicUsize>) {
    let (tx, rx) = channel();
    let drops = Arc::new(AtomicUsize::new(0));
    let guard = DropCounter(Arc::clone(&drops));
    let handler: Handler = Box::new(move |_id: u32, event: &SubscriptionEvent| {
        let _keep = &guard;
        let _ = tx.send(event.clone());
    });
    (handler, rx, drops)
}

struct DropCounter(Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn next_events(rx: &Receiver<SubscriptionEvent>, n: usize) -> Vec<SubscriptionEvent> {
    (0..n)
        .map(|i| {
            rx.recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("event {i} of {n} did not arrive"))
        })
        .collect()
}

fn update(key: &str, value: &str, revision: u64) -> Event {
    Event::Update {
        revision,
        coalesced: 0,
        key: key.into(),
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

fn seen_update(key: &str, value: &str, revision: u64) -> SubscriptionEvent {
    SubscriptionEvent::Update {
        key: key.into(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        revision,
        coalesced: 0,
    }
}

/// Waits until `counter` reaches `n` (handlers are dropped on another thread).
fn wait_for(counter: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + WAIT;
    while counter.load(Ordering::SeqCst) != n {
        assert!(Instant::now() < deadline, "counter stuck at {counter:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------
// Handshake.

#[test]
fn handshake_exposes_server_name_and_limits_and_validates_before_sending() {
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        peer.handshake_as(1, 8, 4);
        // Only valid requests reach the server: the first one must be PING.
        let first = peer.expect();
        assert_eq!(first.request, Request::Ping);
        peer.respond(first.id, Response::Pong);
        peer.pong_until_closed();
    });
    let client = Client::connect(&fake.addr, options()).unwrap();
    assert_eq!(client.server_name(), "fake-server 9");
    let limits = client.server_limits();
    assert_eq!((limits.max_key, limits.max_value), (8, 4));
    assert_eq!(limits.max_frame, 1 << 20);

    let e = client
        .put("way.too.long", b"v", Condition::None)
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidKey);
    let e = client.get("a..b").unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidKey);
    assert!(e.to_string().starts_with("INVALID_KEY: "), "{e}");
    let e = client.put("k", b"12345", Condition::None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooLarge);
    let e = client.list("net.*").unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidKey);
    client.ping().unwrap();
    client.close();
    fake.join();
}

#[test]
fn refuses_a_protocol_version_it_does_not_speak() {
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        peer.handshake_as(2, 1024, 1024);
        assert!(peer.recv().is_none(), "the client must hang up");
    });
    let e = Client::connect(&fake.addr, options()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnsupportedVersion);
    fake.join();
}

#[test]
fn reports_a_refused_handshake_and_a_missing_server() {
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        let hello = peer.expect();
        peer.respond(
            hello.id,
            Response::Error(ErrorFrame::new(ErrorCode::Limit, "too many connections")),
        );
    });
    let e = Client::connect(&fake.addr, options()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limit);
    assert_eq!(e.to_string(), "LIMIT: too many connections");
    fake.join();

    let dir = tempfile::tempdir().unwrap();
    let nowhere = Address::Unix(dir.path().join("none.sock"));
    let e = Client::connect(&nowhere, options()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Connection);
}

// ---------------------------------------------------------------------------
// Operations.

#[test]
fn operations_map_answers_to_results() {
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        peer.handshake();
        peer.serve_kv(&mut common::fake::Kv::default());
    });
    let client = Client::connect(&fake.addr, options()).unwrap();
    client.ping().unwrap();

    assert_eq!(client.put("a", b"1", Condition::None).unwrap(), 1);
    assert_eq!(
        client.get("a").unwrap(),
        Some(Entry {
            value: Bytes::from_static(b"1"),
            revision: 1
        })
    );
    assert_eq!(client.get("missing").unwrap(), None);

    let e = client.put("a", b"x", Condition::MustNotExist).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ConditionFailed);
    assert_eq!(e.current_revision, Some(1));
    assert_eq!(
        client.put("a", b"2", Condition::RevisionEquals(1)).unwrap(),
        2
    );
    assert_eq!(client.put("a.b", b"3", Condition::MustNotExist).unwrap(), 3);
    assert_eq!(client.put("b", b"", Condition::None).unwrap(), 4);

    let list = client.list("a").unwrap();
    let entry = |key: &str, value: &'static [u8], revision| ListEntry {
        key: key.into(),
        value: Bytes::from_static(value),
        revision,
    };
    assert_eq!(list, vec![entry("a", b"2", 2), entry("a.b", b"3", 3)]);
    assert_eq!(client.list("").unwrap().len(), 3);
    assert!(client.list("zzz").unwrap().is_empty());

    let e = client.delete("missing", Condition::None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let e = client
        .delete("b", Condition::RevisionEquals(1))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::ConditionFailed);
    assert_eq!(e.current_revision, Some(4));
    assert_eq!(client.delete("b", Condition::None).unwrap(), 5);
    assert_eq!(client.delete_prefix("a").unwrap(), (6, 2));
    assert_eq!(client.delete_prefix("a").unwrap(), (6, 0));

    let stats = client.stats().unwrap();
    assert_eq!(
        stats,
        vec![("keys".to_owned(), 0), ("revision".to_owned(), 6)]
    );
    drop(client);
    fake.join();
}

#[test]
fn pipelined_requests_from_many_threads_get_their_own_answers() {
    const N: usize = 8;
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        peer.handshake();
        // Answer nothing until all N requests are in flight on this one
        // connection, then answer in request order.
        let requests: Vec<ClientFrame> = (0..N).map(|_| peer.expect()).collect();
        for frame in requests {
            let Request::Get { key } = frame.request else {
                panic!("expected GET");
            };
            let value = Bytes::from(format!("value of {key}"));
            peer.respond(frame.id, Response::GetOk { revision: 7, value });
        }
        assert!(peer.recv().is_none());
    });
    let client = Client::connect(&fake.addr, options()).unwrap();
    thread::scope(|s| {
        for i in 0..N {
            let client = &client;
            s.spawn(move || {
                let key = format!("key{i}");
                let entry = client.get(&key).unwrap().unwrap();
                assert_eq!(entry.value, format!("value of {key}").as_bytes());
            });
        }
    });
    drop(client);
    fake.join();
}

#[test]
fn a_request_without_answer_times_out() {
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        peer.handshake();
        assert_eq!(peer.expect().request, Request::Ping);
        assert!(peer.recv().is_none());
    });
    let client = Client::connect(
        &fake.addr,
        ClientOptions {
            timeout: Duration::from_millis(200),
            ..options()
        },
    )
    .unwrap();
    let started = Instant::now();
    let e = client.ping().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(5));
    drop(client);
    fake.join();
}

#[test]
fn requests_fail_fast_once_the_server_is_gone() {
    let (gone_tx, gone_rx) = channel();
    let fake = Fake::start(move |l| {
        let mut peer = l.accept();
        peer.handshake();
        assert_eq!(peer.expect().request, Request::Ping);
        // Hang up on the request in flight, and stop listening.
        drop(peer);
        drop(l);
        gone_tx.send(()).unwrap();
    });
    let client = Client::connect(&fake.addr, options()).unwrap();
    let started = Instant::now();
    let e = client.ping().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Connection, "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    gone_rx.recv_timeout(WAIT).unwrap();
    // Reconnecting fails (nobody listens): calls fail at once, without
    // waiting for the 10 s timeout.
    for _ in 0..5 {
        let started = Instant::now();
        let e = client.ping().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Connection, "{e}");
        assert!(started.elapsed() < Duration::from_secs(1));
        thread::sleep(Duration::from_millis(30));
    }
    drop(client);
    fake.join();
}

// ---------------------------------------------------------------------------
// Subscriptions.

#[test]
fn handler_gets_snapshot_synced_then_live_events_in_order() {
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        peer.handshake();
        let sub = peer.expect();
        assert_eq!(
            sub.request,
            Request::Subscribe {
                prefix: "net".into(),
                since: None
            }
        );
        peer.respond(sub.id, Response::SubOk);
        peer.event(sub.id, update("net.b", "2", 3));
        peer.event(sub.id, update("net.a", "1", 2));
        peer.event(sub.id, Event::Synced { revision: 5 });
        peer.event(sub.id, update("net.a", "9", 6));
        peer.event(
            sub.id,
            Event::Delete {
                revision: 9,
                coalesced: 2,
                key: "net.b".into(),
            },
        );
        peer.event(sub.id, Event::Reset);
        peer.pong_until_closed();
    });
    let client = Client::connect(&fake.addr, options()).unwrap();
    let (handler, rx, drops) = collector();
    let id = client.subscribe("net", None, handler).unwrap();
    assert_ne!(id, 0);
    assert_eq!(
        next_events(&rx, 6),
        vec![
            seen_update("net.b", "2", 3),
            seen_update("net.a", "1", 2),
            SubscriptionEvent::Synced { revision: 5 },
            seen_update("net.a", "9", 6),
            SubscriptionEvent::Delete {
                key: "net.b".into(),
                revision: 9,
                coalesced: 2
            },
            SubscriptionEvent::Reset,
        ]
    );
    client.close();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    fake.join();
}

#[test]
fn a_refused_subscription_drops_its_handler_before_returning() {
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        peer.handshake();
        let sub = peer.expect();
        peer.respond(
            sub.id,
            Response::Error(ErrorFrame::new(ErrorCode::Limit, "too many subscriptions")),
        );
        peer.pong_until_closed();
    });
    let client = Client::connect(&fake.addr, options()).unwrap();
    let (handler, _rx, drops) = collector();
    let e = client.subscribe("x", Some(3), handler).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limit);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    drop(client);
    fake.join();
}

#[test]
fn unsubscribe_returns_after_the_handler_is_dropped() {
    let (unsub_tx, unsub_rx) = channel();
    let fake = Fake::start(move |l| {
        let mut peer = l.accept();
        peer.handshake();
        let sub = peer.expect();
        peer.respond(sub.id, Response::SubOk);
        peer.event(sub.id, Event::Synced { revision: 1 });
        let unsub = peer.expect();
        unsub_tx.send((sub.id, unsub.request)).unwrap();
        peer.respond(unsub.id, Response::UnsubOk);
        // Late events of the ended subscription must not reach anyone.
        peer.event(sub.id, update("k", "late", 2));
        peer.pong_until_closed();
    });
    let client = Client::connect(&fake.addr, options()).unwrap();
    let (handler, rx, drops) = collector();
    let id = client.subscribe("k", None, handler).unwrap();
    assert_eq!(
        next_events(&rx, 1),
        [SubscriptionEvent::Synced { revision: 1 }]
    );
    client.unsubscribe(id).unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped before returning");
    let (sub_id, unsub) = unsub_rx.recv_timeout(WAIT).unwrap();
    assert_eq!(sub_id, id);
    assert_eq!(unsub, Request::Unsubscribe { subscription: id });
    assert_eq!(
        client.unsubscribe(id).unwrap_err().kind,
        ErrorKind::NotFound
    );
    client.ping().unwrap();
    assert!(rx.try_recv().is_err(), "no event after unsubscribe");
    client.close();
    assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped exactly once");
    fake.join();
}

#[test]
fn unsubscribe_from_inside_the_handler_does_not_deadlock() {
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        peer.handshake();
        let sub = peer.expect();
        peer.respond(sub.id, Response::SubOk);
        // Wait until the test knows the id (it pings), then flood events.
        let ping = peer.expect();
        peer.respond(ping.id, Response::Pong);
        for r in 1..=5 {
            peer.event(sub.id, update("k", "v", r));
        }
        let unsub = peer.expect();
        assert_eq!(
            unsub.request,
            Request::Unsubscribe {
                subscription: sub.id
            }
        );
        peer.respond(unsub.id, Response::UnsubOk);
        peer.event(sub.id, update("k", "late", 6));
        peer.pong_until_closed();
    });
    let client = Arc::new(Client::connect(&fake.addr, options()).unwrap());
    let id_cell = Arc::new(OnceLock::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let drops = Arc::new(AtomicUsize::new(0));
    let (result_tx, result_rx) = channel();
    let handler: Handler = {
        // Weak: a handler owning its client would keep it alive forever.
        let client: Weak<Client> = Arc::downgrade(&client);
        let id_cell = Arc::clone(&id_cell);
        let calls = Arc::clone(&calls);
        let guard = DropCounter(Arc::clone(&drops));
        let drops = Arc::clone(&drops);
        let result_tx = Mutex::new(result_tx);
        Box::new(move |_id: u32, _event: &SubscriptionEvent| {
            let _keep = &guard;
            calls.fetch_add(1, Ordering::SeqCst);
            let client = client.upgrade().expect("client alive");
            let id = *id_cell.get().expect("id known");
            let result = client.unsubscribe(id);
            // Dropped on the dispatcher only after this call returns.
            let still_alive = drops.load(Ordering::SeqCst) == 0;
            let _ = result_tx.lock().unwrap().send((result, still_alive));
        })
    };
    let id = client.subscribe("k", None, handler).unwrap();
    id_cell.set(id).unwrap();
    client.ping().unwrap();
    let (result, alive_during_call) = result_rx.recv_timeout(WAIT).expect("no deadlock");
    result.unwrap();
    assert!(alive_during_call);
    wait_for(&drops, 1);
    client.ping().unwrap();
    thread::sleep(Duration::from_millis(100));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no call after unsubscribe");
    Arc::try_unwrap(client).expect("only owner").close();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    fake.join();
}

#[test]
fn a_subscription_closed_by_the_server_ends_and_drops_its_handler() {
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        peer.handshake();
        let sub = peer.expect();
        peer.respond(sub.id, Response::SubOk);
        peer.event(
            sub.id,
            Event::Closed {
                code: ErrorCode::Limit,
                message: "mailbox limit".into(),
            },
        );
        peer.pong_until_closed();
    });
    let client = Client::connect(&fake.addr, options()).unwrap();
    let (handler, rx, drops) = collector();
    let id = client.subscribe("k", None, handler).unwrap();
    assert_eq!(
        next_events(&rx, 1),
        [SubscriptionEvent::Closed {
            reason: "LIMIT: mailbox limit".into()
        }]
    );
    wait_for(&drops, 1);
    assert_eq!(
        client.unsubscribe(id).unwrap_err().kind,
        ErrorKind::NotFound
    );
    drop(client);
    fake.join();
}

#[test]
fn close_ends_every_subscription_with_closed() {
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        peer.handshake();
        for _ in 0..2 {
            let sub = peer.expect();
            peer.respond(sub.id, Response::SubOk);
            peer.event(sub.id, Event::Synced { revision: 4 });
        }
        peer.pong_until_closed();
    });
    let client = Client::connect(&fake.addr, options()).unwrap();
    let (h1, rx1, drops1) = collector();
    let (h2, rx2, drops2) = collector();
    client.subscribe("a", None, h1).unwrap();
    client.subscribe("b", None, h2).unwrap();
    for rx in [&rx1, &rx2] {
        assert_eq!(
            next_events(rx, 1),
            [SubscriptionEvent::Synced { revision: 4 }]
        );
    }
    client.close();
    // Handlers are dropped by the time close returns, after a final Closed.
    assert_eq!(drops1.load(Ordering::SeqCst), 1);
    assert_eq!(drops2.load(Ordering::SeqCst), 1);
    for rx in [rx1, rx2] {
        let events: Vec<_> = rx.try_iter().collect();
        let closed = SubscriptionEvent::Closed {
            reason: "the client was closed".into(),
        };
        assert_eq!(events, [closed]);
    }
    fake.join();
}

// ---------------------------------------------------------------------------
// Reconnect.

#[test]
fn reconnect_resumes_each_subscription_from_its_resume_point() {
    let (subs_tx, subs_rx) = channel();
    let fake = Fake::start(move |l| {
        // First connection: `a` gets synced and a live event; `b` only part
        // of its snapshot. Then the connection drops.
        let mut peer = l.accept();
        peer.handshake();
        let a = peer.expect();
        peer.respond(a.id, Response::SubOk);
        peer.event(a.id, update("a.x", "1", 3));
        peer.event(a.id, Event::Synced { revision: 5 });
        peer.event(a.id, update("a.y", "2", 9));
        let b = peer.expect();
        peer.respond(b.id, Response::SubOk);
        peer.event(b.id, update("b.x", "3", 4));
        let ping = peer.expect();
        peer.respond(ping.id, Response::Pong);
        drop(peer);

        // Second connection: both are re-sent with their ids.
        let mut peer = l.accept();
        peer.handshake();
        let resent: Vec<ClientFrame> = vec![peer.expect(), peer.expect()];
        for frame in &resent {
            peer.respond(frame.id, Response::SubOk);
        }
        peer.event(a.id, Event::Synced { revision: 10 });
        peer.event(b.id, update("b.x", "3", 4));
        peer.event(b.id, Event::Synced { revision: 10 });
        subs_tx.send(((a.id, b.id), resent)).unwrap();
        peer.pong_until_closed();
    });
    let client = Client::connect(&fake.addr, options()).unwrap();
    let (ha, rx_a, _) = collector();
    let (hb, rx_b, _) = collector();
    let a = client.subscribe("a", None, ha).unwrap();
    let b = client.subscribe("b", None, hb).unwrap();
    client.ping().unwrap();

    assert_eq!(
        next_events(&rx_a, 5),
        vec![
            seen_update("a.x", "1", 3),
            SubscriptionEvent::Synced { revision: 5 },
            seen_update("a.y", "2", 9),
            SubscriptionEvent::Disconnected,
            SubscriptionEvent::Synced { revision: 10 },
        ]
    );
    assert_eq!(
        next_events(&rx_b, 5),
        vec![
            seen_update("b.x", "3", 4),
            SubscriptionEvent::Disconnected,
            SubscriptionEvent::Reset,
            seen_update("b.x", "3", 4),
            SubscriptionEvent::Synced { revision: 10 },
        ]
    );
    let ((first_a, first_b), resent) = subs_rx.recv_timeout(WAIT).unwrap();
    assert_eq!((first_a, first_b), (a, b));
    // `a` resumes from 8: every change below the live event's revision 9
    // is known complete; 9 itself may have had more keys.
    let expected = [
        ClientFrame {
            id: a,
            request: Request::Subscribe {
                prefix: "a".into(),
                since: Some(8),
            },
        },
        ClientFrame {
            id: b,
            request: Request::Subscribe {
                prefix: "b".into(),
                since: None,
            },
        },
    ];
    assert_eq!(resent, expected);
    client.ping().unwrap();
    drop(client);
    fake.join();
}

#[test]
fn without_reconnect_a_lost_connection_closes_subscriptions() {
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        peer.handshake();
        let sub = peer.expect();
        peer.respond(sub.id, Response::SubOk);
        drop(peer);
    });
    let client = Client::connect(
        &fake.addr,
        ClientOptions {
            reconnect: false,
            ..options()
        },
    )
    .unwrap();
    let (handler, rx, drops) = collector();
    client.subscribe("k", None, handler).unwrap();
    let events = next_events(&rx, 2);
    assert_eq!(events[0], SubscriptionEvent::Disconnected);
    assert!(matches!(events[1], SubscriptionEvent::Closed { .. }));
    wait_for(&drops, 1);
    assert_eq!(client.ping().unwrap_err().kind, ErrorKind::Connection);
    drop(client);
    fake.join();
}

#[test]
fn closing_the_client_from_inside_a_handler_does_not_deadlock() {
    let (go_tx, go_rx) = channel::<()>();
    let fake = Fake::start(move |l| {
        let mut peer = l.accept();
        peer.handshake();
        let sub = peer.expect();
        peer.respond(sub.id, Response::SubOk);
        // Wake the handler only once the client is in the slot.
        go_rx.recv_timeout(WAIT).unwrap();
        peer.event(sub.id, Event::Synced { revision: 1 });
        peer.pong_until_closed();
    });
    let slot = Arc::new(Mutex::new(None::<Client>));
    let (tx, rx) = channel();
    let drops = Arc::new(AtomicUsize::new(0));
    let handler: Handler = {
        let slot = Arc::clone(&slot);
        let guard = DropCounter(Arc::clone(&drops));
        Box::new(move |_id: u32, event: &SubscriptionEvent| {
            let _keep = &guard;
            // Closing on the dispatcher thread: must return, not join itself.
            let client = slot.lock().unwrap().take();
            drop(client);
            let _ = tx.send(event.clone());
        })
    };
    let client = Client::connect(&fake.addr, options()).unwrap();
    client.subscribe("k", None, handler).unwrap();
    *slot.lock().unwrap() = Some(client);
    go_tx.send(()).unwrap();
    let events = next_events(&rx, 2);
    assert_eq!(events[0], SubscriptionEvent::Synced { revision: 1 });
    assert!(matches!(events[1], SubscriptionEvent::Closed { .. }));
    wait_for(&drops, 1);
    fake.join();
}
