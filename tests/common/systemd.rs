//! What systemd does for a service, done by a test: descriptors passed as
//! 3, 4, … with `LISTEN_FDS` (by `systemd-socket-activate`, or by hand for
//! descriptors it would never pass), and a datagram socket standing in for
//! `NOTIFY_SOCKET`. Every process is killed when its handle drops.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for anything the server should do at once.
pub const WAIT: Duration = Duration::from_secs(20);

/// `systemd-socket-activate`, or `None` (with the reason printed) where it
/// is not installed and `NKV_REQUIRE_SYSTEMD` (set by `.ci/run`) is not.
pub fn socket_activate() -> Option<PathBuf> {
    tool("systemd-socket-activate")
}

/// A tool of the `systemd` package, found on `PATH`, as
/// [`socket_activate`].
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("NKV_REQUIRE_SYSTEMD").is_none(),
            "NKV_REQUIRE_SYSTEMD is set but {name} is not installed (Debian: apt-get install systemd)"
        );
        eprintln!("SKIPPED: {name} is not installed (Debian: apt-get install systemd)");
    }
    found
}

/// The `nkv-server` command with a data directory in `dir`, logging at
/// info to `dir/server.log`, nothing inherited from the test's own
/// `NKV_ADDR` or systemd variables.
pub fn server_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nkv-server"));
    cmd.arg("--data-dir").arg(dir.join("data"));
    quiet(&mut cmd, dir);
    cmd
}

/// Runs `cmd` with no stdin or stdout, stderr appended to
/// `dir/server.log`, `RUST_LOG=info`, and none of the test's own
/// variables that would change what the server does.
pub fn quiet(cmd: &mut Command, dir: &Path) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .env("RUST_LOG", "info");
    for name in [
        "NKV_ADDR",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "JOURNAL_STREAM",
    ] {
        cmd.env_remove(name);
    }
}

/// Makes `cmd` start with `fds` as descriptors 3, 4, … and
/// `LISTEN_FDS`/`LISTEN_PID` saying so (through `sh`, whose `$$` is the pid
/// the server will have after `exec`), as systemd starts a service.
/// `pid` overrides `LISTEN_PID` (another process's sockets). stdio as
/// [`quiet`] in `dir`.
pub fn pass_fds(cmd: Command, fds: Vec<OwnedFd>, pid: Option<u32>, dir: &Path) -> Command {
    let program = cmd.get_program().to_owned();
    let mut sh = Command::new("sh");
    quiet(&mut sh, dir);
    let listen_pid = match pid {
        Some(pid) => pid.to_string(),
        None => "$$".to_owned(),
    };
    sh.arg("-c")
        .arg(format!(
            "LISTEN_PID={listen_pid}; export LISTEN_PID; exec \"$0\" \"$@\""
        ))
        .arg(program)
        .args(cmd.get_args());
    for (name, value) in cmd.get_envs() {
        match value {
            Some(value) => sh.env(name, value),
            None => sh.env_remove(name),
        };
    }
    sh.env("LISTEN_FDS", fds.len().to_string());
    inherit_as_3_and_up(&mut sh, fds);
    sh
}

/// Makes `cmd`'s child get `fds` as descriptors 3, 4, … (and nothing
/// else beyond stdio: the rest are close-on-exec).
pub fn inherit_as_3_and_up(cmd: &mut Command, fds: Vec<OwnedFd>) {
    // Out of the way first, so that moving one to 3.. never overwrites
    // another that is still to move.
    let high: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| rustix::io::fcntl_dupfd_cloexec(fd.as_fd(), 100).unwrap())
        .collect();
    let raw: Vec<i32> = high.iter().map(|fd| fd.as_raw_fd()).collect();
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: it calls dup2 alone, on
    // descriptors open in the parent (kept open by `high`, which the
    // closure owns until the Command drops), and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for (target, fd) in (3..).zip(&raw) {
                if libc::dup2(*fd, target) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let _ = &high;
            Ok(())
        });
    }
    drop(fds);
}

/// A server process; killed (SIGKILL) when dropped.
pub struct Running {
    pub child: Option<Child>,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Running {
    /// Starts `cmd`, whose stderr goes to `dir/server.log`.
    pub fn spawn(mut cmd: Command, dir: &Path) -> Running {
        let child = cmd.spawn().expect("spawn");
        Running {
            child: Some(child),
            log: dir.join("server.log"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` (a name for kill, like TERM or HUP).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit (at most [`WAIT`]).
    pub fn exit_status(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.exit_status()
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A datagram socket standing in for systemd's `NOTIFY_SOCKET`.
pub struct FakeSystemd {
    socket: UnixDatagram,
    /// The value for `NOTIFY_SOCKET`.
    pub address: String,
}

impl FakeSystemd {
    /// Bound at `dir/notify`.
    pub fn bind(dir: &Path) -> FakeSystemd {
        let path = dir.join("notify");
        FakeSystemd {
            socket: UnixDatagram::bind(&path).unwrap(),
            address: path.to_str().unwrap().to_owned(),
        }
    }

    /// Bound to an abstract name (`@…`), as systemd's own is in some
    /// setups.
    pub fn bind_abstract(tag: &str) -> FakeSystemd {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("nkv-test-{tag}-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        FakeSystemd {
            socket: UnixDatagram::bind_addr(&addr).unwrap(),
            address: format!("@{name}"),
        }
    }

    /// The next notification within `wait`.
    pub fn next(&self, wait: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8(buf[..n].to_vec()).expect("UTF-8"))
    }

    /// Every notification until one with the line `line` (included);
    /// panics with what came when none does within [`WAIT`].
    pub fn until(&self, line: &str) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(message) = self.next(left) else {
                break;
            };
            let done = message.lines().any(|l| l == line);
            seen.push(message);
            if done {
                return seen;
            }
        }
        panic!("no {line:?} within {WAIT:?}; got {seen:?}");
    }

    /// Every notification within `wait`, each with when it came.
    pub fn during(&self, wait: Duration) -> Vec<(Instant, String)> {
        let deadline = Instant::now() + wait;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(message) => seen.push((Instant::now(), message)),
                None => break,
            }
        }
        seen
    }
}

/// The value of the assignment `name=` in `message`, if any.
pub fn field<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
}

/// `st_ino` of the file at `path` (not following a symbolic link).
pub fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .ino()
}
