//! Listening sockets passed by systemd (socket activation), checked before
//! they are served.
//!
//! A passed descriptor is served only if it is what nkv would have bound
//! itself: a listening stream socket, Unix or TCP (IPv4, IPv6). Anything
//! else (a file, a datagram socket, a connection from `Accept=yes`) is
//! refused with a message that names the descriptor and the fix.
//!
//! A Unix socket must not let in anyone the server would not have: systemd
//! creates the file with `SocketMode=` (default `0666`, every local user),
//! `SocketUser=` and `SocketGroup=` (default root), so the server checks
//! what it would otherwise have set. Connecting needs write permission on
//! the file, so the write bits are what count: the socket's group and
//! others may write to it only if `--socket-mode` lets them (default
//! `0600`: neither), a writable group must be `--socket-group` (default:
//! the server's group), and the file must belong to the server's user or
//! root. Its directory must pass the rules of [`crate::perms`], as for a
//! socket the server binds. An abstract socket (`@name`) has no file and
//! no permissions, so every local user could connect: it is refused.
//! TCP sockets follow the rule for any TCP address (see `nkv-server`): one
//! other machines can reach needs a token file or `--insecure-no-auth`.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::FileType;
use rustix::net::{sockopt, AddressFamily, SocketType};

use super::SocketAccess;
use crate::addr::Address;
use crate::perms;

/// A socket passed by systemd that passed the checks (module docs), ready
/// for [`Listener::inherit`](super::Listener::inherit).
#[derive(Debug)]
pub struct Inherited {
    /// The listening socket, non-blocking.
    pub(super) socket: Socket,
    /// The descriptor number it was passed as.
    number: RawFd,
    /// Its name (`LISTEN_FDNAMES`).
    name: String,
}

/// The socket itself.
#[derive(Debug)]
pub(super) enum Socket {
    /// A Unix socket with a path.
    Unix {
        listener: std::os::unix::net::UnixListener,
        path: PathBuf,
    },
    /// A TCP socket.
    Tcp {
        listener: std::net::TcpListener,
        local: SocketAddr,
    },
}

impl Inherited {
    /// Checks descriptor `number` (`fd`), passed under `name`, against the
    /// rules of the module docs, a Unix socket's file against `access`.
    /// The error names the descriptor, what is wrong and the fix.
    pub fn check(
        fd: OwnedFd,
        number: RawFd,
        name: &str,
        access: SocketAccess,
    ) -> io::Result<Inherited> {
        let refuse = |what: String| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("socket activation: descriptor {number} ({name}) {what}"),
            )
        };
        let family = match sockopt::socket_domain(&fd) {
            Ok(family) => family,
            Err(rustix::io::Errno::NOTSOCK) => {
                return Err(refuse(format!(
                    "is {}, not a socket: nkv-server serves listening sockets only \
                     (ListenStream= in the socket unit)",
                    describe(&fd)
                )))
            }
            Err(e) => return Err(refuse(format!("cannot be inspected: {e}"))),
        };
        let kind = sockopt::socket_type(&fd).map_err(|e| refuse(format!("SO_TYPE: {e}")))?;
        if kind != SocketType::STREAM {
            let what = match kind {
                SocketType::DGRAM => "a datagram socket (ListenDatagram=)",
                SocketType::SEQPACKET => "a sequential-packet socket (ListenSequentialPacket=)",
                _ => "not a stream socket",
            };
            return Err(refuse(format!(
                "is {what}: nkv-server serves stream sockets (ListenStream=)"
            )));
        }
        let listening =
            sockopt::socket_acceptconn(&fd).map_err(|e| refuse(format!("SO_ACCEPTCONN: {e}")))?;
        if !listening {
            return Err(refuse(
                "is a stream socket that is not listening (a connection, as Accept=yes \
                 passes? nkv's socket unit needs Accept=no)"
                    .into(),
            ));
        }
        let socket = if family == AddressFamily::UNIX {
            let listener = std::os::unix::net::UnixListener::from(fd);
            let local = listener.local_addr()?;
            let Some(path) = local.as_pathname() else {
                return Err(refuse(
                    "is an abstract or unnamed Unix socket: it has no file whose \
                     permissions keep other users out, so any local user could connect. \
                     Give the socket unit a path (ListenStream=/run/nkv/nkv.sock)"
                        .into(),
                ));
            };
            check_file(path, access).map_err(|e| refuse(e.to_string()))?;
            listener.set_nonblocking(true)?;
            Socket::Unix {
                path: path.to_path_buf(),
                listener,
            }
        } else if family == AddressFamily::INET || family == AddressFamily::INET6 {
            let listener = std::net::TcpListener::from(fd);
            listener.set_nonblocking(true)?;
            Socket::Tcp {
                local: listener.local_addr()?,
                listener,
            }
        } else {
            return Err(refuse(format!(
                "is a socket of family {}: nkv-server serves Unix and TCP sockets",
                family.as_raw()
            )));
        };
        Ok(Inherited {
            socket,
            number,
            name: name.to_owned(),
        })
    }

    /// The address it listens on (`tcp:` with the bound address).
    pub fn address(&self) -> Address {
        match &self.socket {
            Socket::Unix { path, .. } => Address::Unix(path.clone()),
            Socket::Tcp { local, .. } => Address::Tcp(local.to_string()),
        }
    }

    /// Whether this socket is `address` (a `--listen` that it serves, so
    /// the server does not bind it again): the same Unix path, or a TCP
    /// endpoint that resolves to the bound address.
    pub fn serves(&self, address: &Address) -> bool {
        match (&self.socket, address) {
            (Socket::Unix { path, .. }, Address::Unix(wanted)) => path == wanted,
            (Socket::Tcp { local, .. }, Address::Tcp(endpoint)) => endpoint
                .to_socket_addrs()
                .is_ok_and(|mut addrs| addrs.any(|a| a == *local)),
            _ => false,
        }
    }

    /// The descriptor number it was passed as.
    pub fn number(&self) -> RawFd {
        self.number
    }

    /// Its name (`LISTEN_FDNAMES`; systemd's `FileDescriptorName=`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What a descriptor that is not a socket is, for the refusal.
fn describe(fd: impl AsFd) -> &'static str {
    match rustix::fs::fstat(fd).map(|st| FileType::from_raw_mode(st.st_mode)) {
        Ok(FileType::RegularFile) => "a regular file",
        Ok(FileType::Directory) => "a directory",
        Ok(FileType::Fifo) => "a pipe",
        Ok(FileType::CharacterDevice) => "a character device",
        Ok(FileType::BlockDevice) => "a block device",
        _ => "something else",
    }
}

/// Checks that the socket file at `path` and its directory let in no one
/// the server would not have (module docs).
fn check_file(path: &Path, access: SocketAccess) -> io::Result<()> {
    let shown = path.display();
    perms::check_socket_dir(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("is {shown}, in a directory nkv-server would not listen in: {e}"),
        )
    })?;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // No file, no way in: nothing to check, but clients that use
            // the path cannot reach the server either.
            tracing::warn!(
                "the socket file {shown} is gone (removed after systemd created it?): \
                 clients cannot reach this socket by its path"
            );
            return Ok(());
        }
        Err(e) => return Err(io::Error::new(e.kind(), format!("{shown}: {e}"))),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::other(format!(
            "is bound to {shown}, which is no longer a socket"
        )));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(io::Error::other(format!(
            "is {shown}, owned by uid {}: that user could connect. Give it to the \
             service's user (SocketUser= in the socket unit)",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o777;
    let writable = mode & 0o022 & !access.mode;
    if writable & 0o002 != 0 {
        return Err(io::Error::other(format!(
            "is {shown}, whose mode {mode:04o} lets every local user connect \
             (systemd's default SocketMode= is 0666). Set SocketMode=0600 in the \
             socket unit, or accept it with --socket-mode {:04o}",
            access.mode | (mode & 0o066)
        )));
    }
    if writable & 0o020 != 0 {
        return Err(io::Error::other(format!(
            "is {shown}, whose mode {mode:04o} lets its group {} connect. Set \
             SocketMode=0600 in the socket unit, or let the group in with \
             --socket-mode {:04o}",
            meta.gid(),
            access.mode | (mode & 0o060)
        )));
    }
    let group = access
        .group
        .unwrap_or_else(|| rustix::process::getegid().as_raw());
    if mode & 0o020 != 0 && meta.gid() != group {
        return Err(io::Error::other(format!(
            "is {shown}, which lets its group {} connect, not group {group}. Set \
             SocketGroup={group} in the socket unit, or name its group with \
             --socket-group {}",
            meta.gid(),
            meta.gid()
        )));
    }
    Ok(())
}
