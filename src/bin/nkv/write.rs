//! The commands that change keys: put (and holding an ephemeral key), del,
//! txn.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;

use nkv::client::{Client, ErrorKind, SubscriptionEvent};
use nkv::protocol::{Condition, Txn};

use super::format::write_failure;
use super::{failure, Failure};

pub(crate) fn put(
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
pub(crate) fn block_stop_signals() -> Result<libc::sigset_t, Failure> {
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
pub(crate) fn hold_key(
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
pub(crate) fn txn(
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
pub(crate) fn parse_txn(words: Vec<OsString>) -> Result<Txn, Failure> {
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

pub(crate) fn del(
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
