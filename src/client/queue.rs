//! One subscription's queue of events waiting for its handler, bounded the
//! way the server's mailbox is: once the queue holds `limit` events, a new
//! event for a key that already has one waiting replaces it (the latest
//! value wins, `coalesced` adds up both sides' skipped updates, and the key
//! moves to the back so events stay in revision order). A slow handler
//! therefore costs memory bounded by the keys its subscription covers, not
//! by the write rate.
//!
//! Control events (SYNCED, RESET, DISCONNECTED, CLOSED) keep their place:
//! an update is never merged with one on the other side of a control event,
//! so "the view is consistent at SYNCED" still holds for what was delivered
//! before it.
//!
//! # Groups (grouped subscriptions)
//!
//! A GROUP event announces that the next `count` events belong together
//! (one transaction, one prefix delete): a handler that applies them at
//! once must never show a state the store never had. The server keeps a
//! stronger promise for a grouped subscription (docs/architecture.md,
//! "Events and groups"): after each *unit* (a group, or an event on its
//! own) the subscriber holds a state the store had. This queue keeps that
//! promise while it merges:
//!
//! - a group is delivered only once all its events have arrived (the
//!   server sends them right behind the GROUP, so this costs no wait in
//!   practice); then the handler gets a `Group` whose `count` is exactly
//!   the number of events that follow it, and those events;
//! - merging a key's waiting event with a newer one cannot just move the
//!   key to the back: the units in between would then be applied without
//!   the older change (a state the store never had), and a group would
//!   lose a member and apply the rest of its transaction without it.
//!   Instead the unit holding the older event becomes a group that absorbs
//!   every unit behind it, and the new event: applied at once, that is the
//!   store's state at the newest revision absorbed (each key at its latest
//!   value, the way the server's own coalescing merges, protocol.md
//!   section 8). A subscription without groups merges as it always did:
//!   the newer event moves to the back;
//! - a group whose `Group` was delivered is frozen: nothing is merged into
//!   or out of it, so its `count` stays true;
//! - a group cut short by a control event (the connection was lost between
//!   its events) is delivered with the events that came, its `count` saying
//!   how many; the resume after the reconnect delivers the group's
//!   revision again (see `subscription.rs`), before SYNCED.
//!
//! Memory stays bounded as without groups: at the limit, every event whose
//! key is waiting in a unit that can still change replaces that key's
//! event, and a group holds each key at most once.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::subscription::SubscriptionEvent;

/// The waiting events of one subscription.
#[derive(Debug)]
pub(crate) struct SubQueue {
    /// Waiting units by sequence number, oldest first.
    units: BTreeMap<u64, Unit>,
    /// The events of the group whose `Group` was delivered last, still to
    /// deliver (frozen: nothing merges into or out of them).
    delivering: VecDeque<SubscriptionEvent>,
    /// Keys with an event in a unit that may still change (after the last
    /// control event), and that unit: the events a new one may replace.
    tail: HashMap<String, u64>,
    /// The group whose events are still arriving; always the last unit.
    open: Option<u64>,
    /// Waiting events (data and control; `Group` markers are not counted,
    /// they are made when a group is delivered).
    len: usize,
    next_seq: u64,
    /// From this many waiting events on, events of one key are merged.
    limit: usize,
    /// Events merged away since the subscription began (this side only).
    merged: u64,
    /// A grouped subscription: merging folds units into groups (see the
    /// module docs) instead of moving an event to the back.
    grouped: bool,
}

/// What the queue holds, in order.
#[derive(Debug)]
enum Unit {
    /// SYNCED, RESET, DISCONNECTED or CLOSED.
    Control(SubscriptionEvent),
    /// An UPDATE or DELETE on its own.
    Single(SubscriptionEvent),
    /// Events applied together.
    Group(Group),
}

/// A group of events (see the module docs).
#[derive(Debug, Default)]
struct Group {
    /// The revision the view is consistent at once they are applied.
    revision: u64,
    /// The events by arrival sequence number; one per key.
    events: BTreeMap<u64, SubscriptionEvent>,
    /// Where each key's event is in `events`.
    keys: HashMap<String, u64>,
    /// Events the server announced and has not sent yet.
    owed: u32,
}

impl SubQueue {
    /// An empty queue that starts merging at `limit` waiting events.
    pub fn new(limit: usize) -> SubQueue {
        SubQueue {
            units: BTreeMap::new(),
            delivering: VecDeque::new(),
            tail: HashMap::new(),
            open: None,
            len: 0,
            next_seq: 0,
            limit: limit.max(1),
            merged: 0,
            grouped: false,
        }
    }

    /// An empty queue for a grouped subscription (see the module docs).
    pub fn grouped(limit: usize) -> SubQueue {
        SubQueue {
            grouped: true,
            ..SubQueue::new(limit)
        }
    }

    /// Number of waiting events (data and control).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing can be delivered now: the queue is empty, or holds
    /// only a group whose events are still arriving.
    pub fn is_empty(&self) -> bool {
        self.delivering.is_empty()
            && match self.units.first_key_value() {
                None => true,
                Some((_, Unit::Group(group))) => group.owed > 0,
                Some(_) => false,
            }
    }

    /// Events merged away on this side so far.
    pub fn merged(&self) -> u64 {
        self.merged
    }

    fn seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Queues `event`, merging it with a waiting event of the same key when
    /// the queue is at its limit.
    pub fn push(&mut self, event: SubscriptionEvent) {
        if let SubscriptionEvent::Group { count, revision } = event {
            // A group starts; one still arriving is complete as it is.
            self.close_open();
            if count > 0 {
                let seq = self.seq();
                let group = Group {
                    revision,
                    owed: count,
                    ..Group::default()
                };
                self.units.insert(seq, Unit::Group(group));
                self.open = Some(seq);
            }
            return;
        }
        let Some(key) = data_key(&event).map(str::to_owned) else {
            // A control event: nothing after it merges with what is before.
            self.close_open();
            self.tail.clear();
            let seq = self.seq();
            self.units.insert(seq, Unit::Control(event));
            self.len += 1;
            return;
        };
        self.push_data(key, event);
    }

    fn push_data(&mut self, key: String, mut event: SubscriptionEvent) {
        let seq = self.seq();
        // Where the event goes: the group still arriving, else on its own.
        let mut target = self.open;
        if let Some(open) = target {
            let group = self.group(open);
            group.owed = group.owed.saturating_sub(1);
        }
        if self.len >= self.limit {
            if let Some(old) = self.tail.get(&key).copied() {
                match self.units.get(&old) {
                    Some(Unit::Single(_)) if !self.grouped => {
                        // On its own: it goes, the new event carries its count.
                        if let Some(Unit::Single(previous)) = self.units.remove(&old) {
                            self.absorb(&mut event, &previous);
                        }
                    }
                    Some(Unit::Single(_)) => {
                        // Grouped: it becomes a group of one that takes in
                        // everything behind it, and the new event.
                        self.single_to_group(old);
                        self.fold_into(old);
                        target = Some(old);
                    }
                    Some(Unit::Group(_)) => {
                        // Inside a group: the group takes in everything
                        // behind it, and the new event replaces the key's.
                        if target != Some(old) {
                            self.fold_into(old);
                            target = Some(old);
                        }
                    }
                    _ => unreachable!("the tail names only singles and groups"),
                }
            }
        }
        match target {
            None => {
                self.units.insert(seq, Unit::Single(event));
                self.tail.insert(key, seq);
                self.len += 1;
            }
            Some(group) => self.insert_into(group, seq, key, event),
        }
        if let Some(open) = self.open {
            if self.group(open).owed == 0 {
                self.open = None;
            }
        }
    }

    /// Adds `event` (sequence number `seq`) to group `at`, replacing the
    /// key's event there if it has one.
    fn insert_into(&mut self, at: u64, seq: u64, key: String, mut event: SubscriptionEvent) {
        let group = self.group(at);
        let previous = group
            .keys
            .insert(key.clone(), seq)
            .and_then(|old| group.events.remove(&old));
        group.revision = group.revision.max(revision_of(&event));
        if let Some(previous) = previous {
            self.absorb(&mut event, &previous);
        }
        self.group(at).events.insert(seq, event);
        self.tail.insert(key, at);
        self.len += 1;
    }

    /// Group `at` takes in every unit behind it (all singles and groups:
    /// the tail, where `at` is, holds no control event), and becomes the
    /// group still arriving if one of them was.
    fn fold_into(&mut self, at: u64) {
        let behind: Vec<u64> = self.units.range(at + 1..).map(|(&seq, _)| seq).collect();
        for seq in behind {
            match self.units.remove(&seq) {
                Some(Unit::Single(event)) => {
                    self.len -= 1;
                    let key = data_key(&event).expect("a data event").to_owned();
                    self.insert_into(at, seq, key, event);
                }
                Some(Unit::Group(other)) => {
                    let was_open = self.open == Some(seq);
                    let group = self.group(at);
                    group.revision = group.revision.max(other.revision);
                    if was_open {
                        group.owed = other.owed;
                        self.open = Some(at);
                    }
                    for (event_seq, event) in other.events {
                        self.len -= 1;
                        let key = data_key(&event).expect("a data event").to_owned();
                        self.insert_into(at, event_seq, key, event);
                    }
                }
                _ => unreachable!("no control event behind a unit of the tail"),
            }
        }
    }

    /// The single event at `at` becomes a group of one, in its place.
    fn single_to_group(&mut self, at: u64) {
        if let Some(Unit::Single(event)) = self.units.remove(&at) {
            let key = data_key(&event).expect("a data event").to_owned();
            let group = Group {
                revision: revision_of(&event),
                events: BTreeMap::from([(at, event)]),
                keys: HashMap::from([(key, at)]),
                owed: 0,
            };
            self.units.insert(at, Unit::Group(group));
        }
    }

    /// `event` replaces `previous` (same key, older): it carries the
    /// updates `previous` stood for.
    fn absorb(&mut self, event: &mut SubscriptionEvent, previous: &SubscriptionEvent) {
        add_coalesced(event, coalesced_of(previous) + 1);
        self.merged += 1;
        self.len -= 1;
    }

    fn group(&mut self, seq: u64) -> &mut Group {
        match self.units.get_mut(&seq) {
            Some(Unit::Group(group)) => group,
            _ => unreachable!("unit {seq} is a group"),
        }
    }

    /// The group still arriving is complete with what it has.
    fn close_open(&mut self) {
        if let Some(open) = self.open.take() {
            self.group(open).owed = 0;
        }
    }

    /// Takes the oldest deliverable event: for a group, first a `Group`
    /// with the number of events that follow, then those events.
    pub fn pop(&mut self) -> Option<SubscriptionEvent> {
        if let Some(event) = self.delivering.pop_front() {
            self.len -= 1;
            return Some(event);
        }
        loop {
            let first = self.units.first_entry()?;
            if matches!(first.get(), Unit::Group(g) if g.owed > 0) {
                return None; // its events are still arriving
            }
            let seq = *first.key();
            let unit = first.remove();
            let group = match unit {
                Unit::Control(event) => {
                    self.len -= 1;
                    return Some(event);
                }
                Unit::Single(event) => {
                    self.forget_tail(data_key(&event).expect("a data event"), seq);
                    self.len -= 1;
                    return Some(event);
                }
                Unit::Group(group) => group,
            };
            for key in group.keys.keys() {
                self.forget_tail(key, seq);
            }
            let mut events: VecDeque<SubscriptionEvent> = group.events.into_values().collect();
            match events.len() {
                0 => continue, // announced, cut short before any event
                1 => {
                    // Nothing to apply together.
                    self.len -= 1;
                    return events.pop_front();
                }
                n => {
                    self.delivering = events;
                    return Some(SubscriptionEvent::Group {
                        count: u32::try_from(n).unwrap_or(u32::MAX),
                        revision: group.revision,
                    });
                }
            }
        }
    }

    fn forget_tail(&mut self, key: &str, seq: u64) {
        if self.tail.get(key) == Some(&seq) {
            self.tail.remove(key);
        }
    }

    /// Drops every waiting event.
    pub fn clear(&mut self) {
        self.units.clear();
        self.delivering.clear();
        self.tail.clear();
        self.open = None;
        self.len = 0;
    }
}

/// The key of an UPDATE or DELETE; `None` for any other event.
fn data_key(event: &SubscriptionEvent) -> Option<&str> {
    match event {
        SubscriptionEvent::Update { key, .. } | SubscriptionEvent::Delete { key, .. } => Some(key),
        _ => None,
    }
}

fn revision_of(event: &SubscriptionEvent) -> u64 {
    match event {
        SubscriptionEvent::Update { revision, .. } | SubscriptionEvent::Delete { revision, .. } => {
            *revision
        }
        _ => 0,
    }
}

fn coalesced_of(event: &SubscriptionEvent) -> u64 {
    match event {
        SubscriptionEvent::Update { coalesced, .. }
        | SubscriptionEvent::Delete { coalesced, .. } => *coalesced,
        _ => 0,
    }
}

fn add_coalesced(event: &mut SubscriptionEvent, n: u64) {
    if let SubscriptionEvent::Update { coalesced, .. }
    | SubscriptionEvent::Delete { coalesced, .. } = event
    {
        *coalesced = coalesced.saturating_add(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn update(key: &str, revision: u64, coalesced: u64) -> SubscriptionEvent {
        SubscriptionEvent::Update {
            key: key.into(),
            value: Bytes::from(revision.to_string()),
            revision,
            coalesced,
        }
    }

    fn group(count: u32, revision: u64) -> SubscriptionEvent {
        SubscriptionEvent::Group { count, revision }
    }

    fn drain(q: &mut SubQueue) -> Vec<SubscriptionEvent> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn below_the_limit_every_event_waits() {
        let mut q = SubQueue::new(10);
        for r in 1..=5 {
            q.push(update("a", r, 0));
        }
        assert_eq!(q.len(), 5);
        assert_eq!(q.pop(), Some(update("a", 1, 0)));
    }

    #[test]
    fn at_the_limit_the_latest_value_per_key_wins_in_revision_order() {
        let mut q = SubQueue::new(2);
        q.push(update("a", 1, 0));
        q.push(update("b", 2, 0));
        q.push(update("a", 3, 4)); // the server skipped 4 already
        q.push(update("a", 5, 0));
        assert_eq!(q.len(), 2);
        assert_eq!(q.merged(), 2);
        assert_eq!(q.pop(), Some(update("b", 2, 0)));
        // 1 merged into 3 (1 + 4 + 0), then 3 into 5: 5 + 1 = 6.
        assert_eq!(q.pop(), Some(update("a", 5, 6)));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn memory_is_bounded_by_the_keys() {
        let mut q = SubQueue::new(16);
        for r in 0..100_000u64 {
            q.push(update(&format!("k{}", r % 50), r, 0));
        }
        assert!(q.len() <= 50, "{}", q.len());
    }

    #[test]
    fn nothing_merges_across_a_control_event() {
        let mut q = SubQueue::new(1);
        q.push(update("a", 1, 0));
        q.push(SubscriptionEvent::Synced { revision: 1 });
        q.push(update("a", 2, 0));
        q.push(update("a", 3, 0));
        assert_eq!(q.pop(), Some(update("a", 1, 0)));
        assert_eq!(q.pop(), Some(SubscriptionEvent::Synced { revision: 1 }));
        assert_eq!(q.pop(), Some(update("a", 3, 1)));
    }

    #[test]
    fn a_group_is_delivered_whole_once_all_its_events_came() {
        let mut q = SubQueue::grouped(100);
        q.push(group(2, 7));
        q.push(update("a", 7, 0));
        assert!(q.is_empty(), "half a group is not deliverable");
        assert_eq!(q.pop(), None);
        q.push(update("b", 7, 0));
        assert!(!q.is_empty());
        assert_eq!(
            drain(&mut q),
            [group(2, 7), update("a", 7, 0), update("b", 7, 0)]
        );
    }

    #[test]
    fn merging_a_key_inside_a_group_merges_everything_behind_it() {
        // Transaction 2 wrote a and b; c was written alone at 3; then a
        // again at 4. Moving a to the back would deliver b without a: a
        // state the store never had. The group takes in c and the new a.
        let mut q = SubQueue::grouped(3);
        q.push(group(2, 2));
        q.push(update("a", 2, 0));
        q.push(update("b", 2, 0));
        q.push(update("c", 3, 0));
        q.push(update("a", 4, 0));
        assert_eq!(
            drain(&mut q),
            [
                group(3, 4),
                update("b", 2, 0),
                update("c", 3, 0),
                update("a", 4, 1)
            ]
        );
    }

    #[test]
    fn merging_two_groups_keeps_one_event_per_key() {
        let mut q = SubQueue::grouped(2);
        q.push(group(2, 2));
        q.push(update("a", 2, 0));
        q.push(update("b", 2, 0));
        q.push(group(2, 3));
        q.push(update("b", 3, 0)); // b is in the first group: both merge
        q.push(update("c", 3, 0));
        assert_eq!(q.len(), 3);
        assert_eq!(
            drain(&mut q),
            [
                group(3, 3),
                update("a", 2, 0),
                update("b", 3, 1),
                update("c", 3, 0)
            ]
        );
    }

    #[test]
    fn without_groups_a_merged_event_moves_to_the_back() {
        let mut q = SubQueue::new(2);
        q.push(update("k", 1, 0));
        q.push(update("a", 2, 0));
        q.push(update("k", 3, 0));
        assert_eq!(drain(&mut q), [update("a", 2, 0), update("k", 3, 1)]);
    }

    #[test]
    fn a_single_event_merged_in_a_grouped_queue_takes_in_what_follows() {
        // Moving k to the back would deliver the group (and a) while k
        // still had its value from before revision 1: never the store's.
        let mut q = SubQueue::grouped(2);
        q.push(update("k", 1, 0));
        q.push(group(2, 2));
        q.push(update("a", 2, 0));
        q.push(update("b", 2, 0));
        q.push(update("c", 3, 0));
        q.push(update("k", 4, 0));
        assert_eq!(
            drain(&mut q),
            [
                group(4, 4),
                update("a", 2, 0),
                update("b", 2, 0),
                update("c", 3, 0),
                update("k", 4, 1)
            ]
        );
        // At the back already: a group of one is the event alone.
        q.push(update("x", 5, 0));
        q.push(update("y", 6, 0));
        q.push(update("y", 7, 0));
        assert_eq!(drain(&mut q), [update("x", 5, 0), update("y", 7, 1)]);
    }

    #[test]
    fn a_group_being_delivered_is_frozen() {
        let mut q = SubQueue::grouped(1);
        q.push(group(2, 2));
        q.push(update("a", 2, 0));
        q.push(update("b", 2, 0));
        assert_eq!(q.pop(), Some(group(2, 2)));
        q.push(update("b", 3, 0)); // may not replace the b the count promised
        assert_eq!(
            drain(&mut q),
            [update("a", 2, 0), update("b", 2, 0), update("b", 3, 0)]
        );
    }

    #[test]
    fn a_group_cut_short_is_delivered_with_what_came() {
        let mut q = SubQueue::grouped(10);
        q.push(group(3, 5));
        q.push(update("a", 5, 0));
        q.push(update("b", 5, 0));
        q.push(SubscriptionEvent::Disconnected);
        assert_eq!(
            drain(&mut q),
            [
                group(2, 5),
                update("a", 5, 0),
                update("b", 5, 0),
                SubscriptionEvent::Disconnected
            ]
        );
        // Cut before its second event: no group of one.
        q.push(group(2, 6));
        q.push(update("a", 6, 0));
        q.push(SubscriptionEvent::Disconnected);
        q.push(group(2, 7));
        q.push(SubscriptionEvent::Reset);
        assert_eq!(
            drain(&mut q),
            [
                update("a", 6, 0),
                SubscriptionEvent::Disconnected,
                SubscriptionEvent::Reset
            ]
        );
    }

    #[test]
    fn grouped_memory_is_bounded_by_the_keys() {
        let mut q = SubQueue::grouped(16);
        for r in 0..20_000u64 {
            q.push(group(3, r));
            for k in 0..3 {
                q.push(update(&format!("k{}", (r * 3 + k) % 50), r, 0));
            }
            if r % 7 == 0 {
                q.pop(); // a slow handler
            }
            // The limit, one event per key, and a group being delivered
            // (which may have merged one event of every key).
            assert!(q.len() <= 16 + 50 + 50, "{}", q.len());
        }
    }

    // -----------------------------------------------------------------
    // The property: whatever the interleaving of writes and a slow
    // handler, and whatever the limit, a handler of a grouped subscription
    // that applies each group at once holds, after each unit, the store's
    // state at the newest revision it applied (so every transaction is
    // whole), sees a count that matches what follows, accounts for every
    // write (delivered or counted in `coalesced`), and ends with the
    // store's state.

    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Step {
        /// A transaction: keys (0..6) and new values (`None`: delete).
        Write(Vec<(u8, Option<u8>)>),
        /// The handler takes this many events.
        Take(usize),
        /// A SYNCED between transactions.
        Synced,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => prop::collection::vec((0u8..6, prop::option::of(0u8..4)), 1..5)
                .prop_map(Step::Write),
            2 => (0usize..4).prop_map(Step::Take),
            1 => Just(Step::Synced),
        ]
    }

    /// The handler's side: the view, and the group being collected.
    #[derive(Default)]
    struct Handler {
        view: BTreeMap<String, (Option<Bytes>, u64)>,
        collecting: Option<(u32, u64, Vec<SubscriptionEvent>)>,
        delivered: BTreeMap<String, u64>,
    }

    struct History {
        /// Per key, every write: (revision, value).
        writes: BTreeMap<String, Vec<(u64, Option<Bytes>)>>,
        /// Transactions of two or more keys: revision and keys.
        txns: Vec<(u64, Vec<String>)>,
    }

    impl History {
        fn state_at(&self, key: &str, revision: u64) -> Option<Bytes> {
            self.writes
                .get(key)
                .and_then(|w| w.iter().rev().find(|(r, _)| *r <= revision))
                .and_then(|(_, v)| v.clone())
        }
    }

    impl Handler {
        /// The newest revision applied.
        fn applied(&self) -> u64 {
            self.view.values().map(|(_, r)| *r).max().unwrap_or(0)
        }

        fn take(&mut self, event: SubscriptionEvent, history: &History) {
            if let SubscriptionEvent::Group { count, revision } = event {
                assert!(self.collecting.is_none(), "a group inside a group");
                assert!(count >= 2, "a group of {count}");
                self.collecting = Some((count, revision, Vec::new()));
                return;
            }
            if data_key(&event).is_none() {
                assert!(self.collecting.is_none(), "{event:?} inside a group");
                return;
            }
            match &mut self.collecting {
                Some((count, revision, events)) => {
                    events.push(event);
                    if events.len() == *count as usize {
                        let (revision, events) = (*revision, std::mem::take(events));
                        self.collecting = None;
                        for e in &events {
                            self.apply(e);
                        }
                        for e in &events {
                            let key = data_key(e).unwrap();
                            assert_eq!(
                                self.view[key].0,
                                history.state_at(key, revision),
                                "{key} after a group at {revision}"
                            );
                        }
                        self.check(history);
                    }
                }
                None => {
                    self.apply(&event);
                    self.check(history);
                }
            }
        }

        fn apply(&mut self, event: &SubscriptionEvent) {
            let (key, value, revision, coalesced) = match event {
                SubscriptionEvent::Update {
                    key,
                    value,
                    revision,
                    coalesced,
                } => (key, Some(value.clone()), *revision, *coalesced),
                SubscriptionEvent::Delete {
                    key,
                    revision,
                    coalesced,
                } => (key, None, *revision, *coalesced),
                _ => unreachable!(),
            };
            let before = self.view.get(key).map_or(0, |(_, r)| *r);
            assert!(revision > before, "{key}: {revision} after {before}");
            self.view.insert(key.clone(), (value, revision));
            *self.delivered.entry(key.clone()).or_default() += 1 + coalesced;
        }

        /// A state the handler shows: the store's at the newest revision
        /// applied, and so no transaction half applied.
        fn check(&self, history: &History) {
            let at = self.applied();
            for key in history.writes.keys() {
                assert_eq!(
                    self.view.get(key).and_then(|(v, _)| v.clone()),
                    history.state_at(key, at),
                    "{key} in a state shown at revision {at}: {:?}",
                    self.view
                );
            }
            for (revision, keys) in &history.txns {
                let applied = keys
                    .iter()
                    .filter(|k| self.view.get(*k).is_some_and(|(_, r)| r >= revision))
                    .count();
                assert!(
                    applied == 0 || applied == keys.len(),
                    "transaction {revision} on {keys:?} half applied: {:?}",
                    self.view
                );
            }
        }
    }

    fn run(limit: usize, steps: Vec<Step>) {
        let mut q = SubQueue::grouped(limit);
        let mut handler = Handler::default();
        let mut history = History {
            writes: BTreeMap::new(),
            txns: Vec::new(),
        };
        let mut revision = 0;
        let mut controls = 0;
        for step in steps {
            match step {
                Step::Write(ops) => {
                    revision += 1;
                    let mut ops: BTreeMap<String, Option<Bytes>> = ops
                        .into_iter()
                        .map(|(k, v)| (format!("k{k}"), v.map(|v| Bytes::from(vec![v]))))
                        .collect();
                    // Deleting an absent key writes nothing.
                    ops.retain(|k, v| v.is_some() || history.state_at(k, revision).is_some());
                    if ops.is_empty() {
                        continue;
                    }
                    if ops.len() > 1 {
                        q.push(group(ops.len() as u32, revision));
                        history.txns.push((revision, ops.keys().cloned().collect()));
                    }
                    for (key, value) in ops {
                        history
                            .writes
                            .entry(key.clone())
                            .or_default()
                            .push((revision, value.clone()));
                        q.push(match value {
                            Some(value) => SubscriptionEvent::Update {
                                key,
                                value,
                                revision,
                                coalesced: 0,
                            },
                            None => SubscriptionEvent::Delete {
                                key,
                                revision,
                                coalesced: 0,
                            },
                        });
                    }
                }
                Step::Take(n) => {
                    for _ in 0..n {
                        match q.pop() {
                            Some(event) => handler.take(event, &history),
                            None => break,
                        }
                    }
                }
                Step::Synced => {
                    controls += 1;
                    q.push(SubscriptionEvent::Synced { revision });
                }
            }
            // Bounded by the keys, not the writes: per stretch between
            // control events one event per key, plus the limit and a
            // group being delivered (at most one event per key too).
            assert!(
                q.len() <= limit + 6 * (controls + 2) + controls,
                "{} events wait (limit {limit})",
                q.len()
            );
        }
        while let Some(event) = q.pop() {
            handler.take(event, &history);
        }
        assert!(handler.collecting.is_none(), "a group was cut short");
        for (key, writes) in &history.writes {
            assert_eq!(
                handler.view.get(key).and_then(|(v, _)| v.clone()),
                history.state_at(key, revision),
                "{key} at the end"
            );
            assert_eq!(
                handler.delivered.get(key).copied().unwrap_or(0),
                writes.len() as u64,
                "writes of {key} delivered or counted"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn groups_never_show_a_state_the_store_never_had(
            limit in 1usize..8,
            steps in prop::collection::vec(step(), 0..60),
        ) {
            run(limit, steps);
        }
    }
}
