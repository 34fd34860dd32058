//! `nkv`: the command-line client. Thin by design: parse flags, call
//! [`nkv::client`], print.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand};
use serde_json::{json, Map, Value};

use nkv::addr::Address;
use nkv::client::{Client, ClientOptions, Error, ErrorKind, SubscriptionEvent, WaitFor};
use nkv::protocol::{Condition, Txn};

const EXIT_HELP: &str = "\
Exit status: 0 on success, 1 when the key is not found (get, del KEY),
2 on any other error (bad usage, connection, server error, a condition of
put --if-absent/--if-revision or of txn that did not hold: stderr names the
key and its current revision).

The address is --addr, else $NKV_ADDR, else the default Unix socket
($XDG_RUNTIME_DIR/nkv.sock, or /tmp/nkv-$UID/nkv.sock).";

const TXN_HELP: &str = "\
Words:
  if-absent KEY        condition: KEY does not exist
  if-present KEY       condition: KEY exists
  if-rev KEY REV       condition: KEY exists at revision REV
  put KEY VALUE        operation: set KEY to VALUE
  del KEY              operation: delete KEY (nothing if absent)
  del-prefix PREFIX    operation: delete PREFIX and every key under it

Every condition is checked first, against the state before the transaction,
wherever it stands among the words; then the operations apply in the order
given, under one revision. Subscribers see the changed keys together (a
GROUP with `nkv watch --grouped`).

  nkv txn if-absent net.lock put net.lock me del net.old del-prefix tmp

Options such as --json and --addr go before the words: every word after
`txn` is read as a word, so values may start with '-'.

Prints `REV (N deleted)`, or with --json {\"revision\":REV,\"deleted\":N}.
A condition that does not hold changes nothing and exits 2; stderr names
the key and its current revision (with --json, also stdout:
{\"failed_key\":KEY,\"current_revision\":REV}).";

/// Command-line client of nkv, the notify key-value store.
#[derive(Parser)]
#[command(name = "nkv", version, after_help = EXIT_HELP)]
struct Cli {
    /// Server address: unix:PATH or tcp:HOST:PORT.
    #[arg(long, global = true, value_name = "ADDR")]
    addr: Option<String>,
    /// Print JSON, one object per line, for scripts.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for each answer [default: 10]; for `wait`, for the
    /// state (default: no limit).
    #[arg(long, global = true, value_name = "SECS")]
    timeout: Option<f64>,
    /// File holding the access token (needed over TCP when the server has
    /// a token file).
    #[arg(long, global = true, value_name = "FILE", env = "NKV_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a value (from stdin when VALUE is omitted); prints the revision.
    Put {
        /// The key, e.g. net.eth0.state.
        key: String,
        /// The value; read from stdin when omitted.
        value: Option<OsString>,
        /// Only if the key does not exist yet.
        #[arg(long, conflicts_with = "if_revision")]
        if_absent: bool,
        /// Only if the key's current revision is REV.
        #[arg(long, value_name = "REV")]
        if_revision: Option<u64>,
        /// An ephemeral key: the server deletes it when this command's
        /// connection ends (at once when the command exits, unless --hold),
        /// after the --grace period.
        #[arg(long)]
        ephemeral: bool,
        /// With --ephemeral: how long the key outlives the connection, in
        /// seconds (at most 600; default 0).
        #[arg(long, value_name = "SECS", requires = "ephemeral")]
        grace: Option<f64>,
        /// With --ephemeral: print the revision, then keep the key (and the
        /// connection) until SIGINT or SIGTERM, and exit 0; exit 2 if the
        /// key is lost meanwhile (someone else wrote it, or it could not be
        /// taken back after a reconnect). Presence for shell scripts.
        #[arg(long, requires = "ephemeral")]
        hold: bool,
    },
    /// Print a key's value, as raw bytes without an added newline.
    Get {
        /// The key.
        key: String,
    },
    /// List every key under a prefix (all keys when omitted).
    List {
        /// The prefix, e.g. net (covers net and net.*, not network).
        prefix: Option<String>,
    },
    /// Delete a key, or a whole prefix atomically.
    #[command(group(ArgGroup::new("target").required(true).args(["key", "prefix"])))]
    Del {
        /// The key.
        key: Option<String>,
        /// Delete this prefix and every key under it instead.
        #[arg(long, value_name = "PREFIX")]
        prefix: Option<String>,
    },
    /// Print the current values under a prefix, then every change, until
    /// interrupted (Ctrl-C) or the subscription is closed (exit status 2).
    Watch {
        /// The prefix (all keys when omitted).
        key: Option<String>,
        /// Resume: only changes after revision REV.
        #[arg(long, value_name = "REV")]
        since: Option<u64>,
        /// Announce the events of one transaction or prefix delete with a
        /// GROUP line giving how many of the following lines belong
        /// together.
        #[arg(long)]
        grouped: bool,
    },
    /// Apply a transaction: conditions, then operations in order, all or
    /// nothing under one revision. Prints the revision.
    #[command(after_help = TXN_HELP)]
    Txn {
        /// The conditions and operations, as words (see below).
        #[arg(required = true, allow_hyphen_values = true, value_name = "WORD")]
        words: Vec<OsString>,
    },
    /// Wait until KEY exists (or holds VALUE, or is absent), now or later:
    /// exit 0 then, 1 when --timeout passes first.
    Wait {
        /// The key.
        key: String,
        /// Wait for this exact value.
        #[arg(long, conflicts_with = "absent")]
        value: Option<OsString>,
        /// Wait until the key does not exist.
        #[arg(long)]
        absent: bool,
    },
    /// Show the server's counters.
    Stats,
    /// Compact the server's store now, reclaiming the space of overwritten
    /// and deleted values.
    Compact,
}

/// How the command failed: the exit status and what to say.
struct Failure {
    status: u8,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure {
            status: if e.kind == ErrorKind::NotFound { 1 } else { 2 },
            message: e.to_string(),
        }
    }
}

fn failure(status: u8, message: impl Into<String>) -> Failure {
    Failure {
        status,
        message: message.into(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) if f.status == 0 => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("nkv: {}", f.message);
            ExitCode::from(f.status)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let addr = match &cli.addr {
        Some(text) => text.parse::<Address>(),
        None => Address::from_env_or_default(),
    }
    .map_err(|e| failure(2, e.to_string()))?;
    let given = match cli.timeout {
        Some(secs) => Some(
            Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|t| !t.is_zero())
                .ok_or_else(|| failure(2, format!("invalid --timeout {secs}")))?,
        ),
        None => None,
    };
    // `wait` waits for the state as long as --timeout says (no limit by
    // default); its requests, and every other command's, take 10 s at most.
    let waiting = matches!(cli.command, Command::Wait { .. });
    let timeout = match given {
        Some(t) if !waiting => t,
        _ => Duration::from_secs(10),
    };
    let token = match &cli.token_file {
        Some(path) => Some(nkv::client::read_token_file(path)?),
        None => None,
    };
    let options = ClientOptions {
        name: concat!("nkv-cli ", env!("CARGO_PKG_VERSION")).to_owned(),
        timeout,
        connect_timeout: timeout,
        token,
        ..ClientOptions::default()
    };
    // `put --hold` waits for SIGINT/SIGTERM with sigwait: they must be
    // blocked before any thread exists, so that every client thread
    // inherits the mask and the signal stays pending for the waiter.
    let stop_signals = matches!(cli.command, Command::Put { hold: true, .. })
        .then(block_stop_signals)
        .transpose()?;
    let client = Client::connect(&addr, options)?;
    let json = cli.json;
    let mut out = io::stdout().lock();
    let result = match cli.command {
        Command::Put {
            key,
            value,
            if_absent,
            if_revision,
            ephemeral,
            grace,
            hold: _,
        } => {
            let condition = match (if_absent, if_revision) {
                (true, _) => Condition::MustNotExist,
                (false, Some(rev)) => Condition::RevisionEquals(rev),
                (false, None) => Condition::None,
            };
            let ephemeral = match (ephemeral, grace) {
                (false, _) => None,
                (true, None) => Some(Duration::ZERO),
                (true, Some(secs)) => Some(
                    Duration::try_from_secs_f64(secs)
                        .map_err(|_| failure(2, format!("invalid --grace {secs}")))?,
                ),
            };
            let result = put(&client, &mut out, json, &key, value, condition, ephemeral);
            match (result, stop_signals) {
                (Ok(value), Some(signals)) => {
                    drop(out);
                    return hold_key(client, &key, value, signals);
                }
                (result, _) => result.map(drop),
            }
        }
        Command::Get { key } => get(&client, &mut out, json, &key),
        Command::List { prefix } => list(&client, &mut out, json, prefix.as_deref()),
        Command::Del { key, prefix } => del(&client, &mut out, json, key, prefix),
        Command::Watch {
            key,
            since,
            grouped,
        } => {
            drop(out);
            return watch(client, json, key.as_deref().unwrap_or(""), since, grouped);
        }
        Command::Txn { words } => txn(&client, &mut out, json, words),
        Command::Wait { key, value, absent } => {
            let until = match (value, absent) {
                (Some(v), _) => WaitFor::Value(bytes::Bytes::from(v.into_encoded_bytes())),
                (None, true) => WaitFor::Absent,
                (None, false) => WaitFor::Present,
            };
            match client.wait(&key, &until, given) {
                Ok(true) => Ok(()),
                Ok(false) => Err(failure(
                    1,
                    format!("timed out waiting for {key} ({})", describe(&until)),
                )),
                Err(e) => Err(e.into()),
            }
        }
        Command::Stats => stats(&client, &mut out, json),
        Command::Compact => compact(&client, &mut out, json),
    };
    client.close();
    result?;
    out.flush().map_err(write_failure)
}

fn describe(until: &WaitFor) -> String {
    match until {
        WaitFor::Present => "to exist".into(),
        WaitFor::Value(v) => format!("the value {}", String::from_utf8_lossy(v)),
        WaitFor::Absent => "to be absent".into(),
    }
}

/// A failed write to stdout. A reader that went away (`nkv list | head`)
/// is a normal end: status 0 and nothing said.
fn write_failure(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        return failure(0, "");
    }
    failure(2, format!("writing to stdout: {e}"))
}

fn put(
    client: &Client,
    out: &mut impl Write,
    json: bool,
    key: &str,
    value: Option<OsString>,
    condition: Condition,
    ephemeral: Option<Duration>,
) -> Result<Vec<u8>, Failure> {
    let value = match value {
        Some(v) => v.into_vec(),
        None => {
            let mut buf = Vec::new();
            io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| failure(2, format!("reading the value from stdin: {e}")))?;
            buf
        }
    };
    let revision = match ephemeral {
        Some(grace) => client.put_ephemeral(key, &value, condition, grace)?,
        None => client.put(key, &value, condition)?,
    };
    if json {
        writeln!(out, "{}", json!({ "key": key, "revision": revision }))
    } else {
        writeln!(out, "{revision}")
    }
    .and_then(|()| out.flush())
    .map_err(write_failure)?;
    Ok(value)
}

/// Blocks SIGINT and SIGTERM in this thread (and so in every thread it
/// starts later), for [`hold_key`] to wait for them.
fn block_stop_signals() -> Result<libc::sigset_t, Failure> {
    // SAFETY: a zeroed sigset_t is valid storage; sigemptyset and
    // sigaddset initialise it, and pthread_sigmask only changes this
    // thread's signal mask.
    let status = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        match libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) {
            0 => Ok(set),
            e => Err(e),
        }
    };
    status.map_err(|e| failure(2, format!("cannot block SIGINT/SIGTERM: error {e}")))
}

/// Why `put --hold` stops holding.
enum Held {
    /// SIGINT or SIGTERM: the user is done.
    Signal,
    /// The key was deleted, holds another value, or could not be taken
    /// back after a reconnect.
    Lost(String),
}

/// `put --ephemeral --hold`: keeps the client (and so the key) until
/// SIGINT/SIGTERM, or until the key is lost.
fn hold_key(
    client: Client,
    key: &str,
    mine: Vec<u8>,
    signals: libc::sigset_t,
) -> Result<(), Failure> {
    let (tx, rx) = mpsc::channel::<Held>();
    let on_signal = tx.clone();
    std::thread::spawn(move || {
        let mut signal = 0;
        // SAFETY: `signals` was initialised by `block_stop_signals`, and
        // `signal` is writable.
        if unsafe { libc::sigwait(&signals, &mut signal) } == 0 {
            let _ = on_signal.send(Held::Signal);
        }
    });
    // Watch the key itself: deleted, or holding someone else's value.
    let watched = key.to_owned();
    let on_event = tx.clone();
    let handler = Box::new(move |_id: u32, event: &SubscriptionEvent| {
        let lost = match event {
            SubscriptionEvent::Delete { key, .. } if *key == watched => "it was deleted",
            SubscriptionEvent::Update { key, value, .. }
                if *key == watched && value[..] != mine[..] =>
            {
                "someone else wrote it"
            }
            SubscriptionEvent::Closed { .. } => "the subscription to it was closed",
            _ => return,
        };
        let _ = on_event.send(Held::Lost(lost.to_owned()));
    });
    client.subscribe(key, None, handler)?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let held = std::thread::scope(|s| {
        s.spawn(|| {
            // A re-assertion that failed after a reconnect.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if !client.ephemeral_keys().iter().any(|k| k == key) {
                    let why = "it could not be taken back after a reconnect";
                    let _ = tx.send(Held::Lost(why.to_owned()));
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let held = rx.recv().unwrap_or(Held::Signal);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        held
    });
    client.close();
    match held {
        Held::Signal => Ok(()),
        Held::Lost(why) => Err(failure(2, format!("lost the ephemeral key {key}: {why}"))),
    }
}

/// `nkv txn WORD...` (see `TXN_HELP`).
fn txn(
    client: &Client,
    out: &mut impl Write,
    json: bool,
    words: Vec<OsString>,
) -> Result<(), Failure> {
    let txn = parse_txn(words)?;
    match client.txn(&txn) {
        Ok(done) => if json {
            writeln!(
                out,
                "{}",
                json!({ "revision": done.revision, "deleted": done.deleted })
            )
        } else {
            writeln!(out, "{} ({} deleted)", done.revision, done.deleted)
        }
        .map_err(write_failure),
        Err(e) if e.kind == ErrorKind::ConditionFailed => {
            let key = e.failed_key.clone().unwrap_or_default();
            let current = e.current_revision.unwrap_or(0);
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({ "failed_key": key, "current_revision": current })
                )
                .map_err(write_failure)?;
            }
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Parses the words of `nkv txn` into a transaction.
fn parse_txn(words: Vec<OsString>) -> Result<Txn, Failure> {
    let mut words = words.into_iter();
    let mut txn = Txn::new();
    let usage = |message: String| failure(2, format!("{message} (see nkv txn --help)"));
    let text = |word: OsString, what: &str| {
        word.into_string()
            .map_err(|w| usage(format!("{what} {w:?} is not valid UTF-8")))
    };
    while let Some(word) = words.next() {
        let word = text(word, "word")?;
        let mut arg = |what: &str| {
            words
                .next()
                .ok_or_else(|| usage(format!("{word} needs a {what}")))
        };
        txn = match word.as_str() {
            "if-absent" => txn.if_absent(text(arg("key")?, "key")?),
            "if-present" => txn.if_present(text(arg("key")?, "key")?),
            "if-rev" => {
                let key = text(arg("key")?, "key")?;
                let rev = text(arg("revision")?, "revision")?;
                let rev = rev
                    .parse::<u64>()
                    .map_err(|_| usage(format!("if-rev {key}: {rev:?} is not a revision")))?;
                txn.if_revision(key, rev)
            }
            "put" => {
                let key = text(arg("key")?, "key")?;
                let value = arg("value")?.into_vec();
                txn.put(key, value)
            }
            "del" => txn.delete(text(arg("key")?, "key")?),
            "del-prefix" => txn.delete_prefix(text(arg("prefix")?, "prefix")?),
            other => return Err(usage(format!("unknown word {other:?}"))),
        };
    }
    Ok(txn)
}

fn get(client: &Client, out: &mut impl Write, json: bool, key: &str) -> Result<(), Failure> {
    let Some(entry) = client.get(key)? else {
        return Err(failure(1, format!("key {key:?} not found")));
    };
    if json {
        writeln!(out, "{}", entry_json(key, &entry.value, entry.revision))
    } else {
        out.write_all(&entry.value)
    }
    .map_err(write_failure)
}

fn list(
    client: &Client,
    out: &mut impl Write,
    json: bool,
    prefix: Option<&str>,
) -> Result<(), Failure> {
    for e in client.list(prefix.unwrap_or(""))? {
        if json {
            writeln!(out, "{}", entry_json(&e.key, &e.value, e.revision))
        } else {
            let (key, value) = (printable(e.key.as_bytes()), printable(&e.value));
            writeln!(out, "{key} = {value} (rev {})", e.revision)
        }
        .map_err(write_failure)?;
    }
    Ok(())
}

fn del(
    client: &Client,
    out: &mut impl Write,
    json: bool,
    key: Option<String>,
    prefix: Option<String>,
) -> Result<(), Failure> {
    let (revision, deleted) = match (key, prefix) {
        (Some(key), _) => match client.delete(&key, Condition::None) {
            Ok(revision) => (revision, 1),
            Err(e) if e.kind == ErrorKind::NotFound => {
                return Err(failure(1, format!("key {key:?} not found")))
            }
            Err(e) => return Err(e.into()),
        },
        (None, Some(prefix)) => client.delete_prefix(&prefix)?,
        (None, None) => unreachable!("clap requires KEY or --prefix"),
    };
    if json {
        writeln!(
            out,
            "{}",
            json!({ "revision": revision, "deleted": deleted })
        )
    } else {
        writeln!(out, "{deleted} deleted (rev {revision})")
    }
    .map_err(write_failure)
}

fn stats(client: &Client, out: &mut impl Write, json: bool) -> Result<(), Failure> {
    let stats = client.stats()?;
    if json {
        let object: Map<String, Value> = stats
            .into_iter()
            .map(|(name, value)| (name, Value::from(value)))
            .collect();
        return writeln!(out, "{}", Value::Object(object)).map_err(write_failure);
    }
    let width = stats.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let value_width = stats
        .iter()
        .map(|(_, v)| v.to_string().len())
        .max()
        .unwrap_or(0);
    for (name, value) in stats {
        let name = printable(name.as_bytes());
        writeln!(out, "{name:<width$}  {value:>value_width$}").map_err(write_failure)?;
    }
    Ok(())
}

fn compact(client: &Client, out: &mut impl Write, json: bool) -> Result<(), Failure> {
    let (before, after) = client.compact()?;
    if json {
        writeln!(
            out,
            "{}",
            json!({ "bytes_before": before, "bytes_after": after })
        )
    } else {
        writeln!(out, "compacted: {before} bytes -> {after} bytes")
    }
    .map_err(write_failure)
}

/// Prints events until the subscription closes or stdout goes away.
fn watch(
    client: Client,
    json: bool,
    prefix: &str,
    since: Option<u64>,
    grouped: bool,
) -> Result<(), Failure> {
    // The handler runs on the client's dispatcher thread; it reports the end
    // (Closed, or a failed write) to this thread, which then closes.
    let (end_tx, end_rx) = mpsc::channel::<Result<(), Failure>>();
    let handler = Box::new(move |_subscription: u32, event: &SubscriptionEvent| {
        let line = if json {
            event_json(event).to_string()
        } else {
            event_line(event)
        };
        let mut out = io::stdout().lock();
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            let _ = end_tx.send(Err(write_failure(e)));
        }
        if let SubscriptionEvent::Closed { reason } = event {
            let _ = end_tx.send(Err(failure(2, format!("subscription closed: {reason}"))));
        }
    });
    if grouped {
        client.subscribe_grouped(prefix, since, handler)?;
    } else {
        client.subscribe(prefix, since, handler)?;
    }
    let result = end_rx
        .recv()
        .unwrap_or_else(|_| Err(failure(2, "the client stopped")));
    client.close();
    result
}

/// ", N coalesced" when updates were skipped, else nothing.
fn coalesced_note(coalesced: u64) -> String {
    if coalesced > 0 {
        format!(", {coalesced} coalesced")
    } else {
        String::new()
    }
}

fn event_line(event: &SubscriptionEvent) -> String {
    match event {
        SubscriptionEvent::Update {
            key,
            value,
            revision,
            coalesced,
        } => {
            let skipped = coalesced_note(*coalesced);
            format!(
                "UPDATE {} = {} (rev {revision}{skipped})",
                printable(key.as_bytes()),
                printable(value)
            )
        }
        SubscriptionEvent::Delete {
            key,
            revision,
            coalesced,
        } => {
            let skipped = coalesced_note(*coalesced);
            format!(
                "DELETE {} (rev {revision}{skipped})",
                printable(key.as_bytes())
            )
        }
        SubscriptionEvent::Synced { revision } => format!("SYNCED at rev {revision}"),
        SubscriptionEvent::Reset => "RESET".to_owned(),
        SubscriptionEvent::Group { count, revision } => {
            format!("GROUP of {count} at rev {revision}")
        }
        SubscriptionEvent::Disconnected => "DISCONNECTED".to_owned(),
        SubscriptionEvent::Closed { reason } => {
            format!("CLOSED {}", printable(reason.as_bytes()))
        }
    }
}

fn event_json(event: &SubscriptionEvent) -> Value {
    match event {
        SubscriptionEvent::Update {
            key,
            value,
            revision,
            coalesced,
        } => {
            let mut v = entry_json(key, value, *revision);
            v["event"] = json!("update");
            v["coalesced"] = json!(coalesced);
            v
        }
        SubscriptionEvent::Delete {
            key,
            revision,
            coalesced,
        } => json!({
            "event": "delete", "key": key, "revision": revision, "coalesced": coalesced
        }),
        SubscriptionEvent::Synced { revision } => {
            json!({ "event": "synced", "revision": revision })
        }
        SubscriptionEvent::Reset => json!({ "event": "reset" }),
        SubscriptionEvent::Group { count, revision } => {
            json!({ "event": "group", "count": count, "revision": revision })
        }
        SubscriptionEvent::Disconnected => json!({ "event": "disconnected" }),
        SubscriptionEvent::Closed { reason } => json!({ "event": "closed", "reason": reason }),
    }
}

/// `{"key", "value" | "value_hex", "revision"}`: the value as text when it
/// is UTF-8, else as hex, so that every value survives JSON.
fn entry_json(key: &str, value: &[u8], revision: u64) -> Value {
    match std::str::from_utf8(value) {
        Ok(text) => json!({ "key": key, "value": text, "revision": revision }),
        Err(_) => json!({ "key": key, "value_hex": hex(value), "revision": revision }),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes as one printable line: invalid UTF-8 replaced, control characters
/// and backslashes escaped, so a value cannot forge lines or terminal
/// escape sequences.
fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_characters() {
        assert_eq!(printable(b"up"), "up");
        assert_eq!(printable(b"a\nb\x1b[31m\\"), "a\\nb\\u{1b}[31m\\\\");
        assert_eq!(printable(b"\xff"), "\u{fffd}");
    }

    #[test]
    fn json_values_are_text_or_hex() {
        assert_eq!(
            entry_json("k", b"v", 3).to_string(),
            r#"{"key":"k","revision":3,"value":"v"}"#
        );
        assert_eq!(entry_json("k", b"\xff\x00", 3)["value_hex"], "ff00");
    }

    #[test]
    fn event_lines() {
        let update = SubscriptionEvent::Update {
            key: "net.eth0".into(),
            value: bytes::Bytes::from_static(b"up"),
            revision: 5,
            coalesced: 0,
        };
        assert_eq!(event_line(&update), "UPDATE net.eth0 = up (rev 5)");
        assert_eq!(
            event_line(&SubscriptionEvent::Synced { revision: 7 }),
            "SYNCED at rev 7"
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
