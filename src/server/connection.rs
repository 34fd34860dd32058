//! One client connection: handshake, then a reader and a writer.
//!
//! The reader decodes requests and hands them to the engine, in order; it
//! stops reading while `max_in_flight` requests await their answer, so a
//! client that never reads costs bounded memory. The writer sends the
//! engine's replies (in request order, since the engine answers in order)
//! and drains the mailboxes of the connection's subscriptions. A
//! subscription's mailbox is drained only after its SUB_OK, snapshot and
//! SYNCED have been written, which is what puts live events after SYNCED.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite};

use super::Shared;
use crate::engine::{Command, EngineError, Job, Outcome, Reply};
use crate::key;
use crate::notify::{ChangeKind, Mailbox, PendingEvent};
use crate::protocol::{
    wire, ClientFrame, Condition as WireCondition, ErrorCode, ErrorFrame, Event, Inbound, Request,
    Response, ServerCodec, ServerFrame,
};
use crate::store::{Change, Condition, StoreError};

/// A byte stream a connection can be served over (Unix or TCP).
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncStream for T {}

/// Events written per subscription before the writer looks at replies
/// again, so one busy subscription cannot starve the others.
const EVENTS_PER_ROUND: usize = 64;

type Reader = FramedRead<tokio::io::ReadHalf<Box<dyn AsyncStream>>, ServerCodec>;
type Writer = FramedWrite<tokio::io::WriteHalf<Box<dyn AsyncStream>>, ServerCodec>;

/// Serves one connection until the client leaves, a fatal error, or
/// shutdown.
pub(super) async fn serve(
    stream: Box<dyn AsyncStream>,
    id: u64,
    shared: Arc<Shared>,
    jobs: Sender<Job>,
    stop: watch::Receiver<bool>,
) {
    let open = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let (read_half, write_half) = tokio::io::split(stream);
    let max_frame = shared.config.max_frame;
    let mut reader = FramedRead::new(read_half, ServerCodec::with_max_frame_length(max_frame));
    let mut writer = FramedWrite::new(write_half, ServerCodec::with_max_frame_length(max_frame));

    // Over the cap, the HELLO is answered with LIMIT (which closes).
    let refusal = (open > shared.config.max_connections).then(|| {
        let message = format!(
            "too many connections (limit {})",
            shared.config.max_connections
        );
        tracing::warn!(connection = id, "{message}");
        ErrorFrame::new(ErrorCode::Limit, message)
    });
    if handshake(&mut reader, &mut writer, &shared, refusal).await {
        tracing::debug!(connection = id, "connection open");
        let (reply_tx, reply_rx) = mpsc::unbounded_channel();
        let in_flight = Arc::new(Semaphore::new(shared.config.max_in_flight));
        let waker = Arc::new(Notify::new());
        let reading = read_loop(
            reader,
            ReadContext {
                connection: id,
                shared: shared.clone(),
                jobs: jobs.clone(),
                reply: reply_tx,
                in_flight: in_flight.clone(),
                waker: waker.clone(),
            },
            stop.clone(),
        );
        let writing = write_loop(shared.clone(), writer, reply_rx, in_flight, waker, stop);
        tokio::pin!(reading, writing);
        tokio::select! {
            // The writer ends first only when the socket is dead: stop reading.
            _ = &mut writing => {}
            // The reader ends at EOF, shutdown or a fatal error: let the
            // writer finish answering what is in flight.
            _ = &mut reading => { writing.await; }
        }
    }
    let (reply, _) = mpsc::unbounded_channel();
    let _ = jobs.send(Job {
        connection: id,
        id: 0,
        command: Command::Disconnect,
        reply,
    });
    shared.connections.fetch_sub(1, Ordering::SeqCst);
    tracing::debug!(connection = id, "connection closed");
}

/// Waits for HELLO and answers it, with `refusal` instead of HELLO_OK when
/// given. Returns false when the connection must close (after an ERROR
/// where one is due).
async fn handshake(
    reader: &mut Reader,
    writer: &mut Writer,
    shared: &Shared,
    refusal: Option<ErrorFrame>,
) -> bool {
    let first = tokio::time::timeout(shared.config.handshake_timeout, reader.next()).await;
    let refusal = match first {
        Err(_) => ErrorFrame::new(ErrorCode::Timeout, "no HELLO within the handshake timeout"),
        Ok(None) => return false,
        Ok(Some(Err(e))) => ErrorFrame::new(e.code(), e.to_string()),
        Ok(Some(Ok(Inbound::Request(ClientFrame {
            id,
            request:
                Request::Hello {
                    version,
                    client_name,
                },
        })))) => {
            if let Some(refusal) = refusal {
                let _ = send_error(writer, id, refusal).await;
                return false;
            }
            if version < wire::MIN_PROTOCOL_VERSION {
                let message = format!(
                    "protocol version {version} is not supported; this server speaks {}..={}",
                    wire::MIN_PROTOCOL_VERSION,
                    wire::PROTOCOL_VERSION
                );
                let _ = send_error(
                    writer,
                    id,
                    ErrorFrame::new(ErrorCode::UnsupportedVersion, message),
                )
                .await;
                return false;
            }
            tracing::debug!(client = %client_name, version, "handshake");
            let hello = Response::HelloOk {
                version: version.min(wire::PROTOCOL_VERSION),
                max_frame: shared.config.max_frame,
                max_key: shared.max_key as u32,
                max_value: shared.max_value as u32,
                server_name: concat!("nkv-server ", env!("CARGO_PKG_VERSION")).to_owned(),
            };
            return writer
                .send(ServerFrame::Response {
                    id,
                    response: hello,
                })
                .await
                .is_ok();
        }
        Ok(Some(Ok(_))) => ErrorFrame::new(ErrorCode::Protocol, "the first frame must be HELLO"),
    };
    let _ = send_error(writer, 0, refusal).await;
    false
}

async fn send_error(
    writer: &mut Writer,
    id: u32,
    error: ErrorFrame,
) -> Result<(), crate::protocol::FrameError> {
    writer
        .send(ServerFrame::Response {
            id,
            response: Response::Error(error),
        })
        .await
}

/// What the reader needs besides its stream.
struct ReadContext {
    connection: u64,
    shared: Arc<Shared>,
    jobs: Sender<Job>,
    reply: mpsc::UnboundedSender<Reply>,
    in_flight: Arc<Semaphore>,
    waker: Arc<Notify>,
}

impl ReadContext {
    /// Queues a job; false when the engine is gone.
    fn submit(&self, id: u32, command: Command) -> bool {
        self.jobs
            .send(Job {
                connection: self.connection,
                id,
                command,
                reply: self.reply.clone(),
            })
            .is_ok()
    }
}

async fn read_loop(mut reader: Reader, ctx: ReadContext, mut stop: watch::Receiver<bool>) {
    // Subscriptions requested on this connection; a duplicate id or one over
    // the cap is refused here, before the engine.
    let mut subscriptions = std::collections::HashSet::new();
    loop {
        let permit = tokio::select! {
            _ = super::stopped(&mut stop) => return,
            permit = ctx.in_flight.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let frame = tokio::select! {
            _ = super::stopped(&mut stop) => return,
            frame = reader.next() => frame,
        };
        // The writer returns the permit when it sends the reply.
        permit.forget();
        let (id, command) = match frame {
            None => return,
            Some(Err(e)) => {
                tracing::debug!(connection = ctx.connection, error = %e, "undecodable frame; closing");
                let refusal = refuse(e.code(), e.to_string());
                ctx.submit(wire::CONNECTION_ID, refusal);
                return;
            }
            Some(Ok(Inbound::Invalid {
                id, code, message, ..
            })) => (id, refuse(code, message)),
            Some(Ok(Inbound::Request(ClientFrame {
                request: Request::Hello { .. },
                ..
            }))) => {
                let refusal = refuse(ErrorCode::Protocol, "HELLO was already received");
                ctx.submit(wire::CONNECTION_ID, refusal);
                return;
            }
            Some(Ok(Inbound::Request(ClientFrame { id, request }))) => {
                (id, to_command(id, request, &ctx, &mut subscriptions))
            }
        };
        if !ctx.submit(id, command) {
            return;
        }
    }
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Command {
    Command::Reject(EngineError::Refused {
        code,
        message: message.into(),
    })
}

/// Turns a decoded request into an engine command, refusing what this
/// connection can tell is wrong without the store.
fn to_command(
    id: u32,
    request: Request,
    ctx: &ReadContext,
    subscriptions: &mut std::collections::HashSet<u32>,
) -> Command {
    let max_key = ctx.shared.max_key;
    let check_prefix = |prefix: &str| {
        key::validate_prefix(prefix, max_key)
            .map_err(|e| refuse(ErrorCode::InvalidKey, e.to_string()))
    };
    match request {
        Request::Hello { .. } => unreachable!("a second HELLO is handled by the reader"),
        Request::Ping => Command::Ping,
        Request::Get { key } => Command::Get { key },
        Request::Put {
            key,
            value,
            condition,
        } => Command::Put {
            key,
            value,
            condition: store_condition(condition),
        },
        Request::Delete { key, condition } => Command::Delete {
            key,
            condition: store_condition(condition),
        },
        Request::DeletePrefix { prefix } => match check_prefix(&prefix) {
            Ok(()) => Command::DeletePrefix { prefix },
            Err(refusal) => refusal,
        },
        Request::List { prefix } => match check_prefix(&prefix) {
            Ok(()) => Command::List { prefix },
            Err(refusal) => refusal,
        },
        Request::Subscribe { .. } | Request::Unsubscribe { .. } => {
            subscription_command(id, request, ctx, subscriptions)
        }
        Request::Stats => Command::Stats,
    }
}

fn subscription_command(
    id: u32,
    request: Request,
    ctx: &ReadContext,
    subscriptions: &mut std::collections::HashSet<u32>,
) -> Command {
    match request {
        Request::Subscribe { prefix, since } => {
            if let Err(e) = key::validate_prefix(&prefix, ctx.shared.max_key) {
                return refuse(ErrorCode::InvalidKey, e.to_string());
            }
            // The engine refuses duplicate ids against its registry; this
            // set only enforces the cap. A SUB the engine then refuses
            // leaves its id here until UNSUB, which errs on the safe side.
            let max = ctx.shared.config.max_subscriptions;
            if !subscriptions.contains(&id) && subscriptions.len() >= max {
                return refuse(
                    ErrorCode::Limit,
                    format!("too many subscriptions on this connection (limit {max})"),
                );
            }
            subscriptions.insert(id);
            Command::Subscribe {
                subscription: id,
                prefix,
                since,
                mailbox: Arc::new(Mailbox::new(ctx.waker.clone())),
            }
        }
        Request::Unsubscribe { subscription } => {
            subscriptions.remove(&subscription);
            Command::Unsubscribe { subscription }
        }
        _ => unreachable!("only subscription requests reach here"),
    }
}

fn store_condition(condition: WireCondition) -> Condition {
    match condition {
        WireCondition::None => Condition::None,
        WireCondition::MustNotExist => Condition::MustNotExist,
        WireCondition::RevisionEquals(revision) => Condition::RevisionIs(revision),
    }
}

/// The wire error for an engine error: one code per kind of failure.
pub fn error_frame(error: &EngineError) -> ErrorFrame {
    let message = error.to_string();
    let code = match error {
        EngineError::Store(StoreError::ConditionFailed { current }) => {
            return ErrorFrame::condition_failed(current.unwrap_or(0));
        }
        EngineError::Store(StoreError::NotFound) => ErrorCode::NotFound,
        EngineError::Store(StoreError::InvalidKey(_)) => ErrorCode::InvalidKey,
        EngineError::Store(StoreError::ValueTooLarge { .. }) => ErrorCode::TooLarge,
        EngineError::Store(StoreError::Locked { .. }) => ErrorCode::Server,
        EngineError::Store(_) | EngineError::CommitFailed(_) => ErrorCode::Storage,
        EngineError::DuplicateSubscription(_) => ErrorCode::InvalidArgument,
        EngineError::UnknownSubscription(_) => ErrorCode::NotFound,
        EngineError::Refused { code, .. } => *code,
        #[allow(unreachable_patterns)]
        _ => ErrorCode::Server,
    };
    ErrorFrame::new(code, message)
}

/// Writes replies and events until every reply sender is gone (or the
/// socket fails), then closes the remaining subscriptions.
async fn write_loop(
    shared: Arc<Shared>,
    mut writer: Writer,
    mut replies: mpsc::UnboundedReceiver<Reply>,
    in_flight: Arc<Semaphore>,
    waker: Arc<Notify>,
    stop: watch::Receiver<bool>,
) {
    let mut active: BTreeMap<u32, Arc<Mailbox>> = BTreeMap::new();
    let mut closing = false;
    loop {
        let result = tokio::select! {
            biased;
            reply = replies.recv() => match reply {
                Some(reply) => {
                    in_flight.add_permits(1);
                    // protocol.md: an ERROR with id 0, or whose code always
                    // closes, ends the connection.
                    let closes = reply.id == wire::CONNECTION_ID
                        || matches!(&reply.outcome, Err(EngineError::Refused { code, .. }) if code.closes_connection());
                    let written = write_reply(&mut writer, reply, &mut active, &waker, &shared).await;
                    closing |= closes;
                    written
                }
                None => break,
            },
            _ = waker.notified() => write_events(&mut writer, &active, &waker).await,
        };
        if result.is_err() {
            return;
        }
        if closing {
            break;
        }
        // Flush only when nothing else is ready, to batch small frames.
        if replies.is_empty() && flush(&mut writer).await.is_err() {
            return;
        }
    }
    if *stop.borrow() {
        for &subscription in active.keys() {
            let event = Event::Closed {
                code: ErrorCode::ShuttingDown,
                message: "the server is shutting down".into(),
            };
            if writer
                .feed(ServerFrame::Event {
                    subscription,
                    event,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let _ = flush(&mut writer).await;
}

async fn flush(writer: &mut Writer) -> WriteResult {
    SinkExt::<ServerFrame>::flush(writer).await
}

type WriteResult = Result<(), crate::protocol::FrameError>;

async fn write_reply(
    writer: &mut Writer,
    reply: Reply,
    active: &mut BTreeMap<u32, Arc<Mailbox>>,
    waker: &Notify,
    shared: &Shared,
) -> WriteResult {
    let id = reply.id;
    let outcome = match reply.outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            return writer
                .feed(ServerFrame::Response {
                    id,
                    response: Response::Error(error_frame(&error)),
                })
                .await;
        }
    };
    let response = match outcome {
        Outcome::Pong => Response::Pong,
        Outcome::Value(entry) => Response::GetOk {
            revision: entry.revision,
            value: entry.value,
        },
        Outcome::Written(revision) => Response::PutOk { revision },
        Outcome::Deleted { revision, count } => Response::DelOk {
            revision,
            deleted: count,
        },
        Outcome::Listing { revision, entries } => {
            let count = entries.len() as u32;
            for (key, entry) in entries {
                let item = Response::ListItem {
                    revision: entry.revision,
                    key,
                    value: entry.value,
                };
                writer
                    .feed(ServerFrame::Response { id, response: item })
                    .await?;
            }
            Response::ListOk { revision, count }
        }
        Outcome::Subscribed {
            reset,
            snapshot,
            synced_at,
            mailbox,
        } => {
            writer
                .feed(ServerFrame::Response {
                    id,
                    response: Response::SubOk,
                })
                .await?;
            let subscription = id;
            if reset {
                writer
                    .feed(ServerFrame::Event {
                        subscription,
                        event: Event::Reset,
                    })
                    .await?;
            }
            for change in snapshot {
                writer
                    .feed(ServerFrame::Event {
                        subscription,
                        event: change_event(change),
                    })
                    .await?;
            }
            writer
                .feed(ServerFrame::Event {
                    subscription,
                    event: Event::Synced {
                        revision: synced_at,
                    },
                })
                .await?;
            active.insert(subscription, mailbox);
            // Events may have arrived while the snapshot was on its way.
            waker.notify_one();
            return Ok(());
        }
        Outcome::Unsubscribed => {
            active.remove(&id);
            Response::UnsubOk
        }
        Outcome::Stats(stats) => Response::StatsOk {
            stats: super::stats::to_wire(&stats, shared.connections.load(Ordering::SeqCst)),
        },
    };
    writer.feed(ServerFrame::Response { id, response }).await
}

fn change_event(change: Change) -> Event {
    match change {
        Change::Put { key, entry } => Event::Update {
            revision: entry.revision,
            coalesced: 0,
            key,
            value: entry.value,
        },
        Change::Delete { key, revision } => Event::Delete {
            revision,
            coalesced: 0,
            key,
        },
    }
}

fn pending_event(pending: PendingEvent) -> Event {
    let PendingEvent { event, coalesced } = pending;
    match event.kind {
        ChangeKind::Update(value) => Event::Update {
            revision: event.revision,
            coalesced,
            key: event.key.to_string(),
            value,
        },
        ChangeKind::Delete => Event::Delete {
            revision: event.revision,
            coalesced,
            key: event.key.to_string(),
        },
    }
}

/// Writes a round of events from every active mailbox; wakes itself again
/// when a mailbox still holds more.
async fn write_events(
    writer: &mut Writer,
    active: &BTreeMap<u32, Arc<Mailbox>>,
    waker: &Notify,
) -> WriteResult {
    let mut more = false;
    for (&subscription, mailbox) in active {
        let batch = mailbox.drain(EVENTS_PER_ROUND);
        more |= batch.len() == EVENTS_PER_ROUND;
        for pending in batch {
            writer
                .feed(ServerFrame::Event {
                    subscription,
                    event: pending_event(pending),
                })
                .await?;
        }
    }
    if more {
        waker.notify_one();
    }
    Ok(())
}
