//! nkv-server at home under systemd, tested without a running systemd
//! (`tests/common/systemd.rs` plays its part): socket activation through
//! `systemd-socket-activate` and through descriptors passed by hand,
//! `NOTIFY_SOCKET` (READY, STATUS, STOPPING, RELOADING, the watchdog), the
//! journal's log format, the shipped units, and the README's install
//! commands in a scratch root.

mod common;

use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::systemd::{
    field, inode, pass_fds, quiet, server_cmd, socket_activate, tool, FakeSystemd, Running, WAIT,
};
use common::{free_port, Wire};
use nkv::protocol::{Condition, Request, Response};

/// PUT then GET of `key`, over a handshaken connection.
fn put_and_get(wire: &mut Wire, key: &str, value: &'static str) {
    let revision = match wire.call(Request::Put {
        key: key.into(),
        value: Bytes::from_static(value.as_bytes()),
        condition: Condition::None,
    }) {
        Response::PutOk { revision } => revision,
        other => panic!("PUT: {other:?}"),
    };
    assert_eq!(
        wire.call(Request::Get { key: key.into() }),
        Response::GetOk {
            revision,
            value: Bytes::from_static(value.as_bytes())
        }
    );
}

/// Waits until `path` exists.
fn wait_for_path(path: &Path) {
    let deadline = Instant::now() + WAIT;
    while !path.exists() {
        assert!(Instant::now() < deadline, "no {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connects to the Unix socket at `path` once it takes connections.
fn connect_when_up(path: &Path, server: &mut Running) -> Wire {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(stream) = UnixStream::connect(path) {
            stream.set_read_timeout(Some(WAIT)).unwrap();
            let mut wire = Wire::over_unix(stream);
            wire.hello();
            return wire;
        }
        if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("the server exited ({status}):\n{}", server.log());
        }
        assert!(
            Instant::now() < deadline,
            "{} never came up",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `systemd-socket-activate -l ADDRESS` running `nkv-server` with
/// `server_args`, passing `env` (it passes nothing else).
fn activated(
    activate: &Path,
    dir: &Path,
    address: &str,
    env: &[String],
    server_args: &[&str],
) -> Running {
    let mut cmd = Command::new(activate);
    cmd.arg("-l")
        .arg(address)
        .arg("--fdname=nkv.socket")
        .args(["-E", "RUST_LOG=info"]);
    for assignment in env {
        cmd.arg("-E").arg(assignment);
    }
    cmd.arg(env!("CARGO_BIN_EXE_nkv-server"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(server_args);
    quiet(&mut cmd, dir);
    Running::spawn(cmd, dir)
}

/// A private directory for the default socket (`XDG_RUNTIME_DIR`).
fn runtime_dir(dir: &Path) -> PathBuf {
    let runtime = dir.join("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    runtime
}

/// The socket systemd made is served as it is: the client that started
/// the server gets its answers, the file is never replaced or removed (its
/// inode stays, after shutdown too), and the default address is not bound.
#[test]
fn a_unix_socket_from_systemd_is_served_and_left_in_place() {
    let Some(activate) = socket_activate() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nkv.sock");
    let runtime = runtime_dir(dir.path());
    let mut server = activated(
        &activate,
        dir.path(),
        socket.to_str().unwrap(),
        &[format!("XDG_RUNTIME_DIR={}", runtime.display())],
        &[],
    );
    wait_for_path(&socket);
    let made = inode(&socket);
    // The first connection starts the server, which accepts it.
    let mut wire = connect_when_up(&socket, &mut server);
    put_and_get(&mut wire, "net.eth0.state", "up");
    assert_eq!(inode(&socket), made, "the server replaced systemd's socket");
    assert!(
        !runtime.join("nkv.sock").exists(),
        "activation must replace the default address"
    );
    drop(wire);
    assert!(server.terminate().success(), "{}", server.log());
    assert_eq!(inode(&socket), made, "the socket file must stay");
}

/// A TCP socket from systemd is served the same way.
#[test]
fn a_tcp_socket_from_systemd_is_served() {
    let Some(activate) = socket_activate() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let runtime = runtime_dir(dir.path());
    let mut server = activated(
        &activate,
        dir.path(),
        &format!("127.0.0.1:{port}"),
        &[format!("XDG_RUNTIME_DIR={}", runtime.display())],
        &[],
    );
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut wire = Wire::connect_tcp(port);
    wire.hello();
    put_and_get(&mut wire, "net.eth0.state", "up");
    assert!(!runtime.join("nkv.sock").exists());
    drop(wire);
    assert!(server.terminate().success(), "{}", server.log());
    assert!(
        server.log().contains(&format!("tcp:127.0.0.1:{port}")),
        "{}",
        server.log()
    );
}

/// `--listen` beside activation: a `--listen` that is the passed socket is
/// served through it (not bound again), another one is bound as usual;
/// at shutdown the server removes only the socket it made.
#[test]
fn listen_flags_beside_activation_bind_only_what_systemd_did_not_pass() {
    let Some(activate) = socket_activate() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let passed = dir.path().join("passed.sock");
    let own = dir.path().join("own.sock");
    let listen_passed = format!("unix:{}", passed.display());
    let listen_own = format!("unix:{}", own.display());
    let mut server = activated(
        &activate,
        dir.path(),
        passed.to_str().unwrap(),
        &[],
        &["--listen", &listen_passed, "--listen", &listen_own],
    );
    wait_for_path(&passed);
    let made = inode(&passed);
    let mut wire = connect_when_up(&passed, &mut server);
    put_and_get(&mut wire, "a", "1");
    let mut wire = connect_when_up(&own, &mut server);
    put_and_get(&mut wire, "b", "2");
    assert_eq!(inode(&passed), made);
    drop(wire);
    assert!(server.terminate().success(), "{}", server.log());
    assert_eq!(inode(&passed), made, "systemd's socket must stay");
    assert!(!own.exists(), "the server's own socket must go");
}

/// Runs `make` in a thread moved to a network namespace of its own, where
/// nothing from outside can reach what it binds; `None` (with the reason
/// printed) where that is not allowed.
fn in_private_network<T: Send + 'static>(make: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    std::thread::spawn(move || {
        // SAFETY: unshare(CLONE_NEWNET) moves only this thread, which
        // ends right after, into a new network namespace; it touches no
        // memory of the process.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "SKIPPED: cannot make a network namespace ({}); needs root, as CI has",
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(make())
    })
    .join()
    .unwrap()
}

/// A passed TCP socket that other machines could reach needs a token
/// file, as a `--listen` one does. (It is bound to 0.0.0.0 in a network
/// namespace of its own, so nothing can actually reach it.)
#[test]
fn an_activated_tcp_socket_others_can_reach_needs_a_token() {
    let Some(listener) =
        in_private_network(|| std::net::TcpListener::bind("0.0.0.0:7411").unwrap())
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fd: OwnedFd = listener.try_clone().unwrap().into();
    let mut refused = Running::spawn(
        pass_fds(server_cmd(dir.path()), vec![fd], None, dir.path()),
        dir.path(),
    );
    assert_eq!(refused.exit_status().code(), Some(1), "{}", refused.log());
    let log = refused.log();
    assert!(
        log.contains("tcp:0.0.0.0:7411 can be reached from other machines")
            && log.contains("--token-file"),
        "{log}"
    );

    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "0123456789abcdef0123456789abcdef\n").unwrap();
    let mut cmd = server_cmd(dir.path());
    cmd.arg("--token-file").arg(&tokens);
    let mut served = Running::spawn(
        pass_fds(cmd, vec![listener.into()], None, dir.path()),
        dir.path(),
    );
    let deadline = Instant::now() + WAIT;
    while !served.log().contains("tcp:0.0.0.0:7411") {
        assert!(Instant::now() < deadline, "{}", served.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(served.terminate().success(), "{}", served.log());
}

/// Runs the server with `fds` passed as 3, 4, … and expects it to refuse
/// to start: exit status 1 and `expected` in its message.
fn refused_with(fds: Vec<OwnedFd>, env: &[(&str, &str)], expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = pass_fds(server_cmd(dir.path()), fds, None, dir.path());
    for (name, value) in env {
        cmd.env(name, value);
    }
    let mut server = Running::spawn(cmd, dir.path());
    let status = server.exit_status();
    let log = server.log();
    assert_eq!(status.code(), Some(1), "{log}");
    for needle in expected {
        assert!(log.contains(needle), "{needle:?} not in:\n{log}");
    }
}

/// What systemd could pass that nkv cannot serve is refused with the
/// descriptor, its name, what it is and the fix, and exit status 1.
#[test]
fn descriptors_that_are_not_listening_stream_sockets_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("file")).unwrap();
    refused_with(
        vec![file.into()],
        &[("LISTEN_FDNAMES", "stored")],
        &["nkv-server: socket activation: descriptor 3 (stored) is a regular file, not a socket"],
    );

    let datagram = UnixDatagram::bind(dir.path().join("dgram")).unwrap();
    refused_with(
        vec![datagram.into()],
        &[],
        &["descriptor 3 (unknown) is a datagram socket (ListenDatagram=)"],
    );

    let (connection, _peer) = UnixStream::pair().unwrap();
    refused_with(
        vec![connection.into()],
        &[],
        &[
            "descriptor 3 (unknown) is a stream socket that is not listening",
            "Accept=no",
        ],
    );

    use std::os::linux::net::SocketAddrExt;
    let name = format!("nkv-test-abstract-{}", std::process::id());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let abstract_socket = UnixListener::bind_addr(&address).unwrap();
    refused_with(
        vec![abstract_socket.into()],
        &[],
        &[
            "is an abstract or unnamed Unix socket",
            "any local user could connect",
        ],
    );

    let listener = UnixListener::bind(dir.path().join("one.sock")).unwrap();
    refused_with(
        vec![listener.into()],
        &[("LISTEN_FDS", "2")],
        &["descriptor 4 (unknown) was passed, but it is not open"],
    );

    let listener = UnixListener::bind(dir.path().join("two.sock")).unwrap();
    refused_with(
        vec![listener.into()],
        &[("LISTEN_FDS", "one")],
        &["LISTEN_FDS=\"one\" is not a number of descriptors"],
    );
}

/// systemd's default `SocketMode=` is 0666: such a socket is refused (the
/// server's default is 0600) unless `--socket-mode` asks for it; a socket
/// another user owns is refused too.
#[test]
fn an_activated_socket_wider_than_socket_mode_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    refused_with(
        vec![listener.try_clone().unwrap().into()],
        &[],
        &[
            "whose mode 0666 lets every local user connect",
            "Set SocketMode=0600 in the socket unit, or accept it with --socket-mode 0666",
        ],
    );

    let mut cmd = server_cmd(dir.path());
    cmd.args(["--socket-mode", "0666"]);
    let mut server = Running::spawn(
        pass_fds(
            cmd,
            vec![listener.try_clone().unwrap().into()],
            None,
            dir.path(),
        ),
        dir.path(),
    );
    let mut wire = connect_when_up(&path, &mut server);
    put_and_get(&mut wire, "k", "v");
    drop(wire);
    assert!(server.terminate().success(), "{}", server.log());
    assert!(path.exists(), "a passed socket's file stays");

    if rustix::process::geteuid().is_root() {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::lchown(&path, Some(4242), None).unwrap();
        refused_with(
            vec![listener.into()],
            &[],
            &["owned by uid 4242: that user could connect", "SocketUser="],
        );
    } else {
        eprintln!("SKIPPED (ownership part): giving the socket to another uid needs root");
    }
}

/// `LISTEN_PID` naming another process means the descriptors are not
/// ours: the server ignores them and listens on its default address.
#[test]
fn sockets_meant_for_another_process_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let passed = dir.path().join("passed.sock");
    let listener = UnixListener::bind(&passed).unwrap();
    let runtime = runtime_dir(dir.path());
    let mut cmd = server_cmd(dir.path());
    cmd.env("XDG_RUNTIME_DIR", &runtime);
    let mut server = Running::spawn(
        pass_fds(
            cmd,
            vec![listener.try_clone().unwrap().into()],
            Some(1),
            dir.path(),
        ),
        dir.path(),
    );
    let mut wire = connect_when_up(&runtime.join("nkv.sock"), &mut server);
    put_and_get(&mut wire, "k", "v");

    // The passed socket queues the connection, but no one answers it.
    let stream = UnixStream::connect(&passed).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut ignored = Wire::over_unix(stream);
    ignored.send(Request::Hello {
        version: nkv::protocol::wire::PROTOCOL_VERSION,
        client_name: "test".into(),
        token: None,
    });
    match ignored.try_recv() {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the server served another process's socket: {other:?}"),
    }
    assert!(
        server.log().contains("LISTEN_PID=1 is not this process"),
        "{}",
        server.log()
    );
    assert!(server.terminate().success());
    drop(listener);
}

/// A server on `DIR/nkv.sock` telling `systemd` (with `env` besides).
fn notifying(dir: &Path, systemd: &FakeSystemd, env: &[(&str, &str)]) -> Running {
    let mut cmd = server_cmd(dir);
    cmd.arg("--listen")
        .arg(format!("unix:{}", dir.join("nkv.sock").display()))
        .env("NOTIFY_SOCKET", &systemd.address);
    for (name, value) in env {
        cmd.env(name, value);
    }
    Running::spawn(cmd, dir)
}

/// READY=1 comes once requests are answered (the test asks at once, with
/// no retry), with a STATUS= of what is served; SIGTERM brings STOPPING=1
/// and the stages of shutdown as STATUS= lines.
#[test]
fn ready_comes_once_requests_are_answered_and_stopping_at_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let systemd = FakeSystemd::bind(dir.path());
    let mut server = notifying(dir.path(), &systemd, &[]);
    let heard = systemd.until("READY=1");
    assert_eq!(
        heard[0],
        format!(
            "STATUS=opening the store in {}",
            dir.path().join("data").display()
        )
    );
    let socket = dir.path().join("nkv.sock");
    let stream = UnixStream::connect(&socket).expect("READY=1 before the socket was served");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut wire = Wire::over_unix(stream);
    wire.hello();
    put_and_get(&mut wire, "net.eth0.state", "up");
    let ready = heard.last().unwrap();
    assert_eq!(
        field(ready, "STATUS"),
        Some(
            format!(
                "serving 0 keys (revision 0) to 0 connections on unix:{}",
                socket.display()
            )
            .as_str()
        ),
        "{heard:?}"
    );

    server.signal("TERM");
    let stopping = systemd.until("STOPPING=1");
    assert_eq!(
        field(stopping.last().unwrap(), "STATUS"),
        Some("shutting down: no new connections, finishing the requests of 1 open"),
        "{stopping:?}"
    );
    systemd.until("STATUS=shutting down: syncing the store");
    assert!(server.exit_status().success(), "{}", server.log());
}

/// An abstract `NOTIFY_SOCKET` (`@name`) is reached too, and SIGHUP is a
/// reload: RELOADING=1 with MONOTONIC_USEC, then READY=1.
#[test]
fn an_abstract_notify_socket_hears_ready_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let systemd = FakeSystemd::bind_abstract("reload");
    let mut server = notifying(dir.path(), &systemd, &[]);
    systemd.until("READY=1");
    server.signal("HUP");
    let heard = systemd.until("READY=1");
    let reloading = heard
        .iter()
        .find(|m| m.lines().any(|l| l == "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 in {heard:?}"));
    let usec: u64 = field(reloading, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(usec > 0);
    assert_eq!(
        field(heard.last().unwrap(), "STATUS"),
        Some("access files reloaded")
    );
    assert!(server.terminate().success());
}

/// With WATCHDOG_USEC, WATCHDOG=1 comes every half of it; with
/// WATCHDOG_PID naming another process, never.
#[test]
fn the_watchdog_is_pinged_at_half_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let systemd = FakeSystemd::bind(dir.path());
    let mut server = notifying(dir.path(), &systemd, &[("WATCHDOG_USEC", "600000")]);
    systemd.until("READY=1");
    let heard = systemd.during(Duration::from_millis(2400));
    let pings: Vec<Instant> = heard
        .iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(at, _)| *at)
        .collect();
    // One every 300 ms: 8 in 2.4 s, give or take a loaded machine.
    assert!((5..=10).contains(&pings.len()), "{heard:?}");
    let mut gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    assert!(
        median >= Duration::from_millis(200) && median <= Duration::from_millis(400),
        "median gap {median:?}: {gaps:?}"
    );
    assert!(server.terminate().success());

    let dir = tempfile::tempdir().unwrap();
    let systemd = FakeSystemd::bind(dir.path());
    let mut server = notifying(
        dir.path(),
        &systemd,
        &[("WATCHDOG_USEC", "600000"), ("WATCHDOG_PID", "1")],
    );
    systemd.until("READY=1");
    let heard = systemd.during(Duration::from_millis(1500));
    assert!(
        heard.iter().all(|(_, m)| !m.contains("WATCHDOG=1")),
        "pinged another process's watchdog: {heard:?}"
    );
    assert!(server.terminate().success());
}

/// When stderr is the journal (JOURNAL_STREAM names it), each line starts
/// with its syslog priority and has no time and no colours; a fatal error
/// is `<3>`. A JOURNAL_STREAM that names another file changes nothing.
#[test]
fn logs_for_the_journal_carry_priorities_without_times_or_colours() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    std::fs::write(&log, "").unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    let journal = format!("{}:{}", meta.dev(), meta.ino());
    // An existing data directory open to others: a warning.
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::set_permissions(
        dir.path().join("data"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let socket = dir.path().join("nkv.sock");
    let mut cmd = server_cmd(dir.path());
    cmd.arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .env("JOURNAL_STREAM", &journal);
    let mut server = Running::spawn(cmd, dir.path());
    drop(connect_when_up(&socket, &mut server));
    assert!(server.terminate().success());
    let text = server.log();
    assert!(!text.contains('\u{1b}'), "colours in the journal:\n{text}");
    for line in text.lines() {
        let rest = ["<3>", "<4>", "<6>", "<7>"]
            .iter()
            .find_map(|p| line.strip_prefix(p))
            .unwrap_or_else(|| panic!("no priority: {line:?}"));
        assert!(
            !rest.starts_with(|c: char| c.is_ascii_digit()),
            "a timestamp: {line:?}"
        );
    }
    assert!(text.contains("<6>nkv_server: listening"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("<4>") && l.contains("open to other users")),
        "{text}"
    );

    // A fatal error, the last line before exit 1.
    let mut cmd = server_cmd(dir.path());
    cmd.args(["--listen", "tcp:0.0.0.0:7411"])
        .env("JOURNAL_STREAM", &journal);
    let mut failed = Running::spawn(cmd, dir.path());
    assert_eq!(failed.exit_status().code(), Some(1));
    let last = failed.log().lines().last().unwrap().to_owned();
    assert!(
        last.starts_with("<3>nkv-server: tcp:0.0.0.0:7411 can be reached"),
        "{last}"
    );

    // Not the journal: the usual lines, with their time.
    let other = tempfile::tempdir().unwrap();
    let mut cmd = server_cmd(other.path());
    cmd.arg("--listen")
        .arg(format!("unix:{}", other.path().join("nkv.sock").display()))
        .env("JOURNAL_STREAM", &journal);
    let mut plain = Running::spawn(cmd, other.path());
    drop(connect_when_up(&other.path().join("nkv.sock"), &mut plain));
    assert!(plain.terminate().success());
    let first = plain.log().lines().next().unwrap_or_default().to_owned();
    assert!(!first.starts_with('<'), "{first}");
    assert!(first.contains("listening"), "{first}");
}

/// The unit files shipped in contrib/systemd/.
fn contrib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib/systemd")
        .join(name)
}

/// The values of `key=` in a unit file, in order.
fn unit_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

/// The one value of `key=` in a unit file.
fn unit_value(text: &str, key: &str) -> String {
    let values = unit_values(text, key);
    assert_eq!(values.len(), 1, "{key}= in {text}");
    values[0].clone()
}

/// `systemd-analyze verify` accepts both units and says nothing about them
/// (it exits 0 even after warnings). It checks that ExecStart's program
/// exists, so the copy it checks names the server built by this test.
#[test]
fn the_units_pass_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let service = std::fs::read_to_string(contrib("nkv.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/local/bin/nkv-server "));
    std::fs::write(
        dir.path().join("nkv.service"),
        service.replace(
            "/usr/local/bin/nkv-server",
            env!("CARGO_BIN_EXE_nkv-server"),
        ),
    )
    .unwrap();
    std::fs::copy(contrib("nkv.socket"), dir.path().join("nkv.socket")).unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(dir.path().join("nkv.socket"))
        .arg(dir.path().join("nkv.service"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("nkv."), "systemd-analyze warns:\n{said}");
}

/// The README's "Running under systemd" block, line by line, in a scratch
/// root: the `install` lines into it (the binaries this test built stand
/// in for `target/release`), `systemd-sysusers --root`, `systemctl --root
/// enable` (`daemon-reload` and `--now` need a running systemd and are
/// skipped). Then what systemd would do with the installed units: the
/// socket unit's path and the service's ExecStart (the installed binary,
/// its data directory under the scratch root), started by
/// `systemd-socket-activate` with the watchdog of WatchdogSec=; the
/// README's client line starts it, READY=1 and WATCHDOG=1 follow.
#[test]
fn the_readme_install_commands_work_in_a_scratch_root() {
    let (Some(activate), Some(_), Some(_)) = (
        socket_activate(),
        tool("systemd-sysusers"),
        tool("systemctl"),
    ) else {
        return;
    };
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("## Running under systemd")
        .nth(1)
        .expect("the section");
    let block: Vec<&str> = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a sh block")
        .lines()
        .collect();
    let root = tempfile::tempdir().unwrap();
    // What every system has already.
    for dir in ["usr/local/bin", "etc/systemd/system", "run", "var/lib"] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    let under_root = |word: &str| -> String {
        match word {
            "target/release/nkv-server" => env!("CARGO_BIN_EXE_nkv-server").to_owned(),
            "target/release/nkv" => env!("CARGO_BIN_EXE_nkv").to_owned(),
            _ if word.starts_with('/') => format!("{}{word}", root.path().display()),
            _ => word.to_owned(),
        }
    };
    let run = |mut cmd: Command, line: &str| {
        let out = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`{line}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut client_line = None;
    for line in &block {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[0] {
            "install" | "systemd-sysusers" => {
                let mut cmd = Command::new(words[0]);
                if words[0] == "systemd-sysusers" {
                    cmd.arg(format!("--root={}", root.path().display()));
                }
                cmd.args(words[1..].iter().map(|w| under_root(w)));
                run(cmd, line);
            }
            "systemctl" if words[1] == "daemon-reload" => {
                eprintln!("not run (needs a running systemd): {line}");
            }
            "systemctl" if words[1] == "enable" => {
                let mut cmd = Command::new("systemctl");
                cmd.arg(format!("--root={}", root.path().display()))
                    .arg("enable")
                    .args(words[2..].iter().filter(|w| **w != "--now"));
                run(cmd, line);
                eprintln!("--now not run (needs a running systemd): {line}");
            }
            _ if line.starts_with("NKV_ADDR=") => client_line = Some(words),
            _ => panic!("a README line this test does not check: {line}"),
        }
    }
    let etc = root.path().join("etc/systemd/system");
    // A link to /etc/systemd/system/nkv.socket, as seen from the root.
    let enabled = std::fs::read_link(etc.join("sockets.target.wants/nkv.socket")).unwrap();
    assert_eq!(enabled, Path::new("/etc/systemd/system/nkv.socket"));
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("nkv:")), "{passwd}");

    let socket_unit = std::fs::read_to_string(etc.join("nkv.socket")).unwrap();
    let service_unit = std::fs::read_to_string(etc.join("nkv.service")).unwrap();
    assert_eq!(unit_value(&service_unit, "Type"), "notify");
    assert_eq!(unit_value(&service_unit, "User"), "nkv");
    assert_eq!(unit_value(&socket_unit, "SocketUser"), "nkv");
    assert_eq!(unit_value(&socket_unit, "SocketMode"), "0600");
    let listen = unit_value(&socket_unit, "ListenStream");
    assert_eq!(listen, "/run/nkv/nkv.sock");
    let socket = PathBuf::from(under_root(&listen));
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let exec: Vec<String> = unit_value(&service_unit, "ExecStart")
        .split_whitespace()
        .map(&under_root)
        .collect();
    assert!(!exec.iter().any(|w| w == "--listen"), "{exec:?}");
    let data = PathBuf::from(under_root("/var/lib/nkv"));
    assert!(exec.contains(&data.display().to_string()), "{exec:?}");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let watchdog_secs: u64 = unit_value(&service_unit, "WatchdogSec").parse().unwrap();

    let systemd = FakeSystemd::bind(root.path());
    let mut cmd = Command::new(activate);
    cmd.arg("-l")
        .arg(&socket)
        .arg("--fdname=nkv.socket")
        .args(["-E", "RUST_LOG=info", "-E"])
        .arg(format!("NOTIFY_SOCKET={}", systemd.address))
        .arg("-E")
        .arg(format!("WATCHDOG_USEC={}", watchdog_secs * 1_000_000))
        .args(&exec);
    quiet(&mut cmd, root.path());
    let mut server = Running::spawn(cmd, root.path());
    wait_for_path(&socket);

    let words = client_line.expect("the README's client line");
    let address = words[0].strip_prefix("NKV_ADDR=unix:").unwrap();
    let mut client = Command::new(under_root(&format!("/usr/local/bin/{}", words[1])));
    client
        .env("NKV_ADDR", format!("unix:{}", under_root(address)))
        .args(&words[2..]);
    run(client, &words.join(" "));
    let ready = systemd.until("READY=1");
    let status = field(ready.last().unwrap(), "STATUS").unwrap_or_default();
    let on = format!("on unix:{}", socket.display());
    assert!(
        status.starts_with("serving ") && status.ends_with(&on),
        "{ready:?}"
    );
    assert!(server.terminate().success(), "{}", server.log());
    assert!(socket.exists());
    assert!(data.join("LOCK").exists() || std::fs::read_dir(&data).unwrap().count() > 0);
}
