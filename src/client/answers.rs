//! Matching the server's frames to what waits for them: callers' requests
//! and subscriptions, re-subscriptions and the I/O thread's own requests,
//! and subscription events, which go to the hub's queues.
//!
//! Whichever thread holds the reader role runs this, under the core's lock
//! (`link.rs`), so the order of frames is the order of effects whoever
//! reads. It never runs user code: handlers run on the hub's runner.

use std::thread::Thread;

use super::ephemeral::Claim;
use super::error::Error;
use super::link::Core;
use super::subscription::{Closing, SubState, SubscriptionEvent};
use super::ListEntry;
use crate::protocol::{Event, Response, ServerFrame};

/// A successful answer to a caller's request.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The one response frame (never ERROR, never LIST_ITEM).
    Response(Response),
    /// The LIST_ITEM frames of a listing, collected until its LIST_OK.
    List(Vec<ListEntry>),
}

/// A caller waiting for its answer: the thread to unpark when it is in,
/// `None` for the caller holding the reader role (it finds its answer
/// itself).
#[derive(Debug)]
pub(crate) struct Waiter(pub Option<Thread>);

impl Waiter {
    /// Has the caller woken once the core's lock is released.
    fn wake(self, wakeups: &mut Vec<Thread>) {
        if let Some(thread) = self.0 {
            wakeups.push(thread);
        }
    }
}

/// A request that waits for its response.
#[derive(Debug)]
pub(crate) enum Pending {
    /// A caller's request; LIST items accumulate in `items`.
    Call {
        waiter: Waiter,
        items: Vec<ListEntry>,
    },
    /// A caller's SUB (its id is the subscription id).
    Subscribe {
        waiter: Waiter,
        prefix: String,
        since: Option<u64>,
        grouped: bool,
    },
    /// A caller's ephemeral PUT: on PUT_OK the client holds the key.
    Claim { waiter: Waiter, claim: Claim },
    /// An ephemeral PUT nobody waits for: a re-assertion after a reconnect
    /// (`reassert`; on failure the key is no longer held), or a caller's
    /// that timed out (a late PUT_OK still means the key is held).
    Reclaim { claim: Claim, reassert: bool },
    /// A caller's answer, until the caller collects it.
    Answered(Result<Answer, Error>),
    /// A SUB re-sent after a reconnect.
    Resubscribe,
    /// A SUB whose caller gave up: end it when confirmed.
    Forgotten,
    /// A keepalive PING.
    Keepalive,
    /// A request nobody waits for (UNSUB, or a call that timed out).
    Ignore,
}

impl Core {
    /// Handles one frame; `Err(reason)` means the connection must be dropped.
    pub(super) fn frame(&mut self, frame: ServerFrame) -> Result<(), String> {
        match frame {
            ServerFrame::Response {
                id: 0,
                response: Response::Error(e),
            } => Err(format!(
                "the server ended the connection: {}",
                Error::from_wire(e)
            )),
            ServerFrame::Response { id, response } => self.response(id, response),
            ServerFrame::Event {
                subscription,
                event,
            } => {
                self.event(subscription, event);
                Ok(())
            }
        }
    }

    /// Stores a caller's answer and wakes it.
    fn complete(&mut self, id: u32, waiter: Waiter, answer: Result<Answer, Error>) {
        self.pending.insert(id, Pending::Answered(answer));
        waiter.wake(&mut self.wakeups);
    }

    fn response(&mut self, id: u32, response: Response) -> Result<(), String> {
        let Some(slot) = self.pending.get_mut(&id) else {
            return Err(format!("the server answered unknown request {id}"));
        };
        if let Pending::Call { waiter, items } = slot {
            // The common case, answered in place: the answer waits in the
            // slot for its caller.
            let answer = match response {
                Response::ListItem {
                    revision,
                    key,
                    value,
                } => {
                    items.push(ListEntry {
                        key,
                        value,
                        revision,
                    });
                    return Ok(());
                }
                Response::ListOk { .. } => Ok(Answer::List(std::mem::take(items))),
                Response::Error(e) => Err(Error::from_wire(e)),
                other => Ok(Answer::Response(other)),
            };
            let waiter = std::mem::replace(waiter, Waiter(None));
            *slot = Pending::Answered(answer);
            waiter.wake(&mut self.wakeups);
            return Ok(());
        }
        let pending = self.pending.remove(&id).expect("found above");
        match pending {
            Pending::Call { .. } => unreachable!("handled above"),
            Pending::Subscribe {
                waiter,
                prefix,
                since,
                grouped,
            } => match response {
                Response::SubOk => {
                    self.subs
                        .insert(id, SubState::new(prefix, since).grouped(grouped));
                    if !self.hub.is_live(id) {
                        // Nobody will activate it: end it rather than leak it.
                        self.subs.remove(&id);
                        self.unsub_on_server(id);
                    }
                    self.complete(id, waiter, Ok(Answer::Response(Response::SubOk)));
                }
                Response::Error(e) => self.complete(id, waiter, Err(Error::from_wire(e))),
                other => {
                    let e = protocol_error(&other, "SUB");
                    self.complete(id, waiter, Err(e.clone()));
                    return Err(e.message);
                }
            },
            answered @ Pending::Answered(_) => {
                // Keep the first answer for its caller.
                self.pending.insert(id, answered);
                return Err(format!("the server answered request {id} twice"));
            }
            Pending::Claim { waiter, claim } => {
                let answer = match response {
                    Response::PutOk { revision } => {
                        self.claimed(claim, revision);
                        Ok(Answer::Response(Response::PutOk { revision }))
                    }
                    Response::Error(e) => Err(Error::from_wire(e)),
                    // The caller reports it.
                    other => Ok(Answer::Response(other)),
                };
                self.complete(id, waiter, answer);
            }
            Pending::Reclaim { claim, reassert } => match response {
                response if reassert => self.reasserted(claim, response),
                Response::PutOk { revision } => self.claimed(claim, revision),
                _ => {}
            },
            Pending::Resubscribe => match response {
                Response::SubOk => {}
                Response::Error(e) => {
                    let reason = format!("could not resume: {}", Error::from_wire(e));
                    self.end_subscription(id, reason);
                }
                other => return Err(protocol_error(&other, "SUB").message),
            },
            Pending::Forgotten => {
                if let Response::SubOk = response {
                    self.unsub_on_server(id);
                }
            }
            Pending::Keepalive => self.pinging = false,
            Pending::Ignore => {}
        }
        Ok(())
    }

    fn event(&mut self, id: u32, event: Event) {
        let Some(sub) = self.subs.get_mut(&id) else {
            // Unsubscribed locally; the server has not seen the UNSUB yet.
            return;
        };
        match Closing::of(&event, self.reconnect) {
            Closing::No => {}
            Closing::Resume => return,
            Closing::End(reason) => return self.end_subscription(id, reason),
        }
        sub.observe(&event);
        self.hub.push(id, SubscriptionEvent::from_wire(event));
    }

    /// Answers every waiting caller with `error` and forgets the requests
    /// nobody waits for (the connection they were sent on is gone).
    pub(super) fn fail_pending(&mut self, error: &Error) {
        let wakeups = &mut self.wakeups;
        self.pending.retain(
            |_, pending| match std::mem::replace(pending, Pending::Ignore) {
                Pending::Call { waiter, .. }
                | Pending::Subscribe { waiter, .. }
                | Pending::Claim { waiter, .. } => {
                    *pending = Pending::Answered(Err(error.clone()));
                    waiter.wake(wakeups);
                    true
                }
                answered @ Pending::Answered(_) => {
                    *pending = answered;
                    true
                }
                // Resubscribes are still in `subs`, and held keys in the
                // holdings: re-sent on the next connection.
                Pending::Resubscribe
                | Pending::Reclaim { .. }
                | Pending::Forgotten
                | Pending::Keepalive
                | Pending::Ignore => false,
            },
        );
    }
}

fn protocol_error(response: &Response, request: &str) -> Error {
    Error::new(
        super::ErrorKind::Protocol,
        format!(
            "unexpected response type 0x{:02X} to {request}",
            response.frame_type()
        ),
    )
}
