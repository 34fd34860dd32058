//! One connection as the background task holds it: the socket in a
//! `Framed` with the protocol's [`ClientCodec`], and the frames waiting to
//! be encoded into it.
//!
//! Writing never stops reading. Frames wait in an outbox and move into the
//! codec's write buffer only while `Framed` says it has room; the buffer
//! is written in the same poll that reads. A server blocked writing to us
//! (a big snapshot) while we wait to write to it would otherwise deadlock
//! with us.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Context, Poll};

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_util::codec::{Framed, FramedParts};

use crate::client::handshake::{Opened, Stream};
use crate::client::{Error, ServerInfo};
use crate::protocol::{ClientCodec, ClientFrame, FrameError, Request, ServerFrame};

/// Callers' requests waiting in the outbox at most; past it the background
/// task takes no new request until the socket takes some (callers wait in
/// the command channel meanwhile). Together with `Framed`'s own write
/// buffer, which takes a frame only while it holds less than its
/// backpressure boundary (tokio-util's default, 8 KiB), this bounds what a
/// connection holds to send: 256 requests plus 8 KiB and one frame. Frames
/// of the task's own (UNSUB, re-SUB, PING) may go past it: there is at
/// most one per subscription, and a PING.
pub(super) const OUTBOX_LIMIT: usize = 256;

/// What the socket gave.
#[derive(Debug)]
pub(super) enum Io {
    /// A frame from the server.
    Frame(ServerFrame),
    /// The codec refused to encode request `id` (too large): only that
    /// request fails, the connection is fine.
    Refused {
        /// The request's id.
        id: u32,
        /// Why.
        error: Error,
    },
    /// The connection is over, for this reason.
    Lost(String),
}

/// A handshaken connection (see the module docs).
#[derive(Debug)]
pub(super) struct Conn {
    framed: Framed<Stream, ClientCodec>,
    /// Frames not yet in the codec's buffer, in order.
    outbox: VecDeque<ClientFrame>,
    /// When the server last sent anything (for the keepalive).
    pub last_heard: Instant,
    /// A keepalive PING is unanswered.
    pub pinging: bool,
}

impl Conn {
    /// Takes over a handshaken connection; returns it and the server's
    /// HELLO_OK. The bytes read past HELLO_OK are the start of the codec's
    /// read buffer, so no frame is lost between the two readers.
    pub fn new((stream, server, leftover): Opened) -> (Conn, ServerInfo) {
        let mut parts = FramedParts::new::<ClientFrame>(
            stream,
            ClientCodec::with_max_frame_length(server.max_frame),
        );
        parts.read_buf = leftover;
        let conn = Conn {
            framed: Framed::from_parts(parts),
            outbox: VecDeque::new(),
            last_heard: Instant::now(),
            pinging: false,
        };
        (conn, server)
    }

    /// Queues a frame; it is written by [`Conn::io`].
    pub fn send(&mut self, id: u32, request: Request) {
        self.outbox.push_back(ClientFrame { id, request });
    }

    /// True while the outbox takes callers' requests (see [`OUTBOX_LIMIT`]).
    pub fn has_room(&self) -> bool {
        self.outbox.len() < OUTBOX_LIMIT
    }

    /// Writes what it can and waits for the next thing the socket gives.
    /// Cancel-safe: nothing is held between polls but `self`.
    pub async fn io(&mut self) -> Io {
        poll_fn(|cx| self.poll_io(cx)).await
    }

    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Io> {
        // Encode waiting frames while the codec's buffer has room; when it
        // is past its boundary `poll_ready` writes it, and we stop at
        // Pending until the socket takes more.
        while !self.outbox.is_empty() {
            match SinkExt::<ClientFrame>::poll_ready_unpin(&mut self.framed, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Io::Lost(lost(e))),
                Poll::Pending => break,
            }
            let frame = self.outbox.pop_front().expect("not empty");
            let id = frame.id;
            // `start_send` only encodes (the codec leaves its buffer
            // untouched on error): a failure is this frame's alone.
            if let Err(e) = self.framed.start_send_unpin(frame) {
                return Poll::Ready(Io::Refused {
                    id,
                    error: Error::from_encode(e),
                });
            }
        }
        if !self.framed.write_buffer().is_empty() {
            if let Poll::Ready(Err(e)) =
                SinkExt::<ClientFrame>::poll_flush_unpin(&mut self.framed, cx)
            {
                return Poll::Ready(Io::Lost(lost(e)));
            }
        }
        match self.framed.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.last_heard = Instant::now();
                Poll::Ready(Io::Frame(frame))
            }
            Poll::Ready(Some(Err(FrameError::Io(e)))) => {
                Poll::Ready(Io::Lost(format!("read failed: {e}")))
            }
            Poll::Ready(Some(Err(e))) => {
                Poll::Ready(Io::Lost(format!("bad data from the server: {e}")))
            }
            Poll::Ready(None) => {
                Poll::Ready(Io::Lost("the server closed the connection".to_owned()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

fn lost(e: FrameError) -> String {
    format!("write failed: {e}")
}
