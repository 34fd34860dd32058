//! The ephemeral keys a client holds, and how it takes them back after a
//! reconnect.
//!
//! An ephemeral key belongs to the connection that wrote it; when that
//! connection ends, the server deletes the key after the grace period the
//! PUT gave, unless an ephemeral PUT of the key comes first (protocol.md,
//! section 7). A client that lost its connection and reconnects within the
//! grace period therefore re-asserts every key it holds, before anything
//! else on the new connection: the same value and grace, with the
//! condition "revision equals the revision I last wrote", so that it never
//! overwrites a write someone else made meanwhile. A key whose
//! re-assertion fails (someone wrote it, the grace period ran out, the
//! server restarted) is no longer held; nor is a key the program writes or
//! deletes plainly (a PUT without the flag, a DEL, a prefix DEL or a
//! transaction covering it), which makes it an ordinary key on the server
//! too.
//!
//! Everything here runs under the core's lock (`link.rs`): a claim is
//! recorded in the same step that hands its PUT_OK to the caller, so no
//! reconnect can fall between the two and miss it. Forgetting after a
//! plain write happens once its caller has the answer; a reconnect in
//! between is harmless, because the re-assertion's revision condition then
//! fails on the server.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::answers::Pending;
use super::link::Core;
use crate::key::covers;
use crate::protocol::{Condition, Request};

/// An ephemeral PUT the client makes: what to remember once it is applied.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    /// The key.
    pub key: String,
    /// The value written.
    pub value: Bytes,
    /// The grace period, in milliseconds.
    pub grace_ms: u32,
}

/// A key the client holds.
#[derive(Debug, Clone)]
struct Held {
    value: Bytes,
    grace_ms: u32,
    /// The revision of the client's last ephemeral PUT of the key.
    revision: u64,
}

/// The keys a client holds, by key (ordered, so a re-assertion is
/// deterministic).
#[derive(Debug, Default)]
pub(crate) struct Holdings(BTreeMap<String, Held>);

impl Core {
    /// An ephemeral PUT was applied at `revision`: the client holds the key.
    pub(super) fn claimed(&mut self, claim: Claim, revision: u64) {
        let held = Held {
            value: claim.value,
            grace_ms: claim.grace_ms,
            revision,
        };
        self.holdings.0.insert(claim.key, held);
        self.publish_holdings();
    }

    /// A re-assertion failed: someone else wrote the key, or it is gone.
    pub(super) fn claim_lost(&mut self, key: &str, why: &str) {
        if self.holdings.0.remove(key).is_some() {
            tracing::warn!(key, why, "an ephemeral key could not be taken back");
            self.publish_holdings();
        }
    }

    /// The program wrote or deleted `key` plainly: it is no longer held.
    pub(super) fn disown_key(&mut self, key: &str) {
        if self.holdings.0.remove(key).is_some() {
            self.publish_holdings();
        }
    }

    /// The program deleted `prefix` and every key under it.
    pub(super) fn disown_prefix(&mut self, prefix: &str) {
        let before = self.holdings.0.len();
        self.holdings.0.retain(|key, _| !covers(prefix, key));
        if self.holdings.0.len() != before {
            self.publish_holdings();
        }
    }

    /// The keys held now, in key order.
    pub(super) fn held_keys(&self) -> Vec<String> {
        self.holdings.0.keys().cloned().collect()
    }

    /// On a new connection: puts every held key again, conditionally (see
    /// the module docs). The answers are handled as [`Pending::Reclaim`].
    pub(super) fn reassert(&mut self) {
        let held: Vec<(String, Held)> = self
            .holdings
            .0
            .iter()
            .map(|(key, held)| (key.clone(), held.clone()))
            .collect();
        for (key, held) in held {
            let request = Request::PutEphemeral {
                key: key.clone(),
                value: held.value.clone(),
                condition: Condition::RevisionEquals(held.revision),
                grace_ms: held.grace_ms,
            };
            let id = self.alloc_id();
            match self.send(id, request) {
                Ok(()) => {
                    let claim = Claim {
                        key,
                        value: held.value,
                        grace_ms: held.grace_ms,
                    };
                    self.pending.insert(
                        id,
                        Pending::Reclaim {
                            claim,
                            reassert: true,
                        },
                    );
                }
                Err(e) => self.claim_lost(&key, &e.to_string()),
            }
        }
    }

    /// Lets the API skip the lock when nothing is held (every plain write
    /// asks).
    fn publish_holdings(&self) {
        self.shared
            .holdings
            .store(self.holdings.0.len(), Ordering::Relaxed);
    }
}
