//! `nkv-server`: parse flags, open the store, serve until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use nkv::addr::Address;
use nkv::server::{self, Listener};
use nkv::store::{self, FsyncPolicy, Options, Store};

/// The nkv server: a notify key-value store for one machine.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Where to listen: unix:PATH or tcp:HOST:PORT; repeat for several.
    /// Default: $NKV_ADDR, else the default Unix socket.
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<Address>,

    /// Directory holding the data files. Default: $NKV_DATA_DIR, else
    /// $XDG_DATA_HOME/nkv, else ~/.local/share/nkv.
    #[arg(long, value_name = "DIR", env = "NKV_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,

    /// When a write is made durable: always (fdatasync before the answer),
    /// interval:MS (answer at once, fdatasync every MS ms), or never.
    #[arg(long, default_value = "always", value_parser = parse_fsync)]
    fsync: FsyncPolicy,

    /// Largest key in bytes.
    #[arg(long, default_value_t = nkv::key::DEFAULT_MAX_KEY_LEN, global = true)]
    max_key: usize,

    /// Largest value in bytes.
    #[arg(long, default_value_t = Options::default().max_value_len, global = true)]
    max_value: usize,

    /// Most client connections at once.
    #[arg(long, default_value_t = server::Config::default().max_connections)]
    max_connections: usize,

    /// Most subscriptions on one connection.
    #[arg(long, default_value_t = server::Config::default().max_subscriptions)]
    max_subscriptions: usize,

    /// Seconds a new connection has to complete the handshake.
    #[arg(long, default_value_t = 5)]
    handshake_timeout: u64,

    /// Log filter (error, warn, info, debug, trace, or a RUST_LOG-style
    /// directive). Default: $RUST_LOG, else info.
    #[arg(long, value_name = "FILTER", global = true)]
    log: Option<String>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Salvage every intact record of a damaged data directory and report
    /// what was dropped. Run it with the server stopped.
    Repair,
}

fn parse_fsync(text: &str) -> Result<FsyncPolicy, String> {
    match text {
        "always" => Ok(FsyncPolicy::Always),
        "never" => Ok(FsyncPolicy::Never),
        _ => match text.strip_prefix("interval:").map(str::parse::<u64>) {
            Some(Ok(ms)) if ms > 0 => Ok(FsyncPolicy::Interval(Duration::from_millis(ms))),
            _ => Err("expected always, never or interval:MS (MS > 0)".into()),
        },
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("nkv");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/nkv"),
        None => PathBuf::from("nkv-data"),
    }
}

fn init_logging(filter: Option<&str>) {
    let filter = match filter {
        Some(f) => tracing_subscriber::EnvFilter::new(f),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log.as_deref());
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("nkv-server: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    let options = Options {
        max_key_len: cli.max_key,
        max_value_len: cli.max_value,
        fsync: cli.fsync,
        ..Options::default()
    };
    if let Some(Command::Repair) = cli.command {
        let report = store::repair(&data_dir, options).map_err(|e| e.to_string())?;
        println!("{report}");
        return Ok(());
    }
    let listen = if cli.listen.is_empty() {
        vec![Address::from_env_or_default().map_err(|e| e.to_string())?]
    } else {
        cli.listen.clone()
    };
    let config = server::Config {
        max_connections: cli.max_connections,
        max_subscriptions: cli.max_subscriptions,
        handshake_timeout: Duration::from_secs(cli.handshake_timeout),
        // A frame must hold the largest value, its key and the header.
        max_frame: server::Config::default()
            .max_frame
            .max(u32::try_from(cli.max_value + cli.max_key + 64).unwrap_or(u32::MAX)),
        ..server::Config::default()
    };

    let store = Store::open(&data_dir, options).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let mut listeners = Vec::new();
        for address in &listen {
            let listener = Listener::bind(address).await.map_err(|e| e.to_string())?;
            tracing::info!(%address, "listening");
            listeners.push(listener);
        }
        tracing::info!(data_dir = %data_dir.display(), "serving");
        server::run(listeners, store, config, shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    })
}

/// Completes on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
