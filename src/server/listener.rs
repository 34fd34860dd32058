//! Binding the listening sockets: Unix (with stale-socket recovery) and TCP.
//!
//! A Unix socket is private to the server's user unless the operator widens
//! it: its directory must pass [`crate::perms`]'s rules, and the socket file
//! gets mode `0600` whatever the umask (or [`SocketAccess`]'s mode and
//! group). The mode is set by `chmod` on the path between `bind` and
//! `listen`: until `listen`, a connect to the socket is refused, so the mode
//! the umask gave the file at `bind` is never usable. The process umask is
//! left alone (changing it would race with every other thread creating a
//! file).

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixListener};

use crate::addr::Address;
use crate::perms;

/// Connections a Unix listener queues before `accept` (as tokio's `bind`).
const BACKLOG: i32 = 1024;

/// Who may connect to a Unix socket: its file's mode and group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketAccess {
    /// Permission bits of the socket file; connecting needs write
    /// permission. Default `0600`: the server's user only (and root).
    pub mode: u32,
    /// The group to give the socket file; `None` leaves the server's.
    pub group: Option<u32>,
}

impl Default for SocketAccess {
    fn default() -> Self {
        SocketAccess {
            mode: 0o600,
            group: None,
        }
    }
}

/// A listening socket, bound by the server or passed by systemd.
#[derive(Debug)]
pub enum Listener {
    /// A Unix socket.
    Unix {
        /// The socket.
        listener: UnixListener,
        /// Its path.
        path: PathBuf,
        /// The server created the file, and removes it when it stops. A
        /// socket passed by systemd is not ours: its file stays, and
        /// systemd goes on listening on it for the next start.
        owned: bool,
    },
    /// A TCP socket.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds `address`, a Unix socket with the default access (`0600`).
    /// A Unix socket file left behind by a crashed server is replaced; a
    /// live server's socket and any file that is not a socket are left
    /// alone and reported.
    pub async fn bind(address: &Address) -> io::Result<Listener> {
        Listener::bind_with(address, SocketAccess::default()).await
    }

    /// Binds `address`; a Unix socket gets `access` (TCP ignores it).
    pub async fn bind_with(address: &Address, access: SocketAccess) -> io::Result<Listener> {
        match address {
            Address::Unix(path) => bind_unix(path, access).map(|listener| Listener::Unix {
                listener,
                path: path.clone(),
                owned: true,
            }),
            Address::Tcp(endpoint) => TcpListener::bind(endpoint.as_str())
                .await
                .map(Listener::Tcp)
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on tcp:{endpoint}: {e}"))
                }),
        }
    }

    /// Serves a socket passed by systemd (checked by
    /// [`Inherited::check`](super::Inherited::check)); its file, if any,
    /// is left in place when the server stops. Needs a tokio runtime.
    pub fn inherit(socket: super::Inherited) -> io::Result<Listener> {
        match socket.socket {
            super::inherited::Socket::Unix { listener, path } => Ok(Listener::Unix {
                listener: UnixListener::from_std(listener)?,
                path,
                owned: false,
            }),
            super::inherited::Socket::Tcp { listener, .. } => {
                Ok(Listener::Tcp(TcpListener::from_std(listener)?))
            }
        }
    }

    /// Accepts the next connection.
    pub async fn accept(&self) -> io::Result<super::Stream> {
        match self {
            Listener::Unix { listener, .. } => Ok(super::Stream::Unix(listener.accept().await?.0)),
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
            Listener::Unix { path, .. } => Ok(Address::Unix(path.clone())),
            Listener::Tcp(listener) => Ok(Address::Tcp(listener.local_addr()?.to_string())),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix {
            path, owned: true, ..
        } = self
        {
            // Best effort: a leftover file is handled at the next start.
            let _ = std::fs::remove_file(path);
        }
    }
}

fn bind_unix(path: &Path, access: SocketAccess) -> io::Result<UnixListener> {
    let context = |e: io::Error, what: &str| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    perms::prepare_socket_dir(path)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} is a symbolic link; nkv-server never follows one for its socket. \
                     Remove it: rm {}",
                    path.display(),
                    perms::shell_quote(path)
                ),
            ));
        }
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
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let listen_error = |e: rustix::io::Errno| context(e.into(), "cannot listen on");
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(listen_error)?;
    let name = SocketAddrUnix::new(path).map_err(listen_error)?;
    rustix::net::bind(&socket, &name).map_err(listen_error)?;
    // Bound, not listening: connects are refused until the mode is right.
    if let Err(e) = set_access(path, access) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    warn_if_unreachable(path, access);
    if let Err(e) = rustix::net::listen(&socket, BACKLOG) {
        let _ = std::fs::remove_file(path);
        return Err(listen_error(e));
    }
    UnixListener::from_std(std::os::unix::net::UnixListener::from(socket))
}

/// Gives the socket file at `path` its group and mode. The path is safe to
/// follow: its directory passed [`perms::prepare_socket_dir`], so only the
/// server's user and root can replace the entry.
fn set_access(path: &Path, access: SocketAccess) -> io::Result<()> {
    if let Some(gid) = access.group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot give the socket {} to group {gid}: {e} (the server must run as \
                     root or as a member of that group)",
                    path.display()
                ),
            )
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot set the mode of the socket {} to {:04o}: {e}",
                path.display(),
                access.mode
            ),
        )
    })
}

/// Warns when `access` lets the socket's group or others connect but the
/// socket's directory does not let them reach it.
fn warn_if_unreachable(path: &Path, access: SocketAccess) {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let (Ok(dir_meta), Ok(socket_meta)) = (std::fs::metadata(dir), std::fs::metadata(path)) else {
        return;
    };
    let dir_mode = dir_meta.mode() & 0o7777;
    let gid = socket_meta.gid();
    // Members of the socket's group pass the directory by its group bits
    // when it has the same group, else by its bits for others.
    let group_passes = if dir_meta.gid() == gid {
        dir_mode & 0o010 != 0
    } else {
        dir_mode & 0o001 != 0
    };
    let q = perms::shell_quote(dir);
    if access.mode & 0o006 != 0 && dir_mode & 0o001 == 0 {
        tracing::warn!(
            "the socket {} is open to every user (mode {:04o}), but its directory {} (mode \
             {dir_mode:04o}) lets no other user through; let them through with: chmod o+x {q}",
            path.display(),
            access.mode,
            dir.display(),
        );
    } else if access.mode & 0o060 != 0 && !group_passes {
        tracing::warn!(
            "the socket {} is open to group {gid} (mode {:04o}), but the members of that group \
             cannot enter its directory {} (mode {dir_mode:04o}, group {}); let them through \
             with: chgrp {gid} {q} && chmod g+x {q}",
            path.display(),
            access.mode,
            dir.display(),
            dir_meta.gid(),
        );
    }
}
