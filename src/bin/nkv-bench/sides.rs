//! The two sides of every row: which servers to start (or, with `--addr`,
//! which nkv server to use), how to run a load against either side, and
//! the alternating rounds.
//!
//! Rounds alternate nkv and Redis (and which of them goes first), so that
//! a burst of noise from another tenant of the machine hits both sides
//! rather than one; the median over rounds is reported.

use std::sync::Arc;
use std::time::Duration;

use crate::loadgen::{self, Keys, Load, LoadResult};
use crate::nkvwire::NkvWire;
use crate::resp::RedisWire;
use crate::servers::Server;
use crate::wire::{OpKind, Target};
use crate::Ctx;

/// What to say when Redis is missing.
pub const REDIS_MISSING: &str = "Redis not installed: apt-get install redis-server redis-tools";

/// Which server a measurement is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// nkv.
    Nkv,
    /// Redis.
    Redis,
}

impl Side {
    /// "nkv" or "Redis".
    pub fn name(self) -> &'static str {
        match self {
            Side::Nkv => "nkv",
            Side::Redis => "Redis",
        }
    }
}

/// Runs `load` against one side with that side's [`crate::wire::Wire`].
pub fn run_load(side: Side, load: &Load, value_len: usize) -> Result<LoadResult, String> {
    match side {
        Side::Nkv => loadgen::run(load, || NkvWire::new(value_len)),
        Side::Redis => loadgen::run(load, || RedisWire::new(value_len)),
    }
}

/// Writes keys `0..keys` once each, pipelined (4 connections x 64 in
/// flight), and returns the measurement (the million-keys row reports it).
pub fn preload(
    side: Side,
    target: &Target,
    keys: u64,
    value: Arc<Vec<u8>>,
    threads: usize,
) -> Result<LoadResult, String> {
    let load = Load {
        target: target.clone(),
        conns: 4,
        depth: 64,
        threads,
        kind: OpKind::Put,
        keys: Keys::Sequential(keys),
        ops: keys,
        max_time: Duration::from_secs(3600),
        stop: None,
        value: value.clone(),
    };
    run_load(side, &load, value.len())
        .map_err(|e| format!("writing {keys} keys to {}: {e}", side.name()))
}

/// The nkv server of a row: started by the bench, or given by `--addr`.
#[derive(Debug)]
pub enum NkvServer {
    /// Started (and stopped) by the bench.
    Own(Server),
    /// Already running at this address.
    External(Target),
}

impl NkvServer {
    /// Starts one with `--fsync FSYNC` and `extra`, or uses `--addr`.
    pub fn start(ctx: &Ctx, fsync: &str, extra: &[&str]) -> Result<NkvServer, String> {
        match &ctx.addr {
            Some(target) => Ok(NkvServer::External(target.clone())),
            None => Server::nkv(ctx, fsync, extra).map(NkvServer::Own),
        }
    }

    /// Where it listens.
    pub fn target(&self) -> &Target {
        match self {
            NkvServer::Own(s) => &s.target,
            NkvServer::External(t) => t,
        }
    }

    /// The process, when the bench started it.
    pub fn own(&mut self) -> Option<&mut Server> {
        match self {
            NkvServer::Own(s) => Some(s),
            NkvServer::External(_) => None,
        }
    }
}

/// Starts Redis with `extra` flags, or `None` when it is not installed.
pub fn start_redis(ctx: &Ctx, extra: &[&str]) -> Result<Option<Server>, String> {
    if ctx.redis {
        Server::redis(extra).map(Some)
    } else {
        Ok(None)
    }
}

/// Runs `rounds` alternating rounds of `f(side, round)`; the Redis side
/// only when `with_redis`. Returns each side's results in round order.
pub fn alternate<T>(
    rounds: usize,
    with_redis: bool,
    mut f: impl FnMut(Side, usize) -> Result<T, String>,
) -> Result<(Vec<T>, Vec<T>), String> {
    let (mut nkv, mut redis) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Side::Nkv, Side::Redis]
        } else {
            [Side::Redis, Side::Nkv]
        };
        for side in order {
            match side {
                Side::Nkv => nkv.push(f(side, round)?),
                Side::Redis if with_redis => redis.push(f(side, round)?),
                Side::Redis => {}
            }
        }
    }
    Ok((nkv, redis))
}
