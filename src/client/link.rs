//! The state of one client's connection, shared by every calling thread and
//! the I/O thread under one mutex: [`Link`] and its [`Core`].
//!
//! Nothing here waits. Threads take *roles* out of the core, do their
//! system calls without the lock, and bring the result back:
//!
//! - the **reader role** ([`ReadRole`], the connection's [`Reader`]): one
//!   thread at a time reads the socket and hands every frame to
//!   [`Core::received`], which answers whichever caller it belongs to and
//!   queues events in the hub. A caller that finds no other call in flight
//!   takes it and reads its own answer (`call.rs`); otherwise the I/O thread
//!   holds it between reads (`io.rs`).
//! - the **flush duty** ([`FlushJob`]): requests are encoded into the
//!   connection's output buffer under the lock; the thread that finds
//!   nobody writing takes the buffer and writes it, then takes whatever
//!   others appended meanwhile (so concurrent callers share one write),
//!   until the buffer is empty. Writes never block: when the socket buffer
//!   is full the rest waits for the I/O thread, woken by the gate when
//!   there is room. A thread blocked writing while nobody reads could
//!   deadlock with a server blocked writing to us.
//!
//! A role belongs to one connection (its generation): handed back after
//! that connection was lost, it is dropped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::codec::Encoder;

use super::answers::Pending;
use super::ephemeral::Holdings;
use super::error::Error;
use super::hub::{Hub, FIRST_REQUEST_ID};
use super::socket::{Filled, Gate, Interest, Reader, Sock};
use super::subscription::SubState;
use super::Shared;
use crate::addr::Address;
use crate::protocol::{ClientCodec, ClientFrame, Request, ServerFrame};

/// What wakes the I/O thread besides its socket and timers.
#[derive(Debug)]
pub(crate) enum Command {
    /// End every subscription, fail every pending request, stop.
    Close,
    /// A caller gave the connection up: schedule a reconnect.
    Lost,
}

/// A client's connection state and the roles on it (see the module docs).
pub(crate) struct Link {
    core: Mutex<Core>,
    /// The core's gate too, drained by the I/O thread without the lock.
    gate: Gate,
}

/// The state behind [`Link`]'s mutex.
pub(crate) struct Core {
    /// Where we connect, for messages.
    pub(super) addr: Address,
    /// [`super::ClientOptions::reconnect`].
    pub(super) reconnect: bool,
    /// [`super::ClientOptions::keepalive`].
    pub(super) keepalive: Duration,
    /// Limits, name and connection state, read by the public API.
    pub(super) shared: Arc<Shared>,
    /// Where subscription events go.
    pub(super) hub: Arc<Hub>,
    /// What the I/O thread waits on.
    pub(super) gate: Gate,
    /// Wakes the I/O thread.
    pub(super) wake: UnboundedSender<Command>,
    /// The connection in use; `None` while disconnected or closed.
    pub(super) conn: Option<Live>,
    /// The generation the next connection gets.
    pub(super) next_gen: u64,
    /// Requests sent on the current connection and not fully answered, and
    /// callers' answers not yet collected. (foldhash: ids are ours, nobody
    /// can choose them to collide, and SipHash showed in profiles.)
    pub(super) pending: foldhash::HashMap<u32, Pending>,
    /// Callers with an entry in `pending` (waiting, or answered and not yet
    /// awake): while there are any, a new caller does not take the reader
    /// role but lets the current reader (or the I/O thread) answer it.
    pub(super) callers: usize,
    /// Active subscriptions by id, ordered so re-subscribing is deterministic.
    pub(super) subs: BTreeMap<u32, SubState>,
    /// Ephemeral keys the client holds, re-asserted on a new connection.
    pub(super) holdings: Holdings,
    /// The next request id to try (never 0).
    next_id: u32,
    /// Encodes requests (its maximum follows the server's `max_frame`).
    pub(super) encoder: ClientCodec,
    /// When the server last sent anything (for the keepalive).
    pub(super) last_heard: Instant,
    /// A keepalive PING is unanswered.
    pub(super) pinging: bool,
    /// Why the last connection was lost, for fail-fast messages.
    pub(super) last_loss: String,
    /// The client is closed: nothing more is sent or delivered.
    pub(super) closed: bool,
    /// Callers to unpark once the lock is released (an answer is in).
    pub(super) wakeups: Vec<std::thread::Thread>,
    /// The caller that just queued a request leaves writing it to the I/O
    /// thread, which is reading and takes the core again before it stops:
    /// under load, requests then leave in one write per batch of answers,
    /// as they did when the I/O thread wrote everything.
    pub(super) leave_flush: bool,
}

/// The connection in use.
pub(crate) struct Live {
    /// Tells this connection from earlier ones.
    gen: u64,
    sock: Arc<Sock>,
    /// The read buffer; `None` while a thread holds the reader role.
    reader: Option<Reader>,
    /// The reader role is held by a caller (not the I/O thread).
    caller_reads: bool,
    /// The gate woke the I/O thread while a caller held the reader role
    /// (the peer hung up, or data came that the caller may not read): the
    /// I/O thread looks at the socket once the role is back.
    missed: bool,
    /// Encoded requests not yet written.
    out: BytesMut,
    /// A thread holds the flush duty.
    flushing: bool,
    /// The socket buffer was full: the I/O thread writes `out` when the
    /// gate says there is room.
    blocked: bool,
    /// What the gate holds for this socket now.
    interest: Interest,
}

impl Live {
    /// A connection just handshaken, the gate already watching it with
    /// `interest`.
    pub(super) fn new(gen: u64, sock: Sock, reader: Reader, interest: Interest) -> Live {
        Live {
            gen,
            sock: Arc::new(sock),
            reader: Some(reader),
            caller_reads: false,
            missed: false,
            out: BytesMut::new(),
            flushing: false,
            blocked: false,
            interest,
        }
    }

    /// Ends the connection: whoever reads it wakes up to its end.
    pub(super) fn end(self, gate: &Gate) {
        self.sock.shutdown();
        gate.detach(&self.sock);
    }
}

/// The reader role, taken out of the core (see the module docs).
pub(crate) struct ReadRole {
    /// The connection it reads.
    pub gen: u64,
    /// Its socket.
    pub sock: Arc<Sock>,
    /// Its buffered bytes.
    pub reader: Reader,
}

impl ReadRole {
    /// Reads once without waiting; complete frames go to [`Self::frames`].
    pub fn fill(&mut self) -> Filled {
        self.reader.fill(&self.sock)
    }

    /// Reads once, waiting at most `left` (`None`: no limit).
    pub fn fill_waiting(&mut self, left: Option<Duration>) -> Filled {
        self.reader.fill_waiting(&self.sock, left)
    }

    /// Frames read and not yet handled.
    pub fn frames(&mut self) -> &mut Vec<ServerFrame> {
        &mut self.reader.frames
    }
}

/// The flush duty: bytes to write on one connection.
pub(crate) struct FlushJob {
    gen: u64,
    sock: Arc<Sock>,
    bytes: BytesMut,
}

impl Link {
    /// A link with no connection yet (the I/O thread makes the first).
    pub fn new(
        addr: Address,
        options: &super::ClientOptions,
        shared: Arc<Shared>,
        hub: Arc<Hub>,
        gate: Gate,
        wake: UnboundedSender<Command>,
    ) -> Link {
        Link {
            gate: gate.clone(),
            core: Mutex::new(Core {
                addr,
                reconnect: options.reconnect,
                keepalive: options.keepalive,
                shared,
                hub,
                gate,
                wake,
                conn: None,
                next_gen: 1,
                pending: foldhash::HashMap::default(),
                callers: 0,
                subs: BTreeMap::new(),
                holdings: Holdings::default(),
                next_id: FIRST_REQUEST_ID,
                encoder: ClientCodec::new(),
                last_heard: Instant::now(),
                pinging: false,
                last_loss: String::new(),
                closed: false,
                wakeups: Vec::new(),
                leave_flush: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // Every operation leaves the core consistent, and no user code runs
        // under the lock.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the core; then tells the gate what the I/O thread must
    /// hear about now, and, without the lock, wakes the callers whose answer
    /// came and writes whatever was queued if no other thread is writing.
    /// Every use of the core goes through here, so no frame is left unsent,
    /// no answer unannounced, no change of state unknown to the gate.
    pub fn with<R>(&self, f: impl FnOnce(&mut Core) -> R) -> R {
        let mut core = self.lock();
        let result = f(&mut core);
        core.update_interest();
        let job = if std::mem::take(&mut core.leave_flush) {
            None
        } else {
            core.take_flush()
        };
        let wakeups = if core.wakeups.is_empty() {
            Vec::new()
        } else {
            std::mem::take(&mut core.wakeups)
        };
        drop(core);
        for thread in wakeups {
            thread.unpark();
        }
        if let Some(job) = job {
            self.flush(job);
        }
        result
    }

    /// Writes a job, and what others queued meanwhile, until the buffer is
    /// empty or the socket is full (then the I/O thread finishes).
    fn flush(&self, mut job: FlushJob) {
        loop {
            let (written, failure) = write_what_fits(&job.sock, &job.bytes);
            // The duty is still ours (or the connection is gone), so this
            // `with` starts no other flush.
            let next = self.with(|core| match failure {
                Some(reason) => {
                    core.lose_gen(job.gen, reason);
                    None
                }
                None => core.flushed(job, written),
            });
            match next {
                Some(next) => job = next,
                None => return,
            }
        }
    }

    /// The I/O thread's turn after its gate woke it: write what waited for
    /// room, then read everything the socket holds, unless a caller holds
    /// the reader role.
    pub fn serve_gate(&self) {
        self.gate.drain();
        let role = self.with(|core| {
            core.unblock();
            core.take_reader(false)
        });
        let mut role = role;
        while let Some(mut held) = role.take() {
            let filled = held.fill();
            role = self.with(|core| {
                let alive = core.received(held.gen, held.frames(), Instant::now());
                match filled {
                    Filled::Data if alive => Some(held),
                    Filled::Data => None,
                    Filled::Empty => {
                        core.give_back(held);
                        None
                    }
                    Filled::Lost(reason) => {
                        core.lose_gen(held.gen, reason);
                        None
                    }
                }
            });
        }
    }

    /// Tells the I/O thread to close the client (see [`Core::shutdown`]).
    pub fn close(&self) {
        let _ = self.lock().wake.send(Command::Close);
    }

    /// True while a connection is up; and when the keepalive is next due.
    pub fn status(&self) -> (bool, Option<Instant>) {
        let core = self.lock();
        let due = (core.conn.is_some() && !core.keepalive.is_zero())
            .then(|| core.last_heard + core.keepalive);
        (core.conn.is_some(), due)
    }
}

impl Core {
    /// A request id not in use by a pending request: from the upper half
    /// of the id space (subscription ids, from the hub, are below it).
    pub(super) fn alloc_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(FIRST_REQUEST_ID);
            if !self.pending.contains_key(&id) {
                return id;
            }
        }
    }

    /// Encodes a frame into the output buffer; written when the lock is
    /// released (see [`Link::with`]).
    pub(super) fn send(&mut self, id: u32, request: Request) -> Result<(), Error> {
        let Some(live) = self.conn.as_mut() else {
            return Err(self.not_connected());
        };
        self.encoder
            .encode(ClientFrame { id, request }, &mut live.out)
            .map_err(Error::from_encode)
    }

    /// The error of a call made while there is no connection to use.
    pub(super) fn not_connected(&self) -> Error {
        if self.closed {
            return Error::closed();
        }
        Error::connection(format!(
            "not connected to {}: {}",
            self.addr, self.last_loss
        ))
    }

    /// Tells the gate what the I/O thread must hear about now: data, when
    /// it holds the reader role and something may come (without
    /// subscriptions or requests in flight nothing does, and a lone caller
    /// then costs no `epoll_ctl` at all) or the gate woke it in vain while
    /// a caller read (turning "readable" on makes epoll look at the socket
    /// again, so a hang-up the caller left unread is not lost); room, when
    /// bytes wait for it.
    fn update_interest(&mut self) {
        let expecting = !self.subs.is_empty() || !self.pending.is_empty();
        let Some(live) = self.conn.as_mut() else {
            return;
        };
        let wanted = Interest {
            read: (expecting || live.missed) && !live.caller_reads,
            write: live.blocked,
        };
        if wanted != live.interest {
            self.gate.set(&live.sock, wanted);
            live.interest = wanted;
        }
    }

    /// Takes the reader role if nobody holds it; `caller` says who takes it
    /// (a caller takes "readable" out of the gate).
    pub(super) fn take_reader(&mut self, caller: bool) -> Option<ReadRole> {
        let live = self.conn.as_mut()?;
        let Some(reader) = live.reader.take() else {
            // Only a caller can hold it when the I/O thread asks.
            live.missed |= !caller;
            return None;
        };
        live.caller_reads = caller;
        if !caller {
            // It reads until the socket is empty.
            live.missed = false;
        }
        Some(ReadRole {
            gen: live.gen,
            sock: Arc::clone(&live.sock),
            reader,
        })
    }

    /// True while the I/O thread holds the reader role: it is reading, and
    /// will take the core again (and write what waits) before it stops.
    pub(super) fn io_reads(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|live| live.reader.is_none() && !live.caller_reads)
    }

    /// Gives the reader role back: the I/O thread watches the socket again
    /// (and wakes at once if data came meanwhile).
    pub(super) fn give_back(&mut self, role: ReadRole) {
        let Some(live) = self.conn.as_mut().filter(|l| l.gen == role.gen) else {
            return;
        };
        live.reader = Some(role.reader);
        live.caller_reads = false;
    }

    /// The flush duty, when bytes wait and nobody writes.
    fn take_flush(&mut self) -> Option<FlushJob> {
        let live = self.conn.as_mut()?;
        if live.out.is_empty() || live.flushing || live.blocked {
            return None;
        }
        live.flushing = true;
        Some(FlushJob {
            gen: live.gen,
            sock: Arc::clone(&live.sock),
            bytes: std::mem::take(&mut live.out),
        })
    }

    /// A flush wrote `written` bytes of its job: the next job if more was
    /// queued, `None` when done (or when the rest waits for room).
    fn flushed(&mut self, mut job: FlushJob, written: usize) -> Option<FlushJob> {
        let live = self.conn.as_mut().filter(|l| l.gen == job.gen)?;
        if written < job.bytes.len() {
            // The socket is full: the rest goes first when there is room.
            let mut rest = job.bytes.split_off(written);
            rest.extend_from_slice(&live.out);
            live.out = rest;
            live.flushing = false;
            live.blocked = true;
            return None;
        }
        job.bytes.clear();
        if live.out.is_empty() {
            // Keep the buffer (and its capacity) for the next request.
            live.out = job.bytes;
            live.flushing = false;
            return None;
        }
        std::mem::swap(&mut live.out, &mut job.bytes);
        Some(job)
    }

    /// Writes what is queued at once, under the lock: for a caller with no
    /// other call in flight, nobody waits for the lock meanwhile, and the
    /// flush duty's second pass through the lock is saved.
    pub(super) fn write_now(&mut self) {
        let Some(live) = self.conn.as_mut() else {
            return;
        };
        if live.out.is_empty() || live.flushing || live.blocked {
            return;
        }
        let (written, failure) = write_what_fits(&live.sock, &live.out);
        if let Some(reason) = failure {
            self.lose(reason);
        } else if written == live.out.len() {
            live.out.clear();
        } else {
            // The socket is full: the I/O thread writes the rest.
            live.out.advance(written);
            live.blocked = true;
        }
    }

    /// The gate said the socket has room: bytes that waited may be written.
    fn unblock(&mut self) {
        if let Some(live) = self.conn.as_mut() {
            live.blocked = false;
        }
    }

    /// Handles frames read from connection `gen` (clearing `frames`) at
    /// about `now`; false when that connection is no longer in use (lost,
    /// or the client closed).
    pub(super) fn received(
        &mut self,
        gen: u64,
        frames: &mut Vec<ServerFrame>,
        now: Instant,
    ) -> bool {
        if self.closed || self.conn.as_ref().is_none_or(|l| l.gen != gen) {
            frames.clear();
            return false;
        }
        if !frames.is_empty() {
            self.last_heard = now;
        }
        for frame in frames.drain(..) {
            if let Err(reason) = self.frame(frame) {
                self.lose(reason);
                return false;
            }
        }
        true
    }

    /// Gives connection `gen` up, if it is still the one in use.
    pub(super) fn lose_gen(&mut self, gen: u64, reason: String) {
        if self.conn.as_ref().is_some_and(|l| l.gen == gen) {
            self.lose(reason);
        }
    }

    /// Ends subscription `id` on the handler's side: `Closed`, then the
    /// runner drops the handler.
    pub(super) fn end_subscription(&mut self, id: u32, reason: String) {
        self.subs.remove(&id);
        self.hub.end(id, reason);
    }

    /// Tells the server to end `id`, without waiting: locally it has ended.
    pub(super) fn unsub_on_server(&mut self, subscription: u32) {
        if self.conn.is_none() {
            return;
        }
        let request_id = self.alloc_id();
        if self
            .send(request_id, Request::Unsubscribe { subscription })
            .is_ok()
        {
            self.pending.insert(request_id, Pending::Ignore);
        }
    }
}

/// Writes as much of `bytes` as the socket takes now: how much it took,
/// and why the connection is over if it is.
fn write_what_fits(sock: &Sock, bytes: &[u8]) -> (usize, Option<String>) {
    let mut written = 0;
    while written < bytes.len() {
        match sock.write(&bytes[written..]) {
            Ok(0) => {
                let reason = "write failed: the socket accepts no more".to_owned();
                return (written, Some(reason));
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Some(format!("write failed: {e}"))),
        }
    }
    (written, None)
}
