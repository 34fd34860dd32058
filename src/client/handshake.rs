//! Opening a connection: the safety check on the default socket directory,
//! the connect, and the HELLO / HELLO_OK handshake. Shared by the blocking
//! client's I/O thread (`io.rs`), which then takes the socket away from
//! tokio, and the async client ([`crate::async_client`]), which keeps it in
//! a `Framed`: both clients open connections by exactly the same rules.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::either::Either;

use super::error::{Error, ErrorKind};
use super::ServerInfo;
use crate::addr::Address;
use crate::protocol::wire::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::protocol::{ClientCodec, ClientFrame, FrameError, Request, Response, ServerFrame};

/// A connected stream of either kind of address.
pub(crate) type Stream = Either<UnixStream, TcpStream>;

/// A handshaken connection: its stream, the server's HELLO_OK, and the
/// bytes read past HELLO_OK (the start of the next frames).
pub(crate) type Opened = (Stream, ServerInfo, BytesMut);

/// Connects to `addr` and performs the handshake (HELLO carries `hello`:
/// the client name and the token), all within `timeout`.
pub(crate) async fn connect(
    addr: &Address,
    hello: (String, Option<String>),
    timeout: Duration,
) -> Result<Opened, Error> {
    match tokio::time::timeout(timeout, handshake(addr, hello)).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!("connecting to {addr}: no handshake within {timeout:?}"),
        )),
    }
}

async fn handshake(addr: &Address, hello: (String, Option<String>)) -> Result<Opened, Error> {
    let io_error = |e: io::Error| Error::connection(format!("connecting to {addr}: {e}"));
    if let Address::Unix(path) = addr {
        // Never talk to a server someone else planted in our default directory.
        crate::perms::check_before_connect(path).map_err(io_error)?;
    }
    match addr {
        Address::Unix(path) => {
            let mut stream = UnixStream::connect(path).await.map_err(io_error)?;
            let (server, leftover) = say_hello(&mut stream, addr, hello).await?;
            Ok((Either::Left(stream), server, leftover))
        }
        Address::Tcp(endpoint) => {
            let mut stream = TcpStream::connect(endpoint.as_str())
                .await
                .map_err(io_error)?;
            // Requests are small and latency matters more than packing.
            stream.set_nodelay(true).map_err(io_error)?;
            let (server, leftover) = say_hello(&mut stream, addr, hello).await?;
            Ok((Either::Right(stream), server, leftover))
        }
    }
}

/// Sends HELLO and reads HELLO_OK; returns the server's limits and what
/// was read past its answer.
async fn say_hello<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    addr: &Address,
    (name, token): (String, Option<String>),
) -> Result<(ServerInfo, BytesMut), Error> {
    let io_error = |e: io::Error| Error::connection(format!("connecting to {addr}: {e}"));
    let mut encoder = ClientCodec::new();
    let mut hello = BytesMut::new();
    let request = Request::Hello {
        version: PROTOCOL_VERSION,
        client_name: name,
        token,
    };
    encoder
        .encode(ClientFrame { id: 1, request }, &mut hello)
        .map_err(|e| Error::new(ErrorKind::InvalidArgument, format!("client name: {e}")))?;
    stream.write_all(&hello).await.map_err(io_error)?;

    let mut reader = FramedRead::new(stream, ClientCodec::new());
    let server = match reader.next().await {
        Some(Ok(ServerFrame::Response {
            response:
                Response::HelloOk {
                    version,
                    max_frame,
                    max_key,
                    max_value,
                    server_name,
                },
            ..
        })) => {
            if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
                return Err(Error::new(
                    ErrorKind::UnsupportedVersion,
                    format!(
                        "server {server_name:?} chose protocol version {version}; \
                         this client speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
                    ),
                ));
            }
            ServerInfo {
                name: server_name,
                max_frame,
                max_key,
                max_value,
            }
        }
        Some(Ok(ServerFrame::Response {
            response: Response::Error(e),
            ..
        })) => return Err(Error::from_wire(e)),
        Some(Ok(_)) => {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("connecting to {addr}: the server did not answer HELLO with HELLO_OK"),
            ))
        }
        Some(Err(FrameError::Io(e))) => return Err(io_error(e)),
        Some(Err(e)) => {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("connecting to {addr}: {e}"),
            ))
        }
        None => {
            return Err(Error::connection(format!(
                "connecting to {addr}: the server closed the connection during the handshake"
            )))
        }
    };
    let leftover = reader.read_buffer_mut().split();
    Ok((server, leftover))
}
