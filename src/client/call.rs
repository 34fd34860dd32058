//! A calling thread's side of a request.
//!
//! The request is encoded into the connection's output buffer and written
//! by the calling thread itself when nobody else is writing (see `link.rs`)
//! and the I/O thread is not busy reading answers (then it writes the
//! request along with the others that came meanwhile). Then:
//!
//! - when no other call is in flight and nobody is reading, the caller
//!   takes the reader role and reads the socket itself until its answer
//!   arrives, handling every other frame on the way exactly as the I/O
//!   thread would (events to the hub's queues, other callers' answers to
//!   them), and gives the role back. A lone caller thus makes the system
//!   calls of a blocking socket of its own (a write, a read that waits)
//!   and wakes no thread; the gate (`socket.rs`) changes only when
//!   subscriptions are active (two `epoll_ctl`s, so that the I/O thread is
//!   not woken by the answer, and hears of events again afterwards);
//! - otherwise it parks until whoever reads (another caller, or the I/O
//!   thread) hands it its answer: under load, one reader serves many
//!   callers with one read.
//!
//! Either way the wait ends at the call's deadline; a request that timed
//! out is remembered so that its late answer is recognised and dropped.

use std::collections::hash_map::Entry;
use std::thread;
use std::time::{Duration, Instant};

use super::answers::{Answer, Pending, Waiter};
use super::ephemeral::Claim;
use super::error::{Error, ErrorKind};
use super::link::{Core, Link, ReadRole};
use super::socket::Filled;
use crate::protocol::Request;

/// A subscribe's own parts.
pub(crate) struct SubscribeArgs {
    /// The id the hub reserved (the request id too).
    pub id: u32,
    /// The prefix.
    pub prefix: String,
    /// Resume after this revision.
    pub since: Option<u64>,
    /// GROUP announces events that belong together.
    pub grouped: bool,
}

/// What a request is for, beyond its answer.
enum Purpose {
    /// Only the answer.
    Call,
    /// A subscription, with the id the hub reserved.
    Subscribe(SubscribeArgs),
    /// An ephemeral PUT: on success the client holds the key.
    Claim(Claim),
}

impl Link {
    /// Sends `request` and waits at most `timeout` for its answer.
    pub fn call(&self, request: Request, timeout: Duration) -> Result<Answer, Error> {
        self.request(Purpose::Call, request, timeout)
    }

    /// Sends an ephemeral PUT (`request`, which `claim` describes); on
    /// PUT_OK the client holds the key (`ephemeral.rs`).
    pub fn claim(
        &self,
        request: Request,
        claim: Claim,
        timeout: Duration,
    ) -> Result<Answer, Error> {
        self.request(Purpose::Claim(claim), request, timeout)
    }

    /// Subscribes with the id the hub reserved; returns once the server
    /// confirmed (the handler stays in the hub all along).
    pub fn subscribe(&self, args: SubscribeArgs, timeout: Duration) -> Result<(), Error> {
        let (prefix, since) = (args.prefix.clone(), args.since);
        let request = if args.grouped {
            Request::SubscribeGrouped { prefix, since }
        } else {
            Request::Subscribe { prefix, since }
        };
        self.request(Purpose::Subscribe(args), request, timeout)
            .map(|_| ())
    }

    /// The subscription ended on the client's side (unsubscribe, or a
    /// subscribe that failed): tell the server, now or as soon as its
    /// re-subscription is confirmed.
    pub fn forget(&self, id: u32) {
        self.with(|core| core.forget(id));
    }

    fn request(
        &self,
        purpose: Purpose,
        request: Request,
        timeout: Duration,
    ) -> Result<Answer, Error> {
        // `None`: so far away that it cannot be represented; never reached.
        let start = Instant::now();
        let deadline = start.checked_add(timeout);
        let (id, role) = self.with(|core| core.begin(purpose, request))?;
        match role {
            Some(role) => self.lead(id, role, start, deadline, timeout),
            None => self.follow(id, deadline, timeout),
        }
    }

    /// Reads the socket until this call's answer is in (see the module docs).
    fn lead(
        &self,
        id: u32,
        role: ReadRole,
        start: Instant,
        deadline: Option<Instant>,
        timeout: Duration,
    ) -> Result<Answer, Error> {
        let mut role = Some(role);
        // The clock is read once per wait: when it started (the first time,
        // the call's start), which also dates what arrives (for the
        // keepalive, a little early is fine).
        let mut now = start;
        loop {
            let held = role.as_mut().expect("held until the answer is in");
            let left = deadline.map(|d| d.saturating_duration_since(now));
            let filled = held.fill_waiting(left);
            let expired = matches!(filled, Filled::Empty) && {
                now = Instant::now();
                deadline.is_some_and(|d| now >= d)
            };
            let answer = self.with(|core| {
                let held = role.as_mut().expect("held");
                let gen = held.gen;
                core.received(gen, held.frames(), now);
                let mut answer = core.take_answer(id);
                if let Filled::Lost(reason) = filled {
                    core.lose_gen(gen, reason.clone());
                    // Losing the connection answered every caller; this is
                    // only a safety net against waiting on a dead socket.
                    answer = Some(
                        core.take_answer(id)
                            .unwrap_or_else(|| core.abandon(id, Error::connection(reason))),
                    );
                } else if answer.is_none() && expired {
                    answer = Some(core.abandon(id, timed_out(timeout)));
                }
                if answer.is_some() {
                    core.give_back(role.take().expect("held"));
                }
                answer
            });
            if let Some(answer) = answer {
                return answer;
            }
            now = Instant::now();
        }
    }

    /// Parks until this call's answer is handed over.
    fn follow(
        &self,
        id: u32,
        deadline: Option<Instant>,
        timeout: Duration,
    ) -> Result<Answer, Error> {
        loop {
            // The answer cannot be in yet the first time; when it comes
            // before this park, its unpark makes the park return at once.
            match remaining(deadline) {
                Some(left) => thread::park_timeout(left),
                None => thread::park(),
            }
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            let answer = self.with(|core| {
                core.take_answer(id)
                    .or_else(|| expired.then(|| core.abandon(id, timed_out(timeout))))
            });
            if let Some(answer) = answer {
                return answer;
            }
        }
    }
}

impl Core {
    /// Queues a caller's request and registers it as pending; hands it the
    /// reader role when no other call is in flight and nobody reads.
    fn begin(
        &mut self,
        purpose: Purpose,
        request: Request,
    ) -> Result<(u32, Option<ReadRole>), Error> {
        if self.closed || self.conn.is_none() {
            return Err(self.not_connected());
        }
        let id = match &purpose {
            Purpose::Subscribe(args) => args.id,
            _ => self.alloc_id(),
        };
        self.send(id, request)?;
        let role = if self.callers == 0 {
            self.take_reader(true)
        } else {
            None
        };
        self.leave_flush = role.is_none() && self.io_reads();
        let waiter = Waiter(role.is_none().then(thread::current));
        let pending = match purpose {
            Purpose::Subscribe(args) => Pending::Subscribe {
                waiter,
                prefix: args.prefix,
                since: args.since,
                grouped: args.grouped,
            },
            Purpose::Claim(claim) => Pending::Claim { waiter, claim },
            Purpose::Call => Pending::Call {
                waiter,
                items: Vec::new(),
            },
        };
        self.pending.insert(id, pending);
        self.callers += 1;
        if role.is_some() {
            self.write_now();
        }
        Ok((id, role))
    }

    /// Collects call `id`'s answer if it is in.
    fn take_answer(&mut self, id: u32) -> Option<Result<Answer, Error>> {
        match self.pending.entry(id) {
            Entry::Occupied(entry) if matches!(entry.get(), Pending::Answered(_)) => {
                self.callers -= 1;
                match entry.remove() {
                    Pending::Answered(answer) => Some(answer),
                    _ => unreachable!("checked above"),
                }
            }
            _ => None,
        }
    }

    /// The caller of `id` stops waiting: its answer if it came just now,
    /// else `error`, and a late answer will be dropped (a late SUB_OK is
    /// followed by an UNSUB).
    fn abandon(&mut self, id: u32, error: Error) -> Result<Answer, Error> {
        if let Some(answer) = self.take_answer(id) {
            return answer;
        }
        if let Some(pending) = self.pending.get_mut(&id) {
            match std::mem::replace(pending, Pending::Ignore) {
                Pending::Call { .. } => {}
                Pending::Subscribe { .. } => *pending = Pending::Forgotten,
                Pending::Claim { claim, .. } => {
                    *pending = Pending::Reclaim {
                        claim,
                        reassert: false,
                    }
                }
                other => {
                    *pending = other;
                    return Err(error);
                }
            }
            self.callers -= 1;
        }
        Err(error)
    }

    /// See [`Link::forget`].
    fn forget(&mut self, id: u32) {
        if let Some(pending) = self.pending.get_mut(&id) {
            // A caller's own SUB is never pending here: its caller has
            // collected or abandoned it before forgetting.
            if matches!(pending, Pending::Resubscribe) {
                // Ended when the server confirms it.
                *pending = Pending::Forgotten;
            }
        }
        if self.subs.remove(&id).is_some() {
            self.unsub_on_server(id);
        }
    }
}

/// What is left until `deadline` (`None`: no end).
fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

fn timed_out(timeout: Duration) -> Error {
    Error::new(ErrorKind::Timeout, format!("no answer within {timeout:?}"))
}
