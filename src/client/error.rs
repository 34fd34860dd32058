//! The client's one error type.
//!
//! [`ErrorKind`] numbers equal the C library's `nkv_status` values, so the
//! C layer passes `kind as u32` through unchanged; the wire's
//! [`ErrorCode`]s map onto kinds one-to-one (SHUTTING_DOWN becomes
//! [`ErrorKind::Closed`], because to a caller a server going away and a
//! client being closed call for the same reaction).

use std::fmt;

use crate::key::KeyError;
use crate::protocol::{ErrorCode, ErrorFrame, FrameError};

/// What went wrong, numbered like the C status codes (`NKV_ERR_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The key does not exist, or the subscription is not active.
    NotFound = 1,
    /// The condition of a put, delete or transaction did not hold; see
    /// [`Error::current_revision`] and, for a transaction,
    /// [`Error::failed_key`].
    ConditionFailed = 2,
    /// A key or prefix is not valid.
    InvalidKey = 3,
    /// A key, value or frame is over the server's limits.
    TooLarge = 4,
    /// An argument has a value the request does not allow.
    InvalidArgument = 5,
    /// The connection could not be made, was lost, or belongs to another
    /// process (after `fork`). Client-side only.
    Connection = 6,
    /// No answer in time (the request may still take effect), or the server
    /// timed the handshake out.
    Timeout = 7,
    /// The server broke the protocol, or refused our bytes.
    Protocol = 8,
    /// Reserved for access control.
    Unauthorized = 9,
    /// An internal server error.
    Server = 10,
    /// The client was closed, the subscription ended, or the server is
    /// shutting down (wire SHUTTING_DOWN).
    Closed = 11,
    // 12 is NKV_ERR_PANIC, produced only by the C layer's panic boundary.
    /// The server does not know the request.
    Unsupported = 13,
    /// A server limit was reached (connections, subscriptions, conditions
    /// or operations of a transaction).
    Limit = 14,
    /// The server could not persist the write; nothing was acknowledged.
    Storage = 15,
    /// Client and server share no protocol version.
    UnsupportedVersion = 16,
}

impl ErrorKind {
    /// The C status number (`NKV_ERR_*`).
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The upper-case name, as in the C enum without its `NKV_ERR_` prefix.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::ConditionFailed => "CONDITION_FAILED",
            ErrorKind::InvalidKey => "INVALID_KEY",
            ErrorKind::TooLarge => "TOO_LARGE",
            ErrorKind::InvalidArgument => "INVALID_ARGUMENT",
            ErrorKind::Connection => "CONNECTION",
            ErrorKind::Timeout => "TIMEOUT",
            ErrorKind::Protocol => "PROTOCOL",
            ErrorKind::Unauthorized => "UNAUTHORIZED",
            ErrorKind::Server => "SERVER",
            ErrorKind::Closed => "CLOSED",
            ErrorKind::Unsupported => "UNSUPPORTED",
            ErrorKind::Limit => "LIMIT",
            ErrorKind::Storage => "STORAGE",
            ErrorKind::UnsupportedVersion => "UNSUPPORTED_VERSION",
        }
    }

    /// The kind for a wire error code.
    pub fn from_wire(code: ErrorCode) -> ErrorKind {
        match code {
            ErrorCode::NotFound => ErrorKind::NotFound,
            ErrorCode::ConditionFailed => ErrorKind::ConditionFailed,
            ErrorCode::InvalidKey => ErrorKind::InvalidKey,
            ErrorCode::TooLarge => ErrorKind::TooLarge,
            ErrorCode::InvalidArgument => ErrorKind::InvalidArgument,
            ErrorCode::Timeout => ErrorKind::Timeout,
            ErrorCode::Protocol => ErrorKind::Protocol,
            ErrorCode::Unauthorized => ErrorKind::Unauthorized,
            ErrorCode::Server => ErrorKind::Server,
            ErrorCode::ShuttingDown => ErrorKind::Closed,
            ErrorCode::Unsupported => ErrorKind::Unsupported,
            ErrorCode::Limit => ErrorKind::Limit,
            ErrorCode::Storage => ErrorKind::Storage,
            ErrorCode::UnsupportedVersion => ErrorKind::UnsupportedVersion,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error of any client operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// A human-readable explanation (the server's message for server
    /// errors); never parse it.
    pub message: String,
    /// For [`ErrorKind::ConditionFailed`]: the key's current revision
    /// (`Some(0)` = the key does not exist). `None` otherwise.
    pub current_revision: Option<u64>,
    /// For [`ErrorKind::ConditionFailed`] of a transaction: the key of the
    /// condition that failed (the first in the transaction's order), whose
    /// revision `current_revision` is. `None` otherwise.
    pub failed_key: Option<String>,
}

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            current_revision: None,
            failed_key: None,
        }
    }

    /// The error a server's ERROR frame stands for.
    pub fn from_wire(frame: ErrorFrame) -> Error {
        Error {
            kind: ErrorKind::from_wire(frame.code),
            message: frame.message,
            current_revision: frame.current_revision,
            failed_key: frame.key,
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind's name.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn connection(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Connection, message)
    }

    pub(crate) fn closed() -> Error {
        Error::new(ErrorKind::Closed, "the client is closed")
    }

    /// The error of a request the codec refused to encode: too large for
    /// the server's frame limit, or a field too long for its length prefix.
    pub(crate) fn from_encode(e: FrameError) -> Error {
        match e {
            FrameError::TooLarge { .. } | FrameError::FieldTooLong { .. } => {
                Error::new(ErrorKind::TooLarge, e.to_string())
            }
            other => Error::new(ErrorKind::InvalidArgument, other.to_string()),
        }
    }

    pub(crate) fn invalid_key(what: &str, key: &str, e: KeyError) -> Error {
        // Keys with control characters are escaped by `{:?}`, so the
        // message stays one printable line.
        Error::new(ErrorKind::InvalidKey, format!("{what} {key:?}: {e}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_match_wire_numbers() {
        for code in ErrorCode::ALL {
            let kind = ErrorKind::from_wire(code);
            assert_eq!(kind.code(), u32::from(code.as_u16()), "{code}");
            if code != ErrorCode::ShuttingDown {
                assert_eq!(kind.name(), code.name());
            }
        }
        assert_eq!(ErrorKind::Connection.code(), 6);
        assert_eq!(ErrorKind::Closed.code(), 11);
    }

    #[test]
    fn display_is_name_then_message() {
        let e = Error::from_wire(ErrorFrame::condition_failed(7));
        assert_eq!(e.to_string(), "CONDITION_FAILED: current revision 7");
        assert_eq!(e.current_revision, Some(7));
        assert_eq!(e.failed_key, None);
    }

    #[test]
    fn a_failed_transaction_names_its_key() {
        let frame =
            ErrorFrame::txn_condition_failed(1, "net.lock", crate::protocol::Check::Absent, 40);
        let e = Error::from_wire(frame);
        assert_eq!(e.kind, ErrorKind::ConditionFailed);
        assert_eq!(e.failed_key.as_deref(), Some("net.lock"));
        assert_eq!(e.current_revision, Some(40));
    }
}
