//! The load generator: `conns` connections, each keeping `depth` requests
//! in flight, spread over `threads` OS threads that each run a tokio
//! current-thread runtime with one task per connection.
//!
//! It must cost much less than the servers it measures, so the loop per
//! connection is lean: encode as many requests as the window allows into
//! one buffer, send it with one write, read whatever arrived with one read,
//! parse every complete answer, and take one clock reading per write and
//! per read (every request of a batch shares them). Every latency is kept
//! (a `Vec` of nanoseconds, sorted at the end) rather than bucketed, so
//! the percentiles are exact. The same code drives nkv, Redis and the echo
//! floor through [`Wire`]; only the bytes differ.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::wire::{key_name, AsyncStream, OpKind, Rng, Target, Wire};

/// Which keys the requests name.
#[derive(Debug, Clone, Copy)]
pub enum Keys {
    /// A uniformly random key among the first `n`.
    Random(u64),
    /// Key 0, 1, 2, ... (each once while fewer than `n` ops are sent):
    /// loading a store.
    Sequential(u64),
}

/// One measurement.
#[derive(Debug, Clone)]
pub struct Load {
    /// Where to connect.
    pub target: Target,
    /// Connections.
    pub conns: usize,
    /// Requests in flight per connection.
    pub depth: usize,
    /// Threads of the generator (at most `conns` are used).
    pub threads: usize,
    /// GET or PUT.
    pub kind: OpKind,
    /// Which keys.
    pub keys: Keys,
    /// Stop after this many requests in all ...
    pub ops: u64,
    /// ... or after this long, or when `stop` is set, whichever comes first.
    pub max_time: Duration,
    /// Set from outside to end the measurement (the compaction row).
    pub stop: Option<Arc<AtomicBool>>,
    /// The value a PUT writes.
    pub value: Arc<Vec<u8>>,
}

/// What one measurement gives.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Requests answered.
    pub ops: u64,
    /// From the first request sent to the last answer received.
    pub elapsed: Duration,
    /// Every request's latency in nanoseconds, sorted.
    pub latencies: Vec<u64>,
    /// CPU seconds the bench process used meanwhile (connecting included):
    /// the check that the generator, not the server, is not the limit.
    pub client_cpu: f64,
    /// Threads the generator ran on.
    pub threads: usize,
}

impl LoadResult {
    /// Answered requests per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Share of its threads' time the generator was busy (1.0 = every
    /// generator thread used a whole core); 0 for runs too short for
    /// `/proc`'s 10 ms ticks to tell.
    pub fn client_busy(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs < 0.1 {
            return 0.0;
        }
        self.client_cpu / secs / self.threads.max(1) as f64
    }
}

/// How long a connection waits for any answer before the row fails: a
/// wedged server must not hang the bench.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// State shared by every connection of a measurement.
struct Shared {
    issued: AtomicU64,
    ops: u64,
    kind: OpKind,
    keys: Keys,
    value: Arc<Vec<u8>>,
    stop: Option<Arc<AtomicBool>>,
}

/// What one thread hands back: latencies, start, end.
type ThreadResult = Result<(Vec<u64>, Instant, Instant), String>;

/// Runs `load`, with `make` building one [`Wire`] per connection.
pub fn run<W, F>(load: &Load, make: F) -> Result<LoadResult, String>
where
    W: Wire + 'static,
    F: Fn() -> W + Sync,
{
    let threads = load.threads.clamp(1, load.conns.max(1));
    let shared = Arc::new(Shared {
        issued: AtomicU64::new(0),
        ops: load.ops,
        kind: load.kind,
        keys: load.keys,
        value: load.value.clone(),
        stop: load.stop.clone(),
    });
    // Every thread connects first; the clock starts only once all are ready.
    let barrier = Barrier::new(threads);
    let results: Mutex<Vec<ThreadResult>> = Mutex::new(Vec::new());
    let cpu_before = own_cpu();
    std::thread::scope(|scope| {
        for t in 0..threads {
            // Connections t, t + threads, t + 2 * threads, ...
            let mine = (t..load.conns).step_by(threads).count();
            let (shared, barrier, results, make) = (&shared, &barrier, &results, &make);
            scope.spawn(move || {
                let r = thread_main(load, mine, t as u64, shared, barrier, make);
                results.lock().expect("no panics").push(r);
            });
        }
    });
    let mut latencies = Vec::new();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for r in results.into_inner().expect("no panics") {
        let (lat, start, end) = r?;
        latencies.extend(lat);
        first = Some(first.map_or(start, |f| f.min(start)));
        last = Some(last.map_or(end, |l| l.max(end)));
    }
    let client_cpu = own_cpu() - cpu_before;
    latencies.sort_unstable();
    let elapsed = match (first, last) {
        (Some(f), Some(l)) => l - f,
        _ => Duration::ZERO,
    };
    Ok(LoadResult {
        ops: latencies.len() as u64,
        elapsed,
        latencies,
        client_cpu,
        threads,
    })
}

/// CPU seconds this process used so far (0 when /proc cannot tell).
pub fn own_cpu() -> f64 {
    crate::servers::process_cpu_seconds(std::process::id()).unwrap_or(0.0)
}

fn thread_main<W, F>(
    load: &Load,
    conns: usize,
    thread: u64,
    shared: &Arc<Shared>,
    barrier: &Barrier,
    make: &F,
) -> ThreadResult
where
    W: Wire + 'static,
    F: Fn() -> W + Sync,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"));
    let connected = rt.as_ref().map_err(Clone::clone).and_then(|rt| {
        rt.block_on(async {
            let mut all = Vec::with_capacity(conns);
            for _ in 0..conns {
                all.push(open(&load.target, make()).await?);
            }
            Ok::<_, String>(all)
        })
    });
    // Wait even after a failure, or the other threads would wait forever.
    barrier.wait();
    let (rt, connected) = (rt?, connected?);
    let start = Instant::now();
    let deadline = start + load.max_time;
    let lat = rt.block_on(async {
        let mut tasks = Vec::with_capacity(conns);
        for (i, (stream, wire)) in connected.into_iter().enumerate() {
            let seed = (thread << 32) ^ (i as u64) ^ 0x5eed;
            let shared = shared.clone();
            let depth = load.depth;
            tasks.push(tokio::spawn(drive(
                stream, wire, shared, depth, deadline, seed,
            )));
        }
        let mut lat = Vec::new();
        for task in tasks {
            let mine = task
                .await
                .map_err(|e| format!("connection task failed: {e}"))??;
            lat.extend(mine);
        }
        Ok::<_, String>(lat)
    })?;
    Ok((lat, start, Instant::now()))
}

/// Connects and runs the handshake of `wire`.
pub async fn open<W: Wire>(target: &Target, mut wire: W) -> Result<(AsyncStream, W), String> {
    let mut stream = target
        .connect_async()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.address()))?;
    let mut out = Vec::new();
    wire.hello(&mut out);
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(256);
    loop {
        if wire.parse_hello(&buf)?.is_some() {
            return Ok((stream, wire));
        }
        let n = read_some_into(&mut stream, &mut buf).await?;
        if n == 0 {
            return Err("the server closed the connection during the handshake".into());
        }
    }
}

/// Appends what the stream has (up to 64 KiB at a time) to `buf`; fails
/// when nothing comes for a minute.
pub async fn read_some_into(stream: &mut AsyncStream, buf: &mut Vec<u8>) -> Result<usize, String> {
    buf.reserve(64 * 1024);
    match tokio::time::timeout(ANSWER_TIMEOUT, stream.read_buf(buf)).await {
        Ok(r) => r.map_err(|e| format!("read: {e}")),
        Err(_) => Err(format!("no answer within {ANSWER_TIMEOUT:?}")),
    }
}

/// One connection's loop: keep the window full until the budget, the
/// deadline or the stop flag says otherwise, then drain what is in flight.
async fn drive<W: Wire>(
    mut stream: AsyncStream,
    mut wire: W,
    shared: Arc<Shared>,
    depth: usize,
    deadline: Instant,
    seed: u64,
) -> Result<Vec<u64>, String> {
    let mut out = Vec::with_capacity(depth * (shared.value.len() + 64));
    let mut inbuf = vec![0u8; 64 * 1024];
    let (mut start, mut end) = (0usize, 0usize);
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(depth);
    let mut lat = Vec::new();
    let mut rng = Rng::new(seed);
    let mut done = false;
    loop {
        if !done {
            let now = Instant::now();
            done = now >= deadline
                || shared
                    .stop
                    .as_ref()
                    .is_some_and(|s| s.load(Ordering::Relaxed));
            let mut batch = 0;
            while !done && sent.len() + batch < depth {
                let i = shared.issued.fetch_add(1, Ordering::Relaxed);
                if i >= shared.ops {
                    done = true;
                    break;
                }
                let key = match shared.keys {
                    Keys::Random(n) => rng.below(n),
                    Keys::Sequential(n) => i % n.max(1),
                };
                wire.encode(shared.kind, &key_name(key), &shared.value, &mut out);
                batch += 1;
            }
            if batch > 0 {
                let t = Instant::now();
                sent.extend(std::iter::repeat_n(t, batch));
                stream
                    .write_all(&out)
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                out.clear();
            }
        }
        if sent.is_empty() {
            return Ok(lat);
        }
        if end == inbuf.len() {
            if start > 0 {
                inbuf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            } else {
                inbuf.resize(inbuf.len() * 2, 0);
            }
        }
        let n = match tokio::time::timeout(ANSWER_TIMEOUT, stream.read(&mut inbuf[end..])).await {
            Ok(r) => r.map_err(|e| format!("read: {e}"))?,
            Err(_) => return Err(format!("no answer within {ANSWER_TIMEOUT:?}")),
        };
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        end += n;
        let t = Instant::now();
        while let Some(used) = wire.parse(shared.kind, &inbuf[start..end])? {
            start += used;
            let t0 = sent
                .pop_front()
                .ok_or("the server answered a request that was not sent")?;
            lat.push((t - t0).as_nanos() as u64);
        }
        if start == end {
            start = 0;
            end = 0;
        }
    }
}
