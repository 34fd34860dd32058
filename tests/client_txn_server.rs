//! The Rust client's transactions, ephemeral keys and grouped
//! subscriptions against a real `nkv-server`: a transaction applied and
//! refused, an ephemeral key gone when its owner goes (as a second client
//! sees it), taken back after a lost connection within its grace period,
//! a leader claim, and a slow grouped subscriber that never sees a
//! transaction half applied.

mod common;

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nkv::addr::Address;
use nkv::client::{Client, ClientOptions, ErrorKind, Handler, SubscriptionEvent, TxnOutcome};
use nkv::protocol::{Condition, Txn};

use common::relay::Relay;
use common::TestServer;

const WAIT: Duration = Duration::from_secs(10);

fn options() -> ClientOptions {
    ClientOptions {
        timeout: WAIT,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..ClientOptions::default()
    }
}

fn connect(server: &TestServer) -> Client {
    Client::connect(&Address::Unix(server.socket()), options()).unwrap()
}

fn value(client: &Client, key: &str) -> Option<Bytes> {
    client.get(key).unwrap().map(|e| e.value)
}

fn collector() -> (Handler, Receiver<SubscriptionEvent>) {
    let (tx, rx) = channel();
    let handler: Handler = Box::new(move |_id: u32, event: &SubscriptionEvent| {
        let _ = tx.send(event.clone());
    });
    (handler, rx)
}

/// Events until (and with) the first one `stop` accepts.
fn events_until(
    rx: &Receiver<SubscriptionEvent>,
    stop: impl Fn(&SubscriptionEvent) -> bool,
) -> Vec<SubscriptionEvent> {
    let mut seen = Vec::new();
    loop {
        let event = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("stuck after {seen:?}"));
        let done = stop(&event);
        seen.push(event);
        if done {
            return seen;
        }
    }
}

fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// Transactions.

#[test]
fn a_transaction_applies_everything_under_one_revision_or_nothing() {
    let server = TestServer::start();
    let client = connect(&server);
    let x = client.put("net.x", b"1", Condition::None).unwrap();
    client.put("net.old", b"o", Condition::None).unwrap();
    client.put("tmp.a", b"a", Condition::None).unwrap();
    client.put("tmp.b.c", b"c", Condition::None).unwrap();

    let txn = Txn::new()
        .if_revision("net.x", x)
        .if_absent("net.lock")
        .put("net.lock", "me")
        .delete("net.old")
        .delete_prefix("tmp");
    let done = client.txn(&txn).unwrap();
    assert_eq!(done.deleted, 3);
    let lock = client.get("net.lock").unwrap().unwrap();
    assert_eq!(
        (&lock.value[..], lock.revision),
        (&b"me"[..], done.revision)
    );
    assert_eq!(value(&client, "net.old"), None);
    assert!(client.list("tmp").unwrap().is_empty());

    // The same again: net.lock exists now. Nothing changes, and the error
    // names the key and its revision.
    let e = client.txn(&txn).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ConditionFailed);
    assert_eq!(e.failed_key.as_deref(), Some("net.lock"));
    assert_eq!(e.current_revision, Some(done.revision));
    // The first failing condition in order is the one named.
    let e = client
        .txn(&Txn::new().if_present("net.nothing").if_absent("net.lock"))
        .unwrap_err();
    assert_eq!(e.failed_key.as_deref(), Some("net.nothing"));
    assert_eq!(e.current_revision, Some(0));
    assert_eq!(value(&client, "net.lock").as_deref(), Some(&b"me"[..]));

    // A transaction that changes nothing: the current revision.
    let idle = client.txn(&Txn::new().delete("net.nothing")).unwrap();
    assert_eq!(
        idle,
        TxnOutcome {
            revision: done.revision,
            deleted: 0
        }
    );
    // The server's limits.
    let many = (0..257).fold(Txn::new(), |t, i| t.if_absent(format!("k{i}")));
    assert_eq!(client.txn(&many).unwrap_err().kind, ErrorKind::Limit);
    client.close();
}

// ---------------------------------------------------------------------------
// Ephemeral keys.

#[test]
fn an_ephemeral_key_is_gone_when_its_owner_goes() {
    let server = TestServer::start();
    let watcher = connect(&server);
    let (handler, rx) = collector();
    watcher.subscribe("svc", None, handler).unwrap();
    events_until(&rx, |e| matches!(e, SubscriptionEvent::Synced { .. }));

    let owner = connect(&server);
    let rev = owner
        .put_ephemeral("svc.netd.alive", b"1", Condition::None, Duration::ZERO)
        .unwrap();
    assert_eq!(owner.ephemeral_keys(), ["svc.netd.alive"]);
    assert_eq!(
        value(&watcher, "svc.netd.alive").as_deref(),
        Some(&b"1"[..])
    );
    owner.close();
    let seen = events_until(&rx, |e| matches!(e, SubscriptionEvent::Delete { .. }));
    assert!(
        matches!(seen.last(), Some(SubscriptionEvent::Delete { key, revision, .. })
            if key == "svc.netd.alive" && *revision > rev),
        "{seen:?}"
    );
    assert_eq!(value(&watcher, "svc.netd.alive"), None);
    watcher.close();
}

#[test]
fn a_plain_put_makes_an_ephemeral_key_ordinary() {
    let server = TestServer::start();
    let owner = connect(&server);
    owner
        .put_ephemeral("svc.a", b"1", Condition::None, Duration::ZERO)
        .unwrap();
    owner.put("svc.a", b"2", Condition::None).unwrap();
    assert!(owner.ephemeral_keys().is_empty());
    owner.close();
    let other = connect(&server);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(value(&other, "svc.a").as_deref(), Some(&b"2"[..]));
    other.close();
}

#[test]
fn of_several_clients_exactly_one_claims_the_leader_key() {
    let server = TestServer::start();
    let clients: Vec<Client> = (0..4).map(|_| connect(&server)).collect();
    let won: Vec<bool> = thread::scope(|s| {
        let tries: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                s.spawn(move || {
                    let me = format!("client{i}");
                    match c.put_ephemeral(
                        "svc.leader",
                        me.as_bytes(),
                        Condition::MustNotExist,
                        Duration::ZERO,
                    ) {
                        Ok(_) => true,
                        Err(e) if e.kind == ErrorKind::ConditionFailed => false,
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        tries.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let leader = won.iter().position(|w| *w).unwrap();
    let mut clients: Vec<Option<Client>> = clients.into_iter().map(Some).collect();
    clients[leader].take().unwrap().close();
    // The key is freed: another can claim it now.
    let next = clients.iter().flatten().next().unwrap();
    until("the leader key to be freed", || {
        next.put_ephemeral(
            "svc.leader",
            b"next",
            Condition::MustNotExist,
            Duration::ZERO,
        )
        .is_ok()
    });
}

#[test]
fn a_client_takes_its_ephemeral_key_back_after_a_lost_connection() {
    let server = TestServer::start();
    let relay = Relay::start(&server);
    let owner = Client::connect(&relay.addr(), options()).unwrap();
    let grace = Duration::from_secs(2);
    let first = owner
        .put_ephemeral("svc.netd.alive", b"1", Condition::None, grace)
        .unwrap();
    let other = connect(&server);
    relay.cut();
    // Back within the grace period, the key taken back (a new revision,
    // the same value).
    until("the key to be taken back", || {
        other
            .get("svc.netd.alive")
            .unwrap()
            .is_some_and(|e| e.revision > first)
    });
    assert_eq!(owner.ephemeral_keys(), ["svc.netd.alive"]);
    // Well past the first connection's grace period, it is still there:
    // it belongs to the new connection now.
    thread::sleep(grace + Duration::from_millis(500));
    assert_eq!(value(&other, "svc.netd.alive").as_deref(), Some(&b"1"[..]));
    // The owner goes for good: gone after the grace period.
    owner.close();
    until("the key to be deleted", || {
        value(&other, "svc.netd.alive").is_none()
    });
    other.close();
}

#[test]
fn a_key_someone_else_wrote_meanwhile_is_not_taken_back() {
    let server = TestServer::start();
    let relay = Relay::start(&server);
    let owner = Client::connect(&relay.addr(), options()).unwrap();
    owner
        .put_ephemeral("svc.a", b"mine", Condition::None, Duration::from_secs(5))
        .unwrap();
    // The owner cannot come back before the other write is in; then its
    // re-assertion's condition fails.
    let other = connect(&server);
    relay.refuse(true);
    relay.cut();
    other.put("svc.a", b"theirs", Condition::None).unwrap();
    thread::sleep(Duration::from_millis(100));
    relay.refuse(false);
    until("the holding to end", || owner.ephemeral_keys().is_empty());
    assert_eq!(value(&other, "svc.a").as_deref(), Some(&b"theirs"[..]));
    owner.close();
    thread::sleep(Duration::from_millis(200));
    assert_eq!(value(&other, "svc.a").as_deref(), Some(&b"theirs"[..]));
    other.close();
}

#[test]
fn after_a_server_restart_the_client_holds_nothing() {
    let mut server = TestServer::start();
    let owner = connect(&server);
    owner
        .put_ephemeral("svc.a", b"1", Condition::None, Duration::from_secs(5))
        .unwrap();
    server.kill9_and_restart();
    until("the holding to end", || owner.ephemeral_keys().is_empty());
    assert_eq!(value(&owner, "svc.a"), None);
    owner.close();
}

// ---------------------------------------------------------------------------
// Grouped subscriptions.

#[test]
fn a_grouped_subscription_gets_a_group_then_the_events_of_a_transaction() {
    let server = TestServer::start();
    let client = connect(&server);
    client.put("net.old", b"o", Condition::None).unwrap();
    let (handler, rx) = collector();
    client.subscribe_grouped("net", None, handler).unwrap();
    events_until(&rx, |e| matches!(e, SubscriptionEvent::Synced { .. }));
    let done = client
        .txn(
            &Txn::new()
                .put("net.a", "1")
                .put("net.b", "2")
                .delete("net.old"),
        )
        .unwrap();
    let first = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(
        first,
        SubscriptionEvent::Group {
            count: 3,
            revision: done.revision
        }
    );
    let mut keys: Vec<(String, bool)> = (0..3)
        .map(|_| match rx.recv_timeout(WAIT).unwrap() {
            SubscriptionEvent::Update { key, revision, .. } => {
                assert_eq!(revision, done.revision);
                (key, true)
            }
            SubscriptionEvent::Delete { key, revision, .. } => {
                assert_eq!(revision, done.revision);
                (key, false)
            }
            other => panic!("{other:?}"),
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("net.a".to_owned(), true),
            ("net.b".to_owned(), true),
            ("net.old".to_owned(), false)
        ]
    );
    // A single put stands alone.
    client.put("net.c", b"3", Condition::None).unwrap();
    assert!(matches!(
        rx.recv_timeout(WAIT).unwrap(),
        SubscriptionEvent::Update { key, .. } if key == "net.c"
    ));
    client.close();
}

/// What the slow handler below has applied.
#[derive(Default)]
struct View {
    /// Its copy of the subtree.
    map: BTreeMap<String, Bytes>,
    /// Each state it showed where the transactions' invariant failed.
    broken: Vec<String>,
    /// The group being collected: how many events it has.
    group: Option<u32>,
    /// Groups and lone events applied.
    units: u64,
}

/// A writer runs transactions that keep `net.a` and `net.b` equal, and
/// after every third one puts its number in `net.other`, while a handler is
/// slow enough for both the server's and the client's queues to merge. A
/// handler that applies each group at once only ever holds states the
/// store had (a == b, other at most 3 behind), and ends with the store's
/// state.
#[test]
fn a_slow_grouped_handler_never_sees_a_transaction_half_applied() {
    let server = TestServer::start_with(&["--fsync", "never"]);
    let client = Client::connect(
        &Address::Unix(server.socket()),
        ClientOptions {
            queue_limit: 4,
            ..options()
        },
    )
    .unwrap();
    let view: Arc<Mutex<View>> = Arc::default();
    let (done_tx, done_rx) = channel::<()>();
    let handler: Handler = {
        let view = Arc::clone(&view);
        let mut pending: Vec<(String, Option<Bytes>)> = Vec::new();
        Box::new(move |_id: u32, event: &SubscriptionEvent| {
            thread::sleep(Duration::from_micros(300));
            let mut v = view.lock().unwrap();
            let change = match event {
                SubscriptionEvent::Group { count, .. } => {
                    v.group = Some(*count);
                    return;
                }
                SubscriptionEvent::Update { key, value, .. } => (key.clone(), Some(value.clone())),
                SubscriptionEvent::Delete { key, .. } => (key.clone(), None),
                SubscriptionEvent::Synced { .. } => return,
                other => panic!("{other:?}"),
            };
            pending.push(change);
            if let Some(count) = v.group {
                if pending.len() < count as usize {
                    return;
                }
                v.group = None;
            }
            for (key, value) in pending.drain(..) {
                match value {
                    Some(value) => v.map.insert(key, value),
                    None => v.map.remove(&key),
                };
            }
            // Every state the store had: a == b, and net.other (written
            // after every third transaction) at most 3 behind them.
            let number = |key: &str| -> i64 {
                v.map
                    .get(key)
                    .map_or(-1, |b| std::str::from_utf8(b).unwrap().parse().unwrap())
            };
            let (a, b, other) = (number("net.a"), number("net.b"), number("net.other"));
            if a != b || other > a || (a >= 0 && a - other > 3) {
                let shown = format!("{:?}", v.map);
                v.broken.push(shown);
            }
            if v.map.contains_key("net.end") {
                let _ = done_tx.send(());
            }
            v.units += 1;
        })
    };
    client.subscribe_grouped("net", None, handler).unwrap();
    let writer = connect(&server);
    for i in 0..2000u32 {
        let v = i.to_string();
        writer
            .txn(&Txn::new().put("net.a", v.clone()).put("net.b", v))
            .unwrap();
        if i % 3 == 0 {
            writer
                .put("net.other", i.to_string().as_bytes(), Condition::None)
                .unwrap();
        }
    }
    writer.put("net.end", b"1", Condition::None).unwrap();
    done_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let v = view.lock().unwrap();
    let broken = &v.broken;
    assert!(
        broken.is_empty(),
        "half-applied transactions seen: {:?}",
        &broken[..broken.len().min(3)]
    );
    assert_eq!(v.map.get("net.a").map(|b| &b[..]), Some(&b"1999"[..]));
    // The handler was slow enough to merge (fewer units than writes).
    assert!(v.units < 2000, "{} units: nothing was merged", v.units);
    drop(v);
    writer.close();
    client.close();
}
