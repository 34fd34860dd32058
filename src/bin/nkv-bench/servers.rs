//! The servers the bench starts: nkv-server and redis-server on Unix
//! sockets in temporary directories, their RSS and CPU time from `/proc`,
//! and cleanup.
//!
//! Cleanup happens on three paths: normally through `Drop` (kill, wait,
//! remove the directory), on Ctrl-C or SIGTERM through [`cleanup_all`],
//! called by the signal thread before the process exits, which kills every
//! server still registered and removes every directory still registered.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use crate::nkvwire::NkvConn;
use crate::resp::{Owned, RedisConn};
use crate::wire::Target;

/// What must be undone if the bench is interrupted.
struct Registry {
    pids: Vec<i32>,
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pids: Vec::new(),
    dirs: Vec::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // A panic while holding the lock must not stop the cleanup.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Set once a signal asked the bench to stop.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether a signal asked the bench to stop (rows failing from then on
/// failed because their servers were killed: nothing to report).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Marks the bench as interrupted (before [`cleanup_all`] kills servers).
pub fn set_interrupted() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Kills every registered process (SIGKILL), reaps it, and removes every
/// registered directory. For the Ctrl-C path; `Drop` does the same one by
/// one on the normal path.
pub fn cleanup_all() {
    let mut reg = registry();
    for pid in reg.pids.drain(..) {
        if let Some(pid) = Pid::from_raw(pid) {
            let _ = kill_process(pid, Signal::KILL);
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
        }
    }
    for dir in reg.dirs.drain(..) {
        let _ = fs::remove_dir_all(dir);
    }
}

/// A private temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/nkv-bench-PID-N` with mode 700. Kept short: a Unix
    /// socket path must fit in 108 bytes.
    pub fn new() -> io::Result<TempDir> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("nkv-bench-{}-{n}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
                    registry().dirs.push(path.clone());
                    return Ok(TempDir { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
        registry().dirs.retain(|d| d != &self.path);
    }
}

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// nkv-server.
    Nkv,
    /// redis-server.
    Redis,
}

/// A running server, killed and waited for on drop.
#[derive(Debug)]
pub struct Server {
    /// Which server.
    pub kind: Kind,
    child: Option<Child>,
    program: PathBuf,
    args: Vec<String>,
    /// Its socket.
    pub target: Target,
    /// Its data directory (nkv: `DIR/data`; Redis: `DIR`).
    pub data_dir: PathBuf,
    log: PathBuf,
    // Last field: dropped after the process is gone.
    dir: TempDir,
}

/// How long a server may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

impl Server {
    /// Starts nkv-server with `--fsync FSYNC`, the row's `extra` flags and
    /// the user's `--server-arg`s.
    pub fn nkv(ctx: &crate::Ctx, fsync: &str, extra: &[&str]) -> Result<Server, String> {
        let bin = &ctx.server_bin;
        let dir = TempDir::new().map_err(|e| format!("temp dir: {e}"))?;
        let socket = dir.path().join("nkv.sock");
        let data_dir = dir.path().join("data");
        let mut args = vec![
            format!("--listen=unix:{}", socket.display()),
            format!("--data-dir={}", data_dir.display()),
            format!("--fsync={fsync}"),
            "--log=warn".to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(ctx.server_args.iter().cloned());
        let mut server = Server {
            kind: Kind::Nkv,
            child: None,
            program: bin.to_path_buf(),
            args,
            target: Target::Unix(socket),
            data_dir,
            log: dir.path().join("server.log"),
            dir,
        };
        server.spawn()?;
        Ok(server)
    }

    /// Starts redis-server on a Unix socket only, with `extra` config
    /// flags (e.g. `--appendonly yes`).
    pub fn redis(extra: &[&str]) -> Result<Server, String> {
        let dir = TempDir::new().map_err(|e| format!("temp dir: {e}"))?;
        let socket = dir.path().join("redis.sock");
        let mut args: Vec<String> = [
            "--port",
            "0",
            "--unixsocket",
            &socket.display().to_string(),
            "--unixsocketperm",
            "700",
            "--dir",
            &dir.path().display().to_string(),
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = Server {
            kind: Kind::Redis,
            child: None,
            program: PathBuf::from("redis-server"),
            args,
            target: Target::Unix(socket),
            data_dir: dir.path().to_path_buf(),
            log: dir.path().join("server.log"),
            dir,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), String> {
        self.respawn_nowait()?;
        self.wait_ready()
    }

    /// Waits until the server answers: nkv completes HELLO; Redis answers
    /// PING with PONG (not LOADING).
    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "{} exited at start ({status}); its log:\n{}",
                        self.program.display(),
                        self.log_tail()
                    ));
                }
            }
            let ready = match self.kind {
                Kind::Nkv => NkvConn::connect(&self.target).is_ok(),
                Kind::Redis => RedisConn::connect(&self.target)
                    .and_then(|mut c| c.command(&[b"PING"]))
                    .is_ok_and(|v| v == Owned::Simple("PONG".into())),
            };
            if ready {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "{} did not answer within {START_TIMEOUT:?}; its log:\n{}",
                    self.program.display(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory (VmRSS) in bytes.
    pub fn rss_bytes(&self) -> Result<u64, String> {
        let pid = self.pid().ok_or("server not running")?;
        let status =
            fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| "no VmRSS in /proc/PID/status".into())
    }

    /// Sends SIGTERM and waits for the process to exit (SIGKILL after
    /// `timeout`). Returns how long it took.
    pub fn terminate(&mut self, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        let Some(mut child) = self.child.take() else {
            return Ok(Duration::ZERO);
        };
        if let Some(pid) = Pid::from_raw(child.id() as i32) {
            let _ = kill_process(pid, Signal::TERM);
        }
        loop {
            if child.try_wait().map_err(|e| e.to_string())?.is_some() {
                break;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let id = child.id() as i32;
        registry().pids.retain(|p| *p != id);
        Ok(start.elapsed())
    }

    /// Starts the server (again, with the same flags and data) without
    /// waiting for it (the restart measurement polls by itself).
    pub fn respawn_nowait(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("log file: {e}"))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        registry().pids.push(child.id() as i32);
        self.child = Some(child);
        Ok(())
    }

    /// Fails when the process has exited (with its log).
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => Ok(()),
            _ => Err(format!(
                "{} is not running; its log:\n{}",
                self.program.display(),
                self.log_tail()
            )),
        }
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let id = child.id() as i32;
            registry().pids.retain(|p| *p != id);
        }
    }
}

/// CPU time process `pid` used so far (utime + stime of all its threads),
/// in seconds, from `/proc/PID/stat`.
pub fn process_cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // The command name (field 2) may hold spaces: count from after ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("bad /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime 15.
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    let (Some(u), Some(s)) = (ticks(14), ticks(15)) else {
        return Err("bad /proc/PID/stat".into());
    };
    // /proc counts ticks of USER_HZ, which is 100 on Linux whatever the
    // kernel's HZ.
    Ok((u + s) as f64 / 100.0)
}

/// Bytes of the regular files under `dir` (apparent sizes).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

/// Whether `program` is an executable on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Raises this process's soft open-file limit to its hard limit (the
/// fan-out row holds 1,000 subscriber connections; servers started from
/// here inherit the limit). Returns the new soft limit.
pub fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let current = getrlimit(Resource::Nofile);
    let wanted = Rlimit {
        current: current.maximum,
        maximum: current.maximum,
    };
    if setrlimit(Resource::Nofile, wanted).is_ok() {
        current.maximum.unwrap_or(u64::MAX)
    } else {
        current.current.unwrap_or(u64::MAX)
    }
}
