//! Socket activation: the listening sockets systemd opened for us
//! (sd_listen_fds(3)).
//!
//! systemd passes them as descriptors 3, 4, … and says so in three
//! variables: `LISTEN_PID` (the process they are meant for: a variable
//! inherited by a child that did not get the descriptors must be ignored),
//! `LISTEN_FDS` (how many) and `LISTEN_FDNAMES` (their names, `:`-separated,
//! from `FileDescriptorName=`). [`take`] reads them, removes them from the
//! environment so that no child inherits a promise it cannot keep, and
//! takes ownership of the descriptors. What a descriptor must be to be
//! served (a listening stream socket, Unix or TCP) is the server's
//! business: `server::Inherited` checks it.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const FIRST_FD: RawFd = 3;

/// The variables of the protocol, all removed by [`take`].
const VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Most descriptors taken: far more than any socket unit declares, and a
/// bound on what a wrong `LISTEN_FDS` could make us claim.
const MAX_FDS: usize = 1024;

/// One descriptor passed by the service manager.
#[derive(Debug)]
pub struct ListenFd {
    /// The descriptor, owned by this process from now on.
    pub fd: OwnedFd,
    /// Its number as passed (3, 4, …), for messages.
    pub number: RawFd,
    /// Its name from `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`,
    /// by default the socket unit's name), or `unknown` when none was
    /// given, as sd_listen_fds_with_names(3) reports it.
    pub name: String,
}

/// What the environment said about socket activation.
#[derive(Debug, Default)]
pub struct Activation {
    /// The descriptors passed to this process (empty: not activated).
    pub fds: Vec<ListenFd>,
    /// Why variables that were present were ignored (`LISTEN_PID` names
    /// another process), to log once logging is set up.
    pub ignored: Option<String>,
}

/// What the variables ask for, before any descriptor is touched.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// No activation: no variables, or meant for another process.
    Nothing {
        /// Why variables that were present do not apply.
        ignored: Option<String>,
    },
    /// Take descriptors `3 .. 3 + names.len()`, named so.
    Take {
        /// One name per descriptor.
        names: Vec<String>,
    },
}

/// Reads the activation variables, removes them from the environment, and
/// takes the descriptors they describe, closing-on-exec. An error names
/// the variable or descriptor that is wrong.
///
/// Call it first thing in `main`, before any thread starts (removing
/// variables is not thread-safe) and before anything opens a file (which
/// could otherwise get a number that `LISTEN_FDS` claims).
pub fn take() -> Result<Activation, String> {
    let read = |name: &str| std::env::var(name).ok();
    let (pid, count, names) = (
        read("LISTEN_PID"),
        read("LISTEN_FDS"),
        read("LISTEN_FDNAMES"),
    );
    for name in VARIABLES {
        std::env::remove_var(name);
    }
    let me = std::process::id();
    match plan(pid.as_deref(), count.as_deref(), names.as_deref(), me)? {
        Plan::Nothing { ignored } => Ok(Activation {
            fds: Vec::new(),
            ignored,
        }),
        Plan::Take { names } => {
            let mut fds = Vec::with_capacity(names.len());
            for (number, name) in (FIRST_FD..).zip(names) {
                fds.push(ListenFd {
                    fd: claim(number, &name)?,
                    number,
                    name,
                });
            }
            Ok(Activation { fds, ignored: None })
        }
    }
}

/// Decides from the variables' values what to take, for process `me`.
pub(crate) fn plan(
    pid: Option<&str>,
    count: Option<&str>,
    names: Option<&str>,
    me: u32,
) -> Result<Plan, String> {
    let (Some(pid), Some(count)) = (pid, count) else {
        let ignored = (pid.is_some() || count.is_some())
            .then(|| "LISTEN_PID and LISTEN_FDS come together; only one was set".to_owned());
        return Ok(Plan::Nothing { ignored });
    };
    let pid: u32 = pid.trim().parse().map_err(|_| {
        format!("LISTEN_PID={pid:?} is not a process id (socket activation is misconfigured)")
    })?;
    if pid != me {
        // Inherited from a parent that was activated: not ours.
        return Ok(Plan::Nothing {
            ignored: Some(format!(
                "LISTEN_PID={pid} is not this process ({me}): the passed sockets are not \
                 for this server, so it ignores LISTEN_FDS and listens by itself"
            )),
        });
    }
    let count: usize = count.trim().parse().map_err(|_| {
        format!("LISTEN_FDS={count:?} is not a number of descriptors (socket activation is misconfigured)")
    })?;
    if count > MAX_FDS {
        return Err(format!(
            "LISTEN_FDS={count}: more than {MAX_FDS} passed descriptors (socket activation is misconfigured)"
        ));
    }
    if count == 0 {
        return Ok(Plan::Nothing { ignored: None });
    }
    let names: Vec<String> = match names {
        None => vec!["unknown".to_owned(); count],
        Some(names) => {
            let names: Vec<String> = names.split(':').map(str::to_owned).collect();
            if names.len() != count {
                return Err(format!(
                    "LISTEN_FDNAMES={:?} names {} descriptors, but LISTEN_FDS={count} \
                     (socket activation is misconfigured)",
                    names.join(":"),
                    names.len()
                ));
            }
            names
        }
    };
    Ok(Plan::Take { names })
}

/// Takes descriptor `number`, passed to us under `name`, and marks it
/// close-on-exec, as sd_listen_fds(3) does.
fn claim(number: RawFd, name: &str) -> Result<OwnedFd, String> {
    // SAFETY: F_GETFD reads the flags of a descriptor number and touches
    // no memory; for a number that is not open it fails with EBADF.
    if unsafe { libc::fcntl(number, libc::F_GETFD) } == -1 {
        return Err(format!(
            "LISTEN_FDS says descriptor {number} ({name}) was passed, but it is not open: {} \
             (socket activation is misconfigured)",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the descriptor is open (checked above), LISTEN_PID says the
    // service manager passed it to this very process, and nothing else in
    // the process refers to it: `take` runs once, first thing in `main`,
    // and removes the variables that describe it.
    let fd = unsafe { OwnedFd::from_raw_fd(number) };
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| format!("descriptor {number} ({name}): cannot set close-on-exec: {e}"))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Plan {
        Plan::Take {
            names: list.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn nothing_without_the_variables() {
        assert_eq!(
            plan(None, None, None, 7),
            Ok(Plan::Nothing { ignored: None })
        );
        assert!(matches!(
            plan(Some("7"), None, None, 7),
            Ok(Plan::Nothing { ignored: Some(_) })
        ));
    }

    #[test]
    fn another_process_s_sockets_are_ignored() {
        let Ok(Plan::Nothing { ignored: Some(why) }) = plan(Some("1"), Some("2"), None, 7) else {
            panic!("not ignored")
        };
        assert!(why.contains("LISTEN_PID=1") && why.contains("(7)"), "{why}");
    }

    #[test]
    fn names_default_to_unknown_and_must_match_the_count() {
        assert_eq!(
            plan(Some("7"), Some("2"), None, 7),
            Ok(names(&["unknown", "unknown"]))
        );
        assert_eq!(
            plan(Some("7"), Some("2"), Some("nkv.socket:tcp"), 7),
            Ok(names(&["nkv.socket", "tcp"]))
        );
        let err = plan(Some("7"), Some("2"), Some("one"), 7).unwrap_err();
        assert!(err.contains("LISTEN_FDNAMES"), "{err}");
        assert_eq!(
            plan(Some("7"), Some("0"), None, 7),
            Ok(Plan::Nothing { ignored: None })
        );
    }

    #[test]
    fn garbage_is_a_clear_error() {
        for (pid, count, var) in [
            ("x", "1", "LISTEN_PID"),
            ("7", "one", "LISTEN_FDS"),
            ("7", "-1", "LISTEN_FDS"),
            ("7", "100000", "LISTEN_FDS"),
        ] {
            let err = plan(Some(pid), Some(count), None, 7).unwrap_err();
            assert!(err.starts_with(var), "{err}");
        }
    }

    /// The variables go, whatever they said, so that no child inherits
    /// them. (Only this test touches them in this process.)
    #[test]
    fn the_variables_are_removed() {
        std::env::set_var("LISTEN_PID", std::process::id().to_string());
        std::env::set_var("LISTEN_FDS", "0");
        std::env::set_var("LISTEN_FDNAMES", "");
        let taken = take().unwrap();
        assert!(taken.fds.is_empty());
        for name in VARIABLES {
            assert!(std::env::var_os(name).is_none(), "{name} still set");
        }
    }
}
