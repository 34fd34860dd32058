//! What the load generator needs from a protocol, and where it connects.
//!
//! [`Wire`] is the one seam between the load generator and a server: encode
//! a request into a buffer, parse one answer from a buffer. nkv
//! ([`crate::nkvwire::NkvWire`]), Redis ([`crate::resp::RedisWire`]) and the
//! echo floor ([`crate::echo::EchoWire`]) implement it, so all three are
//! driven by the very same code path and differ only in the bytes.
//!
//! Also here: [`Target`] (a Unix socket path or a TCP endpoint) with its
//! blocking and async connections, and the key names and values every row
//! uses, so both sides read and write the same data.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The two requests the throughput rows send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Read one key (Redis GET).
    Get,
    /// Write one key (Redis SET).
    Put,
}

/// One protocol as the load generator sees it. Answers arrive in request
/// order on both protocols, so the generator only has to say which kind of
/// request the next answer belongs to.
pub trait Wire: Send {
    /// Writes what opens a connection (nkv: HELLO; Redis: PING) into `out`.
    fn hello(&mut self, out: &mut Vec<u8>);

    /// Parses the answer to [`Wire::hello`] from the start of `buf`:
    /// `Ok(Some(consumed))` when complete and right, `Ok(None)` when more
    /// bytes are needed.
    fn parse_hello(&mut self, buf: &[u8]) -> Result<Option<usize>, String>;

    /// Appends one request to `out`.
    fn encode(&mut self, kind: OpKind, key: &[u8], value: &[u8], out: &mut Vec<u8>);

    /// Parses the answer to the oldest request in flight, of kind `kind`,
    /// from the start of `buf`. An error answer, or an answer that is not
    /// the right one, is an `Err`: the row fails instead of reporting the
    /// speed of errors.
    fn parse(&mut self, kind: OpKind, buf: &[u8]) -> Result<Option<usize>, String>;
}

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Unix socket path.
    Unix(PathBuf),
    /// `HOST:PORT`.
    Tcp(String),
}

impl Target {
    /// Parses `unix:PATH` or `tcp:HOST:PORT` (nkv's address syntax).
    pub fn parse(text: &str) -> Result<Target, String> {
        match text.parse::<nkv::addr::Address>() {
            Ok(nkv::addr::Address::Unix(path)) => Ok(Target::Unix(path)),
            Ok(nkv::addr::Address::Tcp(endpoint)) => Ok(Target::Tcp(endpoint)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The address in nkv's syntax (what libnkv and `nkv` accept).
    pub fn address(&self) -> String {
        match self {
            Target::Unix(path) => format!("unix:{}", path.display()),
            Target::Tcp(endpoint) => format!("tcp:{endpoint}"),
        }
    }

    /// A blocking connection.
    pub fn connect(&self) -> io::Result<Stream> {
        Ok(match self {
            Target::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
            Target::Tcp(endpoint) => {
                let s = TcpStream::connect(endpoint)?;
                // Requests are small and answered one by one: no Nagle delay.
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
        })
    }

    /// An async connection (for the current-thread runtimes of the load
    /// generator).
    pub async fn connect_async(&self) -> io::Result<AsyncStream> {
        Ok(match self {
            Target::Unix(path) => AsyncStream::Unix(tokio::net::UnixStream::connect(path).await?),
            Target::Tcp(endpoint) => {
                let s = tokio::net::TcpStream::connect(endpoint).await?;
                s.set_nodelay(true)?;
                AsyncStream::Tcp(s)
            }
        })
    }
}

/// A blocking connection to a [`Target`].
#[derive(Debug)]
pub enum Stream {
    /// Unix socket.
    Unix(UnixStream),
    /// TCP.
    Tcp(TcpStream),
}

impl Stream {
    /// Sets the read timeout (control connections must not hang forever on
    /// a wedged server).
    pub fn set_read_timeout(&self, t: Option<std::time::Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An async connection to a [`Target`].
#[derive(Debug)]
pub enum AsyncStream {
    /// Unix socket.
    Unix(tokio::net::UnixStream),
    /// TCP.
    Tcp(tokio::net::TcpStream),
}

impl AsyncRead for AsyncStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AsyncStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            AsyncStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AsyncStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AsyncStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            AsyncStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AsyncStream::Unix(s) => Pin::new(s).poll_flush(cx),
            AsyncStream::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AsyncStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            AsyncStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Length of every benchmark key (`bench.k000123`).
pub const KEY_LEN: usize = 13;

/// The name of key number `index` (below a million): `bench.k000123`.
/// Written digit by digit because the load generator calls it per request
/// and `format!` would cost more than the rest of the encoding.
pub fn key_name(index: u64) -> [u8; KEY_LEN] {
    let mut key = *b"bench.k000000";
    let mut n = index % 1_000_000;
    for slot in key[7..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    key
}

/// The value every row writes: `size` bytes, different per `variant` so an
/// overwrite really changes the stored bytes.
pub fn value(size: usize, variant: u8) -> Vec<u8> {
    (0..size)
        .map(|i| b'a' + ((i as u8).wrapping_add(variant) % 26))
        .collect()
}

/// A small, fast random number generator (xorshift64*): picking a random
/// key per request must cost next to nothing.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value; 0 is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names() {
        assert_eq!(&key_name(0), b"bench.k000000");
        assert_eq!(&key_name(123), b"bench.k000123");
        assert_eq!(&key_name(999_999), b"bench.k999999");
    }
}
