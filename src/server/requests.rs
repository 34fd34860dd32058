//! Taking requests in: the handshake, then each decoded request checked
//! and queued in order (reads and errors decided here, writes and
//! subscription changes sent to the engine), with the subscription caps.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::answer::{EngineOp, Entry, Work};
use super::connection::Connection;
use crate::acl::Right;
use crate::engine::Command;
use crate::key;
use crate::notify::Mailbox;
use crate::protocol::{
    wire, ClientFrame, Condition as WireCondition, ErrorCode, ErrorFrame, Inbound, Request,
    Response, ServerFrame,
};
use crate::store::Condition;

impl Connection {
    /// Queues one request (or answers the handshake).
    pub(super) fn accept(&mut self, inbound: Inbound, permit: Option<OwnedSemaphorePermit>) {
        if self.handshake_deadline.is_some() {
            return self.handshake(inbound);
        }
        let held = inbound_size(&inbound);
        let (id, request) = match inbound {
            Inbound::Invalid {
                id, code, message, ..
            } => {
                let error = ErrorFrame::new(code, message);
                if code.closes_connection() {
                    self.stop_reading();
                }
                return self.push(id, held, Work::Error(error));
            }
            Inbound::Request(ClientFrame { id, request }) => (id, request),
        };
        if let Some(denied) = self.denied(&request) {
            return self.push(id, held, Work::Error(denied));
        }
        let work = match request {
            Request::Hello { .. } => {
                return self.fail(ErrorCode::Protocol, "HELLO was already received");
            }
            Request::Ping => Work::Pong,
            Request::Get { key } => Work::Get(key),
            Request::List { prefix } => match self.check_prefix(&prefix) {
                Ok(()) => Work::List(prefix),
                Err(e) => Work::Error(e),
            },
            Request::Put {
                key,
                value,
                condition,
            } => {
                // A slice of the read buffer: the store copies it into its
                // record, and a subscriber's mailbox gets its own encoded
                // copy, so nothing holds it past the write's answer.
                let command = Command::Put {
                    key,
                    value,
                    condition: store_condition(condition),
                    ephemeral: None,
                };
                self.submit(command, EngineOp::Put)
            }
            Request::Delete { key, condition } => self.submit(
                Command::Delete {
                    key,
                    condition: store_condition(condition),
                },
                EngineOp::Delete,
            ),
            Request::DeletePrefix { prefix } => match self.check_prefix(&prefix) {
                Ok(()) => self.submit(Command::DeletePrefix { prefix }, EngineOp::Delete),
                Err(e) => Work::Error(e),
            },
            Request::Subscribe { prefix, since } => self.subscribe(id, prefix, since, false),
            Request::SubscribeGrouped { prefix, since } => self.subscribe(id, prefix, since, true),
            Request::Unsubscribe { subscription } => {
                if self.logical_subs.remove(&subscription) {
                    self.shared.subscriptions.fetch_sub(1, Ordering::Relaxed);
                    self.submit(
                        Command::Unsubscribe { subscription },
                        EngineOp::Unsubscribe(subscription),
                    )
                } else {
                    Work::Error(ErrorFrame::new(
                        ErrorCode::NotFound,
                        format!("no subscription {subscription} on this connection"),
                    ))
                }
            }
            Request::Stats => self.submit(Command::Stats, EngineOp::Stats),
            Request::Compact => self.submit(Command::Compact, EngineOp::Compact),
            Request::PutEphemeral {
                key,
                value,
                condition,
                grace_ms,
            } => self.submit(
                Command::Put {
                    key,
                    value,
                    condition: store_condition(condition),
                    ephemeral: Some(std::time::Duration::from_millis(grace_ms.into())),
                },
                EngineOp::Put,
            ),
            Request::Txn(txn) => self.submit(Command::Txn(txn), EngineOp::Txn),
        };
        if let Work::Error(e) = &work {
            if e.code.closes_connection() {
                self.stop_reading();
            }
        }
        self.held_input += held;
        self.queue.push_back(Entry {
            id,
            held,
            _budget: permit,
            work,
        });
    }

    /// The UNAUTHORIZED answer for a request the access rules refuse,
    /// naming the key (or prefix) and the right missing. Checked when the
    /// request is read, with the rules in force then. LIST and
    /// subscriptions pass if the caller may read (subscribe to) anything
    /// under their prefix; what they deliver is filtered key by key.
    fn denied(&self, request: &Request) -> Option<ErrorFrame> {
        // The server's own user and root (the usual callers) pass without
        // even reading the rules: this runs for every request.
        if self.peer.trusted {
            return None;
        }
        let access = self.shared.config.access.current();
        let peer = &self.peer;
        let (what, right, allowed) = match request {
            Request::Get { key } => (key, Right::Read, access.rights(peer, key).read),
            Request::Put { key, .. }
            | Request::PutEphemeral { key, .. }
            | Request::Delete { key, .. } => (key, Right::Write, access.rights(peer, key).write),
            Request::Txn(txn) => {
                // The first key it may not touch: read for conditions,
                // write for operations.
                let reads = txn
                    .conditions
                    .iter()
                    .map(|c| (&c.key, Right::Read, access.rights(peer, &c.key).read));
                let writes = txn.ops.iter().map(|op| match op {
                    crate::protocol::TxnOp::DeletePrefix { prefix } => (
                        prefix,
                        Right::Write,
                        access.all_under(peer, prefix, Right::Write),
                    ),
                    crate::protocol::TxnOp::Put { key, .. }
                    | crate::protocol::TxnOp::Delete { key } => {
                        (key, Right::Write, access.rights(peer, key).write)
                    }
                });
                reads.chain(writes).find(|(_, _, allowed)| !allowed)?
            }
            Request::DeletePrefix { prefix } => (
                prefix,
                Right::Write,
                access.all_under(peer, prefix, Right::Write),
            ),
            Request::List { prefix } => (
                prefix,
                Right::Read,
                access.any_under(peer, prefix, Right::Read),
            ),
            Request::Subscribe { prefix, .. } | Request::SubscribeGrouped { prefix, .. } => (
                prefix,
                Right::Subscribe,
                access.any_under(peer, prefix, Right::Subscribe)
                    && access.any_under(peer, prefix, Right::Read),
            ),
            // Compaction rewrites every file: only for who may write all.
            Request::Compact => {
                static EVERYTHING: String = String::new();
                (
                    &EVERYTHING,
                    Right::Write,
                    access.all_under(peer, "", Right::Write),
                )
            }
            _ => return None,
        };
        if allowed {
            return None;
        }
        let target = if what.is_empty() {
            "every key".to_owned()
        } else {
            format!("{what:?}")
        };
        Some(ErrorFrame::new(
            ErrorCode::Unauthorized,
            format!("{} has no {right} right on {target}", peer.describe()),
        ))
    }

    /// Whether this connection may see `key` in a LIST (`subscription`
    /// false) or in a subscription's snapshot and events.
    pub(super) fn may_see(
        &self,
        access: &super::access::Access,
        key: &str,
        subscription: bool,
    ) -> bool {
        let rights = access.rights(&self.peer, key);
        rights.read && (!subscription || rights.subscribe)
    }

    pub(super) fn push(&mut self, id: u32, held: usize, work: Work) {
        self.held_input += held;
        self.queue.push_back(Entry {
            id,
            held,
            _budget: None,
            work,
        });
    }

    pub(super) fn check_prefix(&self, prefix: &str) -> Result<(), ErrorFrame> {
        key::validate_prefix(prefix, self.shared.max_key)
            .map_err(|e| ErrorFrame::new(ErrorCode::InvalidKey, e.to_string()))
    }

    pub(super) fn subscribe(
        &mut self,
        id: u32,
        prefix: String,
        since: Option<u64>,
        grouped: bool,
    ) -> Work {
        if let Err(e) = self.check_prefix(&prefix) {
            return Work::Error(e);
        }
        if self.logical_subs.contains(&id) {
            return Work::Error(ErrorFrame::new(
                ErrorCode::InvalidArgument,
                format!("subscription {id} already exists on this connection"),
            ));
        }
        let config = &self.shared.config;
        if self.logical_subs.len() >= config.max_subscriptions {
            return Work::Error(ErrorFrame::new(
                ErrorCode::Limit,
                format!(
                    "too many subscriptions on this connection (limit {})",
                    config.max_subscriptions
                ),
            ));
        }
        let total = self.shared.subscriptions.fetch_add(1, Ordering::Relaxed);
        if total >= config.max_total_subscriptions {
            self.shared.subscriptions.fetch_sub(1, Ordering::Relaxed);
            return Work::Error(ErrorFrame::new(
                ErrorCode::Limit,
                format!(
                    "too many subscriptions on this server (limit {})",
                    config.max_total_subscriptions
                ),
            ));
        }
        self.logical_subs.insert(id);
        self.shared.ops.sub.fetch_add(1, Ordering::Relaxed);
        let mailbox = Arc::new(if grouped {
            Mailbox::grouped(self.waker.clone())
        } else {
            Mailbox::new(self.waker.clone())
        });
        let command = Command::Subscribe {
            subscription: id,
            prefix: prefix.clone(),
            mailbox: mailbox.clone(),
        };
        self.submit(
            command,
            EngineOp::Subscribe {
                prefix,
                since,
                mailbox,
            },
        )
    }

    /// A SUB the engine refused: its id is free again.
    pub(super) fn forget_subscription(&mut self, id: u32) {
        if self.logical_subs.remove(&id) {
            self.shared.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Queues a command for the engine (see [`Connection::run_batch`]).
    pub(super) fn submit(&mut self, command: Command, op: EngineOp) -> Work {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.batch.push((ticket, command));
        Work::Engine(op, ticket)
    }

    /// The first frame: HELLO, answered with HELLO_OK or an ERROR that
    /// closes the connection.
    pub(super) fn handshake(&mut self, inbound: Inbound) {
        self.handshake_deadline = None;
        let (id, version, token) = match inbound {
            Inbound::Request(ClientFrame {
                id,
                request: Request::Hello { version, token, .. },
            }) => (id, version, token),
            // A HELLO whose client name is not UTF-8 (section 3's table).
            Inbound::Invalid {
                id,
                frame_type: wire::frame_type::HELLO,
                code,
                message,
            } => {
                self.push(id, 0, Work::Error(ErrorFrame::new(code, message)));
                return self.stop_reading();
            }
            _ => return self.fail(ErrorCode::Protocol, "the first frame must be HELLO"),
        };
        if version < wire::MIN_PROTOCOL_VERSION {
            let message = format!(
                "protocol version {version} is not supported; this server speaks {}..={}",
                wire::MIN_PROTOCOL_VERSION,
                wire::PROTOCOL_VERSION
            );
            let error = ErrorFrame::new(ErrorCode::UnsupportedVersion, message);
            self.push(id, 0, Work::Error(error));
            return self.stop_reading();
        }
        let access = self.shared.config.access.current();
        match access.authenticate(self.peer.tcp, token.as_deref()) {
            Ok(name) => self.peer.caller.token = name,
            Err(why) => {
                tracing::warn!(connection = self.id, "refused at HELLO: {why}");
                let error = ErrorFrame::new(ErrorCode::Unauthorized, why);
                self.push(id, 0, Work::Error(error));
                return self.stop_reading();
            }
        }
        self.shared
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.id, self.peer.clone());
        let config = &self.shared.config;
        let hello = Response::HelloOk {
            version: version.min(wire::PROTOCOL_VERSION),
            max_frame: config.max_frame,
            max_key: self.shared.max_key as u32,
            max_value: self.shared.max_value as u32,
            server_name: concat!("nkv-server ", env!("CARGO_PKG_VERSION")).to_owned(),
        };
        self.codec.set_max_frame_length(config.max_frame);
        self.encode(ServerFrame::Response {
            id,
            response: hello,
        });
        tracing::debug!(connection = self.id, version, "handshake");
    }
}

/// Bytes a decoded request holds while it waits for its answer.
pub(super) fn inbound_size(inbound: &Inbound) -> usize {
    let payload = match inbound {
        Inbound::Request(ClientFrame { request, .. }) => match request {
            Request::Put { key, value, .. } => key.len() + value.len(),
            Request::Get { key } | Request::Delete { key, .. } => key.len(),
            Request::List { prefix }
            | Request::DeletePrefix { prefix }
            | Request::Subscribe { prefix, .. } => prefix.len(),
            _ => 0,
        },
        Inbound::Invalid { message, .. } => message.len(),
    };
    wire::HEADER_SIZE + payload
}

fn store_condition(condition: WireCondition) -> Condition {
    match condition {
        WireCondition::None => Condition::None,
        WireCondition::MustNotExist => Condition::MustNotExist,
        WireCondition::RevisionEquals(revision) => Condition::RevisionIs(revision),
    }
}
