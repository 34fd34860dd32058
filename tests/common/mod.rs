//! Shared test harness: a real `nkv-server` process on a socket in a
//! temporary directory, and a raw wire client that speaks frames byte for
//! byte. Every server is killed when its handle drops.

#![allow(dead_code)] // each test binary uses a different part of this

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nkv::protocol::{ClientCodec, ClientFrame, Event, Request, Response, ServerFrame};
use tokio_util::codec::{Decoder, Encoder};

/// A server process with its own data directory and socket.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub extra_args: Vec<String>,
    pub tcp_port: Option<u16>,
    /// A command the server runs under (e.g. `prlimit --nofile=...`).
    pub wrapper: Vec<String>,
    /// Where the data lives, if not in `dir`.
    pub data: Option<PathBuf>,
    /// Whether stderr goes to `dir/server.log` (else it is inherited).
    pub capture_log: bool,
}

/// Options for a [`TestServer`] beyond its flags.
#[derive(Default)]
pub struct Setup {
    /// Command prefix, e.g. `["prlimit", "--nofile=200:200", "--"]`.
    pub wrapper: Vec<String>,
    /// Data directory (default: `data` in the server's temp dir).
    pub data: Option<PathBuf>,
    /// Capture stderr in `server.log` (read it with `log()`).
    pub capture_log: bool,
}

impl TestServer {
    /// Starts a server with flags and a [`Setup`].
    pub fn start_setup(extra: &[&str], setup: Setup) -> TestServer {
        let mut server = TestServer {
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            tcp_port: None,
            wrapper: setup.wrapper,
            data: setup.data,
            capture_log: setup.capture_log,
        };
        server.spawn();
        server
    }

    /// What the server wrote to stderr (with `capture_log`).
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        // Without colour codes.
        let mut out = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Starts a server listening on `DIR/nkv.sock` only.
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    /// Starts a server with extra command-line flags.
    pub fn start_with(extra: &[&str]) -> TestServer {
        Self::start_setup(extra, Setup::default())
    }

    /// Starts a server on the Unix socket and on a free loopback TCP port.
    pub fn start_with_tcp() -> TestServer {
        let port = free_port();
        let mut server = TestServer {
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            extra_args: vec!["--listen".into(), format!("tcp:127.0.0.1:{port}")],
            tcp_port: Some(port),
            wrapper: Vec::new(),
            data: None,
            capture_log: false,
        };
        server.spawn();
        server
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("nkv.sock")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| self.dir.path().join("data"))
    }

    /// The `unix:PATH` address of this server.
    pub fn addr(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn spawn(&mut self) {
        let server = env!("CARGO_BIN_EXE_nkv-server");
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(server);
                cmd
            }
            None => Command::new(server),
        };
        if self.capture_log {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join("server.log"))
                .expect("server.log");
            cmd.stderr(log);
        }
        cmd.arg("--listen")
            .arg(self.addr())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.extra_args)
            .env_remove("NKV_ADDR")
            .env(
                "RUST_LOG",
                std::env::var("NKV_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = cmd.spawn().expect("spawn nkv-server");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if UnixStream::connect(self.socket()).is_ok() {
                if let Some(port) = self.tcp_port {
                    if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                }
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("nkv-server exited during start-up: {status}");
            }
            assert!(Instant::now() < deadline, "nkv-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then start again on the same data and socket.
    pub fn kill9_and_restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGKILL without restart.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again after a kill or terminate.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the server process in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    /// Open file descriptors of the server process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Waits (up to 10 s) until `measure` is at most `limit`, returning
    /// the last measurement: for resources the server gives back
    /// asynchronously after clients leave.
    pub fn settles<T: PartialOrd + Copy>(&self, limit: T, mut measure: impl FnMut() -> T) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = measure();
            if now <= limit || Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A raw wire client, handshake done.
    pub fn wire(&self) -> Wire {
        let mut wire = Wire::connect_unix(&self.socket());
        wire.hello();
        wire
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Raises this process's soft limit on open files to its hard limit (tests
/// that open many connections need more than the usual 1024).
pub fn raise_own_fd_limit() -> u64 {
    nkv::server::limits::raise_fd_limit().unwrap_or(1024)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Any blocking byte stream.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A blocking client that writes and reads frames (or raw bytes).
pub struct Wire {
    pub stream: Box<dyn Stream>,
    codec: ClientCodec,
    buf: BytesMut,
    next_id: u32,
}

impl Wire {
    pub fn connect_unix(path: &Path) -> Wire {
        let stream = UnixStream::connect(path).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Self::over(Box::new(stream))
    }

    pub fn connect_tcp(port: u16) -> Wire {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Self::over(Box::new(stream))
    }

    /// A wire client over an already connected Unix socket (its timeouts
    /// as the test set them).
    pub fn over_unix(stream: UnixStream) -> Wire {
        Self::over(Box::new(stream))
    }

    fn over(stream: Box<dyn Stream>) -> Wire {
        Wire {
            stream,
            codec: ClientCodec::new(),
            buf: BytesMut::new(),
            next_id: 1,
        }
    }

    /// Sends HELLO and expects HELLO_OK.
    pub fn hello(&mut self) {
        let request = Request::Hello {
            version: nkv::protocol::wire::PROTOCOL_VERSION,
            client_name: "test".into(),
            token: None,
        };
        match self.call(request) {
            Response::HelloOk { .. } => {}
            other => panic!("expected HELLO_OK, got {other:?}"),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends a request with a fresh id; returns the id.
    pub fn send(&mut self, request: Request) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.send_with_id(id, request);
        id
    }

    pub fn send_with_id(&mut self, id: u32, request: Request) {
        let mut out = BytesMut::new();
        self.codec
            .encode(ClientFrame { id, request }, &mut out)
            .expect("encode");
        self.send_raw(&out);
    }

    /// Sends a request with a fresh id, or the error (the server died).
    pub fn try_send(&mut self, request: Request) -> std::io::Result<u32> {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = BytesMut::new();
        self.codec
            .encode(ClientFrame { id, request }, &mut out)
            .expect("encode");
        self.stream.write_all(&out)?;
        Ok(id)
    }

    /// Next frame, `Ok(None)` at EOF, or the read error.
    pub fn try_recv(&mut self) -> std::io::Result<Option<ServerFrame>> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).expect("decode") {
                return Ok(Some(frame));
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Next frame from the server, or None at EOF.
    pub fn recv(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).expect("decode") {
                return Some(frame);
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk).expect("read");
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Next response, skipping (and returning) no events: panics on an event.
    pub fn response(&mut self) -> (u32, Response) {
        match self.recv().expect("a frame, not EOF") {
            ServerFrame::Response { id, response } => (id, response),
            other => panic!("expected a response, got {other:?}"),
        }
    }

    /// Sends a request and returns its response (expects no events between).
    pub fn call(&mut self, request: Request) -> Response {
        let id = self.send(request);
        let (got, response) = self.response();
        assert_eq!(got, id, "response id");
        response
    }

    /// Next event, panicking on anything else.
    pub fn event(&mut self) -> (u32, Event) {
        match self.recv().expect("a frame, not EOF") {
            ServerFrame::Event {
                subscription,
                event,
            } => (subscription, event),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// PUT without a condition; returns the revision (panics otherwise).
    pub fn put(&mut self, key: &str, value: &str) -> u64 {
        let request = Request::Put {
            key: key.into(),
            value: bytes::Bytes::copy_from_slice(value.as_bytes()),
            condition: nkv::protocol::Condition::None,
        };
        match self.call(request) {
            Response::PutOk { revision } => revision,
            other => panic!("PUT {key}: {other:?}"),
        }
    }

    /// GET: `(revision, value as text)`, or `None` for NOT_FOUND.
    pub fn get(&mut self, key: &str) -> Option<(u64, String)> {
        match self.call(Request::Get { key: key.into() }) {
            Response::GetOk { revision, value } => {
                Some((revision, String::from_utf8(value.to_vec()).unwrap()))
            }
            Response::Error(e) if e.code == nkv::protocol::ErrorCode::NotFound => None,
            other => panic!("GET {key}: {other:?}"),
        }
    }

    /// One counter of STATS (panics when it is missing).
    pub fn stat(&mut self, name: &str) -> u64 {
        match self.call(Request::Stats) {
            Response::StatsOk { stats } => stats
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("no {name} in STATS")),
            other => panic!("STATS: {other:?}"),
        }
    }

    /// SUB (grouped or not) from scratch; returns the subscription id once
    /// its snapshot has ended (SYNCED).
    pub fn subscribe(&mut self, prefix: &str, grouped: bool) -> u32 {
        let (prefix, since) = (prefix.to_owned(), None);
        let request = if grouped {
            Request::SubscribeGrouped { prefix, since }
        } else {
            Request::Subscribe { prefix, since }
        };
        let id = self.send(request);
        assert_eq!(self.response(), (id, Response::SubOk));
        loop {
            if let (_, Event::Synced { .. }) = self.event() {
                return id;
            }
        }
    }

    /// True when the server closed the connection (EOF) within the timeout.
    pub fn closed(&mut self) -> bool {
        self.recv().is_none()
    }
}
/// Whether any file directly in `dir` holds `needle` (values that must
/// never reach the disk).
pub fn files_contain(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle)
    })
}

pub mod disk;
pub mod fake;
pub mod hexdoc;
pub mod relay;
pub mod systemd;

/// The directory of the `libnkv.so` this test run built. The test binary
/// is `target/<profile>/deps/NAME-HASH`; `cargo test` builds the library's
/// cdylib into that `deps/` directory, and copies it up to
/// `target/<profile>/` only on `cargo build`, so the newer of the two wins.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe
        .parent()
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf();
    let profile = deps.parent().expect("target/<profile>").to_path_buf();
    let modified = |dir: &Path| {
        std::fs::metadata(dir.join("libnkv.so"))
            .and_then(|m| m.modified())
            .ok()
    };
    match (modified(&deps), modified(&profile)) {
        (Some(d), Some(p)) if p > d => profile,
        (Some(_), _) => deps,
        (None, Some(_)) => profile,
        (None, None) => panic!(
            "libnkv.so not found in {} or {} (cargo builds it with the library's cdylib crate type)",
            deps.display(),
            profile.display()
        ),
    }
}

/// A Rust example's binary, as this test run's profile builds it. A full
/// `cargo test` builds every example; `cargo test --test examples` alone
/// does not, so build it here (a no-op when it is current).
pub fn rust_example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let target_dir = profile_dir.parent().expect("target/");
    let profile = profile_dir.file_name().unwrap().to_str().unwrap();
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--quiet", "--example", name, "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cargo.arg("--release");
        }
        other => {
            cargo.args(["--profile", other]);
        }
    }
    let status = cargo.status().expect("run cargo");
    assert!(status.success(), "cargo could not build example {name}");
    profile_dir.join("examples").join(name)
}
