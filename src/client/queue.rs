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

use std::collections::{BTreeMap, HashMap};

use super::subscription::SubscriptionEvent;

/// The waiting events of one subscription.
#[derive(Debug)]
pub(crate) struct SubQueue {
    /// Events by arrival sequence number.
    items: BTreeMap<u64, SubscriptionEvent>,
    /// Keys with a waiting event after the last control event, and that
    /// event's sequence number: the events a new one may replace.
    tail: HashMap<String, u64>,
    next_seq: u64,
    /// From this many waiting events on, events of one key are merged.
    limit: usize,
    /// Events merged away since the subscription began (this side only).
    merged: u64,
}

impl SubQueue {
    /// An empty queue that starts merging at `limit` waiting events.
    pub fn new(limit: usize) -> SubQueue {
        SubQueue {
            items: BTreeMap::new(),
            tail: HashMap::new(),
            next_seq: 0,
            limit: limit.max(1),
            merged: 0,
        }
    }

    /// Number of waiting events.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Events merged away on this side so far.
    pub fn merged(&self) -> u64 {
        self.merged
    }

    /// Queues `event`, merging it with a waiting event of the same key when
    /// the queue is at its limit.
    pub fn push(&mut self, mut event: SubscriptionEvent) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let Some(key) = data_key(&event).map(str::to_owned) else {
            // A control event: nothing after it merges with what is before.
            self.tail.clear();
            self.items.insert(seq, event);
            return;
        };
        if self.items.len() >= self.limit {
            if let Some(old_seq) = self.tail.get(&key).copied() {
                if let Some(old) = self.items.remove(&old_seq) {
                    add_coalesced(&mut event, coalesced_of(&old) + 1);
                    self.merged += 1;
                }
            }
        }
        self.tail.insert(key, seq);
        self.items.insert(seq, event);
    }

    /// Takes the oldest waiting event.
    pub fn pop(&mut self) -> Option<SubscriptionEvent> {
        let (seq, event) = self.items.pop_first()?;
        if let Some(key) = data_key(&event) {
            if self.tail.get(key) == Some(&seq) {
                self.tail.remove(key);
            }
        }
        Some(event)
    }

    /// Drops every waiting event.
    pub fn clear(&mut self) {
        self.items.clear();
        self.tail.clear();
    }
}

/// The key of an UPDATE or DELETE; `None` for a control event.
fn data_key(event: &SubscriptionEvent) -> Option<&str> {
    match event {
        SubscriptionEvent::Update { key, .. } | SubscriptionEvent::Delete { key, .. } => Some(key),
        _ => None,
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
}
