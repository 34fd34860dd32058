//! The pub/sub driver of rows 4 and 5: subscribers spread over the client
//! threads (a tokio current-thread runtime each), one writer, every
//! receipt checked.
//!
//! nkv: subscribers SUB the prefix `bench.notify`, the writer PUTs
//! `bench.notify.k`. Redis: subscribers SUBSCRIBE the channel
//! `bench.notify`, the writer PUBLISHes to it. Every value carries the
//! update's sequence number in its first 8 bytes, so each receipt is
//! checked to be the update it is timed against.
//!
//! Closed loop: the writer sends update i only once every subscriber has
//! received update i - 1 and the write was answered; each subscriber's
//! latency is from just before the write's `write()` to just after the
//! `read()` that brought the event.
//!
//! Fan-out: the writer pipelines U updates (64 in flight); the time is
//! until every subscriber has received the last. nkv may skip intermediate
//! values (per-key conflation; each subscriber still sees increasing
//! sequence numbers ending with the last), Redis delivers every message
//! (checked: consecutive numbers).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use nkv::protocol::wire::frame_type as ft;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use crate::loadgen::{self, read_some_into};
use crate::nkvwire::{self, split_frame};
use crate::resp;
use crate::servers;
use crate::sides::Side;
use crate::wire::{AsyncStream, Target};

const PREFIX: &[u8] = b"bench.notify";
const KEY: &[u8] = b"bench.notify.k";
const CHANNEL: &[u8] = b"bench.notify";

/// How long any wait for a server may take before the row fails.
const WAIT: Duration = Duration::from_secs(60);

/// What the subscribers are asked to do.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Row 4: one update at a time, timed per subscriber.
    Closed {
        /// Updates to send.
        updates: u64,
    },
    /// Row 5: updates pipelined; done when the last one arrived.
    Fanout {
        /// Updates to send.
        updates: u64,
    },
}

impl Mode {
    fn updates(self) -> u64 {
        match self {
            Mode::Closed { updates } | Mode::Fanout { updates } => updates,
        }
    }
}

/// State shared by the writer and every subscriber of one run.
struct Shared {
    base: Instant,
    /// When the current update was sent, in ns since `base`.
    t0: AtomicU64,
    /// The sequence number of the current update (closed loop).
    seq: AtomicU64,
    /// Subscribers yet to receive the current update (closed loop).
    remaining: AtomicUsize,
    /// Wakes the writer when `remaining` reaches 0.
    all_received: Notify,
}

/// What one run gives.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Closed loop: every receipt's latency, sorted.
    pub latencies: Vec<u64>,
    /// From the first update sent to the last subscriber done.
    pub elapsed: Duration,
    /// Messages the subscribers received, all together.
    pub delivered: u64,
    /// Server CPU seconds over the same span (when its pid is known).
    pub server_cpu: Option<f64>,
    /// Share of its threads' time the bench's client was busy over the
    /// same span (1.0 = a whole core per client thread).
    pub client_busy: f64,
}

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// nkv or Redis.
    pub side: Side,
    /// Its socket.
    pub target: &'a Target,
    /// Subscriber connections.
    pub subs: usize,
    /// Closed loop or fan-out.
    pub mode: Mode,
    /// Bytes per value.
    pub value_size: usize,
    /// Threads the subscribers are spread over.
    pub client_threads: usize,
    /// The server's pid, for its CPU time.
    pub server_pid: Option<u32>,
}

/// One run: the subscribers spread over the client threads, the writer on
/// the first thread.
pub fn run(plan: &Plan<'_>) -> Result<Outcome, String> {
    let (subs, server_pid) = (plan.subs, plan.server_pid);
    let threads = plan.client_threads.clamp(1, subs);
    let shared = Arc::new(Shared {
        base: Instant::now(),
        t0: AtomicU64::new(0),
        seq: AtomicU64::new(0),
        remaining: AtomicUsize::new(0),
        all_received: Notify::new(),
    });
    let barrier = Barrier::new(threads);
    let results: Mutex<Vec<Result<ThreadOut, String>>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for t in 0..threads {
            let mine = (t..subs).step_by(threads).count();
            let (shared, barrier, results) = (&shared, &barrier, &results);
            scope.spawn(move || {
                let r = thread_main(plan, mine, t == 0, shared, barrier);
                results.lock().expect("no panics").push(r);
            });
        }
    });
    let mut out = Outcome::default();
    let (mut start, mut end) = (None::<Instant>, None::<Instant>);
    let mut cpu = None;
    let mut own = None;
    for r in results.into_inner().expect("no panics") {
        let t = r?;
        out.latencies.extend(t.latencies);
        out.delivered += t.delivered;
        if t.writer_start.is_some() {
            start = t.writer_start;
            cpu = t.cpu_start;
            own = Some(t.own_cpu_start);
        }
        end = end.max(t.last_done);
    }
    out.latencies.sort_unstable();
    if let (Some(s), Some(e)) = (start, end) {
        out.elapsed = e.saturating_duration_since(s);
    }
    if let Some(own) = own {
        out.client_busy =
            (loadgen::own_cpu() - own) / out.elapsed.as_secs_f64().max(1e-9) / threads as f64;
    }
    if let (Some(pid), Some(c0)) = (server_pid, cpu) {
        // /proc counts in 10 ms ticks: fewer than a few is no measurement.
        let used = servers::process_cpu_seconds(pid)? - c0;
        out.server_cpu = (used >= MIN_CPU_SECONDS).then_some(used);
    }
    Ok(out)
}

/// The least server CPU time taken as a measurement (five 10 ms ticks).
const MIN_CPU_SECONDS: f64 = 0.05;

/// What one client thread hands back.
#[derive(Debug, Default)]
struct ThreadOut {
    latencies: Vec<u64>,
    delivered: u64,
    last_done: Option<Instant>,
    writer_start: Option<Instant>,
    cpu_start: Option<f64>,
    own_cpu_start: f64,
}

/// One client thread: connect `mine` subscribers (and the writer on the
/// first thread), wait for every thread, then run them all.
fn thread_main(
    plan: &Plan<'_>,
    mine: usize,
    writer: bool,
    shared: &Arc<Shared>,
    barrier: &Barrier,
) -> Result<ThreadOut, String> {
    let (side, target, mode) = (plan.side, plan.target, plan.mode);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"));
    let connected = rt.as_ref().map_err(Clone::clone).and_then(|rt| {
        rt.block_on(async {
            let mut v = Vec::with_capacity(mine);
            for _ in 0..mine {
                v.push(subscribe(side, target).await?);
            }
            let w = if writer {
                Some(open_writer(side, target).await?)
            } else {
                None
            };
            Ok::<_, String>((v, w))
        })
    });
    // Everyone is subscribed once every thread passed this point.
    barrier.wait();
    let (rt, (conns, w)) = (rt?, connected?);
    rt.block_on(async {
        let mut tasks = Vec::new();
        for (stream, buf) in conns {
            tasks.push(tokio::spawn(receive(
                side,
                stream,
                buf,
                shared.clone(),
                mode,
            )));
        }
        let mut out = ThreadOut::default();
        if let Some(w) = w {
            out.cpu_start = plan
                .server_pid
                .and_then(|p| servers::process_cpu_seconds(p).ok());
            out.own_cpu_start = loadgen::own_cpu();
            out.writer_start = Some(Instant::now());
            write(side, w, plan.subs, mode, plan.value_size, shared).await?;
        }
        for task in tasks {
            let (lat, delivered, done) =
                task.await.map_err(|e| format!("subscriber task: {e}"))??;
            out.latencies.extend(lat);
            out.delivered += delivered;
            out.last_done = out.last_done.max(Some(done));
        }
        Ok(out)
    })
}

/// Connects a subscriber and waits until its subscription is live (nkv:
/// SYNCED; Redis: the subscribe confirmation). Returns the stream and the
/// bytes read past that point.
async fn subscribe(side: Side, target: &Target) -> Result<(AsyncStream, Vec<u8>), String> {
    let mut stream = target
        .connect_async()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.address()))?;
    let mut out = Vec::new();
    match side {
        Side::Nkv => {
            nkvwire::encode_hello(&mut out, 1, "nkv-bench");
            nkvwire::encode_sub(&mut out, 2, PREFIX);
        }
        Side::Redis => resp::encode_command(&mut out, &[b"SUBSCRIBE", CHANNEL]),
    }
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let mut at = 0;
        match side {
            Side::Nkv => {
                while let Some((f, used)) = split_frame(&buf[at..])? {
                    at += used;
                    match f.ty {
                        ft::HELLO_OK | ft::SUB_OK | ft::UPDATE => {}
                        ft::SYNCED => return Ok((stream, buf.split_off(at))),
                        ft::ERROR => {
                            return Err(format!("SUB: {}", nkvwire::error_text(f.payload)))
                        }
                        other => return Err(format!("SUB answered with frame type {other:#04x}")),
                    }
                }
            }
            Side::Redis => {
                if let Some((v, used)) = resp::parse(&buf)? {
                    return match v {
                        resp::Value::Array(Some(items))
                            if items.first() == Some(&resp::Value::Bulk(Some(b"subscribe"))) =>
                        {
                            Ok((stream, buf.split_off(used)))
                        }
                        other => Err(format!("SUBSCRIBE answered {}", resp::show(&other))),
                    };
                }
            }
        }
        buf.drain(..at);
        if read_some_into(&mut stream, &mut buf).await? == 0 {
            return Err("the server closed a subscriber's connection".into());
        }
    }
}

/// A subscriber's loop: checks every update's sequence number, records
/// latencies (closed loop) or the moment the last update came (fan-out).
/// Returns latencies, messages received, and when it finished.
async fn receive(
    side: Side,
    mut stream: AsyncStream,
    mut buf: Vec<u8>,
    shared: Arc<Shared>,
    mode: Mode,
) -> Result<(Vec<u64>, u64, Instant), String> {
    let last = mode.updates() - 1;
    let mut lat = Vec::new();
    let mut delivered = 0u64;
    let mut prev: Option<u64> = None;
    loop {
        let now = Instant::now();
        let now_ns = (now - shared.base).as_nanos() as u64;
        let mut at = 0;
        loop {
            let (payload, used) = match side {
                Side::Nkv => match split_frame(&buf[at..])? {
                    None => break,
                    Some((f, used)) => match nkvwire::update_value(&f)? {
                        Some(value) => (value, used),
                        None if f.ty == ft::CLOSED => {
                            return Err("the server closed the subscription".into())
                        }
                        None => {
                            return Err(format!(
                                "unexpected frame type {:#04x} on a subscription",
                                f.ty
                            ))
                        }
                    },
                },
                Side::Redis => match resp::parse_message(&buf[at..])? {
                    None => break,
                    Some(m) => m,
                },
            };
            at += used;
            let seq = payload
                .get(..8)
                .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
                .ok_or("an update too short to carry its sequence number")?;
            delivered += 1;
            match mode {
                Mode::Closed { .. } => {
                    let due = shared.seq.load(Ordering::Acquire);
                    if seq != due {
                        return Err(format!(
                            "a subscriber received update {seq} while {due} was due"
                        ));
                    }
                    lat.push(now_ns.saturating_sub(shared.t0.load(Ordering::Acquire)));
                    if shared.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                        shared.all_received.notify_one();
                    }
                }
                Mode::Fanout { .. } => {
                    // nkv may skip (conflation) but never goes back;
                    // Redis must deliver every one.
                    let ok = match (side, prev) {
                        (_, None) => side == Side::Nkv || seq == 0,
                        (Side::Nkv, Some(p)) => seq > p,
                        (Side::Redis, Some(p)) => seq == p + 1,
                    };
                    if !ok {
                        return Err(format!("a subscriber received update {seq} after {prev:?}"));
                    }
                }
            }
            prev = Some(seq);
            if seq == last {
                return Ok((lat, delivered, now));
            }
        }
        buf.drain(..at);
        if read_some_into(&mut stream, &mut buf).await? == 0 {
            return Err("the server closed a subscriber's connection".into());
        }
    }
}

/// The writer's connection, handshake done.
async fn open_writer(side: Side, target: &Target) -> Result<AsyncStream, String> {
    let mut stream = target
        .connect_async()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.address()))?;
    if side == Side::Nkv {
        let mut out = Vec::new();
        nkvwire::encode_hello(&mut out, 1, "nkv-bench");
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        loop {
            if let Some((f, _)) = split_frame(&buf)? {
                nkvwire::expect(&f, ft::HELLO_OK, 1)?;
                break;
            }
            if read_some_into(&mut stream, &mut buf).await? == 0 {
                return Err("the server closed the writer's connection".into());
            }
        }
    }
    Ok(stream)
}

/// The writer: closed loop or pipelined, checking every answer (nkv:
/// PUT_OK with the right id; Redis: PUBLISH reached every subscriber).
async fn write(
    side: Side,
    mut stream: AsyncStream,
    subs: usize,
    mode: Mode,
    value_size: usize,
    shared: &Shared,
) -> Result<(), String> {
    let updates = mode.updates();
    let window = match mode {
        Mode::Closed { .. } => 1,
        Mode::Fanout { .. } => 64,
    };
    let mut value = crate::wire::value(value_size, 2);
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(4096);
    let (mut sent, mut answered) = (0u64, 0u64);
    // nkv request ids: 1 was the HELLO.
    let id_of = |seq: u64| (seq % u32::MAX as u64) as u32 + 2;
    while answered < updates {
        while sent < updates && sent - answered < window {
            value[..8].copy_from_slice(&sent.to_be_bytes());
            match side {
                Side::Nkv => nkvwire::encode_put(&mut out, id_of(sent), KEY, &value),
                Side::Redis => resp::encode_command(&mut out, &[b"PUBLISH", CHANNEL, &value]),
            }
            if let Mode::Closed { .. } = mode {
                shared.remaining.store(subs, Ordering::Release);
                shared.seq.store(sent, Ordering::Release);
            }
            sent += 1;
        }
        if !out.is_empty() {
            let t0 = (Instant::now() - shared.base).as_nanos() as u64;
            shared.t0.store(t0, Ordering::Release);
            stream
                .write_all(&out)
                .await
                .map_err(|e| format!("write: {e}"))?;
            out.clear();
        }
        let mut at = 0;
        loop {
            let used = match side {
                Side::Nkv => match split_frame(&buf[at..])? {
                    None => break,
                    Some((f, used)) => {
                        nkvwire::expect(&f, ft::PUT_OK, id_of(answered))?;
                        used
                    }
                },
                Side::Redis => match resp::parse(&buf[at..])? {
                    None => break,
                    Some((resp::Value::Int(n), used)) if n == subs as i64 => used,
                    Some((other, _)) => {
                        return Err(format!(
                            "PUBLISH answered {} ({subs} subscribers expected)",
                            resp::show(&other)
                        ))
                    }
                },
            };
            at += used;
            answered += 1;
            if let Mode::Closed { .. } = mode {
                // The next update only once everyone has this one.
                tokio::time::timeout(WAIT, shared.all_received.notified())
                    .await
                    .map_err(|_| {
                        format!("not every subscriber received update {}", answered - 1)
                    })?;
            }
        }
        buf.drain(..at);
        // Read only when nothing more may be sent.
        let window_full = sent - answered >= window.min(updates - answered);
        if answered < updates && window_full && read_some_into(&mut stream, &mut buf).await? == 0 {
            return Err("the server closed the writer's connection".into());
        }
    }
    Ok(())
}
