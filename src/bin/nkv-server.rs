//! `nkv-server`: parse flags, open the store, serve until SIGTERM/SIGINT;
//! under systemd, take the activated sockets, notify, log for the journal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use nkv::addr::Address;
use nkv::perms;
use nkv::server::access::{Access, AccessFiles, AccessHandle};
use nkv::server::{self, limits, Inherited, Listener, SocketAccess};
use nkv::store::{self, FsyncPolicy, Options, Store};
use nkv::systemd::{self, notify::Notifier, Service};

/// The nkv server: a notify key-value store for one machine.
#[derive(Debug, Parser)]
#[command(name = "nkv-server", version)]
struct Cli {
    /// Where to listen: unix:PATH or tcp:HOST:PORT; repeat for several.
    /// Default: $NKV_ADDR, else the default Unix socket, or with socket
    /// activation (systemd's LISTEN_FDS) the passed sockets only. Passed
    /// sockets are served besides --listen addresses; one that is a
    /// --listen address is not bound again.
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<Address>,

    /// Mode of the Unix socket (octal): 0600 lets only the server's user
    /// (and root) connect, 0660 the socket's group too, 0666 every user.
    /// A socket passed by systemd that lets in more is refused.
    #[arg(long, value_name = "MODE", value_parser = perms::parse_socket_mode)]
    socket_mode: Option<u32>,

    /// Group of the Unix socket (a name or a gid), for a --socket-mode
    /// that lets the group in. Default: the server's group.
    #[arg(long, value_name = "GROUP", value_parser = perms::parse_socket_group)]
    socket_group: Option<u32>,

    /// Secrets clients present at HELLO: one per line, `NAME SECRET` or a
    /// lone SECRET (named `default`); required over TCP when given, and
    /// needed to listen on a non-loopback address. Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Listen on a non-loopback TCP address without a token file: anyone
    /// who can reach the port may read and write every key.
    #[arg(long)]
    insecure_no_auth: bool,

    /// Keep keys under PREFIX in memory only: served and notified like any
    /// other, never written to disk, gone after a restart (e.g. `run`, as
    /// a device keeps /run apart from /persist). Repeat for several.
    #[arg(long, value_name = "PREFIX")]
    volatile: Vec<String>,

    /// Per-prefix rights for callers (see docs/security.md). Reloaded on
    /// SIGHUP.
    #[arg(long, value_name = "FILE")]
    acl: Option<PathBuf>,

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

    /// Most client connections at once, counted from accept [default:
    /// 1024, lowered to fit the open-file limit].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,

    /// Most subscriptions on one connection.
    #[arg(long, value_name = "N", default_value_t = server::Config::default().max_subscriptions)]
    max_subscriptions: usize,

    /// Most subscriptions on the whole server.
    #[arg(long, value_name = "N", default_value_t = server::Config::default().max_total_subscriptions)]
    max_total_subscriptions: usize,

    /// Bytes of answers and events waiting for a slow client after which
    /// its requests are no longer read (suffixes K, M, G).
    #[arg(long, value_name = "BYTES", default_value = "64K", value_parser = parse_size)]
    max_output_buffer: u64,

    /// Seconds a new connection has to complete the handshake.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    handshake_timeout: u64,

    /// Seconds a frame may take from its first byte to its last.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    frame_timeout: u64,

    /// Seconds output may wait without the client reading any of it
    /// before the connection is closed.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    write_timeout: u64,

    /// Seconds shutdown waits for connections to finish what they asked.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    shutdown_grace: u64,

    /// Threads serving connections. One avoids waking threads across cores
    /// (lower notification latency with many subscribers); more spread
    /// many busy clients over the cores [default: one per CPU].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,

    /// Automatic compaction needs at least this many dead bytes (lowered to
    /// a quarter of the free space on a small disk; suffixes K, M, G).
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_size, global = true)]
    compaction_min_dead: u64,

    /// Automatic compaction also needs dead bytes to be at least this share
    /// of all data-file bytes.
    #[arg(long, value_name = "RATIO", default_value_t = 0.5, global = true)]
    compaction_ratio: f64,

    /// Revisions for which deletes are remembered for resuming
    /// subscribers; compaction forgets older ones and raises the
    /// tombstone floor (a resume below it gets a full snapshot).
    #[arg(long, value_name = "REVISIONS", default_value_t = Options::default().tombstone_retention, global = true)]
    tombstone_retention: u64,

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
    /// Verify every record of the data directory without changing
    /// anything (safe beside a running server). Exit status: 0 no damage,
    /// 1 damage found (repair would drop it), 2 the directory cannot be
    /// read.
    Check,
    /// Print the shell completion script (e.g. `nkv-server completions
    /// bash > /etc/bash_completion.d/nkv-server`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: nkv::cli_docs::Shell,
    },
    /// Print the man page, or with --dir write one page per command there.
    Man {
        /// Write nkv-server.1 and a page per subcommand into DIR.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
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

/// A byte count: digits with an optional K, M or G suffix (powers of 1024,
/// `KiB` spellings too).
fn parse_size(text: &str) -> Result<u64, String> {
    let upper = text.trim().to_ascii_uppercase();
    let digits_end = upper
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(upper.len());
    let (digits, unit) = upper.split_at(digits_end);
    let shift = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => {
            return Err(format!(
                "{text:?}: expected a byte count like 65536, 64K, 16M or 1G"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a byte count like 65536, 64K, 16M or 1G"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
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

/// Logs to stderr; for the journal (`journal`), without time or colours
/// and with syslog priorities (see `nkv::systemd::journal`).
fn init_logging(filter: Option<&str>, journal: bool) {
    let filter = match filter {
        Some(f) => tracing_subscriber::EnvFilter::new(f),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if journal {
        let inner = tracing_subscriber::fmt::format()
            .without_time()
            .with_level(false);
        builder
            .with_ansi(false)
            .event_format(systemd::journal::JournalFormat { inner })
            .init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    // First, before any thread or file: the activated sockets are
    // descriptors 3.., and their variables must go before threads start.
    let systemd = systemd::Environment::take();
    let cli = Cli::parse();
    let journal = systemd::journal::stderr_is_journal();
    init_logging(cli.log.as_deref(), journal);
    match &cli.command {
        Some(Command::Check) => return check(&cli),
        Some(Command::Completions { shell }) => {
            nkv::cli_docs::completions(Cli::command(), *shell, &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Some(Command::Man { dir }) => return man(dir.as_deref()),
        _ => {}
    }
    match systemd.and_then(|env| run(cli, env)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // The journal takes <3> as the line's priority: an error.
            let priority = if journal { "<3>" } else { "" };
            eprintln!("{priority}nkv-server: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `nkv-server man`: the page on stdout, or every page into `dir`.
fn man(dir: Option<&std::path::Path>) -> ExitCode {
    let written = match dir {
        None => nkv::cli_docs::man_page(Cli::command(), &mut std::io::stdout()),
        Some(dir) => nkv::cli_docs::man_pages(Cli::command(), dir).map(|pages| {
            for page in pages {
                println!("{}", page.display());
            }
        }),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nkv-server man: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `nkv-server check`: the report on stdout, the verdict in the exit
/// status (see [`Command::Check`]).
fn check(cli: &Cli) -> ExitCode {
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    let options = Options {
        max_key_len: cli.max_key,
        max_value_len: cli.max_value,
        ..Options::default()
    };
    match store::check(&data_dir, &options) {
        Ok(report) => {
            println!("{report}");
            if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("nkv-server check: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli, systemd: systemd::Environment) -> Result<(), String> {
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    let options = Options {
        max_key_len: cli.max_key,
        max_value_len: cli.max_value,
        fsync: cli.fsync,
        compaction_min_dead_bytes: cli.compaction_min_dead,
        compaction_dead_ratio: cli.compaction_ratio,
        tombstone_retention: cli.tombstone_retention,
        ..Options::default()
    };
    if let Some(Command::Repair) = cli.command {
        let report = store::repair(&data_dir, options).map_err(|e| e.to_string())?;
        println!("{report}");
        return Ok(());
    }
    if let Some(why) = &systemd.activation.ignored {
        tracing::info!("{why}");
    }
    let access = socket_access(&cli)?;
    let inherited = systemd
        .activation
        .fds
        .into_iter()
        .map(|fd| Inherited::check(fd.fd, fd.number, &fd.name, access))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let listen = addresses_to_bind(&cli, &inherited)?;
    let served: Vec<Address> = inherited
        .iter()
        .map(Inherited::address)
        .chain(listen.iter().cloned())
        .collect();
    if (cli.socket_mode.is_some() || cli.socket_group.is_some())
        && !served.iter().any(|a| matches!(a, Address::Unix(_)))
    {
        let why = "--socket-mode and --socket-group apply to Unix sockets; this server has none";
        return Err(why.into());
    }
    let access_files = AccessFiles {
        tokens: cli.token_file.clone(),
        acl: cli.acl.clone(),
    };
    let rules = Access::load(&access_files)?;
    check_network_auth(&cli, &served, rules.has_tokens())?;
    let notifier = systemd.notify_socket.as_deref().and_then(|socket| {
        Notifier::new(socket)
            .map_err(|e| tracing::warn!("not notifying the service manager: {e}"))
            .ok()
    });
    let service = Service::new(notifier, systemd.watchdog);
    service.set_addresses(&served.iter().map(ToString::to_string).collect::<Vec<_>>());
    let rules = Arc::new(AccessHandle::new(rules));
    let defaults = server::Config::default();
    let fd_limit = limits::raise_fd_limit().unwrap_or(1024);
    let asked = cli.max_connections.unwrap_or(defaults.max_connections);
    let max_connections = match limits::fit_connections(
        asked,
        cli.max_connections.is_some(),
        fd_limit,
        limits::open_fds(),
    )? {
        limits::Fit::Fits(n) => n,
        limits::Fit::Lowered { to, from } => {
            tracing::warn!(
                "the open-file limit is {fd_limit}: serving at most {to} connections instead \
                 of {from} (raise it with ulimit -n or LimitNOFILE=)"
            );
            to
        }
    };
    let secs = Duration::from_secs;
    let config = server::Config {
        max_connections,
        max_subscriptions: cli.max_subscriptions,
        max_total_subscriptions: cli.max_total_subscriptions,
        max_output: usize::try_from(cli.max_output_buffer).unwrap_or(usize::MAX),
        handshake_timeout: secs(cli.handshake_timeout),
        frame_timeout: secs(cli.frame_timeout),
        write_timeout: secs(cli.write_timeout),
        shutdown_grace: secs(cli.shutdown_grace),
        access: rules.clone(),
        volatile: cli.volatile.clone(),
        // A frame must hold the largest value, its key and the header.
        max_frame: defaults
            .max_frame
            .max(u32::try_from(cli.max_value + cli.max_key + 64).unwrap_or(u32::MAX)),
        ..defaults
    };

    for prefix in &cli.volatile {
        nkv::key::validate_prefix(prefix, cli.max_key)
            .map_err(|e| format!("--volatile {prefix:?}: {e}"))?;
    }
    service.status(&format!("opening the store in {}", data_dir.display()));
    let store = Store::open(&data_dir, options).map_err(|e| e.to_string())?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads.into());
    }
    let runtime = runtime
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let mut listeners = Vec::new();
        for socket in inherited {
            let (address, number) = (socket.address(), socket.number());
            let name = socket.name().to_owned();
            let listener = Listener::inherit(socket).map_err(|e| e.to_string())?;
            tracing::info!(%address, fd = number, name, "listening (socket from systemd)");
            listeners.push(listener);
        }
        for address in &listen {
            let listener = Listener::bind_with(address, access)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(%address, "listening");
            listeners.push(listener);
        }
        tracing::info!(data_dir = %data_dir.display(), "serving");
        tokio::spawn(reload_on_sighup(access_files, rules, service.clone()));
        server::run_supervised(listeners, store, config, shutdown_signal(), &service)
            .await
            .map_err(|e| e.to_string())
    })
}

/// The addresses to bind: `--listen` (less those a socket from systemd
/// already serves), else the default address when systemd passed no
/// socket, else none (activation replaces the default).
fn addresses_to_bind(cli: &Cli, inherited: &[Inherited]) -> Result<Vec<Address>, String> {
    if cli.listen.is_empty() {
        if !inherited.is_empty() {
            return Ok(Vec::new());
        }
        return Ok(vec![
            Address::from_env_or_default().map_err(|e| e.to_string())?
        ]);
    }
    let mut listen = Vec::new();
    for address in &cli.listen {
        let Some(socket) = inherited.iter().find(|s| s.serves(address)) else {
            listen.push(address.clone());
            continue;
        };
        tracing::info!(
            "--listen {address} is the socket systemd passed as descriptor {} ({}): serving \
             that one",
            socket.number(),
            socket.name()
        );
    }
    Ok(listen)
}

/// The access given to Unix sockets by --socket-mode and --socket-group
/// (for a socket from systemd: the most it may give).
fn socket_access(cli: &Cli) -> Result<SocketAccess, String> {
    let default = SocketAccess::default();
    if cli.socket_mode.is_none() && cli.socket_group.is_none() {
        return Ok(default);
    }
    let mode = cli.socket_mode.unwrap_or(default.mode);
    if let Some(group) = cli.socket_group {
        if mode & 0o060 == 0 {
            return Err(format!(
                "--socket-group {group} lets the group in only with a --socket-mode that \
                 does, like --socket-mode 0660 (the mode is {mode:04o})"
            ));
        }
    }
    Ok(SocketAccess {
        mode,
        group: cli.socket_group,
    })
}

/// Completes on the first SIGTERM or SIGINT.
/// A TCP listener others can reach needs tokens, or an explicit, logged
/// `--insecure-no-auth`.
fn check_network_auth(cli: &Cli, listen: &[Address], tokens: bool) -> Result<(), String> {
    for address in listen {
        let Address::Tcp(host_port) = address else {
            continue;
        };
        if tokens || is_loopback(host_port) {
            continue;
        }
        if !cli.insecure_no_auth {
            return Err(format!(
                "tcp:{host_port} can be reached from other machines, and without a token \
                 file anyone who reaches it may read and write every key: add \
                 --token-file FILE (make a secret with: openssl rand -hex 32), or \
                 --insecure-no-auth to accept that"
            ));
        }
        tracing::warn!(
            "INSECURE: tcp:{host_port} accepts clients without authentication \
             (--insecure-no-auth): anyone who reaches it may read and write every key"
        );
    }
    Ok(())
}

/// True if every address `host_port` resolves to is a loopback address.
fn is_loopback(host_port: &str) -> bool {
    use std::net::ToSocketAddrs;
    match host_port.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

/// SIGHUP: loads the token and ACL files again; a file with a mistake
/// leaves the rules in force as they were (and says why). systemd hears
/// RELOADING=1, then READY=1.
async fn reload_on_sighup(files: AccessFiles, rules: Arc<AccessHandle>, service: Arc<Service>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler; access files are not reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        service.reloading();
        match Access::load(&files) {
            Ok(access) => {
                rules.replace(access);
                tracing::info!("SIGHUP: access files reloaded");
                service.reloaded(Ok(()));
            }
            Err(e) => {
                tracing::error!("SIGHUP: {e}; the previous rules stay in force");
                service.reloaded(Err(&e));
            }
        }
    }
}

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
