//! Telling systemd how the service is doing (sd_notify(3)), and the
//! watchdog's interval (sd_watchdog_enabled(3)).
//!
//! A notification is one datagram of newline-separated `NAME=value`
//! assignments (`READY=1`, `STATUS=…`, `WATCHDOG=1`) sent to the Unix
//! socket named by `NOTIFY_SOCKET`: a path, or an abstract name written
//! with a leading `@`. systemd learns who sent it from the kernel's
//! credentials on the socket, so nothing else is needed.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go: the socket `NOTIFY_SOCKET` names.
#[derive(Debug)]
pub struct Notifier {
    /// An unbound datagram socket, non-blocking: a supervisor that does
    /// not read must not stall the thread that tells it something.
    socket: UnixDatagram,
    /// The destination.
    to: SocketAddr,
    /// `NOTIFY_SOCKET` as given, for messages.
    shown: String,
}

impl Notifier {
    /// A notifier for the value of `NOTIFY_SOCKET`: an absolute path, or
    /// `@name` for an abstract socket. Other forms (systemd's `vsock:`)
    /// are refused with a message.
    pub fn new(value: &str) -> io::Result<Notifier> {
        let unsupported = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "NOTIFY_SOCKET={value:?}: expected a socket path or an abstract name (@name)"
                ),
            )
        };
        let to = if let Some(name) = value.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        } else if value.starts_with('/') {
            SocketAddr::from_pathname(value)?
        } else {
            return Err(unsupported());
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Notifier {
            socket,
            to,
            shown: value.to_owned(),
        })
    }

    /// Sends `state`, newline-separated assignments, as one datagram.
    /// Fails when the supervisor's socket is gone or its queue is full
    /// (`WouldBlock`): the caller decides whether that matters.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let sent = self.socket.send_to_addr(state.as_bytes(), &self.to)?;
        if sent != state.len() {
            return Err(io::Error::other("the notification was truncated"));
        }
        Ok(())
    }

    /// Sends `state`, logging a failure instead of returning it: a lost
    /// status line must not stop the server (a lost `WATCHDOG=1` is
    /// followed by the next one).
    pub fn tell(&self, state: &str) {
        if let Err(e) = self.send(state) {
            tracing::warn!(
                "cannot notify the service manager at {}: {e} (sending {:?})",
                self.shown,
                state.lines().next().unwrap_or_default()
            );
        }
    }
}

/// `STATUS=text` as one assignment: a status is one line, so line breaks
/// in `text` become spaces.
pub fn status(text: &str) -> String {
    format!("STATUS={}", text.replace('\n', " "))
}

/// `MONOTONIC_USEC=…`: the monotonic clock now, in microseconds, which
/// systemd wants beside `RELOADING=1` to tell one reload from the next.
pub fn monotonic_usec() -> String {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = (now.tv_sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add(now.tv_nsec as u64 / 1000);
    format!("MONOTONIC_USEC={usec}")
}

/// The watchdog's timeout, from the values of `WATCHDOG_USEC` and
/// `WATCHDOG_PID`, for process `me`: `None` when no watchdog is asked of
/// this process (`WATCHDOG_PID` names another one). A ping is due every
/// half of it.
pub fn watchdog_timeout(
    usec: Option<&str>,
    pid: Option<&str>,
    me: u32,
) -> Result<Option<Duration>, String> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    if let Some(pid) = pid {
        let pid: u32 = pid
            .trim()
            .parse()
            .map_err(|_| format!("WATCHDOG_PID={pid:?} is not a process id"))?;
        if pid != me {
            return Ok(None);
        }
    }
    match usec.trim().parse::<u64>() {
        Ok(usec) if usec > 0 => Ok(Some(Duration::from_micros(usec))),
        _ => Err(format!(
            "WATCHDOG_USEC={usec:?} is not a timeout in microseconds"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaches_a_path_and_an_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        Notifier::new(path.to_str().unwrap())
            .unwrap()
            .send("READY=1\nSTATUS=up")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=up");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("nkv-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::new(&format!("@{name}"))
            .unwrap()
            .send("WATCHDOG=1")
            .unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn refuses_what_it_cannot_reach() {
        assert!(Notifier::new("vsock:2:1234").is_err());
        assert!(Notifier::new("relative/path").is_err());
    }

    #[test]
    fn watchdog_is_for_the_named_process_only() {
        assert_eq!(watchdog_timeout(None, None, 7), Ok(None));
        assert_eq!(
            watchdog_timeout(Some("30000000"), None, 7),
            Ok(Some(Duration::from_secs(30)))
        );
        assert_eq!(
            watchdog_timeout(Some("30000000"), Some("7"), 7),
            Ok(Some(Duration::from_secs(30)))
        );
        assert_eq!(watchdog_timeout(Some("30000000"), Some("8"), 7), Ok(None));
        assert!(watchdog_timeout(Some("0"), None, 7).is_err());
        assert!(watchdog_timeout(Some("soon"), None, 7).is_err());
    }

    #[test]
    fn a_status_is_one_line() {
        assert_eq!(status("a\nb"), "STATUS=a b");
        assert!(monotonic_usec().starts_with("MONOTONIC_USEC="));
    }
}
