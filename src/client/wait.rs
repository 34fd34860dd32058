//! Waiting for a key to reach a state (a start-up gate: "go on once
//! `svc.netd.alive` exists"), built on a subscription to the key: its
//! snapshot tells the state now, its events every change after.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Client, Error, ErrorKind, SubscriptionEvent};

/// The state [`Client::wait`] waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    /// The key exists, whatever its value.
    Present,
    /// The key holds exactly this value.
    Value(Bytes),
    /// The key does not exist.
    Absent,
}

impl WaitFor {
    fn holds(&self, current: Option<&Bytes>) -> bool {
        match self {
            WaitFor::Present => current.is_some(),
            WaitFor::Value(want) => current == Some(want),
            WaitFor::Absent => current.is_none(),
        }
    }
}

/// What the subscription's handler passes on.
enum Seen {
    /// The key's value now (`None`: deleted).
    State(Option<Bytes>),
    /// The snapshot is complete.
    Synced,
    /// Start over: a new snapshot follows.
    Reset,
    /// The subscription ended.
    Closed(String),
}

impl Client {
    /// Returns `Ok(true)` as soon as `key` is in the state `until` asks for
    /// (at once if it is already), `Ok(false)` when `timeout` passes first
    /// (`None`: no limit). Across a lost connection it goes on waiting (the
    /// subscription resumes). Needs the dispatcher thread: in
    /// [`DispatchMode::Manual`](super::DispatchMode::Manual), or from inside
    /// a subscription handler, it fails with `InvalidArgument` instead of
    /// waiting for events that could never be delivered.
    pub fn wait(
        &self,
        key: &str,
        until: &WaitFor,
        timeout: Option<Duration>,
    ) -> Result<bool, Error> {
        let inner = self.inner()?;
        if inner.manual || inner.dispatcher_id == Some(std::thread::current().id()) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "wait needs the dispatcher thread: not in manual dispatch mode, \
                 not from inside a subscription handler",
            ));
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let (tx, rx) = mpsc::channel();
        let watched = key.to_owned();
        let handler = Box::new(move |_: u32, event: &SubscriptionEvent| {
            let seen = match event {
                // The subscription covers the key's subtree too.
                SubscriptionEvent::Update { key, value, .. } if *key == watched => {
                    Seen::State(Some(value.clone()))
                }
                SubscriptionEvent::Delete { key, .. } if *key == watched => Seen::State(None),
                SubscriptionEvent::Synced { .. } => Seen::Synced,
                SubscriptionEvent::Reset => Seen::Reset,
                SubscriptionEvent::Closed { reason } => Seen::Closed(reason.clone()),
                _ => return,
            };
            let _ = tx.send(seen);
        });
        let id = self.subscribe(key, None, handler)?;
        let mut current: Option<Bytes> = None;
        let mut synced = false;
        let outcome = loop {
            let next = match deadline {
                Some(deadline) => {
                    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                }
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match next {
                Ok(Seen::State(state)) => current = state,
                Ok(Seen::Synced) => synced = true,
                Ok(Seen::Reset) => {
                    current = None;
                    synced = false;
                }
                Ok(Seen::Closed(reason)) => {
                    break Err(Error::new(ErrorKind::Closed, reason));
                }
                Err(RecvTimeoutError::Timeout) => break Ok(false),
                Err(RecvTimeoutError::Disconnected) => break Err(Error::closed()),
            }
            if synced && until.holds(current.as_ref()) {
                break Ok(true);
            }
        };
        // The subscription may be gone already (closed): nothing to undo.
        let _ = self.unsubscribe(id);
        outcome
    }
}
