//! The commands that read: get, list, stats, compact, watch.

use std::io::{self, IsTerminal, Write};
use std::sync::mpsc;

use serde_json::{json, Map, Value};

use nkv::client::{Client, SubscriptionEvent};

use super::format::{entry_json, printable, write_failure};
use super::{failure, Failure};

pub(crate) fn get(
    client: &Client,
    out: &mut impl Write,
    json: bool,
    key: &str,
) -> Result<(), Failure> {
    let Some(entry) = client.get(key)? else {
        return Err(failure(1, format!("key {key:?} not found")));
    };
    if json {
        writeln!(out, "{}", entry_json(key, &entry.value, entry.revision))
    } else {
        // A shell prompt must not end up glued to the value; a pipe gets
        // the bytes exactly.
        let newline = io::stdout().is_terminal() && !entry.value.ends_with(b"\n");
        out.write_all(&entry.value).and_then(|_| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
    }
    .map_err(write_failure)
}

pub(crate) fn list(
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

pub(crate) fn stats(client: &Client, out: &mut impl Write, json: bool) -> Result<(), Failure> {
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

pub(crate) fn compact(client: &Client, out: &mut impl Write, json: bool) -> Result<(), Failure> {
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
pub(crate) fn watch(
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
pub(crate) fn coalesced_note(coalesced: u64) -> String {
    if coalesced > 0 {
        format!(", {coalesced} coalesced")
    } else {
        String::new()
    }
}

pub(crate) fn event_line(event: &SubscriptionEvent) -> String {
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

pub(crate) fn event_json(event: &SubscriptionEvent) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
