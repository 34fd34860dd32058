//! The ephemeral keys a client holds, and how it takes them back after a
//! reconnect: the rules, shared by the blocking client (which keeps its
//! [`Holdings`] in the core, under the core's lock) and the async client
//! (which keeps them in its background task's router).
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
//! A claim is recorded in the same step that hands its PUT_OK to the
//! caller, so no reconnect can fall between the two and miss it: under the
//! core's lock in the blocking client (`link.rs`), in the background task
//! before the caller's answer is sent in the async one
//! (`async_client/routing.rs`). Forgetting after a plain write may come a
//! little later (the blocking client does it once its caller has the
//! answer); a reconnect in between is harmless, because the re-assertion's
//! revision condition then fails on the server.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::answers::Pending;
use super::link::Core;
use super::Error;
use crate::key::covers;
use crate::protocol::{Condition, Request, Response, Txn, TxnOp};

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

impl Claim {
    /// The claim `request` makes if it is an ephemeral PUT.
    pub(crate) fn of(request: &Request) -> Option<Claim> {
        match request {
            Request::PutEphemeral {
                key,
                value,
                grace_ms,
                ..
            } => Some(Claim {
                key: key.clone(),
                value: value.clone(),
                grace_ms: *grace_ms,
            }),
            _ => None,
        }
    }
}

/// What a plain write covers: once it is applied, the keys it covers are
/// ordinary keys (or gone), no longer held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cover {
    /// One key (PUT without the flag, DEL).
    Key(String),
    /// A key and every key under it (prefix DEL).
    Prefix(String),
}

impl Cover {
    /// What `request` covers: nothing unless it is a plain write.
    pub(crate) fn of(request: &Request) -> Vec<Cover> {
        match request {
            Request::Put { key, .. } | Request::Delete { key, .. } => vec![Cover::Key(key.clone())],
            Request::DeletePrefix { prefix } => vec![Cover::Prefix(prefix.clone())],
            Request::Txn(txn) => Cover::of_txn(txn),
            _ => Vec::new(),
        }
    }

    /// What a transaction's operations cover (if it is applied).
    pub(crate) fn of_txn(txn: &Txn) -> Vec<Cover> {
        txn.ops
            .iter()
            .map(|op| match op {
                TxnOp::Put { key, .. } | TxnOp::Delete { key } => Cover::Key(key.clone()),
                TxnOp::DeletePrefix { prefix } => Cover::Prefix(prefix.clone()),
            })
            .collect()
    }

    fn covers(&self, key: &str) -> bool {
        match self {
            Cover::Key(k) => k == key,
            Cover::Prefix(prefix) => covers(prefix, key),
        }
    }
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
/// deterministic), and the rules that change them. No I/O and no lock:
/// the owner sends what [`Holdings::reassertions`] gives and feeds the
/// answers back.
#[derive(Debug, Default)]
pub(crate) struct Holdings(BTreeMap<String, Held>);

impl Holdings {
    /// An ephemeral PUT was applied at `revision`: the client holds the key.
    pub(crate) fn claim(&mut self, claim: Claim, revision: u64) {
        let held = Held {
            value: claim.value,
            grace_ms: claim.grace_ms,
            revision,
        };
        self.0.insert(claim.key, held);
    }

    /// The key could not be taken back (`why`): it is no longer held.
    /// True if it was.
    pub(crate) fn lose(&mut self, key: &str, why: &str) -> bool {
        let was = self.0.remove(key).is_some();
        if was {
            tracing::warn!(key, why, "an ephemeral key could not be taken back");
        }
        was
    }

    /// A plain write covering `covered` was applied: those keys are no
    /// longer held. True if one was.
    pub(crate) fn forget(&mut self, covered: &[Cover]) -> bool {
        let before = self.0.len();
        self.0
            .retain(|key, _| !covered.iter().any(|cover| cover.covers(key)));
        self.0.len() != before
    }

    /// A plain write covering `covered` was answered with `response`:
    /// if it was applied, those keys are no longer held. True if one was.
    pub(crate) fn written(&mut self, covered: &[Cover], response: &Response) -> bool {
        match response {
            Response::PutOk { .. } | Response::DelOk { .. } | Response::TxnOk { .. } => {
                self.forget(covered)
            }
            _ => false,
        }
    }

    /// The re-assertions to send first on a new connection, each with the
    /// claim to hand to [`Holdings::reasserted`] with its answer.
    pub(crate) fn reassertions(&self) -> Vec<(Request, Claim)> {
        self.0
            .iter()
            .map(|(key, held)| {
                let request = Request::PutEphemeral {
                    key: key.clone(),
                    value: held.value.clone(),
                    condition: Condition::RevisionEquals(held.revision),
                    grace_ms: held.grace_ms,
                };
                let claim = Claim {
                    key: key.clone(),
                    value: held.value.clone(),
                    grace_ms: held.grace_ms,
                };
                (request, claim)
            })
            .collect()
    }

    /// A re-assertion was answered: PUT_OK takes the key back (at its new
    /// revision), an error means it is lost. True if the set of keys held
    /// changed.
    pub(crate) fn reasserted(&mut self, claim: Claim, response: Response) -> bool {
        match response {
            Response::PutOk { revision } => {
                let new = !self.0.contains_key(&claim.key);
                self.claim(claim, revision);
                new
            }
            Response::Error(e) => self.lose(&claim.key, &Error::from_wire(e).to_string()),
            // Not an answer to a PUT: the owner treats it as a protocol
            // error; the next re-assertion decides.
            _ => false,
        }
    }

    /// The keys held now, in key order.
    pub(crate) fn keys(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    /// How many keys are held.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

// The blocking client: the holdings live in the core, under its lock.
impl Core {
    /// An ephemeral PUT was applied at `revision`: the client holds the key.
    pub(super) fn claimed(&mut self, claim: Claim, revision: u64) {
        self.holdings.claim(claim, revision);
        self.publish_holdings();
    }

    /// A re-assertion was answered (see [`Holdings::reasserted`]).
    pub(super) fn reasserted(&mut self, claim: Claim, response: Response) {
        if self.holdings.reasserted(claim, response) {
            self.publish_holdings();
        }
    }

    /// The program wrote or deleted what `covered` names plainly: those
    /// keys are no longer held.
    pub(super) fn disown(&mut self, covered: &[Cover]) {
        if self.holdings.forget(covered) {
            self.publish_holdings();
        }
    }

    /// The keys held now, in key order.
    pub(super) fn held_keys(&self) -> Vec<String> {
        self.holdings.keys()
    }

    /// On a new connection: puts every held key again, conditionally (see
    /// the module docs). The answers are handled as [`Pending::Reclaim`].
    pub(super) fn reassert(&mut self) {
        for (request, claim) in self.holdings.reassertions() {
            let id = self.alloc_id();
            match self.send(id, request) {
                Ok(()) => {
                    let reclaim = Pending::Reclaim {
                        claim,
                        reassert: true,
                    };
                    self.pending.insert(id, reclaim);
                }
                Err(e) => {
                    if self.holdings.lose(&claim.key, &e.to_string()) {
                        self.publish_holdings();
                    }
                }
            }
        }
    }

    /// Lets the API skip the lock when nothing is held (every plain write
    /// asks).
    fn publish_holdings(&self) {
        self.shared
            .holdings
            .store(self.holdings.len(), Ordering::Relaxed);
    }
}
