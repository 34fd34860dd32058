//! Wire error codes and the codec's own error type.
//!
//! [`ErrorCode`] is the table "Error codes" of `protocol.md`, one variant per
//! row. The numbers equal the C client's status numbers where both exist, so
//! the C ABI can pass a server's code through unchanged; 6 (CONNECTION) and
//! 12 (PANIC) exist only on the client side and are never sent.
//!
//! [`FrameError`] is what a decoder returns when the byte stream itself is
//! broken (the connection cannot continue) and what an encoder returns when
//! a frame cannot be written within the limits.

use std::fmt;
use std::io;

/// An error code carried by ERROR and CLOSED frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The key does not exist (GET, single-key DEL), or the subscription
    /// named by UNSUB is not active.
    NotFound = 1,
    /// The condition of a PUT or DEL did not hold; the ERROR carries the
    /// key's current revision (0 = absent).
    ConditionFailed = 2,
    /// A key or prefix is not valid (bad UTF-8, empty segment, forbidden
    /// character, too long).
    InvalidKey = 3,
    /// A value or frame is over the server's limits (a key over `max_key` is
    /// [`ErrorCode::InvalidKey`]).
    TooLarge = 4,
    /// A field has a value the request does not allow (unknown flag bits,
    /// unknown condition, duplicate subscription id, ...).
    InvalidArgument = 5,
    /// The client did not send HELLO in time. Closes the connection.
    Timeout = 7,
    /// The byte stream cannot be decoded, or the handshake was violated.
    /// Closes the connection.
    Protocol = 8,
    /// Reserved for access control; not sent by version 1 servers.
    Unauthorized = 9,
    /// An internal server error.
    Server = 10,
    /// The server is shutting down. Closes the connection.
    ShuttingDown = 11,
    /// The frame type is not known to the server.
    Unsupported = 13,
    /// A server limit was reached (connections, subscriptions).
    Limit = 14,
    /// The store could not persist the write (disk full, I/O error,
    /// failed fsync); nothing was acknowledged.
    Storage = 15,
    /// The server speaks no version the client offered. Closes the connection.
    UnsupportedVersion = 16,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::NotFound,
        ErrorCode::ConditionFailed,
        ErrorCode::InvalidKey,
        ErrorCode::TooLarge,
        ErrorCode::InvalidArgument,
        ErrorCode::Timeout,
        ErrorCode::Protocol,
        ErrorCode::Unauthorized,
        ErrorCode::Server,
        ErrorCode::ShuttingDown,
        ErrorCode::Unsupported,
        ErrorCode::Limit,
        ErrorCode::Storage,
        ErrorCode::UnsupportedVersion,
    ];

    /// The code for a wire number, or `None` if version 1 defines no such code.
    pub fn from_u16(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_u16() == code)
    }

    /// The wire number.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The name used in `protocol.md`, e.g. `"NOT_FOUND"`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::ConditionFailed => "CONDITION_FAILED",
            ErrorCode::InvalidKey => "INVALID_KEY",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Protocol => "PROTOCOL",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Server => "SERVER",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::Limit => "LIMIT",
            ErrorCode::Storage => "STORAGE",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
        }
    }

    /// True for the codes after which the server always closes the
    /// connection.
    ///
    /// Independently of the code, the connection also closes after an ERROR
    /// with id 0 and after an ERROR answering HELLO (`protocol.md`, "Errors").
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::Timeout
                | ErrorCode::Protocol
                | ErrorCode::ShuttingDown
                | ErrorCode::UnsupportedVersion
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fatal codec error: the stream cannot be decoded any further, or a
/// frame cannot be encoded.
///
/// A server that gets one from its decoder answers with an ERROR frame of
/// id 0 and code [`FrameError::code`], then closes the connection. A client
/// that gets one closes the connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum FrameError {
    /// The length field is below [`MIN_FRAME_LENGTH`](super::wire::MIN_FRAME_LENGTH).
    TooShort {
        /// The length field as received.
        length: u32,
    },
    /// The frame is over the maximum frame length (decoding: the length
    /// field; encoding: the frame that was to be written).
    TooLarge {
        /// The length the frame has (or would have) after its length prefix.
        length: u64,
        /// The configured maximum.
        max: u32,
    },
    /// The fields of a frame do not fill its length exactly (a field runs
    /// past the end, or bytes are left over), or a field holds a value the
    /// frame type never allows from this peer.
    Malformed {
        /// The frame type byte.
        frame_type: u8,
        /// What is wrong, for logs and the ERROR message.
        reason: &'static str,
    },
    /// A frame that must carry a non-zero id carries 0.
    ZeroId {
        /// The frame type byte.
        frame_type: u8,
    },
    /// HELLO did not start with [`MAGIC`](super::wire::MAGIC).
    BadMagic {
        /// The four bytes received instead.
        magic: [u8; 4],
    },
    /// A client got a frame type the server must never send.
    UnknownType {
        /// The frame type byte.
        frame_type: u8,
    },
    /// A client got an ERROR or CLOSED code that version 1 does not define.
    UnknownErrorCode {
        /// The code as received.
        code: u16,
    },
    /// A string or byte field is longer than its length prefix can express
    /// (encoding only).
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The underlying transport failed (never produced by the codec itself;
    /// required by the `tokio_util::codec` traits).
    Io(io::Error),
}

impl FrameError {
    /// The wire code a server sends (with id 0) before closing the
    /// connection because of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::TooLarge,
            FrameError::Io(_) => ErrorCode::Server,
            _ => ErrorCode::Protocol,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooShort { length } => {
                write!(f, "frame length {length} is below the minimum of 5")
            }
            FrameError::TooLarge { length, max } => {
                write!(f, "frame length {length} is over the maximum of {max}")
            }
            FrameError::Malformed { frame_type, reason } => {
                write!(f, "malformed frame of type 0x{frame_type:02X}: {reason}")
            }
            FrameError::ZeroId { frame_type } => {
                write!(f, "frame of type 0x{frame_type:02X} has the reserved id 0")
            }
            FrameError::BadMagic { magic } => {
                write!(f, "HELLO has magic {magic:02X?}, expected \"NKV\\0\"")
            }
            FrameError::UnknownType { frame_type } => {
                write!(f, "unexpected frame type 0x{frame_type:02X}")
            }
            FrameError::UnknownErrorCode { code } => write!(f, "unknown error code {code}"),
            FrameError::FieldTooLong { field, len } => {
                write!(
                    f,
                    "field {field} is {len} bytes, too long for its length prefix"
                )
            }
            FrameError::Io(e) => write!(f, "transport error: {e}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(code.as_u16()), Some(code));
        }
        let mut numbers: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.as_u16()).collect();
        numbers.dedup();
        assert_eq!(numbers.len(), ErrorCode::ALL.len());
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "ALL is sorted");
    }

    #[test]
    fn client_only_statuses_are_not_wire_codes() {
        for n in [0, 6, 12, 17, u16::MAX] {
            assert_eq!(ErrorCode::from_u16(n), None, "{n}");
        }
    }

    #[test]
    fn closing_codes() {
        let closing: Vec<_> = ErrorCode::ALL
            .into_iter()
            .filter(|c| c.closes_connection())
            .map(ErrorCode::name)
            .collect();
        assert_eq!(
            closing,
            [
                "TIMEOUT",
                "PROTOCOL",
                "SHUTTING_DOWN",
                "UNSUPPORTED_VERSION"
            ]
        );
    }
}
