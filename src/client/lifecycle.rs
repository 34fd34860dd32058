//! The life of the connection as the shared core sees it: a new
//! connection adopted (and every subscription resumed on it), a connection
//! lost (by whoever notices: a reader at the end of the stream, a writer's
//! error, the keepalive), and the client closed. Each change wakes whoever
//! waits on the old connection and answers every caller still waiting.

use std::time::Instant;

use bytes::BytesMut;

use super::answers::Pending;
use super::error::Error;
use super::link::{Command, Core, Live};
use super::socket::{Interest, Reader, Sock};
use super::subscription::{SubState, SubscriptionEvent};
use super::{ConnState, ServerInfo};
use crate::protocol::Request;

impl Core {
    /// Keepalive tick: if the server has been silent for a keepalive
    /// interval, ask it something; if it stays silent for another one, give
    /// the connection up (a hung server, a peer that vanished).
    pub(super) fn keepalive(&mut self) {
        if self.conn.is_none() || Instant::now() < self.last_heard + self.keepalive {
            return;
        }
        if self.pinging {
            let reason = format!(
                "no answer from the server for {:?} (keepalive)",
                self.keepalive * 2
            );
            self.lose(reason);
            return;
        }
        let id = self.alloc_id();
        if self.send(id, Request::Ping).is_ok() {
            self.pending.insert(id, Pending::Keepalive);
            self.pinging = true;
        }
        self.last_heard = Instant::now();
    }

    /// The connection is gone: wake whoever reads it, fail what waits on
    /// it, tell every handler, and have the I/O thread reconnect.
    pub(super) fn lose(&mut self, reason: String) {
        let Some(live) = self.conn.take() else {
            return;
        };
        tracing::debug!(%reason, "connection lost");
        live.end(&self.gate);
        self.shared.set_state(ConnState::Disconnected);
        self.pinging = false;
        let error = Error::connection(format!("connection to {} lost: {reason}", self.addr));
        self.fail_pending(&error);
        let ids: Vec<u32> = self.subs.keys().copied().collect();
        for &id in &ids {
            if let Some(sub) = self.subs.get_mut(&id) {
                sub.disconnected();
            }
            self.hub.push(id, SubscriptionEvent::Disconnected);
        }
        if !self.reconnect {
            for id in ids {
                self.end_subscription(id, format!("connection lost: {reason}"));
            }
        }
        self.last_loss = reason;
        let _ = self.wake.send(Command::Lost);
    }

    /// A new connection is up: adopt its limits, take back the ephemeral
    /// keys held, resume every subscription.
    pub(super) fn connected(
        &mut self,
        sock: Sock,
        server: ServerInfo,
        leftover: BytesMut,
    ) -> Result<(), Error> {
        let interest = Interest {
            read: true,
            write: false,
        };
        self.gate
            .attach(&sock, interest)
            .map_err(|e| Error::connection(format!("cannot watch the socket: {e}")))?;
        tracing::debug!(addr = %self.addr, "connected");
        self.encoder.set_max_frame_length(server.max_frame);
        let reader = Reader::new(server.max_frame, leftover);
        self.shared.set_info(server);
        self.conn = Some(Live::new(self.next_gen, sock, reader, interest));
        self.next_gen += 1;
        self.shared.set_state(ConnState::Connected);
        self.last_heard = Instant::now();
        // Held ephemeral keys first: their grace period is running.
        self.reassert();
        let subs: Vec<(u32, SubState)> = self.subs.iter().map(|(&id, s)| (id, s.clone())).collect();
        for (id, sub) in subs {
            if sub.needs_reset() {
                // The handler may hold part of a snapshot that a fresh one
                // will not delete.
                self.hub.push(id, SubscriptionEvent::Reset);
            }
            match self.send(id, sub.resubscribe()) {
                Ok(()) => {
                    self.pending.insert(id, Pending::Resubscribe);
                }
                Err(e) => self.end_subscription(id, format!("could not resume: {e}")),
            }
        }
        Ok(())
    }

    /// The client is closing: fail what waits, wake whoever reads. (The hub
    /// ends every subscription on the closing thread.)
    pub(super) fn shutdown(&mut self) {
        self.closed = true;
        self.shared.set_state(ConnState::Closed);
        if let Some(live) = self.conn.take() {
            live.end(&self.gate);
        }
        self.fail_pending(&Error::closed());
        self.subs.clear();
    }
}
