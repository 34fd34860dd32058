//! Command-line flags, and the sizes of every row they resolve to.
//!
//! The defaults give a full run of a few minutes; `--short` scales every
//! size down so the whole run stays under a minute on a 2-core machine; the
//! size knobs override either, so tests can run in seconds.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Measures nkv against Redis side by side, in the same run, with its own
/// client for both, and prints ratios against baselines measured in the
/// same run (this machine may be shared and noisy).
///
/// Every server is started by the bench on a Unix socket in a temporary
/// directory, and killed and removed at the end (also on error or Ctrl-C).
#[derive(Debug, Parser)]
#[command(name = "nkv-bench", version)]
pub struct Args {
    /// A quick run (whole run under a minute): fewer operations, shorter
    /// rounds, 100,000 keys instead of 1,000,000.
    #[arg(long)]
    pub short: bool,

    /// Print the results as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    pub json: bool,

    /// Also write an SVG plot of latency distributions (CDFs) to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Run only these rows (comma-separated names or numbers): 1 get,
    /// 2 put, 3 put-durable, 4 notify, 5 fanout, 6 million, 7 compaction,
    /// 8 libnkv, 9 echo.
    #[arg(long, value_name = "ROW[,ROW]", value_delimiter = ',')]
    pub only: Vec<String>,

    /// Measure an nkv server that is already running (unix:PATH or
    /// tcp:HOST:PORT) instead of starting one. It gets keys `bench.*`
    /// written. Rows that must restart or reconfigure the server are skipped.
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<String>,

    /// The nkv-server binary [default: nkv-server next to this executable].
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,

    /// The directory holding the libnkv.so the libnkv row measures
    /// [default: next to this executable].
    #[arg(long, value_name = "DIR")]
    pub lib_dir: Option<PathBuf>,

    /// An extra flag for every nkv-server the bench starts (repeat for
    /// several), e.g. `--server-arg=--threads=1`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub server_arg: Vec<String>,

    /// Threads of the load generator (the same for nkv and Redis).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub client_threads: usize,

    /// Alternating rounds per side (the median is reported) [default: 3].
    #[arg(long, value_name = "N")]
    pub rounds: Option<usize>,

    /// Most operations per side and round of a throughput row [default:
    /// 500,000; short: 50,000]; a round also ends after --seconds.
    #[arg(long, value_name = "N")]
    pub ops: Option<u64>,

    /// Longest time of one round of a throughput row, in seconds
    /// [default: 1; short: 0.2].
    #[arg(long, value_name = "SECS")]
    pub seconds: Option<f64>,

    /// Keys preloaded for the GET and PUT rows.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub keys: u64,

    /// Keys of the million-keys and compaction rows [default: 1,000,000;
    /// short: 100,000].
    #[arg(long, value_name = "N")]
    pub big_keys: Option<u64>,

    /// Updates per side of each notification-latency row [default: 10,000;
    /// short: 1,000].
    #[arg(long, value_name = "N")]
    pub updates: Option<u64>,

    /// Subscribers of the fan-out row.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub subscribers: usize,

    /// Updates the writer sends in the fan-out row [default: 5,000; short: 500].
    #[arg(long, value_name = "N")]
    pub fanout_updates: Option<u64>,

    /// Bytes of every value written.
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    pub value_size: usize,
}

/// Every row, in the order they run and are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Row {
    /// 1: GET at four shapes.
    Get,
    /// 2: PUT at four shapes.
    Put,
    /// 3: PUT with an fsync per write.
    PutDurable,
    /// 4: notification latency, closed loop.
    Notify,
    /// 5: fan-out to many subscribers.
    Fanout,
    /// 6: load, RSS, disk and restart at a million keys.
    Million,
    /// 7: longest stall while compacting.
    Compaction,
    /// 8: the C library against the raw protocol.
    Libnkv,
    /// 9: the Unix-socket echo floor.
    Echo,
}

impl Row {
    /// All rows in order.
    pub const ALL: [Row; 9] = [
        Row::Get,
        Row::Put,
        Row::PutDurable,
        Row::Notify,
        Row::Fanout,
        Row::Million,
        Row::Compaction,
        Row::Libnkv,
        Row::Echo,
    ];

    /// The name used by `--only` and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Row::Get => "get",
            Row::Put => "put",
            Row::PutDurable => "put-durable",
            Row::Notify => "notify",
            Row::Fanout => "fanout",
            Row::Million => "million",
            Row::Compaction => "compaction",
            Row::Libnkv => "libnkv",
            Row::Echo => "echo",
        }
    }

    /// A row from its name or its number (1-based).
    pub fn parse(text: &str) -> Result<Row, String> {
        let text = text.trim();
        if let Ok(n) = text.parse::<usize>() {
            if (1..=Row::ALL.len()).contains(&n) {
                return Ok(Row::ALL[n - 1]);
            }
        }
        Row::ALL
            .iter()
            .copied()
            .find(|r| r.name() == text)
            .ok_or_else(|| {
                let names: Vec<_> = Row::ALL.iter().map(|r| r.name()).collect();
                format!("unknown row {text:?}; rows: {}", names.join(", "))
            })
    }
}

/// The sizes every row runs with, resolved from the flags.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Alternating rounds per side.
    pub rounds: usize,
    /// Operations cap per round of a throughput row.
    pub ops: u64,
    /// Time cap per round of a throughput row.
    pub round_time: Duration,
    /// Keys preloaded for GET/PUT.
    pub keys: u64,
    /// Keys of the million-keys and compaction rows.
    pub big_keys: u64,
    /// Updates per side of a notification row.
    pub updates: u64,
    /// Fan-out subscribers.
    pub subscribers: usize,
    /// Fan-out updates.
    pub fanout_updates: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Load-generator threads.
    pub client_threads: usize,
}

impl Args {
    /// The rows to run, in order.
    pub fn rows(&self) -> Result<Vec<Row>, String> {
        if self.only.is_empty() {
            return Ok(Row::ALL.to_vec());
        }
        let mut rows = Vec::new();
        for text in &self.only {
            let row = Row::parse(text)?;
            if !rows.contains(&row) {
                rows.push(row);
            }
        }
        rows.sort();
        Ok(rows)
    }

    /// The sizes, from `--short` and the knobs.
    pub fn sizes(&self) -> Result<Sizes, String> {
        let short = self.short;
        let seconds = self.seconds.unwrap_or(if short { 0.2 } else { 1.0 });
        if !(seconds > 0.0 && seconds < 3600.0) {
            return Err(format!(
                "--seconds {seconds}: expected a positive number of seconds"
            ));
        }
        let sizes = Sizes {
            rounds: self.rounds.unwrap_or(3),
            ops: self.ops.unwrap_or(if short { 50_000 } else { 500_000 }),
            round_time: Duration::from_secs_f64(seconds),
            keys: self.keys,
            big_keys: self
                .big_keys
                .unwrap_or(if short { 100_000 } else { 1_000_000 }),
            updates: self.updates.unwrap_or(if short { 1_000 } else { 10_000 }),
            subscribers: self.subscribers,
            fanout_updates: self
                .fanout_updates
                .unwrap_or(if short { 500 } else { 5_000 }),
            value_size: self.value_size,
            client_threads: self.client_threads,
        };
        // Key names have six digits (bench.k000123): a million keys at most.
        if sizes.keys == 0
            || sizes.keys > 1_000_000
            || sizes.big_keys == 0
            || sizes.big_keys > 1_000_000
        {
            return Err("--keys and --big-keys must be between 1 and 1,000,000".into());
        }
        if sizes.rounds == 0 || sizes.ops == 0 || sizes.updates == 0 || sizes.fanout_updates == 0 {
            return Err(
                "--rounds, --ops, --updates and --fanout-updates must be at least 1".into(),
            );
        }
        if sizes.subscribers == 0 || sizes.client_threads == 0 {
            return Err("--subscribers and --client-threads must be at least 1".into());
        }
        // The notification rows carry a sequence number in the value.
        if sizes.value_size < 16 || sizes.value_size > 1_000_000 {
            return Err("--value-size must be between 16 and 1,000,000".into());
        }
        Ok(sizes)
    }
}
