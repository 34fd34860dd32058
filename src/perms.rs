//! Who may reach nkv's socket and files: the rules on the directory that
//! holds a Unix socket, checked by the server before it listens and by a
//! client before it connects to its default address.
//!
//! A Unix socket is only as trustworthy as its directory: whoever can write
//! to it, or rename it, can remove the server's socket and put their own in
//! its place, then read every value a client puts. tmux and ssh-agent are
//! the model. `docs/security.md` explains the threat; the rules:
//!
//! * **The default directory** ([`crate::addr::default_runtime_dir`]:
//!   `$XDG_RUNTIME_DIR`, else `/tmp/nkv-$UID`) is *private*. The server
//!   creates it `0700`; it must not be a symbolic link, must belong to the
//!   server's user, and must not be writable by group or others. A client
//!   whose socket is in its default directory checks the same before
//!   connecting, accepting root as the owner too, and refuses to connect
//!   otherwise (a missing directory means no server, and is refused too, so
//!   that no one can create it between the check and the connect).
//! * **The directory of an explicit socket** (`--listen unix:PATH` outside
//!   the default directory), and the parent of the default directory, are
//!   *shared*: they may be reached through symbolic links (the operator
//!   named them), must belong to the server's user or root, and when
//!   writable by group or others must have the sticky bit, as `/tmp` has.
//!   A missing directory of an explicit socket is created `0700`.
//! * The socket path itself is never followed when it is a symbolic link
//!   (see `server::listener`).
//!
//! Check, then use: a directory is opened with `O_PATH | O_DIRECTORY` (and
//! `O_NOFOLLOW` for a private one) and judged by `fstat` of that
//! descriptor, so a symbolic link cannot pass for the directory it points
//! to, and another user's `0700` directory is judged by its owner rather
//! than failing to open. The socket is
//! then bound (or connected to) by path. That is sound because a directory
//! that passed, in a parent that passed, can be renamed or have its entries
//! replaced only by its owner and root: no one else can swap it between the
//! check and the use.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::addr::default_runtime_dir;

/// Mode bits that let group or others create, remove or rename entries.
const WRITABLE_BY_OTHERS: u32 = 0o022;
/// The sticky bit: only an entry's owner (or the directory's, or root) may
/// remove or rename it.
const STICKY: u32 = 0o1000;

/// What must hold of one directory.
#[derive(Debug, Clone, Copy)]
struct Rule {
    /// The directory may be reached through a symbolic link.
    follow: bool,
    /// Root may own it (besides the user).
    root_may_own: bool,
    /// Writable by group or others is accepted with the sticky bit.
    sticky_ok: bool,
}

/// The server's default directory.
const PRIVATE_FOR_SERVER: Rule = Rule {
    follow: false,
    root_may_own: false,
    sticky_ok: false,
};

/// The default directory, as a client checks it.
const PRIVATE_FOR_CLIENT: Rule = Rule {
    follow: false,
    root_may_own: true,
    sticky_ok: false,
};

/// The directory of an explicit socket; the parent of the default one.
const SHARED: Rule = Rule {
    follow: true,
    root_may_own: true,
    sticky_ok: true,
};

/// Why a directory was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Problem {
    /// It is a symbolic link (and the rule does not follow one).
    Symlink,
    /// It is not a directory.
    NotDirectory,
    /// It belongs to another user.
    Owner { owner: u32 },
    /// Group or others may write to it (without the sticky bit, where that
    /// would do).
    Writable { mode: u32 },
}

/// Which directory a refusal is about, for its message.
#[derive(Debug, Clone, Copy)]
enum Role<'a> {
    /// The default directory, checked by the server.
    ServerDefault,
    /// The default directory, checked by a client.
    ClientDefault,
    /// The directory of an explicit socket.
    Explicit { socket: &'a Path },
    /// The parent of the default directory.
    ParentOfDefault { default: &'a Path },
}

/// The effective user id of this process.
fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Prepares the directory of the Unix socket `socket` for the server:
/// creates it `0700` if missing and checks it (module docs). The error
/// names the path and the fix.
pub(crate) fn prepare_socket_dir(socket: &Path) -> io::Result<()> {
    create_private(parent_of(socket))?;
    check_socket_dir(socket)
}

/// Checks the directory of the Unix socket `socket` as
/// [`prepare_socket_dir`] does, without creating it: for a socket systemd
/// created (socket activation), which the server serves only in a
/// directory where it would have listened itself.
pub(crate) fn check_socket_dir(socket: &Path) -> io::Result<()> {
    let dir = parent_of(socket);
    if dir == default_runtime_dir() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            check(parent, SHARED, Role::ParentOfDefault { default: dir })?;
        }
        check(dir, PRIVATE_FOR_SERVER, Role::ServerDefault)
    } else {
        check(dir, SHARED, Role::Explicit { socket })
    }
}

/// Checks, before a client connects to the Unix socket `socket`, that the
/// socket's directory is one it may trust, when that directory is the
/// client's default one (module docs); any other path was named by the user
/// and is taken as it is. The error names the path and the fix.
pub fn check_before_connect(socket: &Path) -> io::Result<()> {
    let dir = parent_of(socket);
    if dir != default_runtime_dir() {
        return Ok(());
    }
    check(dir, PRIVATE_FOR_CLIENT, Role::ClientDefault)?;
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => check(parent, SHARED, Role::ParentOfDefault { default: dir }),
        None => Ok(()),
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Creates `dir` (and missing parents) with mode `0700` if it does not
/// exist. Whatever is already there is judged by [`check`].
fn create_private(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot create the socket directory {}: {e}", dir.display()),
        )),
    }
}

/// Opens `dir` (not following a final symbolic link unless `rule.follow`)
/// and judges the opened directory.
fn check(dir: &Path, rule: Rule, role: Role<'_>) -> io::Result<()> {
    // O_PATH: judging a directory needs no read permission on it (another
    // user's 0700 directory must be refused for its owner, not for EACCES).
    let mut flags = libc::O_PATH | libc::O_DIRECTORY;
    if !rule.follow {
        flags |= libc::O_NOFOLLOW;
    }
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(dir)
        .and_then(|file: File| file.metadata());
    let problem = match opened {
        Ok(meta) => judge(&meta, rule, euid()),
        // With O_DIRECTORY, Linux reports a final symbolic link as ENOTDIR
        // rather than ELOOP: ask lstat which it is.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
            match std::fs::symlink_metadata(dir) {
                Ok(meta) if meta.file_type().is_symlink() => Some(Problem::Symlink),
                _ => Some(Problem::NotDirectory),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && matches!(role, Role::ClientDefault) => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} does not exist: is nkv-server running for this user?",
                    dir.display()
                ),
            ))
        }
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot inspect {}: {e}", dir.display()),
            ))
        }
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            refusal(dir, problem, role, euid()),
        )),
    }
}

/// What is wrong with a directory with metadata `meta` under `rule`, for
/// the user `me`.
fn judge(meta: &Metadata, rule: Rule, me: u32) -> Option<Problem> {
    let owner = meta.uid();
    if owner != me && !(rule.root_may_own && owner == 0) {
        return Some(Problem::Owner { owner });
    }
    let mode = meta.mode() & 0o7777;
    if mode & WRITABLE_BY_OTHERS != 0 && !(rule.sticky_ok && mode & STICKY != 0) {
        return Some(Problem::Writable { mode });
    }
    None
}

/// The message for a refused directory: what is wrong, why it matters, and
/// the command that fixes it (which `tests/security_defaults.rs` runs).
fn refusal(dir: &Path, problem: Problem, role: Role<'_>, me: u32) -> String {
    let shown = dir.display();
    let q = shell_quote(dir);
    match role {
        Role::ServerDefault | Role::ClientDefault => {
            let (refuse, victim) = match role {
                Role::ServerDefault => ("nkv-server will not listen there", "nkv's clients"),
                _ => ("refusing to connect", "your requests"),
            };
            let me_or_root = match role {
                Role::ServerDefault => format!("this user (uid {me})"),
                _ => format!("you (uid {me}) or root"),
            };
            match problem {
                Problem::Symlink => format!(
                    "{shown} is a symbolic link, not a directory: someone may have planted it \
                     to intercept {victim}, so {refuse}. Remove it (as its owner or root): rm {q}"
                ),
                Problem::NotDirectory => format!(
                    "{shown} is not a directory, so {refuse}. Remove it (as its owner or \
                     root): rm {q}"
                ),
                Problem::Owner { owner } => format!(
                    "{shown} is owned by uid {owner}, not by {me_or_root}: another user may \
                     have created it to intercept {victim}, so {refuse}. Remove it (as root or \
                     uid {owner}): rm -r {q}"
                ),
                Problem::Writable { mode } => format!(
                    "{shown} is writable by group or others (mode {mode:04o}): anyone could \
                     replace the socket in it, so {refuse}. Make it private (as its owner): \
                     chmod 700 {q}"
                ),
            }
        }
        Role::Explicit { .. } | Role::ParentOfDefault { .. } => {
            let what = match role {
                Role::Explicit { socket } => {
                    format!("{shown}, the directory of the socket {},", socket.display())
                }
                Role::ParentOfDefault { default } => {
                    format!(
                        "{shown}, which holds nkv's directory {},",
                        default.display()
                    )
                }
                _ => unreachable!("matched above"),
            };
            match problem {
                Problem::Owner { owner } => format!(
                    "{what} is owned by uid {owner}, not by uid {me} or root: its owner could \
                     replace the socket. Use a directory owned by uid {me} or root."
                ),
                Problem::Writable { mode } => format!(
                    "{what} is writable by group or others without the sticky bit (mode \
                     {mode:04o}): anyone could replace the socket. Fix it (as its owner): \
                     chmod go-w {q}"
                ),
                Problem::Symlink | Problem::NotDirectory => {
                    format!("{what} is not a directory.")
                }
            }
        }
    }
}

/// `path` as one shell word, so that a command printed in a message works
/// when pasted: bare when it holds only safe characters, else in single
/// quotes.
pub(crate) fn shell_quote(path: &Path) -> String {
    let mut text = path.to_string_lossy().into_owned();
    if text.starts_with('-') {
        // Not an option to the command it follows.
        text.insert_str(0, "./");
    }
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Mode bits a socket permission flag may set (no setuid, setgid, sticky).
const SOCKET_MODE_BITS: u32 = 0o777;

/// Parses `--socket-mode`: an octal mode from `0600` to `0777` that keeps
/// read and write for the owner (the server's own user must stay able to
/// connect), like `0660`.
pub fn parse_socket_mode(text: &str) -> Result<u32, String> {
    let expected = || format!("{text:?}: expected an octal mode like 0600, 0660 or 0666");
    let digits = text.trim();
    if digits.is_empty() || digits.len() > 4 || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(expected());
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|_| expected())?;
    if mode & !SOCKET_MODE_BITS != 0 {
        return Err(format!(
            "{text:?}: a socket mode has no setuid, setgid or sticky bit (at most 0777)"
        ));
    }
    if mode & 0o600 != 0o600 {
        return Err(format!(
            "{text:?}: the owner must keep read and write (0600 and up, like 0660)"
        ));
    }
    Ok(mode)
}

/// Parses `--socket-group`: a numeric gid, or a group name looked up
/// through the system's group database (`/etc/group`, NSS).
pub fn parse_socket_group(text: &str) -> Result<u32, String> {
    let name = text.trim();
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_digit()) {
        return name
            .parse()
            .map_err(|_| format!("{text:?}: gid out of range"));
    }
    if name.is_empty() {
        return Err("expected a group name or a numeric gid".into());
    }
    uzers::get_group_by_name(name)
        .map(|group| group.gid())
        .ok_or_else(|| format!("{text:?}: no such group (give a group name or a numeric gid)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_modes() {
        assert_eq!(parse_socket_mode("0600"), Ok(0o600));
        assert_eq!(parse_socket_mode("660"), Ok(0o660));
        assert_eq!(parse_socket_mode("0666"), Ok(0o666));
        for bad in [
            "", "0x1", "rw", "0800", "06600", "4660", "0060", "0400", "-600",
        ] {
            assert!(parse_socket_mode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn socket_groups() {
        assert_eq!(parse_socket_group("0"), Ok(0));
        assert_eq!(parse_socket_group("4242"), Ok(4242));
        assert!(parse_socket_group("99999999999").is_err());
        assert!(parse_socket_group("").is_err());
        assert!(parse_socket_group("no-such-group-nkv-test").is_err());
        assert_eq!(parse_socket_group("root"), Ok(0));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote(Path::new("/tmp/nkv-1000")), "/tmp/nkv-1000");
        assert_eq!(shell_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
        assert_eq!(shell_quote(Path::new("-x")), "./-x");
    }
}
