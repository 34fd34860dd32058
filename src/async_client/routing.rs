//! What waits for the server's frames, and where each frame goes: callers'
//! requests (answered through oneshot channels), subscriptions (events go
//! to their queue, with the blocking client's resume bookkeeping,
//! [`SubState`]), and the background task's own requests.
//!
//! The router also keeps the ephemeral keys the client holds, by the
//! blocking client's rules ([`Holdings`], `client/ephemeral.rs`): an
//! ephemeral PUT's PUT_OK records the claim before its caller is answered,
//! a plain write's answer forgets the keys it covers, and on a new
//! connection the held keys are re-asserted before any subscription is
//! resumed.
//!
//! Only the background task touches a [`Router`], so it needs no lock; it
//! never waits, and never runs user code (a reader is only woken).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::{oneshot, watch};

use super::conn::Conn;
use super::subscription::Sink;
use crate::client::ephemeral::{Claim, Cover, Holdings};
use crate::client::subscription::{Closing, SubState};
use crate::client::{Answer, Error, ErrorKind, ListEntry, SubscriptionEvent};
use crate::protocol::{Event, Request, Response, ServerFrame};

/// Where a caller's answer goes.
pub(super) type Reply = oneshot::Sender<Result<Answer, Error>>;

/// Where a caller's new subscription id goes.
pub(super) type SubReply = oneshot::Sender<Result<u32, Error>>;

/// A request that waits for its response.
#[derive(Debug)]
enum Pending {
    /// A caller's request; LIST items accumulate in `items`. A plain
    /// write's `covers` are no longer held once it is applied.
    Call {
        reply: Reply,
        items: Vec<ListEntry>,
        covers: Vec<Cover>,
    },
    /// A caller's ephemeral PUT: on PUT_OK the client holds the key (even
    /// if the caller gave up waiting).
    Claim { reply: Reply, claim: Claim },
    /// A held key put again after a reconnect.
    Reassert { claim: Claim },
    /// A caller's SUB (its id becomes the subscription id).
    Subscribe {
        state: SubState,
        sink: Arc<Sink>,
        reply: SubReply,
    },
    /// A SUB re-sent after a reconnect.
    Resubscribe,
    /// A keepalive PING.
    Keepalive,
    /// A request nobody waits for (UNSUB).
    Ignore,
}

/// A live subscription.
#[derive(Debug)]
struct Sub {
    /// Prefix and resume point.
    state: SubState,
    /// Its reader's queue.
    sink: Arc<Sink>,
}

/// Requests in flight and live subscriptions (see the module docs).
#[derive(Debug)]
pub(super) struct Router {
    /// Requests sent on the current connection and not fully answered.
    pending: HashMap<u32, Pending>,
    /// Live subscriptions by id (ordered: re-subscribing is deterministic).
    subs: BTreeMap<u32, Sub>,
    /// The next request id to try (never 0).
    next_id: u32,
    /// [`ClientOptions::reconnect`](crate::client::ClientOptions::reconnect):
    /// a lost connection ends every subscription without it.
    reconnect: bool,
    /// The ephemeral keys the client holds.
    holdings: Holdings,
    /// Their keys, for [`AsyncClient::ephemeral_keys`](super::AsyncClient::ephemeral_keys).
    held: watch::Sender<Vec<String>>,
}

impl Router {
    /// Nothing in flight yet, nothing held; the keys held are published
    /// on `held`.
    pub fn new(reconnect: bool, held: watch::Sender<Vec<String>>) -> Router {
        Router {
            pending: HashMap::new(),
            subs: BTreeMap::new(),
            next_id: 1,
            reconnect,
            holdings: Holdings::default(),
            held,
        }
    }

    /// An id used by no pending request and no live subscription: a
    /// subscription keeps its SUB's id for life (re-SUBs reuse it).
    fn alloc_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.pending.contains_key(&id) && !self.subs.contains_key(&id) {
                return id;
            }
        }
    }

    /// Sends a caller's request.
    pub fn call(&mut self, conn: &mut Conn, request: Request, reply: Reply) {
        let id = self.alloc_id();
        let pending = match Claim::of(&request) {
            Some(claim) => Pending::Claim { reply, claim },
            None => Pending::Call {
                reply,
                items: Vec::new(),
                covers: Cover::of(&request),
            },
        };
        conn.send(id, request);
        self.pending.insert(id, pending);
    }

    /// Sends a caller's SUB.
    pub fn subscribe(
        &mut self,
        conn: &mut Conn,
        state: SubState,
        sink: Arc<Sink>,
        reply: SubReply,
    ) {
        let id = self.alloc_id();
        // The first SUB asks from where the caller said, like a resume.
        conn.send(id, state.resubscribe());
        let pending = Pending::Subscribe { state, sink, reply };
        self.pending.insert(id, pending);
    }

    /// The reader of subscription `id` is gone: forget it, and tell the
    /// server if connected.
    pub fn unsubscribe(&mut self, conn: Option<&mut Conn>, id: u32) {
        if self.subs.remove(&id).is_none() {
            return;
        }
        if let Some(conn) = conn {
            self.unsub_on_server(conn, id);
        }
    }

    fn unsub_on_server(&mut self, conn: &mut Conn, subscription: u32) {
        let id = self.alloc_id();
        conn.send(id, Request::Unsubscribe { subscription });
        self.pending.insert(id, Pending::Ignore);
    }

    /// Sends a keepalive PING.
    pub fn ping(&mut self, conn: &mut Conn) {
        let id = self.alloc_id();
        conn.send(id, Request::Ping);
        self.pending.insert(id, Pending::Keepalive);
        conn.pinging = true;
    }

    /// Handles one frame; `Err(reason)` means the connection must be dropped.
    pub fn frame(&mut self, conn: &mut Conn, frame: ServerFrame) -> Result<(), String> {
        match frame {
            ServerFrame::Response {
                id: 0,
                response: Response::Error(e),
            } => Err(format!(
                "the server ended the connection: {}",
                Error::from_wire(e)
            )),
            ServerFrame::Response { id, response } => self.response(conn, id, response),
            ServerFrame::Event {
                subscription,
                event,
            } => {
                self.event(conn, subscription, event);
                Ok(())
            }
        }
    }

    fn response(&mut self, conn: &mut Conn, id: u32, response: Response) -> Result<(), String> {
        let Some(pending) = self.pending.get_mut(&id) else {
            return Err(format!("the server answered unknown request {id}"));
        };
        if let Pending::Call { items, .. } = pending {
            if let Response::ListItem {
                revision,
                key,
                value,
            } = response
            {
                // A listing comes as items, then LIST_OK.
                items.push(ListEntry {
                    key,
                    value,
                    revision,
                });
                return Ok(());
            }
        }
        match self.pending.remove(&id).expect("found above") {
            Pending::Call {
                reply,
                items,
                covers,
            } => {
                if self.holdings.written(&covers, &response) {
                    self.publish_holdings();
                }
                let answer = match response {
                    Response::ListOk { .. } => Ok(Answer::List(items)),
                    Response::Error(e) => Err(Error::from_wire(e)),
                    other => Ok(Answer::Response(other)),
                };
                // The caller may have given up (timeout, cancelled).
                let _ = reply.send(answer);
            }
            Pending::Claim { reply, claim } => {
                let answer = match response {
                    Response::PutOk { revision } => {
                        // Before the caller hears of it: a reconnect after
                        // this re-asserts the key.
                        self.holdings.claim(claim, revision);
                        self.publish_holdings();
                        Ok(Answer::Response(response))
                    }
                    Response::Error(e) => Err(Error::from_wire(e)),
                    // The caller reports it.
                    other => Ok(Answer::Response(other)),
                };
                let _ = reply.send(answer);
            }
            Pending::Reassert { claim } => {
                if self.holdings.reasserted(claim, response) {
                    self.publish_holdings();
                }
            }
            Pending::Subscribe { state, sink, reply } => match response {
                Response::SubOk => {
                    // Events may follow at once: the subscription is live
                    // before its caller hears of it.
                    self.subs.insert(id, Sub { state, sink });
                    if reply.send(Ok(id)).is_err() {
                        // The caller gave up: nobody would read it.
                        self.unsubscribe(Some(conn), id);
                    }
                }
                Response::Error(e) => {
                    let _ = reply.send(Err(Error::from_wire(e)));
                }
                other => {
                    let e = protocol_error(&other, "SUB");
                    let _ = reply.send(Err(e.clone()));
                    return Err(e.message);
                }
            },
            Pending::Resubscribe => match response {
                Response::SubOk => {}
                Response::Error(e) => {
                    let reason = format!("could not resume: {}", Error::from_wire(e));
                    self.end(id, reason);
                }
                other => return Err(protocol_error(&other, "SUB").message),
            },
            Pending::Keepalive => conn.pinging = false,
            Pending::Ignore => {}
        }
        Ok(())
    }

    fn event(&mut self, conn: &mut Conn, id: u32, event: Event) {
        let Some(sub) = self.subs.get_mut(&id) else {
            // Unsubscribed here; the server has not seen the UNSUB yet.
            return;
        };
        if sub.sink.orphaned() {
            // Its reader is gone and its UNSUB did not come (a cancelled
            // `subscribe`): end it now rather than queue for nobody.
            self.unsubscribe(Some(conn), id);
            return;
        }
        match Closing::of(&event, self.reconnect) {
            Closing::No => {}
            Closing::Resume => return,
            Closing::End(reason) => return self.end(id, reason),
        }
        sub.state.observe(&event);
        sub.sink.push(SubscriptionEvent::from_wire(event));
    }

    /// The codec refused request `id`: its caller gets the error.
    pub fn refused(&mut self, id: u32, error: Error) {
        match self.pending.remove(&id) {
            Some(Pending::Call { reply, .. } | Pending::Claim { reply, .. }) => {
                let _ = reply.send(Err(error));
            }
            Some(Pending::Reassert { claim }) => {
                if self.holdings.lose(&claim.key, &error.to_string()) {
                    self.publish_holdings();
                }
            }
            Some(Pending::Subscribe { reply, .. }) => {
                let _ = reply.send(Err(error));
            }
            Some(Pending::Resubscribe) => self.end(id, format!("could not resume: {error}")),
            Some(Pending::Keepalive | Pending::Ignore) | None => {}
        }
    }

    /// Ends subscription `id` on the reader's side: `Closed`, then the end.
    fn end(&mut self, id: u32, reason: String) {
        if let Some(sub) = self.subs.remove(&id) {
            sub.sink.end(reason);
        }
    }

    /// The connection is gone: every caller waiting on it gets `error`,
    /// every subscription `Disconnected` (and, without reconnect, its end).
    pub fn lost(&mut self, error: &Error) {
        self.fail_pending(error);
        for sub in self.subs.values_mut() {
            sub.state.disconnected();
            sub.sink.push(SubscriptionEvent::Disconnected);
        }
        if !self.reconnect {
            let ids: Vec<u32> = self.subs.keys().copied().collect();
            for id in ids {
                self.end(id, format!("connection lost: {}", error.message));
            }
        }
    }

    /// A new connection is up: take back the ephemeral keys held (first:
    /// their grace period is running), then resume every subscription from
    /// its last complete revision (a full snapshot after a `Reset` when
    /// none is).
    pub fn resume(&mut self, conn: &mut Conn) {
        for (request, claim) in self.holdings.reassertions() {
            let id = self.alloc_id();
            conn.send(id, request);
            self.pending.insert(id, Pending::Reassert { claim });
        }
        // A reader that went away while we were disconnected.
        self.subs.retain(|_, sub| !sub.sink.orphaned());
        for (&id, sub) in &self.subs {
            if sub.state.needs_reset() {
                // The reader may hold part of a snapshot that a fresh one
                // will not delete.
                sub.sink.push(SubscriptionEvent::Reset);
            }
            conn.send(id, sub.state.resubscribe());
            self.pending.insert(id, Pending::Resubscribe);
        }
    }

    /// The client is closing: callers get `Closed`, every subscription its
    /// final `Closed`; it holds no key any more.
    pub fn close(&mut self) {
        self.fail_pending(&Error::new(ErrorKind::Closed, "the client was closed"));
        for (_, sub) in std::mem::take(&mut self.subs) {
            sub.sink.end("the client was closed".to_owned());
        }
        self.holdings = Holdings::default();
        self.publish_holdings();
    }

    /// Publishes the keys held now.
    fn publish_holdings(&self) {
        self.held.send_replace(self.holdings.keys());
    }

    fn fail_pending(&mut self, error: &Error) {
        for (_, pending) in self.pending.drain() {
            match pending {
                Pending::Call { reply, .. } | Pending::Claim { reply, .. } => {
                    let _ = reply.send(Err(error.clone()));
                }
                Pending::Subscribe { reply, .. } => {
                    let _ = reply.send(Err(error.clone()));
                }
                // Resubscribes are still in `subs`, and held keys in the
                // holdings: re-sent on the next connection.
                Pending::Resubscribe
                | Pending::Reassert { .. }
                | Pending::Keepalive
                | Pending::Ignore => {}
            }
        }
    }
}

fn protocol_error(response: &Response, request: &str) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!(
            "unexpected response type 0x{:02X} to {request}",
            response.frame_type()
        ),
    )
}
