//! Binding the listening sockets: Unix (with stale-socket recovery) and TCP.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixListener};

use crate::addr::Address;

/// A bound listening socket.
#[derive(Debug)]
pub enum Listener {
    /// A Unix socket; the path is removed again when the server stops.
    Unix(UnixListener, PathBuf),
    /// A TCP socket.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds `address`. A Unix socket file left behind by a crashed server
    /// is replaced; a live server's socket and any file that is not a
    /// socket are left alone and reported.
    pub async fn bind(address: &Address) -> io::Result<Listener> {
        match address {
            Address::Unix(path) => bind_unix(path).map(|l| Listener::Unix(l, path.clone())),
            Address::Tcp(endpoint) => TcpListener::bind(endpoint.as_str())
                .await
                .map(Listener::Tcp)
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on tcp:{endpoint}: {e}"))
                }),
        }
    }

    /// Accepts the next connection.
    pub async fn accept(&self) -> io::Result<super::Stream> {
        match self {
            Listener::Unix(l, _) => Ok(super::Stream::Unix(l.accept().await?.0)),
            Listener::Tcp(l) => {
                let (stream, _) = l.accept().await?;
                // Small frames answer requests; do not hold them back.
                stream.set_nodelay(true)?;
                Ok(super::Stream::Tcp(stream))
            }
        }
    }

    /// The address actually bound (useful with TCP port 0).
    pub fn local_address(&self) -> io::Result<Address> {
        match self {
            Listener::Unix(_, path) => Ok(Address::Unix(path.clone())),
            Listener::Tcp(listener) => Ok(Address::Tcp(listener.local_addr()?.to_string())),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            // Best effort: a leftover file is handled at the next start.
            let _ = std::fs::remove_file(path);
        }
    }
}

fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    let context = |e: io::Error, what: &str| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            // Owner-only: the socket grants full access to the store.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| context(e, "cannot create the directory of"))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another nkv-server is already listening on {}",
                        path.display()
                    ),
                ));
            }
            tracing::info!(path = %path.display(), "replacing stale socket left by a previous server");
            std::fs::remove_file(path).map_err(|e| context(e, "cannot remove stale socket"))?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(context(e, "cannot inspect")),
    }
    UnixListener::bind(path).map_err(|e| context(e, "cannot listen on"))
}
