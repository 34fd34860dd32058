//! Server addresses: `unix:PATH` or `tcp:HOST:PORT`, and the default one.
//!
//! The server, the CLI, the C library and the Python binding all use the
//! same rule, so that with no configuration they find each other:
//! `NKV_ADDR` if set, else `unix:$XDG_RUNTIME_DIR/nkv.sock` when
//! `XDG_RUNTIME_DIR` is set, else `unix:/tmp/nkv-$UID/nkv.sock`.
//!
//! The directory of the default socket is private to its user; the server
//! and the clients check it before they use it ([`crate::perms`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use crate::protocol::wire::ADDR_ENV;
use crate::protocol::wire::SOCKET_FILE_NAME;

/// Where a server listens or a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A Unix domain socket at this path.
    Unix(PathBuf),
    /// A TCP endpoint, `HOST:PORT` as given (resolved when used).
    Tcp(String),
}

/// Why an address string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError(String);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid address {:?}: expected unix:PATH or tcp:HOST:PORT",
            self.0
        )
    }
}

impl std::error::Error for AddressError {}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = || AddressError(text.to_owned());
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(refuse());
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if let Some(endpoint) = text.strip_prefix("tcp:") {
            let (host, port) = endpoint.rsplit_once(':').ok_or_else(refuse)?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(refuse());
            }
            return Ok(Address::Tcp(endpoint.to_owned()));
        }
        Err(refuse())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Tcp(endpoint) => write!(f, "tcp:{endpoint}"),
        }
    }
}

impl Address {
    /// The address to use when none is given: `NKV_ADDR`, or the default
    /// Unix socket path.
    pub fn from_env_or_default() -> Result<Address, AddressError> {
        match std::env::var(ADDR_ENV) {
            Ok(text) if !text.is_empty() => text.parse(),
            _ => Ok(Address::Unix(default_socket_path())),
        }
    }
}

/// The default Unix socket path: `$XDG_RUNTIME_DIR/nkv.sock`, else
/// `/tmp/nkv-$UID/nkv.sock`.
pub fn default_socket_path() -> PathBuf {
    default_runtime_dir().join(SOCKET_FILE_NAME)
}

/// The directory of the default socket: `$XDG_RUNTIME_DIR` when set, else
/// `/tmp/nkv-$UID` (`$UID` the real user id).
///
/// It is private to its user: the server creates it `0700` and refuses one
/// that is a symbolic link, belongs to another user or is writable by group
/// or others, and a client checks the same before it connects to a socket
/// in it (see [`crate::perms`]), so that no other user can plant a server
/// there.
pub fn default_runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(format!("/tmp/nkv-{}", rustix::process::getuid().as_raw())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds() {
        assert_eq!(
            "unix:/tmp/x.sock".parse(),
            Ok(Address::Unix("/tmp/x.sock".into()))
        );
        assert_eq!(
            "tcp:127.0.0.1:7000".parse(),
            Ok(Address::Tcp("127.0.0.1:7000".into()))
        );
        assert_eq!(
            "tcp:[::1]:7000".parse(),
            Ok(Address::Tcp("[::1]:7000".into()))
        );
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "unix:",
            "tcp:host",
            "tcp::80",
            "tcp:h:99999",
            "http://x",
            "/tmp/x",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }

    #[test]
    fn round_trips_through_display() {
        for text in ["unix:/run/nkv.sock", "tcp:localhost:4222"] {
            assert_eq!(text.parse::<Address>().unwrap().to_string(), text);
        }
    }
}
