//! Tokens at HELLO and per-prefix rights from the caller's identity, with
//! real identities: the clients are `nkv` processes running as other uids
//! (the tests need root to switch; without it they say so and skip).

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_port, TestServer, Wire};
use nkv::protocol::{ErrorCode, Request, Response};

const NETD: u32 = 41001;
const UI: u32 = 41002;
const LOGSHIP: u32 = 41003;

const ROUTER_ACL: &str = "\
# the router of docs/security.md, by uid
net            user:41001  read,write,subscribe
net            user:41002  read,subscribe
net.wifi.psk   user:41002  none
ui             user:41002  all
log            user:41003  read,subscribe
";

fn root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED: switching to other uids needs root");
    false
}

/// A server on a socket every user may reach, with `--acl` (and more);
/// the ACL file lives in the returned directory.
fn server(acl: &str, extra: &[&str]) -> (TestServer, tempfile::TempDir, std::path::PathBuf) {
    let files = tempfile::tempdir().unwrap();
    let acl_path = files.path().join("acl");
    std::fs::write(&acl_path, acl).unwrap();
    let acl_flag = format!("--acl={}", acl_path.display());
    let mut flags = vec!["--socket-mode=0666", acl_flag.as_str()];
    flags.extend_from_slice(extra);
    let server = TestServer::start_with(&flags);
    // Other users must be able to reach the socket in the test's directory.
    std::fs::set_permissions(server.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    (server, files, acl_path)
}

/// `nkv ARGS` as `uid`.
fn nkv_as(uid: u32, server: &TestServer) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nkv"));
    cmd.uid(uid)
        .gid(uid)
        .env("NKV_ADDR", server.addr())
        .env_remove("XDG_RUNTIME_DIR");
    cmd
}

fn run_as(uid: u32, server: &TestServer, args: &[&str]) -> Output {
    nkv_as(uid, server).args(args).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn denied(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("UNAUTHORIZED") || err.contains("no "), "{err}");
    assert!(err.contains(needle), "{err} should name {needle}");
}

/// `nkv watch PREFIX` as `uid`, its lines arriving on a channel.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn start(uid: u32, server: &TestServer, prefix: &str) -> Watch {
        let mut child = nkv_as(uid, server)
            .args(["watch", prefix])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watch { child, lines }
    }

    /// Lines until one contains `end` (included).
    fn until(&self, end: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {end:?} line; saw {seen:?}"));
            let done = line.contains(end);
            seen.push(line);
            if done {
                return seen;
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn seed(server: &TestServer) {
    // The server's own user (root here) may do everything.
    for (key, value) in [
        ("net.eth0.state", "up"),
        ("net.wifi.psk", "hunter2"),
        ("ui.theme", "dark"),
        ("log.kernel", "ok"),
        ("logins.last", "alice"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_nkv"))
            .env("NKV_ADDR", server.addr())
            .args(["put", key, value])
            .output()
            .unwrap();
        ok(&out);
    }
}

#[test]
fn each_caller_gets_the_rights_of_its_prefixes() {
    if !root() {
        return;
    }
    let (server, _files, _acl) = server(ROUTER_ACL, &[]);
    seed(&server);

    // netd writes `net`; nobody else does.
    ok(&run_as(NETD, &server, &["put", "net.eth0.state", "down"]));
    let out = run_as(UI, &server, &["put", "net.eth0.state", "up"]);
    denied(&out, "no write right on \"net.eth0.state\"");
    denied(&out, "uid 41002");
    // The UI reads `net` but not the Wi-Fi password, and writes `ui`.
    assert_eq!(ok(&run_as(UI, &server, &["get", "net.eth0.state"])), "down");
    denied(
        &run_as(UI, &server, &["get", "net.wifi.psk"]),
        "no read right on \"net.wifi.psk\"",
    );
    ok(&run_as(UI, &server, &["put", "ui.theme", "light"]));
    // The log shipper reads `log` only; `log` does not cover `logins`.
    assert_eq!(ok(&run_as(LOGSHIP, &server, &["get", "log.kernel"])), "ok");
    denied(
        &run_as(LOGSHIP, &server, &["get", "logins.last"]),
        "logins.last",
    );
    denied(
        &run_as(LOGSHIP, &server, &["get", "net.eth0.state"]),
        "read",
    );
    // LIST of everything shows each caller only what it may read.
    let keys = |listed: &str| -> Vec<String> {
        listed
            .lines()
            .map(|l| l.split(" = ").next().unwrap().to_owned())
            .collect()
    };
    let listed = ok(&run_as(LOGSHIP, &server, &["list"]));
    assert_eq!(keys(&listed), ["log.kernel"], "{listed}");
    let listed = ok(&run_as(UI, &server, &["list"]));
    assert_eq!(keys(&listed), ["net.eth0.state", "ui.theme"], "{listed}");
    // A prefix delete must cover only writable keys.
    denied(&run_as(UI, &server, &["del", "--prefix", ""]), "write");
    denied(&run_as(NETD, &server, &["compact"]), "write");
    // No right anywhere under the prefix: no subscription.
    let out = run_as(LOGSHIP, &server, &["watch", "net"]);
    denied(&out, "subscribe");
}

#[test]
fn subscriptions_deliver_only_readable_keys_and_follow_a_reloaded_acl() {
    if !root() {
        return;
    }
    let (server, _files, acl) = server(ROUTER_ACL, &[]);
    seed(&server);
    let watch = Watch::start(UI, &server, "");
    let snapshot = watch.until("SYNCED");
    let text = snapshot.join("\n");
    assert!(text.contains("net.eth0.state"), "{text}");
    assert!(text.contains("ui.theme"), "{text}");
    assert!(!text.contains("psk") && !text.contains("hunter2"), "{text}");
    assert!(!text.contains("log.kernel"), "{text}");

    // Events: the log line is not for the UI, the link state is.
    ok(&run_as(LOGSHIP, &server, &["get", "log.kernel"]));
    let root_put = |key: &str, value: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_nkv"))
            .env("NKV_ADDR", server.addr())
            .args(["put", key, value])
            .output()
            .unwrap();
        ok(&out);
    };
    root_put("log.kernel", "panic");
    root_put("net.wifi.psk", "hunter3");
    root_put("net.eth0.state", "flapping");
    let seen = watch.until("net.eth0.state");
    let text = seen.join("\n");
    assert!(
        !text.contains("log.kernel") && !text.contains("hunter3"),
        "{text}"
    );

    // A rule added while subscribed: on SIGHUP the UI may read `log` too,
    // and its open subscription starts delivering it.
    std::fs::write(&acl, format!("{ROUTER_ACL}log user:41002 read,subscribe\n")).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !run_as(UI, &server, &["get", "log.kernel"]).status.success() {
        assert!(Instant::now() < deadline, "the reloaded ACL never applied");
        std::thread::sleep(Duration::from_millis(50));
    }
    root_put("log.kernel", "recovered");
    let seen = watch.until("log.kernel");
    assert!(seen.join("\n").contains("recovered"), "{seen:?}");

    // A file with a mistake keeps the rules in force.
    std::fs::write(&acl, "net user:41002 fly\n").unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        ok(&run_as(UI, &server, &["get", "log.kernel"])),
        "recovered"
    );
}

/// STATS names each connection's uid, pid and process name, read from the
/// kernel, not claimed by the client.
#[test]
fn stats_shows_who_is_connected() {
    if !root() {
        return;
    }
    let (server, _files, _acl) = server(ROUTER_ACL, &[]);
    let out = ok(&run_as(UI, &server, &["stats"]));
    let value = |suffix: &str| {
        out.lines()
            .find(|l| {
                l.starts_with("conn.") && l.split_whitespace().next().unwrap().ends_with(suffix)
            })
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_owned)
    };
    assert_eq!(value(".uid").as_deref(), Some("41002"), "{out}");
    let pid = value(".pid").expect("a pid");
    assert_eq!(value(".process.nkv"), Some(pid), "{out}");
}

#[test]
fn without_an_acl_who_gets_in_may_do_everything() {
    if !root() {
        return;
    }
    let server = TestServer::start_with(&["--socket-mode=0666"]);
    std::fs::set_permissions(server.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    ok(&run_as(UI, &server, &["put", "net.eth0.state", "up"]));
    assert_eq!(
        ok(&run_as(LOGSHIP, &server, &["get", "net.eth0.state"])),
        "up"
    );
}

const SECRET: &str = "5f0c3e2a9b7d41e68a2c4b1d9e0f7a36";

fn hello_with(wire: &mut Wire, token: Option<&str>) -> Response {
    wire.call(Request::Hello {
        version: 1,
        client_name: "token test".into(),
        token: token.map(str::to_owned),
    })
}

#[test]
fn tcp_clients_need_the_token_when_there_is_a_token_file() {
    let files = tempfile::tempdir().unwrap();
    let tokens = files.path().join("tokens");
    std::fs::write(&tokens, format!("# name secret\nbackup {SECRET}\n")).unwrap();
    let port = free_port();
    let server = TestServer::start_with(&[
        "--listen",
        &format!("tcp:127.0.0.1:{port}"),
        "--token-file",
        tokens.to_str().unwrap(),
    ]);
    for (token, allowed) in [
        (None, false),
        (Some("5f0c3e2a9b7d41e68a2c4b1d9e0f7a37"), false),
        (Some(SECRET), true),
    ] {
        let mut wire = Wire::connect_tcp(port);
        match hello_with(&mut wire, token) {
            Response::HelloOk { .. } if allowed => {
                assert!(matches!(
                    wire.call(Request::Get {
                        key: "a".into()
                    }),
                    Response::Error(e) if e.code == ErrorCode::NotFound
                ));
            }
            Response::Error(e) if !allowed => {
                assert_eq!(e.code, ErrorCode::Unauthorized, "{e:?}");
                // ... and the connection closes.
                assert!(wire.closed());
            }
            other => panic!("token {token:?}: {other:?}"),
        }
    }
    // Unix-socket clients are known by their credentials: no token needed.
    let mut wire = Wire::connect_unix(&server.socket());
    assert!(matches!(
        hello_with(&mut wire, None),
        Response::HelloOk { .. }
    ));
}

#[test]
fn a_reachable_tcp_address_needs_a_token_file_or_an_explicit_insecure_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_nkv-server"))
        .args([
            "--listen",
            "tcp:0.0.0.0:1",
            "--data-dir",
            "/nonexistent/nkv",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token-file FILE"), "{err}");
    assert!(err.contains("--insecure-no-auth"), "{err}");
    // The secret the message suggests is long enough for a token file.
    let secret = Command::new("sh")
        .args(["-c", "openssl rand -hex 32"])
        .output()
        .unwrap();
    if secret.status.success() {
        let secret = String::from_utf8_lossy(&secret.stdout);
        assert!(nkv::server::access::Tokens::parse(secret.trim()).is_ok());
    }
}

/// The router ACL of docs/security.md parses and means what the text
/// around it says (names resolved by a stand-in for /etc/passwd).
#[test]
fn the_router_acl_in_security_md_means_what_it_says() {
    use nkv::acl::{Acl, Caller, Names};
    struct RouterUsers;
    impl Names for RouterUsers {
        fn uid(&self, name: &str) -> Option<u32> {
            ["netd", "ui", "logship"]
                .iter()
                .position(|n| *n == name)
                .map(|i| 1001 + i as u32)
        }
        fn gid(&self, _: &str) -> Option<u32> {
            None
        }
    }
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/security.md")).unwrap();
    let block = doc
        .split("```acl\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("an acl block in docs/security.md");
    let acl = Acl::parse(block, &RouterUsers).unwrap();
    let who = |uid| Caller {
        uid: Some(uid),
        gids: vec![uid],
        token: None,
    };
    let (netd, ui, logship) = (who(1001), who(1002), who(1003));
    assert!(acl.rights(&netd, "net.eth0.state").write);
    assert!(acl.rights(&ui, "net.eth0.state").read);
    assert!(!acl.rights(&ui, "net.eth0.state").write);
    assert!(!acl.rights(&ui, "net.wifi.psk").read);
    assert!(acl.rights(&ui, "ui.theme").write);
    assert!(acl.rights(&logship, "log.kernel").read);
    assert!(!acl.rights(&logship, "logins").read);
    assert!(!acl.rights(&logship, "net.eth0.state").read);
    let backup = Caller {
        uid: None,
        gids: vec![],
        token: Some("backup".into()),
    };
    assert!(acl.rights(&backup, "net.wifi.psk").read);
    assert!(!acl.rights(&backup, "net.wifi.psk").write);
}

/// The token example of docs/security.md ("Tokens for TCP") works as
/// written, in a scratch directory: the secret, the server, a PUT with
/// `--token-file`, a GET with `NKV_TOKEN_FILE`; and without the token the
/// same GET is refused.
#[test]
fn the_token_example_in_security_md_works_as_written() {
    if std::net::TcpListener::bind("127.0.0.1:7411").is_err() {
        eprintln!("SKIPPED: port 7411, which the example uses, is taken");
        return;
    }
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/security.md")).unwrap();
    let section = doc.split("## Tokens for TCP").nth(1).expect("the section");
    let block: Vec<&str> = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a sh block")
        .lines()
        .collect();
    assert_eq!(block.len(), 4, "{block:?}");
    let scratch = tempfile::tempdir().unwrap();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_nkv"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let sh = |line: &str| {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(line)
            .current_dir(scratch.path())
            .env("PATH", &path)
            .env("HOME", scratch.path())
            .env_remove("NKV_ADDR")
            .env_remove("NKV_TOKEN_FILE")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_RUNTIME_DIR");
        cmd
    };
    let out = sh(block[0]).output().unwrap();
    if !out.status.success() {
        eprintln!("SKIPPED: `{}` failed (no openssl?)", block[0]);
        return;
    }
    assert!(block[1].starts_with("nkv-server "));
    let mut server = sh(&format!("exec {}", block[1]))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect("127.0.0.1:7411").is_err() {
        assert!(
            Instant::now() < deadline,
            "the example's server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let put = sh(block[2]).output().unwrap();
    let get = sh(block[3]).output().unwrap();
    let without = sh("nkv --addr tcp:127.0.0.1:7411 get net.eth0.state")
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    ok(&put);
    assert_eq!(ok(&get), "up");
    let err = String::from_utf8_lossy(&without.stderr);
    assert_eq!(without.status.code(), Some(2), "{err}");
    assert!(err.contains("requires a token"), "{err}");
}
