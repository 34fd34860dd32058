//! The crash loop: concurrent writers record every acknowledged write, a
//! subscriber follows along (resuming after each crash), and the server is
//! killed with SIGKILL at random moments, then restarted on the same data.
//! After every restart:
//! - every acknowledged write is there, with its value (or a later value
//!   of the same key that was sent but whose answer the crash swallowed);
//! - no key holds a value that was never written;
//! - the revision never goes back;
//! - the resumed subscriber converges to exactly the stored state.
//!
//! `cargo test --test crash_loop` runs a few cycles. The long run:
//! `NKV_CRASH_CYCLES=1000 cargo test --release --test crash_loop -- --nocapture`
//! prints the figures quoted in `docs/reliability.md`.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{TestServer, Wire};
use nkv::protocol::{Condition, Event, Request, Response, ServerFrame};

const WRITERS: u32 = 4;
const KEYS_PER_WRITER: u32 = 20;

/// What the writers did: values sent per key, and the last acknowledged one.
#[derive(Default)]
struct History {
    /// Every value ever sent per key (`None`: a delete).
    sent: HashMap<String, HashSet<Option<Vec<u8>>>>,
    /// Per key: the order in which values were sent (to allow "a later
    /// value whose answer was lost").
    order: HashMap<String, Vec<Option<Vec<u8>>>>,
    /// Per key: index in `order` and revision of the last acknowledged write.
    acked: HashMap<String, (usize, u64)>,
    /// Acknowledged writes in all.
    acked_count: u64,
}

/// A small deterministic generator (no dependency needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn writer(socket: std::path::PathBuf, id: u32, seed: u64, history: Arc<Mutex<History>>) {
    let mut wire = Wire::connect_unix(&socket);
    wire.hello();
    let mut rng = Rng(seed | 1);
    let mut n = 0u64;
    loop {
        let key = format!("w{id}.k{}", rng.below(KEYS_PER_WRITER as u64));
        let value = if rng.below(10) == 0 {
            None
        } else {
            Some(format!("w{id}-{seed}-{n}").into_bytes())
        };
        n += 1;
        let index = {
            let mut h = history.lock().unwrap();
            h.sent.entry(key.clone()).or_default().insert(value.clone());
            let order = h.order.entry(key.clone()).or_default();
            order.push(value.clone());
            order.len() - 1
        };
        let request = match &value {
            Some(v) => Request::Put {
                key: key.clone(),
                value: Bytes::from(v.clone()),
                condition: Condition::None,
            },
            None => Request::Delete {
                key: key.clone(),
                condition: Condition::None,
            },
        };
        let Ok(id_sent) = wire.try_send(request) else {
            return;
        };
        let revision = match wire.try_recv() {
            Ok(Some(ServerFrame::Response { id, response })) if id == id_sent => match response {
                Response::PutOk { revision } => Some(revision),
                Response::DelOk { revision, .. } => Some(revision),
                // Deleting an absent key: nothing was written.
                Response::Error(e) if e.code == nkv::protocol::ErrorCode::NotFound => None,
                other => panic!("writer {id}: {other:?}"),
            },
            // The server died: this write may or may not have happened.
            _ => return,
        };
        if let Some(revision) = revision {
            let mut h = history.lock().unwrap();
            h.acked.insert(key, (index, revision));
            h.acked_count += 1;
        }
    }
}

/// The stored state, from LIST.
fn list_all(wire: &mut Wire) -> (BTreeMap<String, (Vec<u8>, u64)>, u64) {
    let id = wire.send(Request::List { prefix: "".into() });
    let mut out = BTreeMap::new();
    loop {
        match wire.response() {
            (
                got,
                Response::ListItem {
                    key,
                    value,
                    revision,
                },
            ) if got == id => {
                out.insert(key, (value.to_vec(), revision));
            }
            (got, Response::ListOk { revision, .. }) if got == id => return (out, revision),
            other => panic!("{other:?}"),
        }
    }
}

/// A subscriber's view: key → (value, revision).
#[derive(Default, Clone)]
struct Follower {
    view: BTreeMap<String, (Vec<u8>, u64)>,
    /// Resume point: the last SYNCED or the highest revision after it.
    since: Option<u64>,
    /// Highest revision seen per key (per-key order check).
    seen: HashMap<String, u64>,
}

impl Follower {
    fn apply(&mut self, event: Event, live: bool) {
        let (key, revision) = match &event {
            Event::Update { key, revision, .. } | Event::Delete { key, revision, .. } => {
                (key.clone(), *revision)
            }
            Event::Reset => {
                self.view.clear();
                self.seen.clear();
                return;
            }
            Event::Synced { revision } => {
                self.since = Some(self.since.map_or(*revision, |s| s.max(*revision)));
                return;
            }
            Event::Closed { .. } | Event::Group { .. } => return,
        };
        if let Some(&before) = self.seen.get(&key) {
            assert!(
                revision > before,
                "{key}: revision {revision} after {before}"
            );
        }
        self.seen.insert(key.clone(), revision);
        match event {
            Event::Update { value, .. } => {
                self.view.insert(key, (value.to_vec(), revision));
            }
            _ => {
                self.view.remove(&key);
            }
        }
        if live {
            self.since = Some(self.since.map_or(revision, |s| s.max(revision)));
        }
    }
}

/// Follows the store until the server dies (or `stop`), resuming from
/// the follower's point.
fn follow(socket: std::path::PathBuf, follower: Arc<Mutex<Follower>>, stop: Arc<AtomicBool>) {
    let mut wire = Wire::connect_unix(&socket);
    wire.hello();
    let since = follower.lock().unwrap().since;
    wire.send(Request::Subscribe {
        prefix: "".into(),
        since,
    });
    let mut synced = false;
    while !stop.load(Ordering::Relaxed) {
        match wire.try_recv() {
            Ok(Some(ServerFrame::Event { event, .. })) => {
                let is_synced = matches!(event, Event::Synced { .. });
                follower.lock().unwrap().apply(event, synced);
                synced |= is_synced;
            }
            Ok(Some(ServerFrame::Response { .. })) => {}
            _ => return,
        }
    }
}

fn check_after_restart(wire: &mut Wire, history: &History, last_revision: &mut u64) -> u64 {
    let (stored, revision) = list_all(wire);
    assert!(
        revision >= *last_revision,
        "revision went back from {last_revision} to {revision}"
    );
    *last_revision = revision;
    for (key, (value, rev)) in &stored {
        let sent = history.sent.get(key).expect("a key nobody wrote");
        assert!(
            sent.contains(&Some(value.clone())),
            "{key} holds a value never written"
        );
        assert!(*rev <= revision);
    }
    for (key, &(index, acked_revision)) in &history.acked {
        let order = &history.order[key];
        // The stored state must be the acknowledged write or one sent after.
        let now = stored.get(key).map(|(v, _)| v.clone());
        let allowed: Vec<&Option<Vec<u8>>> = order[index..].iter().collect();
        assert!(
            allowed.contains(&&now),
            "{key}: acknowledged write (rev {acked_revision}) lost; holds {:?}",
            now.as_ref()
                .map(|v| String::from_utf8_lossy(v).into_owned())
        );
        if let Some((_, rev)) = stored.get(key) {
            assert!(*rev >= acked_revision || now != order[index], "{key}");
        }
    }
    stored.len() as u64
}

#[test]
fn kill_9_under_load_loses_nothing_acknowledged() {
    let cycles: u32 = std::env::var("NKV_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("NKV_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let mut rng = Rng(seed);
    let mut server = TestServer::start();
    let history = Arc::new(Mutex::new(History::default()));
    let follower = Arc::new(Mutex::new(Follower::default()));
    let mut last_revision = 0;
    let started = Instant::now();
    let mut longest_recovery = Duration::ZERO;
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let follow_thread = {
            let (socket, follower, stop) = (server.socket(), follower.clone(), stop.clone());
            std::thread::spawn(move || follow(socket, follower, stop))
        };
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (socket, history) = (server.socket(), history.clone());
                let seed = rng.next();
                std::thread::spawn(move || writer(socket, w, seed, history))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20 + rng.below(200)));
        server.kill9();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        follow_thread.join().unwrap();

        let restarted = Instant::now();
        server.restart();
        longest_recovery = longest_recovery.max(restarted.elapsed());
        let mut wire = server.wire();
        let h = history.lock().unwrap();
        check_after_restart(&mut wire, &h, &mut last_revision);
        drop(h);

        // Writes have stopped: the resumed subscriber converges to the
        // stored state.
        let stop = Arc::new(AtomicBool::new(false));
        let mut sub = Wire::connect_unix(&server.socket());
        sub.hello();
        let since = follower.lock().unwrap().since;
        let id = sub.send(Request::Subscribe {
            prefix: "".into(),
            since,
        });
        assert_eq!(sub.response(), (id, Response::SubOk));
        loop {
            let (_, event) = sub.event();
            let done = matches!(event, Event::Synced { .. });
            follower.lock().unwrap().apply(event, false);
            if done {
                break;
            }
        }
        let (stored, _) = list_all(&mut wire);
        let view = follower.lock().unwrap().view.clone();
        assert_eq!(
            view, stored,
            "cycle {cycle}: the subscriber did not converge"
        );
        stop.store(true, Ordering::Relaxed);
    }
    let h = history.lock().unwrap();
    eprintln!(
        "crash loop: {cycles} kill -9 cycles in {:.1} s, {} acknowledged writes checked, \
         final revision {last_revision}, longest restart {:?}, seed {seed}",
        started.elapsed().as_secs_f64(),
        h.acked_count,
        longest_recovery
    );
    assert!(h.acked_count > 0);
}
