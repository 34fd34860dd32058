//! The client's own-thread path, through what a user would notice.
//!
//! A call made while no other call is in flight reads its answer on the
//! calling thread (see `src/client/call.rs`), and so is, for that time, the
//! only reader of the connection: whatever else the server sends meanwhile
//! (subscription events, a hang-up) must still reach its place at once, and
//! calls from many threads, subscriptions and a server restart must mix
//! without a wrong answer, a hang, or a lost change.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nkv::addr::Address;
use nkv::client::{Client, ClientOptions, ConnState, ErrorKind, SubscriptionEvent};
use nkv::protocol::{Condition, Event, Request, Response};

mod common;

use common::fake::{Fake, WAIT};
use common::TestServer;

#[test]
fn events_reach_the_handler_while_a_lone_call_waits_for_its_answer() {
    let (handled_tx, handled_rx) = channel::<()>();
    let fake = Fake::start(move |l| {
        let mut peer = l.accept();
        peer.handshake();
        let sub = peer.expect();
        peer.respond(sub.id, Response::SubOk);
        peer.event(sub.id, Event::Synced { revision: 1 });
        let get = peer.expect();
        assert!(matches!(get.request, Request::Get { .. }));
        // The answer waits until the handler has seen an event sent after
        // the GET: the caller waiting for it must pass the event on.
        peer.event(
            sub.id,
            Event::Update {
                revision: 2,
                coalesced: 0,
                key: "net.a".into(),
                value: Bytes::from_static(b"up"),
            },
        );
        handled_rx
            .recv_timeout(WAIT)
            .expect("the event sent while the GET waited never reached the handler");
        peer.respond(
            get.id,
            Response::GetOk {
                revision: 2,
                value: Bytes::from_static(b"up"),
            },
        );
        peer.pong_until_closed();
    });
    let client = Client::connect(
        &fake.addr,
        ClientOptions {
            timeout: WAIT,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let (events_tx, events_rx) = channel();
    client
        .subscribe(
            "net",
            None,
            Box::new(move |_, event: &SubscriptionEvent| {
                let runner = thread::current().name().map(str::to_owned);
                let _ = events_tx.send((event.clone(), runner));
            }),
        )
        .unwrap();
    let (synced, _) = events_rx.recv_timeout(WAIT).unwrap();
    assert_eq!(synced, SubscriptionEvent::Synced { revision: 1 });
    // Let the I/O thread finish with the SYNCED frame, so that the GET
    // below finds nobody reading and reads its answer itself.
    thread::sleep(Duration::from_millis(50));
    let watcher = thread::spawn(move || {
        let (event, runner) = events_rx.recv_timeout(WAIT).expect("no event");
        assert!(matches!(
            event,
            SubscriptionEvent::Update { revision: 2, .. }
        ));
        // Handlers run on the dispatcher, never on a calling thread.
        assert_eq!(runner.as_deref(), Some("nkv-client-dispatch"));
        handled_tx.send(()).unwrap();
    });
    let entry = client.get("net.a").unwrap().expect("the key exists");
    assert_eq!(entry.value, "up".as_bytes());
    watcher.join().unwrap();
    drop(client);
    fake.join();
}

#[test]
fn a_hang_up_right_after_a_lone_call_is_noticed_at_once() {
    // No subscription, no keepalive: nothing but the hang-up itself tells
    // the client that the connection is gone, and it comes while (or just
    // after) the caller reads its own answer. Noticing it means
    // reconnecting, which the fake server sees.
    const ROUNDS: usize = 20;
    let (accepted_tx, accepted_rx) = channel::<usize>();
    let fake = Fake::start(move |l| {
        for round in 0..ROUNDS {
            let mut peer = l.accept();
            peer.handshake();
            let _ = accepted_tx.send(round);
            let ping = peer.expect();
            assert_eq!(ping.request, Request::Ping);
            peer.respond(ping.id, Response::Pong);
            drop(peer);
        }
    });
    let client = Client::connect(
        &fake.addr,
        ClientOptions {
            timeout: WAIT,
            keepalive: Duration::ZERO,
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(5),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    assert_eq!(accepted_rx.recv_timeout(WAIT), Ok(0));
    for round in 0..ROUNDS {
        // The server answers the handshake before the client adopts the
        // connection: wait until it has.
        let deadline = Instant::now() + WAIT;
        while client.state() != ConnState::Connected {
            assert!(Instant::now() < deadline, "round {round}: not connected");
            thread::sleep(Duration::from_millis(1));
        }
        client.ping().unwrap();
        if round + 1 < ROUNDS {
            assert_eq!(
                accepted_rx.recv_timeout(Duration::from_secs(2)),
                Ok(round + 1),
                "round {round}: the hang-up after the answer went unnoticed"
            );
        }
    }
    drop(client);
    fake.join();
}

/// What a subscription handler has seen, per key.
#[derive(Default)]
struct View {
    values: BTreeMap<String, Bytes>,
    disconnects: usize,
    closed: Option<String>,
}

/// Puts then gets its own `key` until `stop`; every answer must be its own
/// (a value this thread wrote), every failure a lost connection noticed at
/// once (the timeout is far longer). Counts its first success after the
/// next restart in `fresh`; returns how many calls failed.
fn writer(
    client: &Client,
    key: &str,
    stop: &AtomicBool,
    restarts: &AtomicUsize,
    fresh: &AtomicUsize,
) -> usize {
    // The last value known stored, and values whose PUT failed (stored or not).
    let mut known: Option<Bytes> = None;
    let mut maybe: Vec<Bytes> = Vec::new();
    let mut seen_restarts = restarts.load(Ordering::Acquire);
    let mut failures = 0;
    let mut check_failure = |e: nkv::client::Error, started: Instant| {
        failures += 1;
        assert_eq!(e.kind, ErrorKind::Connection, "{key}: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{key}: a call took {:?} to notice the lost connection",
            started.elapsed()
        );
    };
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let value = Bytes::from(format!("{key}:{n}"));
        let started = Instant::now();
        match client.put(key, &value, Condition::None) {
            Ok(_) => {
                known = Some(value);
                maybe.clear();
            }
            Err(e) => {
                check_failure(e, started);
                maybe.push(value);
            }
        }
        let restarts_before = restarts.load(Ordering::Acquire);
        let started = Instant::now();
        match client.get(key) {
            Ok(found) => {
                let found = found.map(|e| e.value);
                let expected = found == known || found.as_ref().is_some_and(|v| maybe.contains(v));
                assert!(
                    expected,
                    "{key}: read {found:?}; wrote {known:?} then maybe {maybe:?}"
                );
                known = found;
                maybe.clear();
                if restarts_before > seen_restarts {
                    seen_restarts = restarts_before;
                    fresh.fetch_add(1, Ordering::AcqRel);
                }
            }
            Err(e) => check_failure(e, started),
        }
    }
    failures
}

#[test]
fn calls_from_many_threads_and_a_subscription_survive_server_restarts_mid_call() {
    const THREADS: usize = 6;
    let mut server = TestServer::start();
    let client = Client::connect(
        &Address::Unix(server.socket()),
        ClientOptions {
            name: "fast-path-test".into(),
            timeout: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let view = Arc::new(Mutex::new(View::default()));
    let handler_view = Arc::clone(&view);
    client
        .subscribe(
            "t",
            None,
            Box::new(move |_, event: &SubscriptionEvent| {
                let mut view = handler_view.lock().unwrap();
                match event {
                    SubscriptionEvent::Update { key, value, .. } => {
                        view.values.insert(key.clone(), value.clone());
                    }
                    SubscriptionEvent::Delete { key, .. } => {
                        view.values.remove(key);
                    }
                    SubscriptionEvent::Reset => view.values.clear(),
                    SubscriptionEvent::Disconnected => view.disconnects += 1,
                    SubscriptionEvent::Synced { .. } | SubscriptionEvent::Group { .. } => {}
                    SubscriptionEvent::Closed { reason } => view.closed = Some(reason.clone()),
                }
            }),
        )
        .unwrap();
    let stop = AtomicBool::new(false);
    let restarts = AtomicUsize::new(0);
    let fresh = AtomicUsize::new(0);
    let wait_fresh = |n: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while fresh.load(Ordering::Acquire) < n {
            assert!(
                Instant::now() < deadline,
                "{what}: no successful call after the restart"
            );
            thread::sleep(Duration::from_millis(10));
        }
    };

    // Many threads: most calls wait for another thread (or the I/O
    // thread) to read their answers.
    let failed: usize = thread::scope(|s| {
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (client, stop, restarts, fresh) = (&client, &stop, &restarts, &fresh);
                s.spawn(move || writer(client, &format!("t.w{t}"), stop, restarts, fresh))
            })
            .collect();
        thread::sleep(Duration::from_millis(300));
        server.kill9_and_restart();
        restarts.store(1, Ordering::Release);
        wait_fresh(THREADS, "many threads");
        thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        writers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert!(failed > 0, "the restart hit no call");

    // One thread, on a key no subscription covers (so that the I/O thread
    // has nothing to read): its calls read their own answers, and the
    // restart comes while the caller itself waits in the socket.
    stop.store(false, Ordering::Relaxed);
    fresh.store(0, Ordering::Release);
    let failed = thread::scope(|s| {
        let (client, stop, restarts, fresh) = (&client, &stop, &restarts, &fresh);
        let lone = s.spawn(move || writer(client, "u.lone", stop, restarts, fresh));
        thread::sleep(Duration::from_millis(300));
        server.kill9_and_restart();
        restarts.store(2, Ordering::Release);
        wait_fresh(1, "one thread");
        stop.store(true, Ordering::Relaxed);
        lone.join().unwrap()
    });
    assert!(failed > 0, "the restart hit no call");

    // The subscription was resumed after each restart and its view ends
    // with the store's last values.
    let expected: BTreeMap<String, Bytes> = (0..THREADS)
        .filter_map(|t| {
            let key = format!("t.w{t}");
            client.get(&key).unwrap().map(|e| (key, e.value))
        })
        .collect();
    assert_eq!(expected.len(), THREADS);
    let deadline = Instant::now() + WAIT;
    loop {
        {
            let view = view.lock().unwrap();
            assert_eq!(view.closed, None, "the subscription ended");
            if view.values == expected {
                assert!(
                    view.disconnects >= 2,
                    "{} disconnects seen",
                    view.disconnects
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the subscription's view {:?} never matched the store {expected:?}",
                view.values
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    client.close();
}
