//! One connection's socket, its read buffer, and the *gate* through which
//! the I/O thread watches it.
//!
//! The socket is a plain blocking socket shared by the callers and the I/O
//! thread (tokio never owns it once the handshake is done): whoever holds
//! the reader role ([`Reader`]) reads it, and may wait in `recv` exactly as
//! a program with a blocking socket of its own would; whoever holds the
//! flush duty writes it (see `link.rs`), never waiting.
//!
//! The I/O thread does not poll the socket directly but the gate: a private
//! epoll instance holding only the socket, registered edge-triggered with
//! the interest the connection's state asks for, itself registered in the
//! I/O thread's runtime ([`Interest`]): readable while the I/O thread holds
//! the reader role and something may come, writable while bytes wait for
//! room in the socket buffer, a hang-up always. A caller that reads the
//! socket on its own thread takes "readable" out of the gate first, so
//! that the answer it waits for does not also wake the I/O thread: an
//! `epoll_ctl` costs far less than a thread wake-up, and none is needed
//! when nothing but answers can come. epoll checks readiness again whenever
//! the interest changes, so data that arrived while a caller held the role
//! wakes the I/O thread as soon as it is given back.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags, Shutdown};
use tokio_util::codec::Decoder;

use crate::protocol::{ClientCodec, FrameError, ServerFrame};

/// A connected, handshaken socket, in blocking mode: the reader role's
/// holder may wait in `recv`; every other operation says `DONTWAIT`.
#[derive(Debug)]
pub(crate) struct Sock(OwnedFd);

impl Sock {
    /// Takes a connected stream over; `TCP_NODELAY` is the caller's business.
    pub fn new(fd: OwnedFd) -> io::Result<Sock> {
        rustix::io::ioctl_fionbio(&fd, false)?;
        Ok(Sock(fd))
    }

    /// Writes what fits now; `WouldBlock` when nothing does. A closed peer
    /// is an error, not a SIGPIPE in the program that loaded us.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        Ok(rustix::net::send(
            &self.0,
            buf,
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        )?)
    }

    /// Reads into `buf`, waiting (up to the socket's receive timeout)
    /// unless `wait` is false; `Ok(0)` at the end.
    fn read(&self, buf: &mut [u8], wait: bool) -> Result<usize, Errno> {
        let flags = if wait {
            RecvFlags::empty()
        } else {
            RecvFlags::DONTWAIT
        };
        rustix::net::recv(&self.0, buf, flags).map(|(_, n)| n)
    }

    /// Sets how long a waiting read may wait (`None`: no limit).
    fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), Errno> {
        rustix::net::sockopt::set_socket_timeout(
            &self.0,
            rustix::net::sockopt::Timeout::Recv,
            timeout,
        )
    }

    /// Ends the connection in both directions: a thread blocked reading it
    /// wakes up and reads the end. The descriptor stays open until the
    /// last holder lets go, so it is never reused under anyone's feet.
    pub fn shutdown(&self) {
        let _ = rustix::net::shutdown(&self.0, Shutdown::Both);
    }

    /// Waits until the socket is readable (or at its end), at most
    /// `timeout`; `false` when the time passed first or a signal
    /// interrupted the wait.
    fn wait_readable(&self, timeout: Duration) -> Result<bool, Errno> {
        // A timeout too long for a timespec is no limit.
        let timeout = Timespec::try_from(timeout).ok();
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        match poll(&mut fds, timeout.as_ref()) {
            Ok(n) => Ok(n > 0),
            Err(Errno::INTR) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl AsFd for Sock {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// What the I/O thread wants to hear about a socket. It always hears of
/// the peer hanging up, so a lost connection is noticed (and reconnected)
/// even while nothing is expected from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Interest {
    /// Data to read: the I/O thread holds the reader role and something may
    /// come (an answer nobody else reads, a subscription event).
    pub read: bool,
    /// Room to write: bytes wait in the output buffer.
    pub write: bool,
}

impl Interest {
    fn flags(self) -> EventFlags {
        // Edge-triggered: the I/O thread always reads (or writes) until the
        // socket would block, so one wake-up per change is enough. Errors
        // and hang-ups are always reported (the kernel adds them).
        let mut flags = EventFlags::ET | EventFlags::RDHUP;
        if self.read {
            flags |= EventFlags::IN;
        }
        if self.write {
            flags |= EventFlags::OUT;
        }
        flags
    }
}

/// The epoll instance the I/O thread waits on (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Gate(Arc<OwnedFd>);

impl Gate {
    /// An empty gate.
    pub fn new() -> io::Result<Gate> {
        Ok(Gate(Arc::new(epoll::create(CreateFlags::CLOEXEC)?)))
    }

    /// The descriptor, readable when an interest of the socket is met; the
    /// I/O thread registers it in its runtime.
    pub fn fd(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.0)
    }

    /// Puts a new connection's socket in the gate.
    pub fn attach(&self, sock: &Sock, interest: Interest) -> io::Result<()> {
        epoll::add(&*self.0, sock, EventData::new_u64(0), interest.flags())?;
        Ok(())
    }

    /// Changes what wakes the I/O thread. Cannot fail for a socket in the
    /// gate; a socket already taken out (a lost connection) is ignored.
    pub fn set(&self, sock: &Sock, interest: Interest) {
        let _ = epoll::modify(&*self.0, sock, EventData::new_u64(0), interest.flags());
    }

    /// Takes a lost connection's socket out.
    pub fn detach(&self, sock: &Sock) {
        let _ = epoll::delete(&*self.0, sock);
    }

    /// Consumes the gate's pending events (the I/O thread then looks at the
    /// connection's state, not at the events).
    pub fn drain(&self) {
        let mut events = Vec::with_capacity(2);
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let _ = epoll::wait(
            &*self.0,
            rustix::buffer::spare_capacity(&mut events),
            Some(&now),
        );
    }
}

/// Bytes read from one connection and not yet decoded. Whoever holds it
/// holds the reader role: only that thread reads the socket, so frames are
/// never split between two readers.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: BytesMut,
    codec: ClientCodec,
    /// Where `recv` lands before the bytes join `buf` (the socket is read
    /// into initialized memory without `unsafe`).
    scratch: Box<[u8]>,
    /// Frames decoded and not yet handled (kept to reuse its memory).
    pub frames: Vec<ServerFrame>,
    /// The socket's receive timeout as last set (`Some(None)`: no limit;
    /// `None`: not known, set it before waiting).
    read_timeout: Option<Option<Duration>>,
}

/// What one read gave.
#[derive(Debug)]
pub(crate) enum Filled {
    /// Bytes arrived; complete frames are in [`Reader::frames`].
    Data,
    /// Nothing to read (now, or before the deadline).
    Empty,
    /// The connection is over, for this reason.
    Lost(String),
}

/// Bytes read at most at once. Frames are split off the read buffer
/// without copying, so a queued event keeps the chunk it was read with
/// alive: small chunks (tokio-util's `FramedRead` reads 8 KiB too) keep a
/// slow subscriber's memory close to the size of the events it holds.
const READ_CHUNK: usize = 8 * 1024;

/// How late a waiting read may give up compared with the call's deadline
/// (the kernel rounds the socket timeout up to its clock tick anyway);
/// within it the timeout already set is reused, saving a `setsockopt`.
const TIMEOUT_SLACK: Duration = Duration::from_millis(1);

/// Below this, a waiting read uses `poll`, whose timeout is precise, and
/// reads without waiting.
const SHORT_WAIT: Duration = Duration::from_millis(20);

impl Reader {
    /// A reader for a connection whose frames may be up to `max_frame`
    /// long; `leftover` is what the handshake read past HELLO_OK.
    pub fn new(max_frame: u32, leftover: BytesMut) -> Reader {
        Reader {
            buf: leftover,
            codec: ClientCodec::with_max_frame_length(max_frame),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            frames: Vec::new(),
            // A new socket waits without limit.
            read_timeout: Some(None),
        }
    }

    /// Reads once without waiting; complete frames go to `frames`.
    pub fn fill(&mut self, sock: &Sock) -> Filled {
        self.read(sock, false)
    }

    /// Reads once, waiting until something comes or `left` (`None`: no
    /// limit) has passed: a lone caller blocks in `recv` exactly as on a
    /// blocking socket of its own, with the socket's receive timeout as its
    /// deadline (set only when it changes).
    pub fn fill_waiting(&mut self, sock: &Sock, left: Option<Duration>) -> Filled {
        if let Some(left) = left.filter(|&left| left < SHORT_WAIT) {
            return match sock.wait_readable(left) {
                Ok(true) => self.read(sock, false),
                Ok(false) => Filled::Empty,
                Err(e) => Filled::Lost(format!("waiting for the socket failed: {e}")),
            };
        }
        let stale = match (self.read_timeout, left) {
            (None, _) | (Some(None), Some(_)) => true,
            (Some(current), None) => current.is_some(),
            (Some(Some(current)), Some(left)) => current > left + TIMEOUT_SLACK,
        };
        if stale {
            if let Err(e) = sock.set_read_timeout(left) {
                return Filled::Lost(format!("cannot set the read timeout: {e}"));
            }
            self.read_timeout = Some(left);
        }
        let filled = self.read(sock, true);
        if matches!(filled, Filled::Empty) {
            // The timeout set for an earlier, shorter wait ran out first
            // (or a signal came): set it anew before waiting again.
            self.read_timeout = None;
        }
        filled
    }

    fn read(&mut self, sock: &Sock, wait: bool) -> Filled {
        match sock.read(&mut self.scratch, wait) {
            Ok(0) => return Filled::Lost("the server closed the connection".to_owned()),
            Ok(n) => self.buf.extend_from_slice(&self.scratch[..n]),
            Err(Errno::AGAIN | Errno::INTR) => return Filled::Empty,
            Err(e) => return Filled::Lost(format!("read failed: {e}")),
        }
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => self.frames.push(frame),
                Ok(None) => return Filled::Data,
                Err(FrameError::Io(e)) => return Filled::Lost(format!("read failed: {e}")),
                Err(e) => return Filled::Lost(format!("bad data from the server: {e}")),
            }
        }
    }
}
