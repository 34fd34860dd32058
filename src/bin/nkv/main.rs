//! `nkv`: the command-line client. Thin by design: parse flags, call
//! [`nkv::client`], print. `write.rs` has the commands that change keys,
//! `read.rs` those that read them, `dump.rs` dump and restore, `format.rs`
//! how values are printed.

mod dump;
mod format;
mod read;
mod write;

use std::ffi::OsString;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, CommandFactory, Parser, Subcommand};

use nkv::addr::Address;
use nkv::client::{Client, ClientOptions, Error, ErrorKind, WaitFor};
use nkv::protocol::Condition;

use format::write_failure;
use read::{compact, get, list, stats, watch};
use write::{block_stop_signals, del, hold_key, put, txn};

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
    /// Print a key's value as raw bytes; a newline is added when stdout is
    /// a terminal and the value does not end with one (never in a pipe).
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
    /// Print every key under PREFIX (all keys when omitted) with its value
    /// and revision as JSON lines: a backup `nkv restore` reads back.
    Dump {
        /// The prefix (all keys when omitted).
        prefix: Option<String>,
    },
    /// Write every key of a dump (from FILE, or stdin when omitted or -).
    /// The file is checked whole first: a broken line writes nothing. Keys
    /// get new revisions; a dump that fits in one transaction is restored
    /// atomically.
    Restore {
        /// The dump file.
        file: Option<std::path::PathBuf>,
    },
    /// Print the shell completion script (e.g. `nkv completions bash >
    /// /etc/bash_completion.d/nkv`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: nkv::cli_docs::Shell,
    },
    /// Print the man page, or with --dir write one page per command there.
    Man {
        /// Write nkv.1 and a page per subcommand into DIR.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
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

/// The commands that need no server: completions and man pages.
fn offline(command: &Command) -> Option<Result<(), Failure>> {
    match command {
        Command::Completions { shell } => {
            nkv::cli_docs::completions(Cli::command(), *shell, &mut io::stdout());
            Some(Ok(()))
        }
        Command::Man { dir: None } => {
            Some(nkv::cli_docs::man_page(Cli::command(), &mut io::stdout()).map_err(write_failure))
        }
        Command::Man { dir: Some(dir) } => Some(
            nkv::cli_docs::man_pages(Cli::command(), dir)
                .map_err(|e| failure(2, format!("writing man pages into {}: {e}", dir.display())))
                .and_then(|pages| {
                    let mut out = io::stdout().lock();
                    pages
                        .iter()
                        .try_for_each(|p| writeln!(out, "{}", p.display()))
                        .map_err(write_failure)
                }),
        ),
        _ => None,
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    if let Some(done) = offline(&cli.command) {
        return done;
    }
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
        Command::Dump { prefix } => dump::dump(&client, &mut out, prefix.as_deref().unwrap_or("")),
        Command::Restore { file } => {
            let input: Box<dyn io::BufRead> = match file {
                Some(path) if path.as_os_str() != "-" => Box::new(io::BufReader::new(
                    std::fs::File::open(&path)
                        .map_err(|e| failure(2, format!("{}: {e}", path.display())))?,
                )),
                _ => Box::new(io::stdin().lock()),
            };
            dump::restore(&client, &mut out, json, input)
        }
        Command::Completions { .. } | Command::Man { .. } => unreachable!("handled offline"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
