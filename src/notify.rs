//! Who is subscribed to what, and one conflating mailbox per subscription.
//!
//! The engine thread owns the [`Registry`] and calls [`Registry::publish`]
//! for every committed change. Publishing never blocks and never allocates
//! more than one pending event per key and subscription: when a subscriber
//! has not yet taken the previous event for a key, the new event replaces it
//! and the skipped update is counted. A subscriber that never reads therefore
//! costs memory bounded by the number of keys it covers, not by the write
//! rate, and it never slows a writer.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::key::SEPARATOR;
use crate::protocol::EncodedChange;
use crate::store::Key;

/// Hashes keys a client chose: fast, and seeded per process so colliding
/// keys cannot be precomputed.
type Hasher = foldhash::fast::RandomState;

/// What happened to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// The key now holds this value.
    Update(Bytes),
    /// The key was deleted.
    Delete,
}

/// One committed change of one key, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    /// The key that changed.
    pub key: String,
    /// The revision of the write that changed it.
    pub revision: u64,
    /// The new value, or a deletion.
    pub kind: ChangeKind,
}

/// A change as subscribers receive it: made (and its frame encoded) once,
/// when the first subscriber covering it is found, and shared by all.
#[derive(Debug, PartialEq, Eq)]
pub struct Change {
    /// The key that changed.
    pub key: Key,
    /// The frame, but for the subscription id and coalesced count.
    pub encoded: EncodedChange,
}

impl Change {
    /// The change of `event`; `None` if it cannot be framed (a key or value
    /// over the wire format's limits, which the store refuses anyway).
    fn of(event: &KeyEvent) -> Option<Arc<Change>> {
        let encoded = match &event.kind {
            ChangeKind::Update(value) => EncodedChange::update(event.revision, &event.key, value),
            ChangeKind::Delete => EncodedChange::delete(event.revision, &event.key),
        };
        match encoded {
            Ok(encoded) => Some(Arc::new(Change {
                key: Key::from(event.key.as_str()),
                encoded,
            })),
            Err(e) => {
                tracing::error!(key = %event.key, error = %e, "cannot frame a change");
                None
            }
        }
    }
}

/// An event waiting in a mailbox, with the number of earlier updates of the
/// same key that were folded into it because the subscriber was behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    /// The latest change of its key.
    pub change: Arc<Change>,
    /// How many earlier changes of this key were skipped.
    pub coalesced: u32,
    /// Whether a subscriber that applied this event and every one before
    /// it holds a state the store had (at this event's revision). False
    /// inside a group: a multi-key write whose other keys follow, or an
    /// event that coalescing merged with a later one of another key.
    pub ends_group: bool,
}

/// Identifies a subscription server-wide: its connection and its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionKey {
    /// The connection the subscription belongs to.
    pub connection: u64,
    /// The subscription id chosen by the client (the SUB request id).
    pub subscription: u32,
}

/// The pending events of one subscription: at most one per key.
#[derive(Debug)]
pub struct Mailbox {
    /// The pending events; a std mutex because it is held only for a few
    /// map operations and never across an `.await`.
    state: Mutex<MailboxState>,
    /// Wakes the connection that drains this mailbox. Shared by every
    /// subscription of one connection, so one task can wait on all of them.
    waker: Arc<Notify>,
    /// The subscriber asked for groups to be announced (SUB's grouped flag).
    grouped: bool,
}

#[derive(Debug, Default)]
struct MailboxState {
    /// Changes in arrival order, which is revision order, with their
    /// sequence numbers. An entry whose sequence number is not its key's
    /// latest (in `latest`) was replaced and is skipped when drained.
    order: VecDeque<(u64, Arc<Change>)>,
    /// For each key with a pending change: the sequence number of its
    /// latest change, how many earlier ones were folded into it, and the
    /// revision of the earliest of those.
    latest: HashMap<Key, (u64, u32, u64), Hasher>,
    /// The earliest folded revision of each pending change that has folded
    /// ones (a multiset: revision -> count). A change folded at revision F
    /// but pending at a later position means the subscriber cannot be
    /// consistent anywhere from F until it has that change.
    folded: BTreeMap<u64, u32>,
    /// The next sequence number.
    next_seq: u64,
    /// Every update skipped over the subscription's life, for STATS.
    coalesced_total: u64,
}

impl MailboxState {
    fn push(&mut self, change: Arc<Change>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let revision = change.encoded.revision();
        match self.latest.get_mut(&change.key) {
            Some(latest) => {
                let (first, was_folded) = (latest.2, latest.1 > 0);
                *latest = (seq, latest.1.saturating_add(1), first);
                self.coalesced_total += 1;
                if !was_folded {
                    *self.folded.entry(first).or_default() += 1;
                }
            }
            None => {
                self.latest.insert(change.key.clone(), (seq, 0, revision));
            }
        }
        self.order.push_back((seq, change));
        // Replaced entries are dropped once they are half the queue, so
        // the queue stays within twice the keys pending.
        if self.order.len() > 2 * self.latest.len() + 32 {
            let latest = &self.latest;
            self.order
                .retain(|(seq, change)| latest.get(&change.key).map(|l| l.0) == Some(*seq));
        }
    }

    /// Drops replaced entries from the front of the queue.
    fn skip_replaced(&mut self) {
        while let Some((seq, change)) = self.order.front() {
            if self.latest.get(&change.key).map(|l| l.0) == Some(*seq) {
                return;
            }
            self.order.pop_front();
        }
    }

    fn unfold(&mut self, first: u64) {
        if let Some(n) = self.folded.get_mut(&first) {
            *n -= 1;
            if *n == 0 {
                self.folded.remove(&first);
            }
        }
    }
}

impl Mailbox {
    /// Creates an empty mailbox that wakes `waker` when an event arrives.
    pub fn new(waker: Arc<Notify>) -> Self {
        Mailbox {
            state: Mutex::new(MailboxState::default()),
            waker,
            grouped: false,
        }
    }

    /// A mailbox whose subscriber wants groups announced (GROUP events).
    pub fn grouped(waker: Arc<Notify>) -> Self {
        Mailbox {
            grouped: true,
            ..Mailbox::new(waker)
        }
    }

    /// Whether its subscriber wants groups announced.
    pub fn is_grouped(&self) -> bool {
        self.grouped
    }

    fn lock(&self) -> MutexGuard<'_, MailboxState> {
        // A panic while holding this lock leaves the state consistent
        // enough (at worst a stale entry, skipped when drained).
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `change`, replacing (and counting) any pending change of the
    /// same key; the key moves to the back of the queue.
    pub fn push(&self, change: Arc<Change>) {
        self.lock().push(change);
        self.waker.notify_one();
    }

    /// Queues the changes of one multi-key write at once, so that a drain
    /// never sees part of them (see [`PendingEvent::ends_group`]).
    pub fn push_group(&self, changes: impl IntoIterator<Item = Arc<Change>>) {
        {
            let mut state = self.lock();
            for change in changes {
                state.push(change);
            }
        }
        self.waker.notify_one();
    }

    /// Moves up to `max` pending events, oldest first, into `out`; past
    /// `max` if needed to finish a group, so that the last event moved
    /// always ends one.
    pub fn drain_into(&self, max: usize, out: &mut Vec<PendingEvent>) {
        let mut state = self.lock();
        let state = &mut *state;
        let mut taken = 0;
        let mut in_group = false;
        loop {
            state.skip_replaced();
            if taken >= max && !in_group {
                break;
            }
            let Some((_, change)) = state.order.pop_front() else {
                break;
            };
            let Some((_, coalesced, first)) = state.latest.remove(&change.key) else {
                continue;
            };
            if coalesced > 0 {
                state.unfold(first);
            }
            let revision = change.encoded.revision();
            state.skip_replaced();
            let next = state.order.front().map(|(_, c)| c.encoded.revision());
            let ends_group = next.is_none_or(|n| n > revision)
                && state.folded.keys().next().is_none_or(|&f| f > revision);
            in_group = !ends_group;
            out.push(PendingEvent {
                change,
                coalesced,
                ends_group,
            });
            taken += 1;
        }
        if state.order.is_empty() && state.order.capacity() > 1024 {
            state.order = VecDeque::new();
            state.latest = HashMap::default();
        }
    }

    /// Takes up to `max` pending events, oldest first.
    pub fn drain(&self, max: usize) -> Vec<PendingEvent> {
        let mut out = Vec::new();
        self.drain_into(max, &mut out);
        out
    }

    /// Number of keys with a pending event.
    pub fn pending(&self) -> usize {
        self.lock().latest.len()
    }

    /// Number of updates skipped since the subscription began.
    pub fn coalesced_total(&self) -> u64 {
        self.lock().coalesced_total
    }
}

/// One registered subscription.
#[derive(Debug)]
struct Subscriber {
    key: SubscriptionKey,
    mailbox: Arc<Mailbox>,
}

/// Every live subscription, found by the prefix it covers.
///
/// Publishing looks up each ancestor of the changed key (`a`, `a.b`,
/// `a.b.c`, and the empty prefix), so its cost grows with the depth of the
/// key and the number of matching subscribers, not with the number of
/// subscriptions.
#[derive(Debug, Default)]
pub struct Registry {
    by_prefix: HashMap<String, Vec<Subscriber>, Hasher>,
    prefixes: HashMap<SubscriptionKey, String, Hasher>,
}

impl Registry {
    /// Creates an empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a subscription to `prefix` delivering into `mailbox`.
    /// Returns false (and changes nothing) when `key` is already registered.
    pub fn register(&mut self, key: SubscriptionKey, prefix: &str, mailbox: Arc<Mailbox>) -> bool {
        if self.prefixes.contains_key(&key) {
            return false;
        }
        self.prefixes.insert(key, prefix.to_owned());
        self.by_prefix
            .entry(prefix.to_owned())
            .or_default()
            .push(Subscriber { key, mailbox });
        true
    }

    /// Removes a subscription; returns whether it existed.
    pub fn unregister(&mut self, key: SubscriptionKey) -> bool {
        let Some(prefix) = self.prefixes.remove(&key) else {
            return false;
        };
        if let Some(list) = self.by_prefix.get_mut(&prefix) {
            list.retain(|s| s.key != key);
            if list.is_empty() {
                self.by_prefix.remove(&prefix);
            }
        }
        true
    }

    /// Removes every subscription of `connection`.
    pub fn unregister_connection(&mut self, connection: u64) {
        let keys: Vec<_> = self
            .prefixes
            .keys()
            .filter(|k| k.connection == connection)
            .copied()
            .collect();
        for key in keys {
            self.unregister(key);
        }
    }

    /// Number of live subscriptions.
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// True when nobody is subscribed.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Number of live subscriptions of one connection.
    pub fn count_for(&self, connection: u64) -> usize {
        self.prefixes
            .keys()
            .filter(|k| k.connection == connection)
            .count()
    }

    /// Every subscription with its prefix and mailbox, for STATS.
    pub fn iter(&self) -> impl Iterator<Item = (SubscriptionKey, &str, &Arc<Mailbox>)> {
        self.by_prefix.iter().flat_map(|(prefix, subs)| {
            subs.iter()
                .map(move |s| (s.key, prefix.as_str(), &s.mailbox))
        })
    }

    /// Delivers `events` (in revision order): each multi-key write (a run
    /// of events with one revision) is queued in each mailbox at once.
    pub fn publish_all(&self, events: &[KeyEvent]) {
        if self.by_prefix.is_empty() {
            return;
        }
        for run in events.chunk_by(|a, b| a.revision == b.revision) {
            match run {
                [event] => self.publish(event),
                run => self.publish_group(run),
            }
        }
    }

    fn publish_group(&self, run: &[KeyEvent]) {
        // Each subscription's share of the run, with its mailbox.
        type Share<'a> = (&'a Arc<Mailbox>, Vec<Arc<Change>>);
        let mut shares: HashMap<SubscriptionKey, Share<'_>, Hasher> = HashMap::default();
        for event in run {
            let mut change: Option<Arc<Change>> = None;
            for prefix in ancestors(&event.key) {
                let Some(subs) = self.by_prefix.get(prefix) else {
                    continue;
                };
                if change.is_none() {
                    change = Change::of(event);
                }
                let Some(change) = &change else {
                    break;
                };
                for sub in subs {
                    shares
                        .entry(sub.key)
                        .or_insert_with(|| (&sub.mailbox, Vec::new()))
                        .1
                        .push(change.clone());
                }
            }
        }
        for (mailbox, changes) in shares.into_values() {
            mailbox.push_group(changes);
        }
    }

    /// Delivers `event` to every subscription whose prefix covers its key.
    /// The change is framed once, and only if someone receives it.
    pub fn publish(&self, event: &KeyEvent) {
        if self.by_prefix.is_empty() {
            return;
        }
        let mut change: Option<Arc<Change>> = None;
        for prefix in ancestors(&event.key) {
            let Some(subs) = self.by_prefix.get(prefix) else {
                continue;
            };
            if change.is_none() {
                change = Change::of(event);
            }
            let Some(change) = &change else {
                return;
            };
            for sub in subs {
                sub.mailbox.push(change.clone());
            }
        }
    }
}

/// The prefixes that cover `key`: the empty prefix, then each leading run
/// of whole segments, ending with the key itself.
fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    let cuts = key
        .match_indices(SEPARATOR)
        .map(|(at, _)| at)
        .chain(std::iter::once(key.len()));
    std::iter::once("").chain(cuts.map(move |at| &key[..at]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, revision: u64, value: &'static [u8]) -> KeyEvent {
        KeyEvent {
            key: key.into(),
            revision,
            kind: ChangeKind::Update(Bytes::from_static(value)),
        }
    }

    fn update(key: &str, revision: u64, value: &'static [u8]) -> Arc<Change> {
        Change::of(&event(key, revision, value)).unwrap()
    }

    #[test]
    fn ancestors_are_whole_segments() {
        let got: Vec<_> = ancestors("net.eth0.state").collect();
        assert_eq!(got, ["", "net", "net.eth0", "net.eth0.state"]);
        let got: Vec<_> = ancestors("solo").collect();
        assert_eq!(got, ["", "solo"]);
    }

    #[test]
    fn mailbox_keeps_latest_per_key_in_revision_order() {
        let mailbox = Mailbox::new(Arc::new(Notify::new()));
        mailbox.push(update("a", 1, b"1"));
        mailbox.push(update("b", 2, b"2"));
        mailbox.push(update("a", 3, b"3"));
        mailbox.push(update("a", 4, b"4"));
        assert_eq!(mailbox.pending(), 2);
        let got = mailbox.drain(10);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].change, update("b", 2, b"2"));
        assert_eq!(got[0].coalesced, 0);
        assert_eq!(got[1].change, update("a", 4, b"4"));
        assert_eq!(got[1].coalesced, 2);
        assert_eq!(mailbox.coalesced_total(), 2);
        assert!(mailbox.drain(10).is_empty());
        // After a drain a key starts over.
        mailbox.push(update("a", 5, b"5"));
        let got = mailbox.drain(10);
        assert_eq!((got[0].change.encoded.revision(), got[0].coalesced), (5, 0));
    }

    #[test]
    fn mailbox_memory_is_bounded_by_keys() {
        let mailbox = Mailbox::new(Arc::new(Notify::new()));
        for revision in 0..10_000 {
            mailbox.push(update(
                if revision % 2 == 0 { "x" } else { "y" },
                revision,
                b"v",
            ));
            let state = mailbox.lock();
            assert!(state.order.len() <= 2 * state.latest.len() + 33);
        }
        assert_eq!(mailbox.pending(), 2);
        // x's pending update folded changes older than y's: applying x
        // alone would show a state the store never had, so a drain of one
        // goes on to y, and only y ends the group.
        let got = mailbox.drain(1);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].change.encoded.revision(), 9_998);
        assert_eq!(got[0].coalesced, 4_999);
        assert!(!got[0].ends_group);
        assert_eq!(got[1].change.encoded.revision(), 9_999);
        assert!(got[1].ends_group);
        assert!(mailbox.drain(5).is_empty());
    }

    #[test]
    fn a_multi_key_write_is_one_group_even_when_coalesced_into() {
        let mailbox = Mailbox::new(Arc::new(Notify::new()));
        // Single writes stand alone.
        mailbox.push(update("a", 1, b"1"));
        mailbox.push(update("b", 2, b"2"));
        let got = mailbox.drain(10);
        assert!(got.iter().all(|p| p.ends_group));
        // A transaction of a, b, c at 3 ends only at its last key...
        mailbox.push_group([
            update("a", 3, b"3"),
            update("b", 3, b"3"),
            update("c", 3, b"3"),
        ]);
        let got = mailbox.drain(1);
        let ends: Vec<_> = got.iter().map(|p| p.ends_group).collect();
        assert_eq!(
            ends,
            [false, false, true],
            "a drain never stops inside a group"
        );
        // ...and when a later write of `a` folds into the pending group,
        // the group runs until that write.
        mailbox.push_group([update("a", 4, b"4"), update("b", 4, b"4")]);
        mailbox.push(update("z", 5, b"5"));
        mailbox.push(update("a", 6, b"6"));
        let got = mailbox.drain(10);
        let seen: Vec<_> = got
            .iter()
            .map(|p| (p.change.key.to_string(), p.ends_group))
            .collect();
        assert_eq!(
            seen,
            [("b".into(), false), ("z".into(), false), ("a".into(), true)]
        );
    }

    #[test]
    fn publish_reaches_covering_prefixes_only_and_shares_one_change() {
        let waker = Arc::new(Notify::new());
        let mut registry = Registry::new();
        let mk = |subscription| SubscriptionKey {
            connection: 1,
            subscription,
        };
        let net = Arc::new(Mailbox::new(waker.clone()));
        let network = Arc::new(Mailbox::new(waker.clone()));
        let all = Arc::new(Mailbox::new(waker.clone()));
        assert!(registry.register(mk(1), "net", net.clone()));
        assert!(registry.register(mk(2), "network", network.clone()));
        assert!(registry.register(mk(3), "", all.clone()));
        assert!(!registry.register(mk(3), "x", all.clone()));

        registry.publish(&event("net.eth0", 1, b"up"));
        registry.publish(&event("net", 2, b"root"));
        assert_eq!(net.pending(), 2);
        assert_eq!(network.pending(), 0);
        assert_eq!(all.pending(), 2);
        let (a, b) = (net.drain(1), all.drain(1));
        assert!(Arc::ptr_eq(&a[0].change, &b[0].change), "encoded once");

        assert!(registry.unregister(mk(1)));
        assert!(!registry.unregister(mk(1)));
        registry.publish(&event("net.eth1", 3, b"down"));
        assert_eq!(net.pending(), 1);
        registry.unregister_connection(1);
        assert!(registry.is_empty());
    }
}
