//! Safe defaults, tried as another local user would (issue 10, "Why"):
//!
//! 1. another user creates the victim's default socket directory first (or
//!    makes it a symbolic link) and runs a server there: the victim's server
//!    refuses to start and the victim's client refuses to connect, each
//!    naming the path and the fix, and the fix works as printed;
//! 2. a root server with defaults in a directory owned by `nobody` refuses;
//! 3. the socket is `0600` under `umask 000`, another user cannot connect,
//!    and `--socket-mode` / `--socket-group` let exactly a group in;
//! 4. data files are `0600` in a `0700` directory: another user cannot read
//!    a segment.
//!
//! The tests use real identities: they run as root (as CI does) and start
//! the other users' processes with `setpriv` under fresh uids and gids that
//! no account uses. The hard-coded default `/tmp/nkv-$UID` is exercised for
//! real, for a fresh uid, so no test-only override of it exists. Not root,
//! or no `setpriv`: each test prints why it skips, and passes.

use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The attacker's, the victim's and a bystander's uid (and gid), plus a
/// group, all fresh: derived from this process's id so that concurrent
/// runs of this file do not collide, far above any real account.
struct Ids {
    base: u32,
}

impl Ids {
    /// `slot` separates the tests of this file, which run in parallel.
    fn new(slot: u32) -> Ids {
        Ids {
            base: 1_500_000_000 + (std::process::id() % 1_000_000) * 64 + slot * 8,
        }
    }
    fn victim(&self) -> u32 {
        self.base
    }
    fn attacker(&self) -> u32 {
        self.base + 1
    }
    fn member(&self) -> u32 {
        self.base + 2
    }
    fn outsider(&self) -> u32 {
        self.base + 3
    }
    fn group(&self) -> u32 {
        self.base + 4
    }
}

/// Whether this test can act as other users; prints why not.
fn can_switch_users() -> bool {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: switching to other uids needs root (CI runs the tests as root)");
        return false;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIPPED: setpriv (util-linux) is not installed");
        return false;
    }
    true
}

/// A scratch directory every user may enter (not write), removed at the
/// end, with the binaries where every user can run them.
struct Scratch {
    dir: tempfile::TempDir,
    server: PathBuf,
    cli: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
        let server = runnable_by_all(Path::new(env!("CARGO_BIN_EXE_nkv-server")), dir.path());
        let cli = runnable_by_all(Path::new(env!("CARGO_BIN_EXE_nkv")), dir.path());
        Scratch { dir, server, cli }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A directory `name` owned by `uid` with `mode`.
    fn dir_of(&self, name: &str, uid: u32, mode: u32) -> PathBuf {
        let path = self.path(name);
        std::fs::create_dir(&path).unwrap();
        chown(&path, Some(uid), Some(uid)).unwrap();
        std::fs::set_permissions(&path, PermissionsExt::from_mode(mode)).unwrap();
        path
    }
}

/// `binary`, or a copy of it in `dir` when some directory above it keeps
/// other users out.
fn runnable_by_all(binary: &Path, dir: &Path) -> PathBuf {
    let open = binary
        .ancestors()
        .skip(1)
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if open {
        return binary.to_path_buf();
    }
    let copy = dir.join(binary.file_name().unwrap());
    std::fs::copy(binary, &copy).unwrap();
    std::fs::set_permissions(&copy, PermissionsExt::from_mode(0o755)).unwrap();
    copy
}

/// Runs `program` as `uid` (group `uid`, supplementary `groups`), with a
/// clean environment plus `env`.
fn as_user(uid: u32, groups: &[u32], program: &Path, env: &[(&str, &Path)]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    cmd.arg(program);
    clean_env(&mut cmd, env);
    cmd
}

/// Runs `program` as root, with a clean environment plus `env`.
fn as_root(program: &Path, env: &[(&str, &Path)]) -> Command {
    let mut cmd = Command::new(program);
    clean_env(&mut cmd, env);
    cmd
}

fn clean_env(cmd: &mut Command, env: &[(&str, &Path)]) {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    for (name, value) in env {
        cmd.env(name, value);
    }
}

/// A server process, killed when dropped.
struct Server(Child);

impl Server {
    /// Starts `cmd` and waits until `socket` accepts connections.
    fn start(mut cmd: Command, socket: &Path) -> Server {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut server = Server(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        // Root may connect whatever the modes.
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            if let Some(status) = server.0.try_wait().unwrap() {
                let stderr = std::io::read_to_string(server.0.stderr.take().unwrap()).unwrap();
                panic!("the server exited ({status}): {stderr}");
            }
            assert!(
                Instant::now() < deadline,
                "no server on {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Stops the server (SIGTERM) and returns what it logged.
    fn stop(mut self) -> String {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        let status = self.0.wait().unwrap();
        let log = std::io::read_to_string(self.0.stderr.take().unwrap()).unwrap();
        assert!(status.success(), "{status}: {log}");
        log
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes a path in /tmp when dropped (the real default directory of a
/// fresh uid).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

fn run(mut cmd: Command) -> Output {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn succeeded(out: Output) -> String {
    assert!(out.status.success(), "failed: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `cmd`, expects it to fail within 20 s, and returns its stderr. A
/// server that starts instead of refusing is killed, and the test fails.
fn refused(mut cmd: Command) -> String {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("expected a refusal, but it kept running: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "expected a refusal; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr(&out)
}

/// The command a message ends with: after its last `": "`.
fn fix_in(message: &str, needle: &str) -> String {
    let line = message
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in: {message}"));
    line.rsplit(": ").next().unwrap().trim().to_owned()
}

/// Runs a printed fix command verbatim with sh, as `uid` (root: `None`).
fn run_fix(command: &str, uid: Option<u32>) {
    let mut cmd = match uid {
        None => Command::new("sh"),
        Some(uid) => {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "sh",
            ]);
            cmd
        }
    };
    let out = cmd.args(["-c", command]).output().unwrap();
    assert!(out.status.success(), "`{command}` failed: {}", stderr(&out));
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Finding 1, on the real default path: another user creates
/// `/tmp/nkv-$UID` of the victim first and runs a server in it.
#[test]
fn a_planted_default_directory_is_refused_by_server_and_client() {
    if !can_switch_users() {
        return;
    }
    let ids = Ids::new(0);
    let scratch = Scratch::new();
    let (victim, attacker) = (ids.victim(), ids.attacker());
    let planted = PathBuf::from(format!("/tmp/nkv-{victim}"));
    let _cleanup = RemoveOnDrop(planted.clone());
    let socket = planted.join("nkv.sock");
    let victim_home = scratch.dir_of("victim", victim, 0o700);
    let attacker_home = scratch.dir_of("attacker", attacker, 0o700);
    let victim_data = victim_home.join("data");

    // The attacker gets there first.
    run_fix(
        &format!("mkdir -m 700 {}", planted.display()),
        Some(attacker),
    );
    let mut planted_server = as_user(attacker, &[], &scratch.server, &[]);
    planted_server
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .arg("--data-dir")
        .arg(attacker_home.join("data"));
    let planted_server = Server::start(planted_server, &socket);

    // The victim's server, with defaults, refuses, naming the path and fix.
    let mut server = as_user(victim, &[], &scratch.server, &[]);
    server.arg("--data-dir").arg(&victim_data);
    let message = refused(server);
    let expected = format!(
        "{} is owned by uid {attacker}, not by this user (uid {victim})",
        planted.display()
    );
    assert!(message.contains(&expected), "{message}");
    let server_fix = fix_in(&message, "Remove it");
    assert_eq!(server_fix, format!("rm -r {}", planted.display()));

    // The victim's client refuses to connect: the password never leaves.
    let mut put = as_user(victim, &[], &scratch.cli, &[]);
    put.args(["put", "app.password", "hunter2"]);
    let message = refused(put);
    assert!(message.contains("refusing to connect"), "{message}");
    assert!(
        message.contains(&format!(
            "{} is owned by uid {attacker}, not by you (uid {victim}) or root",
            planted.display()
        )),
        "{message}"
    );
    let client_fix = fix_in(&message, "Remove it");
    assert_eq!(client_fix, server_fix);
    let mut get = as_root(&scratch.cli, &[]);
    get.arg("--addr")
        .arg(format!("unix:{}", socket.display()))
        .args(["get", "app.password"]);
    let out = run(get);
    assert_eq!(out.status.code(), Some(1), "the planted store got the key");
    planted_server.stop();

    // The fix, as printed (run by root), then all is well.
    run_fix(&server_fix, None);
    let mut server = as_user(victim, &[], &scratch.server, &[]);
    server.arg("--data-dir").arg(&victim_data);
    let server = Server::start(server, &socket);
    assert_eq!(mode(&planted), 0o700);
    assert_eq!(std::fs::metadata(&planted).unwrap().uid(), victim);
    let mut put = as_user(victim, &[], &scratch.cli, &[]);
    put.args(["put", "app.password", "hunter2"]);
    succeeded(run(put));
    let mut get = as_user(victim, &[], &scratch.cli, &[]);
    get.args(["get", "app.password"]);
    assert_eq!(succeeded(run(get)), "hunter2");

    // Another user cannot use the victim's server.
    let mut get = as_user(attacker, &[], &scratch.cli, &[]);
    get.arg("--addr")
        .arg(format!("unix:{}", socket.display()))
        .args(["get", "app.password"]);
    let message = refused(get);
    assert!(message.contains("Permission denied"), "{message}");
    server.stop();
}

/// Finding 1, the symbolic-link variant: the link points at a directory the
/// victim owns, so only a check that does not follow it catches it.
#[test]
fn a_symlinked_default_directory_is_refused_by_server_and_client() {
    if !can_switch_users() {
        return;
    }
    let ids = Ids::new(1);
    let scratch = Scratch::new();
    let (victim, attacker) = (ids.victim(), ids.attacker());
    let planted = PathBuf::from(format!("/tmp/nkv-{victim}"));
    let _cleanup = RemoveOnDrop(planted.clone());
    let victim_home = scratch.dir_of("victim", victim, 0o755);
    let target = scratch.dir_of("victim/run", victim, 0o700);
    run_fix(
        &format!("ln -s {} {}", target.display(), planted.display()),
        Some(attacker),
    );

    let mut server = as_user(victim, &[], &scratch.server, &[]);
    server.arg("--data-dir").arg(victim_home.join("data"));
    let message = refused(server);
    assert!(
        message.contains(&format!("{} is a symbolic link", planted.display())),
        "{message}"
    );
    let fix = fix_in(&message, "Remove it");
    assert_eq!(fix, format!("rm {}", planted.display()));
    assert!(
        std::fs::read_dir(&target).unwrap().next().is_none(),
        "the server created something through the link"
    );

    let mut put = as_user(victim, &[], &scratch.cli, &[]);
    put.args(["put", "app.password", "hunter2"]);
    let message = refused(put);
    assert!(
        message.contains("refusing to connect")
            && message.contains(&format!("{} is a symbolic link", planted.display())),
        "{message}"
    );

    // The printed fix works (as root: the link is the attacker's, in /tmp).
    run_fix(&fix, None);
    let mut server = as_user(victim, &[], &scratch.server, &[]);
    server.arg("--data-dir").arg(victim_home.join("data"));
    Server::start(server, &planted.join("nkv.sock")).stop();
}

/// The runtime directory given by `XDG_RUNTIME_DIR` follows the same
/// rules: writable by others, or under a parent anyone may rename it in,
/// is refused, and the printed fixes work.
#[test]
fn a_loose_runtime_directory_is_refused_and_the_fix_works() {
    if !can_switch_users() {
        return;
    }
    let ids = Ids::new(2);
    let scratch = Scratch::new();
    let victim = ids.victim();
    let home = scratch.dir_of("home", victim, 0o755);
    let runtime = scratch.dir_of("home/run", victim, 0o770);
    let env = [("XDG_RUNTIME_DIR", runtime.as_path())];
    let data = home.join("data");

    let start = |scratch: &Scratch| {
        let mut server = as_user(victim, &[], &scratch.server, &env);
        server.arg("--data-dir").arg(&data);
        server
    };
    let message = refused(start(&scratch));
    assert!(
        message.contains(&format!(
            "{} is writable by group or others (mode 0770)",
            runtime.display()
        )),
        "{message}"
    );
    let mut put = as_user(victim, &[], &scratch.cli, &env);
    put.args(["put", "k", "v"]);
    let client = refused(put);
    assert!(client.contains("refusing to connect"), "{client}");
    let fix = fix_in(&message, "Make it private");
    assert_eq!(fix, format!("chmod 700 {}", runtime.display()));
    run_fix(&fix, Some(victim));

    // Now the parent: writable by others, no sticky bit.
    std::fs::set_permissions(&home, PermissionsExt::from_mode(0o777)).unwrap();
    let message = refused(start(&scratch));
    assert!(
        message.contains(&format!(
            "{}, which holds nkv's directory {}, is writable by group or others without the \
             sticky bit (mode 0777)",
            home.display(),
            runtime.display()
        )),
        "{message}"
    );
    let fix = fix_in(&message, "Fix it");
    assert_eq!(fix, format!("chmod go-w {}", home.display()));
    run_fix(&fix, Some(victim));

    let server = Server::start(start(&scratch), &runtime.join("nkv.sock"));
    let mut put = as_user(victim, &[], &scratch.cli, &env);
    put.args(["put", "k", "v"]);
    succeeded(run(put));
    server.stop();
}

/// Finding 1, for root: a root server with defaults in a directory owned
/// by `nobody` (who could move its socket away) refuses, and so does a
/// root client.
#[test]
fn a_root_server_refuses_a_default_directory_owned_by_nobody() {
    if !can_switch_users() {
        return;
    }
    let scratch = Scratch::new();
    let nobody = 65534;
    let runtime = scratch.dir_of("run", nobody, 0o700);
    let env = [("XDG_RUNTIME_DIR", runtime.as_path())];
    let mut server = as_root(&scratch.server, &env);
    server.arg("--data-dir").arg(scratch.path("data"));
    let message = refused(server);
    assert!(
        message.contains(&format!(
            "{} is owned by uid {nobody}, not by this user (uid 0)",
            runtime.display()
        )),
        "{message}"
    );
    let mut get = as_root(&scratch.cli, &env);
    get.args(["get", "k"]);
    let client = refused(get);
    assert!(
        client.contains(&format!(
            "{} is owned by uid {nobody}, not by you (uid 0) or root",
            runtime.display()
        )),
        "{client}"
    );
    // The data directory was not the problem; nothing listens.
    assert!(!runtime.join("nkv.sock").exists());
}

/// Explicit socket paths: a directory owned by another user, one anyone
/// may write to without the sticky bit, and a socket path that is a
/// symbolic link are refused; a sticky shared directory is accepted.
#[test]
fn explicit_socket_directories_follow_the_shared_rule() {
    if !can_switch_users() {
        return;
    }
    let scratch = Scratch::new();
    let start = |socket: &Path| {
        let mut server = as_root(&scratch.server, &[]);
        server
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--data-dir")
            .arg(scratch.path("data"));
        server
    };

    let nobodys = scratch.dir_of("nobodys", 65534, 0o755);
    let message = refused(start(&nobodys.join("nkv.sock")));
    assert!(
        message.contains(&format!(
            "{}, the directory of the socket {}, is owned by uid 65534, not by uid 0 or root",
            nobodys.display(),
            nobodys.join("nkv.sock").display()
        )),
        "{message}"
    );

    let shared = scratch.dir_of("shared", 0, 0o777);
    let socket = shared.join("nkv.sock");
    let message = refused(start(&socket));
    assert!(
        message.contains("without the sticky bit (mode 0777)"),
        "{message}"
    );
    let fix = fix_in(&message, "Fix it");
    assert_eq!(fix, format!("chmod go-w {}", shared.display()));
    std::fs::set_permissions(&shared, PermissionsExt::from_mode(0o1777)).unwrap();
    Server::start(start(&socket), &socket).stop();
    run_fix(&fix, None);
    assert_eq!(mode(&shared), 0o1755);

    let link = shared.join("link.sock");
    std::os::unix::fs::symlink(scratch.path("elsewhere.sock"), &link).unwrap();
    let message = refused(start(&link));
    assert!(
        message.contains(&format!(
            "{} is a symbolic link; nkv-server never follows one for its socket",
            link.display()
        )),
        "{message}"
    );
    run_fix(&fix_in(&message, "Remove it"), None);
    assert!(!link.exists());
    assert!(!scratch.path("elsewhere.sock").exists());
}

/// Finding 3, the socket: `0600` under `umask 000`, so another user cannot
/// connect even through a directory it may enter.
#[test]
fn the_socket_is_private_whatever_the_umask() {
    if !can_switch_users() {
        return;
    }
    let ids = Ids::new(3);
    let scratch = Scratch::new();
    let dir = scratch.dir_of("sock", 0, 0o755);
    let socket = dir.join("nkv.sock");
    let mut server = Command::new("sh");
    server
        .args(["-c", "umask 000; exec \"$0\" \"$@\""])
        .arg(&scratch.server)
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .arg("--data-dir")
        .arg(scratch.path("data"));
    clean_env(&mut server, &[]);
    let server = Server::start(server, &socket);
    assert_eq!(mode(&socket), 0o600);

    let mut put = as_user(ids.outsider(), &[], &scratch.cli, &[]);
    put.arg("--addr")
        .arg(format!("unix:{}", socket.display()))
        .args(["put", "k", "v"]);
    let message = refused(put);
    assert!(message.contains("Permission denied"), "{message}");
    server.stop();
}

/// `--socket-mode 0660 --socket-group G` lets the members of G in, and no
/// one else; a directory that keeps them out is warned about, with a fix
/// that works.
#[test]
fn socket_mode_and_group_let_a_group_in() {
    if !can_switch_users() {
        return;
    }
    let ids = Ids::new(4);
    let scratch = Scratch::new();
    let group = ids.group();
    let dir = scratch.dir_of("sock", 0, 0o755);
    let socket = dir.join("nkv.sock");
    let addr = format!("unix:{}", socket.display());
    let start = |socket: &Path, group: &str| {
        let mut server = as_root(&scratch.server, &[]);
        server
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--data-dir")
            .arg(scratch.path("data"))
            .args(["--socket-mode", "0660", "--socket-group", group]);
        server
    };
    let client = |uid: u32, groups: &[u32], addr: &str| {
        let mut put = as_user(uid, groups, &scratch.cli, &[]);
        put.args(["--addr", addr, "put", "shared.key", "v"]);
        run(put)
    };

    let server = Server::start(start(&socket, &group.to_string()), &socket);
    assert_eq!(mode(&socket), 0o660);
    assert_eq!(std::fs::metadata(&socket).unwrap().gid(), group);
    succeeded(client(ids.member(), &[group], &addr));
    let out = client(ids.outsider(), &[], &addr);
    assert!(!out.status.success(), "an outsider got in");
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    server.stop();

    // A group by name, and a socket in a new (0700) directory: the server
    // warns that the group cannot get through, and its fix works.
    let (name, gid) = some_named_group();
    let private = scratch.path("private");
    let socket = private.join("nkv.sock");
    let addr = format!("unix:{}", socket.display());
    let server = Server::start(start(&socket, &name), &socket);
    assert_eq!(std::fs::metadata(&socket).unwrap().gid(), gid);
    assert_eq!(mode(&private), 0o700);
    let out = client(ids.member(), &[gid], &addr);
    assert!(!out.status.success(), "got through a 0700 directory");
    let log = server.stop();
    let fix = fix_in(&log, "let them through");
    assert_eq!(
        fix,
        format!("chgrp {gid} {0} && chmod g+x {0}", private.display())
    );
    run_fix(&fix, None);
    let server = Server::start(start(&socket, &name), &socket);
    succeeded(client(ids.member(), &[gid], &addr));
    let log = server.stop();
    assert!(!log.contains("let them through"), "{log}");
}

/// A group that exists in /etc/group by name, other than root's.
fn some_named_group() -> (String, u32) {
    let groups = std::fs::read_to_string("/etc/group").unwrap();
    groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?.parse().ok()?;
            Some((name.to_owned(), gid))
        })
        .find(|(_, gid)| *gid != 0)
        .expect("a group in /etc/group")
}

/// Bad `--socket-mode` and `--socket-group` values get clear errors.
#[test]
fn bad_socket_flags_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let server = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nkv-server"));
        cmd.arg("--listen")
            .arg(format!("unix:{}", dir.path().join("s.sock").display()))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args);
        cmd
    };
    for (args, expected) in [
        (
            &["--socket-mode", "0888"][..],
            "expected an octal mode like 0600, 0660 or 0666",
        ),
        (
            &["--socket-mode", "4660"],
            "no setuid, setgid or sticky bit",
        ),
        (
            &["--socket-mode", "0066"],
            "the owner must keep read and write",
        ),
        (&["--socket-group", "no-such-group-nkv"], "no such group"),
        (
            &["--socket-group", "0"],
            "lets the group in only with a --socket-mode that does, like --socket-mode 0660",
        ),
    ] {
        let message = refused(server(args));
        assert!(message.contains(expected), "{args:?}: {message}");
    }
}

/// Finding 3, the data: files `0600` in a `0700` directory under
/// `umask 000`, another user cannot read a segment even through a loosened
/// directory, and a loose existing directory is warned about with a fix
/// that works.
#[test]
fn data_files_are_private() {
    if !can_switch_users() {
        return;
    }
    let ids = Ids::new(5);
    let scratch = Scratch::new();
    let socket = scratch.path("nkv.sock");
    let data = scratch.path("data");
    let start = || {
        let mut server = Command::new("sh");
        server
            .args(["-c", "umask 000; exec \"$0\" \"$@\""])
            .arg(&scratch.server)
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--data-dir")
            .arg(&data);
        clean_env(&mut server, &[]);
        Server::start(server, &socket)
    };
    let nkv = |args: &[&str]| {
        let mut cmd = as_root(&scratch.cli, &[]);
        cmd.arg("--addr")
            .arg(format!("unix:{}", socket.display()))
            .args(args);
        succeeded(run(cmd))
    };
    let server = start();
    for n in 0..20 {
        nkv(&["put", &format!("wifi.password.{n}"), "hunter2"]);
    }
    nkv(&["del", "wifi.password.0"]);
    nkv(&["compact"]);
    server.stop();

    assert_eq!(mode(&data), 0o700);
    let mut files = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        files += 1;
    }
    assert!(files >= 3, "expected a lock, segments and hints");
    let segment = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a segment");

    // Even with the directory opened up, the segment stays unreadable.
    std::fs::set_permissions(&data, PermissionsExt::from_mode(0o755)).unwrap();
    let mut cat = as_user(ids.outsider(), &[], Path::new("cat"), &[]);
    cat.arg(&segment);
    let message = refused(cat);
    assert!(message.contains("Permission denied"), "{message}");

    // The loose directory is used, with a warning whose fix works.
    let log = start().stop();
    let fix = fix_in(&log, "make it private");
    assert_eq!(fix, format!("chmod 700 {}", data.display()));
    run_fix(&fix, None);
    assert_eq!(mode(&data), 0o700);
    let log = start().stop();
    assert!(!log.contains("make it private"), "{log}");
}

/// The lines of every fenced block with this info string, block by block.
fn blocks(text: &str, info: &str) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if let Some(rest) = line.trim_start().strip_prefix("```") {
            inside = !inside && rest.trim() == info;
            if inside {
                out.push(Vec::new());
            }
            continue;
        }
        if inside {
            out.last_mut().unwrap().push(line.trim().to_owned());
        }
    }
    out
}

/// Undoes the worked example of docs/security.md: the group and directory
/// it creates on the machine.
struct UndoExample {
    made_group: bool,
}

impl Drop for UndoExample {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all("/run/nkv");
        if self.made_group {
            let _ = Command::new("groupdel").arg("nkv").status();
        }
    }
}

/// docs/security.md's "Granting access to other users" works as written:
/// its commands run verbatim as root (the server in the background), a
/// member of the group `nkv` then runs the client command, and a user
/// outside the group is refused.
#[test]
fn the_granting_example_in_security_md_works_as_written() {
    if !can_switch_users() {
        return;
    }
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    if Path::new("/run/nkv").exists() || groups.lines().any(|l| l.starts_with("nkv:")) {
        eprintln!(
            "SKIPPED: /run/nkv or the group nkv exists already; the example would change them"
        );
        return;
    }
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/security.md"))
            .unwrap();
    // The first two blocks; the token example after them is run by
    // tests/access_control.rs.
    let sh = blocks(&doc, "sh");
    assert!(sh.len() >= 2, "{sh:?}");
    let ids = Ids::new(6);
    let scratch = Scratch::new();
    let bin_dir = scratch.server.parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let home = scratch.dir_of("home", 0, 0o700);
    let mut undo = UndoExample { made_group: false };
    let socket = Path::new("/run/nkv/nkv.sock");

    let mut server = None;
    for line in &sh[0] {
        if line.starts_with("nkv-server ") {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(format!("exec {line}"));
            clean_env(&mut cmd, &[("HOME", home.as_path())]);
            cmd.env("PATH", &path);
            server = Some(Server::start(cmd, socket));
            continue;
        }
        let out = Command::new("sh").arg("-c").arg(line).output().unwrap();
        assert!(out.status.success(), "`{line}`: {}", stderr(&out));
        undo.made_group |= line.starts_with("groupadd");
    }
    let server = server.expect("the example starts nkv-server");
    let gid: u32 = std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("nkv:x:"))
        .and_then(|rest| rest.split(':').next()?.parse().ok())
        .expect("the group nkv");
    assert_eq!(std::fs::metadata(socket).unwrap().gid(), gid);

    let client = |uid: u32, groups: &[u32], line: &str| {
        let mut cmd = as_user(uid, groups, Path::new("sh"), &[]);
        cmd.env("PATH", &path).arg("-c").arg(line);
        run(cmd)
    };
    assert_eq!(sh[1].len(), 1, "{:?}", sh[1]);
    let line = &sh[1][0];
    succeeded(client(ids.member(), &[gid], line));
    let out = client(ids.outsider(), &[], line);
    assert!(!out.status.success(), "an outsider got in");
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    let mut get = as_root(&scratch.cli, &[]);
    get.args(["--addr", "unix:/run/nkv/nkv.sock", "get", "ui.theme"]);
    assert_eq!(succeeded(run(get)), "dark");
    server.stop();
    drop(undo);
}
