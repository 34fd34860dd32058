//! At home under systemd: socket activation, readiness and watchdog
//! notifications, and logs that read well in the journal.
//!
//! Each follows the protocol systemd documents (sd_listen_fds(3),
//! sd_notify(3), sd_watchdog_enabled(3), sd-daemon(3)), written with std
//! and rustix: no libsystemd, nothing to link. Everything here is driven
//! by the environment systemd sets, so a server started by hand behaves
//! exactly as before. `contrib/systemd/` has the units and the README the
//! way to install them.

pub mod activation;
pub mod journal;
pub mod notify;
mod service;

use std::time::Duration;

pub use service::Service;

/// Variables read by [`Environment::take`] besides socket activation's,
/// removed like those: nkv-server starts no child, but one that it ever
/// started must not ping the watchdog on its behalf.
const NOTIFY_VARIABLES: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// What systemd told this process through its environment.
#[derive(Debug)]
pub struct Environment {
    /// Sockets passed by socket activation (none when not activated).
    pub activation: activation::Activation,
    /// `NOTIFY_SOCKET`: where to send notifications.
    pub notify_socket: Option<String>,
    /// The watchdog's timeout (`WATCHDOG_USEC`, when `WATCHDOG_PID` is
    /// this process or unset).
    pub watchdog: Option<Duration>,
}

impl Environment {
    /// Reads the variables systemd sets and removes those only this
    /// process may act on, taking the activated sockets (see
    /// [`activation::take`]: call it first thing in `main`, before any
    /// thread starts or any file is opened). The error names the variable
    /// or descriptor that is wrong.
    pub fn take() -> Result<Environment, String> {
        let activation = activation::take()?;
        let read = |name: &str| std::env::var(name).ok();
        let (notify_socket, usec, pid) = (
            read("NOTIFY_SOCKET").filter(|s| !s.is_empty()),
            read("WATCHDOG_USEC"),
            read("WATCHDOG_PID"),
        );
        for name in NOTIFY_VARIABLES {
            std::env::remove_var(name);
        }
        let watchdog =
            notify::watchdog_timeout(usec.as_deref(), pid.as_deref(), std::process::id())?;
        Ok(Environment {
            activation,
            notify_socket,
            watchdog,
        })
    }
}
