//! Who owns each ephemeral key, and when an orphaned one goes.
//!
//! An ephemeral PUT makes its connection the key's owner. When the owner
//! disconnects, its keys with no grace period are deleted at once; the
//! others become orphans with a deadline, deleted when it passes unless an
//! ephemeral PUT takes them over first. Any other write of the key ends
//! the ownership (the key is then an ordinary one, or gone).
//!
//! Bounds: one entry per ephemeral key (keys are bounded by the store's
//! limits), and one set per connection that owns any.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::store::Key;

/// Hashes keys a client chose (see `notify`).
type Hasher = foldhash::fast::RandomState;

#[derive(Debug, Clone, Copy)]
enum Owner {
    /// Held by a live connection; the grace it asked for.
    Connection { id: u64, grace: Duration },
    /// Its connection is gone; deleted at `deadline`.
    Orphan { deadline: Instant },
}

/// The ephemeral keys and their owners (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Owners {
    by_key: HashMap<Key, Owner, Hasher>,
    by_connection: HashMap<u64, HashSet<Key, Hasher>, Hasher>,
}

impl Owners {
    /// True when no key is ephemeral (the usual case: writes skip the
    /// bookkeeping).
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Number of ephemeral keys (orphans included).
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// `connection` wrote `key` ephemeral: it owns it now.
    pub fn claim(&mut self, key: &str, connection: u64, grace: Duration) {
        let key = Key::from(key);
        self.release(&key);
        self.by_connection
            .entry(connection)
            .or_default()
            .insert(key.clone());
        self.by_key.insert(
            key,
            Owner::Connection {
                id: connection,
                grace,
            },
        );
    }

    /// `key` was written or deleted otherwise: no longer ephemeral.
    pub fn release(&mut self, key: &str) {
        if let Some(Owner::Connection { id, .. }) = self.by_key.remove(key) {
            if let Some(keys) = self.by_connection.get_mut(&id) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_connection.remove(&id);
                }
            }
        }
    }

    /// `connection` ended: returns its keys to delete now; the others
    /// become orphans. Also returns the grace periods to wait for
    /// (distinct), after which [`Owners::expired`] has more to delete.
    pub fn disconnect(&mut self, connection: u64, now: Instant) -> (Vec<Key>, Vec<Duration>) {
        let Some(keys) = self.by_connection.remove(&connection) else {
            return (Vec::new(), Vec::new());
        };
        let (mut gone, mut waits) = (Vec::new(), Vec::new());
        for key in keys {
            let Some(Owner::Connection { grace, .. }) = self.by_key.get(&key).copied() else {
                continue;
            };
            if grace.is_zero() {
                self.by_key.remove(&key);
                gone.push(key);
            } else {
                self.by_key.insert(
                    key,
                    Owner::Orphan {
                        deadline: now + grace,
                    },
                );
                if !waits.contains(&grace) {
                    waits.push(grace);
                }
            }
        }
        gone.sort();
        (gone, waits)
    }

    /// Orphans whose deadline has passed: forgotten here, to delete.
    pub fn expired(&mut self, now: Instant) -> Vec<Key> {
        let mut gone: Vec<Key> = self
            .by_key
            .iter()
            .filter(|(_, o)| matches!(o, Owner::Orphan { deadline } if *deadline <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &gone {
            self.by_key.remove(key);
        }
        gone.sort();
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_go_with_their_connection_or_after_grace() {
        let mut owners = Owners::default();
        let now = Instant::now();
        owners.claim("a", 1, Duration::ZERO);
        owners.claim("b", 1, Duration::from_secs(5));
        owners.claim("c", 2, Duration::ZERO);
        let (gone, waits) = owners.disconnect(1, now);
        assert_eq!(gone, vec![Key::from("a")]);
        assert_eq!(waits, vec![Duration::from_secs(5)]);
        assert!(owners.expired(now + Duration::from_secs(4)).is_empty());
        assert_eq!(
            owners.expired(now + Duration::from_secs(5)),
            vec![Key::from("b")]
        );
        assert_eq!(owners.len(), 1, "c still belongs to connection 2");
    }

    #[test]
    fn a_claim_takes_an_orphan_over_and_a_plain_write_releases() {
        let mut owners = Owners::default();
        let now = Instant::now();
        owners.claim("k", 1, Duration::from_secs(5));
        owners.disconnect(1, now);
        owners.claim("k", 2, Duration::ZERO);
        assert!(owners.expired(now + Duration::from_secs(60)).is_empty());
        owners.release("k");
        assert!(owners.disconnect(2, now).0.is_empty());
        assert!(owners.is_empty());
    }
}
