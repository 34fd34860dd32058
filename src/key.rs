//! Keys: what a valid key is, and which keys a prefix covers.
//!
//! A key is UTF-8 text made of dot-separated, non-empty segments
//! (`net.eth0.state`). Whitespace, control characters and `*` (reserved for
//! patterns) are refused. Keys are never used as file names anywhere in nkv,
//! so `../etc/passwd`-style keys are harmless text, but they are still refused
//! here because `..` contains an empty segment.
//!
//! A *prefix* names a subtree: `net` covers `net` itself and every key below
//! it (`net.eth0`, `net.eth0.state`), but not `network`. The empty prefix
//! covers every key.

use std::fmt;

/// Default maximum key length in bytes.
pub const DEFAULT_MAX_KEY_LEN: usize = 1024;

/// The character that separates key segments.
pub const SEPARATOR: char = '.';

/// The character reserved for patterns; never valid in a key.
pub const RESERVED: char = '*';

/// Why a key (or prefix) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is the empty string.
    Empty,
    /// The key is longer than the configured limit (in bytes).
    TooLong {
        /// Length of the refused key in bytes.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The key starts or ends with a dot, or has two dots in a row.
    EmptySegment,
    /// The key holds whitespace, a control character or the reserved `*`.
    ForbiddenChar {
        /// The offending character.
        ch: char,
        /// Its byte offset in the key.
        at: usize,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => write!(f, "key is empty"),
            KeyError::TooLong { len, max } => {
                write!(f, "key is {len} bytes, more than the limit of {max}")
            }
            KeyError::EmptySegment => write!(
                f,
                "key has an empty segment (leading, trailing or doubled '.')"
            ),
            KeyError::ForbiddenChar { ch, at } => {
                write!(f, "key has forbidden character {ch:?} at byte {at}")
            }
        }
    }
}

impl std::error::Error for KeyError {}

/// Checks that `key` is a valid key no longer than `max_len` bytes.
pub fn validate_key(key: &str, max_len: usize) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    validate_prefix(key, max_len)
}

/// Checks that `prefix` is a valid prefix: either empty (everything) or a
/// valid key.
pub fn validate_prefix(prefix: &str, max_len: usize) -> Result<(), KeyError> {
    if prefix.len() > max_len {
        return Err(KeyError::TooLong {
            len: prefix.len(),
            max: max_len,
        });
    }
    if prefix.is_empty() {
        return Ok(());
    }
    if let Some((at, ch)) = prefix
        .char_indices()
        .find(|&(_, c)| c.is_whitespace() || c.is_control() || c == RESERVED)
    {
        return Err(KeyError::ForbiddenChar { ch, at });
    }
    if prefix.split(SEPARATOR).any(str::is_empty) {
        return Err(KeyError::EmptySegment);
    }
    Ok(())
}

/// True when `prefix` covers `key`: the key is the prefix itself or lies
/// below it on a segment boundary. The empty prefix covers every key.
pub fn covers(prefix: &str, key: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    match key.strip_prefix(prefix) {
        Some("") => true,
        Some(rest) => rest.starts_with(SEPARATOR),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dotted_keys() {
        for key in ["a", "net.eth0.state", "ünïcode.ключ", "a-b_c:d/e"] {
            assert_eq!(validate_key(key, 64), Ok(()), "{key}");
        }
    }

    #[test]
    fn refuses_bad_keys() {
        assert_eq!(validate_key("", 64), Err(KeyError::Empty));
        assert_eq!(validate_key(".a", 64), Err(KeyError::EmptySegment));
        assert_eq!(validate_key("a.", 64), Err(KeyError::EmptySegment));
        assert_eq!(validate_key("a..b", 64), Err(KeyError::EmptySegment));
        assert_eq!(
            validate_key("a b", 64),
            Err(KeyError::ForbiddenChar { ch: ' ', at: 1 })
        );
        assert_eq!(
            validate_key("a\nb", 64),
            Err(KeyError::ForbiddenChar { ch: '\n', at: 1 })
        );
        assert_eq!(
            validate_key("net.*", 64),
            Err(KeyError::ForbiddenChar { ch: '*', at: 4 })
        );
        assert_eq!(
            validate_key("abcde", 4),
            Err(KeyError::TooLong { len: 5, max: 4 })
        );
    }

    #[test]
    fn empty_prefix_is_valid_and_covers_all() {
        assert_eq!(validate_prefix("", 8), Ok(()));
        assert!(covers("", "anything.at.all"));
    }

    #[test]
    fn covers_on_segment_boundaries() {
        assert!(covers("net", "net"));
        assert!(covers("net", "net.eth0"));
        assert!(covers("net.eth0", "net.eth0.state"));
        assert!(!covers("net", "network"));
        assert!(!covers("net.eth0", "net.eth"));
        assert!(!covers("net.eth0", "net"));
    }
}
