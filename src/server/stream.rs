//! An accepted connection, Unix or TCP, used from one task without
//! splitting it: wait for readiness, then read or write without blocking.

use std::io;

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

/// An accepted client connection.
#[derive(Debug)]
pub enum Stream {
    /// Over a Unix socket.
    Unix(UnixStream),
    /// Over TCP.
    Tcp(TcpStream),
}

impl Stream {
    /// Waits until the socket is readable, writable, or both, as asked.
    pub async fn ready(&self, interest: Interest) -> io::Result<tokio::io::Ready> {
        match self {
            Stream::Unix(s) => s.ready(interest).await,
            Stream::Tcp(s) => s.ready(interest).await,
        }
    }

    /// Reads what is available into `buf` without blocking (`WouldBlock`
    /// when nothing is); `Ok(0)` at end of stream.
    pub fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.try_read_buf(buf),
            Stream::Tcp(s) => s.try_read_buf(buf),
        }
    }

    /// Reads what is available into `buf` without blocking.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.try_read(buf),
            Stream::Tcp(s) => s.try_read(buf),
        }
    }

    /// Shuts the sending side down: the peer reads what was sent, then EOF.
    pub async fn shutdown_write(&mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = match self {
            Stream::Unix(s) => s.shutdown().await,
            Stream::Tcp(s) => s.shutdown().await,
        };
    }

    /// Writes what the socket takes from `buf` without blocking.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.try_write(buf),
            Stream::Tcp(s) => s.try_write(buf),
        }
    }
}
