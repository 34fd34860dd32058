//! How values and events are printed: as text that cannot forge lines or
//! terminal escapes, or as JSON.

use std::io;

use serde_json::{json, Value};

use super::{failure, Failure};

/// A failed write to stdout. A reader that went away (`nkv list | head`)
/// is a normal end: status 0 and nothing said.
pub(crate) fn write_failure(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        return failure(0, "");
    }
    failure(2, format!("writing to stdout: {e}"))
}

/// `{"key", "value" | "value_hex", "revision"}`: the value as text when it
/// is UTF-8, else as hex, so that every value survives JSON.
pub(crate) fn entry_json(key: &str, value: &[u8], revision: u64) -> Value {
    match std::str::from_utf8(value) {
        Ok(text) => json!({ "key": key, "value": text, "revision": revision }),
        Err(_) => json!({ "key": key, "value_hex": hex(value), "revision": revision }),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes as one printable line: invalid UTF-8 replaced, control characters
/// and backslashes escaped, so a value cannot forge lines or terminal
/// escape sequences.
pub(crate) fn printable(bytes: &[u8]) -> String {
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
}
