//! `nkv dump` and `nkv restore`: every key, value and revision as JSON
//! lines, for backups and migration, and their import.
//!
//! One object per line, `{"key": K, "value": TEXT, "revision": R}`, or
//! `"value_hex"` instead of `"value"` when the value is not UTF-8 (the same
//! shape as `nkv list --json`). The dump is one LIST, so it is consistent
//! at one revision. Revisions are the source's, for the record: a restore
//! writes every key anew, and the server gives it a new revision.

use std::io::{BufRead, Write};

use serde_json::{json, Value};

use nkv::client::Client;
use nkv::protocol::wire::MAX_TXN_OPS;
use nkv::protocol::{Condition, Txn};

use super::format::{entry_json, write_failure};
use super::{failure, Failure};

/// Bytes a key costs in a transaction beside its key and value (the
/// server's bound on a transaction, `protocol.md` section 7).
const TXN_KEY_COST: usize = 7;

/// `nkv dump [PREFIX]`: every key under `prefix` as JSON lines.
pub(crate) fn dump(client: &Client, out: &mut impl Write, prefix: &str) -> Result<(), Failure> {
    for e in client.list(prefix)? {
        writeln!(out, "{}", entry_json(&e.key, &e.value, e.revision)).map_err(write_failure)?;
    }
    Ok(())
}

/// One line of a dump, read back.
fn parse_line(line: &str, number: usize) -> Result<(String, Vec<u8>), Failure> {
    let bad = |why: &str| failure(2, format!("line {number}: {why}"));
    let value: Value = serde_json::from_str(line).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let key = value["key"]
        .as_str()
        .ok_or_else(|| bad("no \"key\" string"))?
        .to_owned();
    let bytes = match (&value["value"], &value["value_hex"]) {
        (Value::String(text), Value::Null) => text.as_bytes().to_vec(),
        (Value::Null, Value::String(hex)) => {
            unhex(hex).ok_or_else(|| bad("\"value_hex\" is not hex"))?
        }
        _ => {
            return Err(bad(
                "needs exactly one of \"value\" (text) or \"value_hex\"",
            ))
        }
    };
    Ok((key, bytes))
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

/// `nkv restore [FILE]`: writes every key of a dump. The whole file is
/// read and checked first (a broken line writes nothing); then keys are
/// written in transactions as large as the server takes, so a dump that
/// fits in one is restored atomically. A value too large for any
/// transaction is written with a plain PUT.
pub(crate) fn restore(
    client: &Client,
    out: &mut impl Write,
    json: bool,
    input: impl BufRead,
) -> Result<(), Failure> {
    let mut entries = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| failure(2, format!("reading the dump: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        entries.push(parse_line(&line, n + 1)?);
    }
    let budget = client.server_limits().max_value as usize;
    let (mut first, mut last, mut writes) = (None, 0u64, 0u64);
    let mut note = |revision: u64| {
        first.get_or_insert(revision);
        last = revision;
        writes += 1;
    };
    let mut txn = Txn::new();
    let mut size = 0;
    for (key, value) in &entries {
        let cost = key.len() + value.len() + TXN_KEY_COST;
        if cost > budget {
            note(client.put(key, value, Condition::None)?);
            continue;
        }
        if size + cost > budget || txn.ops.len() >= MAX_TXN_OPS {
            note(client.txn(&std::mem::take(&mut txn))?.revision);
            size = 0;
        }
        txn = txn.put(key, value.clone());
        size += cost;
    }
    if !txn.ops.is_empty() {
        note(client.txn(&txn)?.revision);
    }
    let restored = entries.len();
    let line = if json {
        json!({ "restored": restored, "writes": writes, "first_revision": first, "last_revision": last })
            .to_string()
    } else {
        match first {
            Some(first) if writes > 1 => {
                format!("restored {restored} keys in {writes} writes (revisions {first}..{last})")
            }
            Some(first) => format!("restored {restored} keys at revision {first}"),
            None => "restored 0 keys".to_owned(),
        }
    };
    writeln!(out, "{line}").map_err(write_failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_back_text_and_hex_values() {
        assert_eq!(
            parse_line(r#"{"key":"a","value":"up","revision":3}"#, 1).ok(),
            Some(("a".into(), b"up".to_vec()))
        );
        assert_eq!(
            parse_line(r#"{"key":"b","value_hex":"ff00"}"#, 2).ok(),
            Some(("b".into(), vec![0xff, 0])),
        );
        let err = parse_line(r#"{"key":"c"}"#, 7).err().unwrap();
        assert!(err.message.starts_with("line 7:"), "{}", err.message);
        assert!(parse_line(r#"{"key":"c","value_hex":"f"}"#, 1).is_err());
        assert!(parse_line("not json", 1).is_err());
    }
}
