//! Row 9, the echo floor: a plain Unix-socket echo server (a thread in
//! the bench) and the same load generator doing round trips of a message
//! the size of a GET request, one in flight. No server can answer faster
//! than this on this machine; it is the floor of the notification goal.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use crate::args::Row;
use crate::loadgen::{self, Keys, Load};
use crate::report::{Metric, RowReport, Status, Unit, Values};
use crate::rows_kv::median_of;
use crate::servers::TempDir;
use crate::stats;
use crate::wire::{OpKind, Target, Wire, KEY_LEN};
use crate::Ctx;

/// Size of a GET request for a benchmark key (header 9, key 2 + 13).
pub const MESSAGE_LEN: usize = 9 + 2 + KEY_LEN;

/// The floor as the other rows use it.
#[derive(Debug, Clone)]
pub struct Floor {
    /// p50, p99, p99.9 in nanoseconds (medians over rounds).
    pub percentiles: [f64; 3],
    /// The CDF of every round pooled, for the plot.
    pub cdf: Vec<(f64, u64)>,
}

/// The echo protocol: send [`MESSAGE_LEN`] bytes, expect them back.
#[derive(Debug, Default)]
pub struct EchoWire {
    sent: std::collections::VecDeque<[u8; MESSAGE_LEN]>,
}

impl Wire for EchoWire {
    fn hello(&mut self, _out: &mut Vec<u8>) {}

    fn parse_hello(&mut self, _buf: &[u8]) -> Result<Option<usize>, String> {
        Ok(Some(0))
    }

    fn encode(&mut self, _kind: OpKind, key: &[u8], _value: &[u8], out: &mut Vec<u8>) {
        let mut msg = [0u8; MESSAGE_LEN];
        msg[MESSAGE_LEN - key.len()..].copy_from_slice(key);
        out.extend_from_slice(&msg);
        self.sent.push_back(msg);
    }

    fn parse(&mut self, _kind: OpKind, buf: &[u8]) -> Result<Option<usize>, String> {
        if buf.len() < MESSAGE_LEN {
            return Ok(None);
        }
        match self.sent.pop_front() {
            Some(msg) if msg[..] == buf[..MESSAGE_LEN] => Ok(Some(MESSAGE_LEN)),
            _ => Err("the echo server sent back something else".into()),
        }
    }
}

/// The echo server: a listener thread, one thread per connection, each
/// writing back whatever it reads. Threads end when their peer closes;
/// the listener thread lives until the bench exits (it is cheap and idle).
pub struct EchoServer {
    /// Its socket.
    pub target: Target,
    _dir: TempDir,
}

impl EchoServer {
    /// Binds a socket in a fresh temporary directory and starts serving.
    pub fn start() -> Result<EchoServer, String> {
        let dir = TempDir::new().map_err(|e| format!("temp dir: {e}"))?;
        let path = dir.path().join("echo.sock");
        let listener = UnixListener::bind(&path).map_err(|e| format!("echo bind: {e}"))?;
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else {
                    return;
                };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(EchoServer {
            target: Target::Unix(path),
            _dir: dir,
        })
    }
}

/// Row 9: round trips at one in flight. Also stores the floor in `ctx`
/// for the notification goal and the SVG.
pub fn row(ctx: &mut Ctx) -> RowReport {
    let mut report = RowReport::new(
        Row::Echo,
        format!("echo floor: Unix-socket round trips of {MESSAGE_LEN} bytes, 1 in flight"),
    );
    match measure(ctx) {
        Ok((ops, lat, pooled)) => {
            let mut m = Metric::new("echo.ops", "echo round trips: ops/s", Unit::PerSec);
            m.nkv = median_of(&ops);
            m.nkv_rounds = ops;
            m.base_name = "none".into();
            report.metrics.push(m);
            let mut m = Metric::new("echo.latency", "  latency p50/p99/p99.9", Unit::Nanos);
            m.nkv = median_of(&lat);
            m.nkv_rounds = lat;
            m.base_name = "none".into();
            if let Some(Values::Three(t)) = m.nkv {
                ctx.echo = Some(Floor {
                    percentiles: t,
                    cdf: stats::cdf_points(&pooled),
                });
            }
            report.metrics.push(m);
            report
                .notes
                .push("the echo numbers are in the nkv column; there is no baseline".into());
        }
        Err(e) => report.status = Status::Failed(e),
    }
    report
}

type Measured = (Vec<Values>, Vec<Values>, Vec<u64>);

fn measure(ctx: &Ctx) -> Result<Measured, String> {
    let server = EchoServer::start()?;
    let load = Load {
        target: server.target.clone(),
        conns: 1,
        depth: 1,
        threads: 1,
        kind: OpKind::Get,
        keys: Keys::Random(ctx.sizes.keys),
        ops: ctx.sizes.ops,
        max_time: ctx.sizes.round_time,
        stop: None,
        value: Arc::new(Vec::new()),
    };
    let (mut ops, mut lat, mut pooled) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ctx.sizes.rounds {
        let r = loadgen::run(&load, EchoWire::default)?;
        ctx.progress(&format!(
            "echo: round {}/{}: {:.0} round trips/s",
            round + 1,
            ctx.sizes.rounds,
            r.ops_per_sec()
        ));
        ops.push(Values::One(r.ops_per_sec()));
        if let Some(t) = stats::percentiles(&r.latencies) {
            lat.push(Values::Three(t));
        }
        pooled.extend_from_slice(&r.latencies);
    }
    pooled.sort_unstable();
    Ok((ops, lat, pooled))
}
