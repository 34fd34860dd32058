//! The async client against a real `nkv-server` (and, where a server must
//! misbehave on cue, the scripted fake): every operation, many tasks
//! sharing one connection, subscription streams and their end, watches,
//! resuming across a server restart, a slow reader's bounded queue, and
//! ephemeral keys taken back after a cut connection (through a relay that
//! cuts it) only while nobody else wrote them.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use nkv::addr::Address;
use nkv::async_client::{AsyncClient, Subscription};
use nkv::client::{ClientOptions, ConnState, Entry, ErrorKind, SubscriptionEvent};
use nkv::protocol::{Condition, Request, Response};

use common::fake::Fake;
use common::relay::Relay;
use common::TestServer;

/// How long any single expected thing may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

fn addr_of(path: &Path) -> Address {
    Address::Unix(path.to_path_buf())
}

async fn connect(server: &TestServer) -> AsyncClient {
    connect_with(&addr_of(&server.socket()), ClientOptions::default()).await
}

async fn connect_with(addr: &Address, options: ClientOptions) -> AsyncClient {
    AsyncClient::connect(addr, options).await.expect("connect")
}

/// The next event, failing the test after [`WAIT`].
async fn next(sub: &mut Subscription) -> SubscriptionEvent {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
}

/// Events up to and including the next `Synced`.
async fn until_synced(sub: &mut Subscription) -> Vec<SubscriptionEvent> {
    let mut seen = Vec::new();
    loop {
        let event = next(sub).await;
        let done = matches!(event, SubscriptionEvent::Synced { .. });
        seen.push(event);
        if done {
            return seen;
        }
    }
}

fn update(key: &str, value: &str, revision: u64) -> SubscriptionEvent {
    SubscriptionEvent::Update {
        key: key.into(),
        value: value.as_bytes().to_vec().into(),
        revision,
        coalesced: 0,
    }
}

async fn stat(client: &AsyncClient, name: &str) -> u64 {
    client
        .stats()
        .await
        .expect("stats")
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in STATS"))
        .1
}

/// Waits until STATS' `subscriptions` is `want`; returns the last value.
async fn subscriptions_settle(client: &AsyncClient, want: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = stat(client, "subscriptions").await;
        if now == want || tokio::time::Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the watched value is `want`.
async fn watch_reaches(rx: &mut tokio::sync::watch::Receiver<Option<Entry>>, want: Option<&str>) {
    let want = want.map(|v| v.as_bytes().to_vec());
    let result = {
        let reached = rx.wait_for(|entry| entry.as_ref().map(|e| e.value.to_vec()) == want);
        tokio::time::timeout(WAIT, reached).await.map(|r| r.is_ok())
    };
    match result {
        Ok(true) => {}
        Ok(false) => panic!("the watch ended before reaching {want:?}"),
        Err(_) => panic!(
            "the watch did not reach {want:?}; it holds {:?}",
            rx.borrow()
        ),
    }
}

#[tokio::test]
async fn every_operation_gives_the_blocking_clients_results() {
    let server = TestServer::start();
    let client = connect(&server).await;
    assert!(client.server_name().starts_with("nkv-server"));
    assert!(client.server_limits().max_key > 0);
    assert_eq!(client.state(), ConnState::Connected);
    client.ping().await.expect("ping");

    let r1 = client
        .put("net.eth0", b"up", Condition::None)
        .await
        .unwrap();
    let e = client
        .put("net.eth0", b"x", Condition::MustNotExist)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::ConditionFailed);
    assert_eq!(e.current_revision, Some(r1));
    let r2 = client
        .put("net.eth0", b"down", Condition::RevisionEquals(r1))
        .await
        .unwrap();
    assert!(r2 > r1);
    client
        .put("net.eth1", b"up", Condition::None)
        .await
        .unwrap();
    client.put("network", b"n", Condition::None).await.unwrap();

    let got = client.get("net.eth0").await.unwrap().expect("present");
    assert_eq!((&got.value[..], got.revision), (&b"down"[..], r2));
    assert_eq!(client.get("nope").await.unwrap(), None);

    let listed: Vec<(String, Vec<u8>)> = client
        .list("net")
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.key, e.value.to_vec()))
        .collect();
    assert_eq!(
        listed,
        [
            ("net.eth0".to_owned(), b"down".to_vec()),
            ("net.eth1".to_owned(), b"up".to_vec())
        ],
        "key order, and `network` is not under `net`"
    );

    let e = client.delete("nope", Condition::None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let e = client
        .delete("net.eth1", Condition::RevisionEquals(1))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::ConditionFailed);
    let r3 = client.delete("net.eth1", Condition::None).await.unwrap();
    assert!(r3 > r2);
    assert_eq!(client.get("net.eth1").await.unwrap(), None);

    client
        .put("net.eth2", b"up", Condition::None)
        .await
        .unwrap();
    let (r4, deleted) = client.delete_prefix("net").await.unwrap();
    assert!(r4 > r3);
    assert_eq!(deleted, 2);
    assert_eq!(client.list("").await.unwrap().len(), 1);

    assert_eq!(stat(&client, "keys").await, 1);
    assert_eq!(stat(&client, "revision").await, r4);
    client.compact().await.expect("compact");

    // Checked here, like the blocking client, before anything is sent.
    let e = client.get("bad..key").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidKey);
    let big = vec![0u8; client.server_limits().max_value as usize + 1];
    let e = client.put("k", &big, Condition::None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooLarge);

    let other = client.clone();
    client.close();
    assert_eq!(other.ping().await.unwrap_err().kind, ErrorKind::Closed);
    assert_eq!(other.state(), ConnState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_pipeline_on_one_connection_and_each_gets_its_own_answer() {
    let server = TestServer::start_with(&["--fsync", "never"]);
    let client = connect(&server).await;
    let mut tasks = Vec::new();
    for task in 0..32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let key = format!("t{task}.k{i}");
                let value = format!("{task}/{i}");
                let revision = client
                    .put(&key, value.as_bytes(), Condition::None)
                    .await
                    .unwrap();
                let got = client.get(&key).await.unwrap().expect("just written");
                assert_eq!(got.value, value.as_bytes(), "{key}: someone else's answer");
                assert_eq!(got.revision, revision);
            }
        }));
    }
    // And a burst issued all at once from one task: hundreds of requests in
    // flight together, answered in whatever order, matched by id.
    let burst = futures_util::future::join_all((0..300).map(|i| {
        let client = client.clone();
        async move {
            let key = format!("burst.k{i}");
            client.put(&key, key.as_bytes(), Condition::None).await?;
            client.get(&key).await
        }
    }))
    .await;
    for (i, got) in burst.into_iter().enumerate() {
        let got = got.unwrap().expect("just written");
        assert_eq!(got.value, format!("burst.k{i}").as_bytes());
    }
    for task in tasks {
        task.await.expect("a task failed");
    }
    assert_eq!(client.list("").await.unwrap().len(), 32 * 25 + 300);
    // One connection did all that.
    assert_eq!(stat(&client, "connections").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_out_of_order_reach_their_own_callers() {
    const CALLS: usize = 50;
    // The fake reads every request before answering any (so all of them
    // must be in flight at once on the one connection), then answers in
    // reverse order, each GET with its own key as the value.
    let fake = Fake::start(|listener| {
        let mut peer = listener.accept();
        peer.handshake();
        let mut gets = Vec::new();
        for _ in 0..CALLS {
            let frame = peer.expect();
            match frame.request {
                Request::Get { key } => gets.push((frame.id, key)),
                other => panic!("expected GET, got {other:?}"),
            }
        }
        for (id, key) in gets.into_iter().rev() {
            let value = key.into_bytes().into();
            peer.respond(id, Response::GetOk { revision: 7, value });
        }
        peer.pong_until_closed();
    });
    let client = connect_with(&fake.addr, ClientOptions::default()).await;
    let calls = (0..CALLS).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            let key = format!("k{i}");
            let got = client.get(&key).await.unwrap().expect("an entry");
            assert_eq!(got.value, key.as_bytes(), "another caller's answer");
        })
    });
    for call in futures_util::future::join_all(calls).await {
        call.expect("a caller failed");
    }
    client.close();
    drop(client);
    tokio::task::spawn_blocking(move || fake.join())
        .await
        .expect("the fake server's script");
}

#[tokio::test]
async fn a_subscription_streams_the_snapshot_then_synced_then_live_events() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let ra = client.put("net.a", b"1", Condition::None).await.unwrap();
    let rb = client.put("net.b", b"2", Condition::None).await.unwrap();
    let rn = client.put("network", b"x", Condition::None).await.unwrap();
    let mut sub = client.subscribe("net").await.unwrap();
    assert_eq!(sub.prefix(), "net");
    assert_eq!(
        until_synced(&mut sub).await,
        [
            update("net.a", "1", ra),
            update("net.b", "2", rb),
            // Consistent at the store's revision, a key outside included.
            SubscriptionEvent::Synced { revision: rn }
        ]
    );
    client.put("network", b"y", Condition::None).await.unwrap();
    let rc = client.put("net.c", b"3", Condition::None).await.unwrap();
    let rd = client.delete("net.a", Condition::None).await.unwrap();
    assert_eq!(next(&mut sub).await, update("net.c", "3", rc));
    assert_eq!(
        next(&mut sub).await,
        SubscriptionEvent::Delete {
            key: "net.a".into(),
            revision: rd,
            coalesced: 0
        }
    );

    // Resuming after a revision gives only what changed since.
    let mut resumed = client.subscribe_since("net", rc).await.unwrap();
    assert_eq!(
        until_synced(&mut resumed).await,
        [
            SubscriptionEvent::Delete {
                key: "net.a".into(),
                revision: rd,
                coalesced: 0
            },
            SubscriptionEvent::Synced { revision: rd }
        ]
    );

    // Closing the client ends the stream: a final Closed, then None.
    client.close();
    assert!(matches!(
        next(&mut sub).await,
        SubscriptionEvent::Closed { .. }
    ));
    assert_eq!(sub.next().await, None);
}

#[tokio::test]
async fn dropping_a_subscription_ends_it_on_the_server() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let mut sub = client.subscribe("a").await.unwrap();
    until_synced(&mut sub).await;
    let kept = client.subscribe("b").await.unwrap();
    assert_eq!(stat(&client, "subscriptions").await, 2);
    drop(sub);
    assert_eq!(
        subscriptions_settle(&client, 1).await,
        1,
        "the dropped stream's subscription is still on the server"
    );
    // The other one is untouched, and the connection lives on without the
    // client handle as long as a stream does.
    drop(client);
    let mut kept = kept;
    assert!(matches!(
        next(&mut kept).await,
        SubscriptionEvent::Synced { .. }
    ));
}

#[tokio::test]
async fn a_watch_holds_the_newest_value_of_the_key_itself() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let r1 = client.put("svc.a", b"1", Condition::None).await.unwrap();
    client
        .put("svc.a.sub", b"below", Condition::None)
        .await
        .unwrap();
    let mut rx = client.watch("svc.a").await.unwrap();
    // The initial value is the snapshot's, ready when watch returns.
    assert_eq!(
        *rx.borrow_and_update(),
        Some(Entry {
            value: "1".into(),
            revision: r1
        })
    );
    let mut absent = client.watch("svc.b").await.unwrap();
    assert_eq!(*absent.borrow_and_update(), None);

    // A key below it changes nothing.
    client
        .put("svc.a.sub", b"2", Condition::None)
        .await
        .unwrap();
    let r2 = client.put("svc.a", b"2", Condition::None).await.unwrap();
    tokio::time::timeout(WAIT, rx.changed())
        .await
        .expect("a change in time")
        .unwrap();
    assert_eq!(
        *rx.borrow_and_update(),
        Some(Entry {
            value: "2".into(),
            revision: r2
        }),
        "the first change seen is the key's own"
    );
    client.put("svc.b", b"now", Condition::None).await.unwrap();
    watch_reaches(&mut absent, Some("now")).await;
    for i in 3..50 {
        client
            .put("svc.a", i.to_string().as_bytes(), Condition::None)
            .await
            .unwrap();
    }
    watch_reaches(&mut rx, Some("49")).await;
    client.delete("svc.a", Condition::None).await.unwrap();
    watch_reaches(&mut rx, None).await;

    // Dropping every receiver ends the subscription behind it.
    assert_eq!(stat(&client, "subscriptions").await, 2);
    drop(rx);
    drop(absent);
    assert_eq!(subscriptions_settle(&client, 0).await, 0);
}

/// The socket path through which a client reaches the server: a symbolic
/// link that the test removes to keep the client away from a restarted
/// server until the test has changed data behind its back.
struct Alias {
    link: std::path::PathBuf,
    target: std::path::PathBuf,
}

impl Alias {
    fn new(server: &TestServer) -> Alias {
        let alias = Alias {
            link: server.dir.path().join("alias.sock"),
            target: server.socket(),
        };
        alias.open();
        alias
    }

    fn open(&self) {
        std::os::unix::fs::symlink(&self.target, &self.link).unwrap();
    }

    fn shut(&self) {
        std::fs::remove_file(&self.link).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_watches_resume_across_a_server_restart() {
    let mut server = TestServer::start();
    let alias = Alias::new(&server);
    let options = ClientOptions {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..ClientOptions::default()
    };
    let client = connect_with(&addr_of(&alias.link), options).await;
    client.put("net.a", b"1", Condition::None).await.unwrap();
    client.put("net.gone", b"x", Condition::None).await.unwrap();
    let mut sub = client.subscribe("net").await.unwrap();
    until_synced(&mut sub).await;
    let mut watched = client.watch("net.a").await.unwrap();
    let mut deleted = client.watch("net.gone").await.unwrap();

    // The server dies; the client cannot come back until the alias does.
    alias.shut();
    tokio::task::block_in_place(|| server.kill9());
    assert_eq!(next(&mut sub).await, SubscriptionEvent::Disconnected);
    let e = client.get("net.a").await.unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::Connection,
        "a call while disconnected fails at once"
    );
    assert_ne!(client.state(), ConnState::Connected);

    // Meanwhile, on the restarted server, others change what we follow.
    tokio::task::block_in_place(|| server.restart());
    let other = connect(&server).await;
    let ra = other.put("net.a", b"2", Condition::None).await.unwrap();
    let rg = other.delete("net.gone", Condition::None).await.unwrap();
    alias.open();

    // The stream gets exactly what it missed, then Synced; the watches
    // converge.
    let missed = until_synced(&mut sub).await;
    assert_eq!(
        missed,
        [
            update("net.a", "2", ra),
            SubscriptionEvent::Delete {
                key: "net.gone".into(),
                revision: rg,
                coalesced: 0
            },
            SubscriptionEvent::Synced { revision: rg }
        ]
    );
    watch_reaches(&mut watched, Some("2")).await;
    watch_reaches(&mut deleted, None).await;

    // And it is live again, on the same client.
    let rn = client.put("net.new", b"n", Condition::None).await.unwrap();
    assert_eq!(next(&mut sub).await, update("net.new", "n", rn));
    assert_eq!(client.state(), ConnState::Connected);
}

#[tokio::test]
async fn a_request_in_flight_when_the_connection_drops_fails_with_connection() {
    let fake = Fake::start(|listener| {
        let mut peer = listener.accept();
        peer.handshake();
        let get = peer.expect();
        assert!(matches!(get.request, Request::Get { .. }));
        // Hang up without answering.
        drop(peer);
        let mut peer = listener.accept();
        peer.handshake();
        let ping = peer.expect();
        peer.respond(ping.id, Response::Pong);
        peer.pong_until_closed();
    });
    let options = ClientOptions {
        backoff_initial: Duration::from_millis(10),
        ..ClientOptions::default()
    };
    let client = connect_with(&fake.addr, options).await;
    let e = client.get("k").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Connection, "{e}");
    // It reconnects on its own.
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.state() != ConnState::Connected {
        assert!(tokio::time::Instant::now() < deadline, "no reconnect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.ping().await.expect("ping after reconnecting");
    client.close();
    drop(client);
    tokio::task::spawn_blocking(move || fake.join())
        .await
        .expect("the fake server's script");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_costs_a_bounded_queue_and_loses_no_count() {
    const LIMIT: usize = 8;
    const KEYS: usize = 4;
    const WRITES: usize = 2000;
    let server = TestServer::start_with(&["--fsync", "never"]);
    let options = ClientOptions {
        queue_limit: LIMIT,
        ..ClientOptions::default()
    };
    let client = connect_with(&addr_of(&server.socket()), options).await;
    let mut sub = client.subscribe("slow").await.unwrap();
    until_synced(&mut sub).await;

    // Write while the stream is not read.
    let writer = connect(&server).await;
    let mut last = BTreeMap::new();
    for round in 0..WRITES / 100 {
        let puts = (0..100).map(|i| {
            let n = round * 100 + i;
            let key = format!("slow.k{}", n % KEYS);
            let writer = writer.clone();
            async move {
                writer
                    .put(&key, n.to_string().as_bytes(), Condition::None)
                    .await
                    .map(|revision| (key, n, revision))
            }
        });
        for done in futures_util::future::join_all(puts).await {
            let (key, n, revision) = done.unwrap();
            let newest = last.entry(key).or_insert((0, 0));
            if revision > newest.1 {
                *newest = (n, revision);
            }
        }
    }
    writer.put("slow.end", b"", Condition::None).await.unwrap();
    // Let the events arrive (the reader still reads nothing): every key has
    // one waiting once they have.
    let deadline = tokio::time::Instant::now() + WAIT;
    while sub.queued() < KEYS + 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = sub.queued();
    assert!(
        queued <= LIMIT + KEYS + 1,
        "{queued} events queued for a limit of {LIMIT} and {} keys",
        KEYS + 1
    );
    assert!(sub.merged() > 0, "nothing was merged");

    // Reading now: every write is accounted for, the newest value wins.
    let mut counted = 0u64;
    let mut seen = BTreeMap::new();
    loop {
        match next(&mut sub).await {
            SubscriptionEvent::Update { key, .. } if key == "slow.end" => break,
            SubscriptionEvent::Update {
                key,
                value,
                revision,
                coalesced,
            } => {
                counted += 1 + coalesced;
                seen.insert(key, (String::from_utf8(value.to_vec()).unwrap(), revision));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(counted, WRITES as u64, "updates lost without a count");
    let want: BTreeMap<String, (String, u64)> = last
        .into_iter()
        .map(|(k, (n, r))| (k, (n.to_string(), r)))
        .collect();
    assert_eq!(seen, want, "the newest value of each key won");
}

#[tokio::test]
async fn transactions_apply_whole_or_name_the_failed_condition() {
    let server = TestServer::start();
    let client = connect(&server).await;
    client
        .put("net.eth1.a", b"1", Condition::None)
        .await
        .unwrap();
    let txn = nkv::protocol::Txn::new()
        .if_absent("net.lock")
        .put("net.lock", "me")
        .put("net.eth0.state", "up")
        .delete_prefix("net.eth1");
    let outcome = client.txn(&txn).await.unwrap();
    assert_eq!(outcome.deleted, 1);
    for key in ["net.lock", "net.eth0.state"] {
        let entry = client.get(key).await.unwrap().expect(key);
        assert_eq!(entry.revision, outcome.revision, "{key}: one revision");
    }
    assert_eq!(client.get("net.eth1.a").await.unwrap(), None);
    // Again: the lock is taken now, nothing is written.
    let again = nkv::protocol::Txn::new()
        .if_absent("net.lock")
        .put("net.eth0.state", "down");
    let e = client.txn(&again).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConditionFailed);
    assert_eq!(e.failed_key.as_deref(), Some("net.lock"));
    assert_eq!(e.current_revision, Some(outcome.revision));
    let state = client.get("net.eth0.state").await.unwrap().unwrap();
    assert_eq!(&state.value[..], b"up");
}

#[tokio::test]
async fn a_grouped_subscription_gets_a_transaction_as_one_group() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let mut sub = client.subscribe_grouped("cfg", None).await.unwrap();
    until_synced(&mut sub).await;
    let txn = nkv::protocol::Txn::new()
        .put("cfg.a", "1")
        .put("cfg.b", "2")
        .put("elsewhere", "3");
    let revision = client.txn(&txn).await.unwrap().revision;
    assert_eq!(
        next(&mut sub).await,
        SubscriptionEvent::Group { count: 2, revision }
    );
    assert_eq!(next(&mut sub).await, update("cfg.a", "1", revision));
    assert_eq!(next(&mut sub).await, update("cfg.b", "2", revision));
}

#[tokio::test]
async fn an_ephemeral_key_goes_with_the_client_that_wrote_it() {
    let server = TestServer::start();
    let watcher = connect(&server).await;
    let owner = connect(&server).await;
    let mut sub = watcher.subscribe("svc").await.unwrap();
    until_synced(&mut sub).await;
    owner
        .put_ephemeral("svc.a.alive", b"1", Condition::MustNotExist, Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(
        next(&mut sub).await,
        SubscriptionEvent::Update { .. }
    ));
    owner.close();
    match next(&mut sub).await {
        SubscriptionEvent::Delete { key, .. } => assert_eq!(key, "svc.a.alive"),
        other => panic!("expected the DELETE, got {other:?}"),
    }
}

/// Reconnects quickly (for the tests that cut the connection).
fn quick_reconnect() -> ClientOptions {
    ClientOptions {
        timeout: WAIT,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..ClientOptions::default()
    }
}

/// The value of `key` now.
async fn value(client: &AsyncClient, key: &str) -> Option<Vec<u8>> {
    client.get(key).await.unwrap().map(|e| e.value.to_vec())
}

/// Polls `done` until it holds, failing the test after [`WAIT`].
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_key_is_taken_back_after_a_cut_and_outlives_its_grace() {
    let server = TestServer::start();
    let relay = Relay::start(&server);
    let owner = connect_with(&relay.addr(), quick_reconnect()).await;
    let other = connect(&server).await;
    let grace = Duration::from_secs(2);
    let first = owner
        .put_ephemeral("svc.netd.alive", b"1", Condition::None, grace)
        .await
        .unwrap();
    // Held as soon as the call returns.
    assert_eq!(owner.ephemeral_keys(), ["svc.netd.alive"]);

    relay.cut();
    // Back within the grace period, the key taken back: a new revision,
    // the same value.
    until("the key to be taken back", || async {
        other
            .get("svc.netd.alive")
            .await
            .unwrap()
            .is_some_and(|e| e.revision > first)
    })
    .await;
    assert_eq!(owner.ephemeral_keys(), ["svc.netd.alive"]);
    let retaken = other.get("svc.netd.alive").await.unwrap().unwrap().revision;
    // Well past the first connection's grace period, it is still there,
    // unchanged: it belongs to the new connection now.
    tokio::time::sleep(grace + Duration::from_millis(500)).await;
    let entry = other.get("svc.netd.alive").await.unwrap().unwrap();
    assert_eq!((&entry.value[..], entry.revision), (&b"1"[..], retaken));
    // The owner goes for good: the key goes after the grace period.
    owner.close();
    assert!(owner.ephemeral_keys().is_empty());
    until("the key to be deleted", || async {
        value(&other, "svc.netd.alive").await.is_none()
    })
    .await;
}

/// On the wire, after a reconnect: the held key's re-assertion (same value
/// and grace, conditioned on the revision last written) comes before the
/// subscription's resume. (A real server may take a SUB's snapshot before
/// a write pipelined ahead of it is applied, so this order is checked here,
/// not through a server.)
#[tokio::test]
async fn held_keys_are_reasserted_before_subscriptions_resume() {
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        peer.handshake();
        let sub = peer.expect();
        assert!(matches!(sub.request, Request::Subscribe { .. }), "{sub:?}");
        peer.respond(sub.id, Response::SubOk);
        peer.event(sub.id, nkv::protocol::Event::Synced { revision: 4 });
        let put = peer.expect();
        peer.respond(put.id, Response::PutOk { revision: 5 });
        drop(peer);

        let mut peer = l.accept();
        peer.handshake();
        let first = peer.expect();
        assert_eq!(
            first.request,
            Request::PutEphemeral {
                key: "svc.a".into(),
                value: bytes::Bytes::from_static(b"1"),
                condition: Condition::RevisionEquals(5),
                grace_ms: 3000,
            }
        );
        let second = peer.expect();
        assert_eq!(
            (second.id, second.request),
            (
                sub.id,
                Request::Subscribe {
                    prefix: "svc".into(),
                    since: Some(4),
                }
            )
        );
        peer.respond(first.id, Response::PutOk { revision: 6 });
        peer.respond(sub.id, Response::SubOk);
        peer.event(sub.id, nkv::protocol::Event::Synced { revision: 6 });
        peer.pong_until_closed();
    });
    let client = connect_with(&fake.addr, quick_reconnect()).await;
    let mut sub = client.subscribe("svc").await.unwrap();
    until_synced(&mut sub).await;
    client
        .put_ephemeral("svc.a", b"1", Condition::None, Duration::from_secs(3))
        .await
        .unwrap();
    // The fake hangs up after the PUT_OK.
    assert_eq!(next(&mut sub).await, SubscriptionEvent::Disconnected);
    assert_eq!(
        next(&mut sub).await,
        SubscriptionEvent::Synced { revision: 6 }
    );
    assert_eq!(client.ephemeral_keys(), ["svc.a"]);
    client.close();
    drop((client, sub));
    tokio::task::spawn_blocking(move || fake.join())
        .await
        .expect("the fake server's script");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_key_someone_else_wrote_while_cut_off_is_not_taken_back() {
    let server = TestServer::start();
    let relay = Relay::start(&server);
    let owner = connect_with(&relay.addr(), quick_reconnect()).await;
    let other = connect(&server).await;
    owner
        .put_ephemeral("svc.a", b"mine", Condition::None, Duration::from_secs(5))
        .await
        .unwrap();
    // The owner cannot come back before the other write is in; then its
    // re-assertion's condition fails.
    relay.refuse(true);
    relay.cut();
    other
        .put("svc.a", b"theirs", Condition::None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    relay.refuse(false);
    until("the holding to end", || async {
        owner.ephemeral_keys().is_empty()
    })
    .await;
    assert_eq!(owner.state(), ConnState::Connected);
    assert_eq!(
        value(&other, "svc.a").await.as_deref(),
        Some(&b"theirs"[..])
    );
    // Nothing of the owner's lingers on the server: its going changes
    // nothing.
    owner.close();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        value(&other, "svc.a").await.as_deref(),
        Some(&b"theirs"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_write_of_an_ephemeral_key_ends_the_holding() {
    let server = TestServer::start();
    let relay = Relay::start(&server);
    let owner = connect_with(&relay.addr(), quick_reconnect()).await;
    let other = connect(&server).await;
    let grace = Duration::from_millis(500);
    for key in ["svc.put", "svc.del", "svc.tree.x", "svc.txn", "svc.kept"] {
        owner
            .put_ephemeral(key, b"1", Condition::None, grace)
            .await
            .unwrap();
    }
    assert_eq!(owner.ephemeral_keys().len(), 5);
    // Each plain write ends the holding of what it covers, by the time it
    // returns.
    let plain = owner.put("svc.put", b"2", Condition::None).await.unwrap();
    assert!(!owner.ephemeral_keys().contains(&"svc.put".to_owned()));
    owner.delete("svc.del", Condition::None).await.unwrap();
    owner.delete_prefix("svc.tree").await.unwrap();
    owner
        .txn(&nkv::protocol::Txn::new().put("svc.txn", "2"))
        .await
        .unwrap();
    assert_eq!(owner.ephemeral_keys(), ["svc.kept"]);

    // After a cut, only the key still held is taken back; the plainly
    // written ones are ordinary keys, left as they were.
    relay.cut();
    until("svc.kept to be taken back", || async {
        other
            .get("svc.kept")
            .await
            .unwrap()
            .is_some_and(|e| e.revision > plain)
    })
    .await;
    tokio::time::sleep(grace + Duration::from_millis(300)).await;
    assert_eq!(owner.ephemeral_keys(), ["svc.kept"]);
    let put = other.get("svc.put").await.unwrap().unwrap();
    assert_eq!((&put.value[..], put.revision), (&b"2"[..], plain));
    assert_eq!(value(&other, "svc.txn").await.as_deref(), Some(&b"2"[..]));
    assert_eq!(value(&other, "svc.del").await, None);
    assert_eq!(value(&other, "svc.kept").await.as_deref(), Some(&b"1"[..]));
}
