//! The newcomer's examples work: `examples/watch.c` (built through the
//! pkg-config file made from `nkv.pc.in`) and `examples/watch.py` print the
//! snapshot, SYNCED and live changes of a prefix, and stop cleanly on Ctrl-C;
//! `examples/async_watch.rs` prints what a watch of a key sees while it
//! changes the key.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{lib_dir, rust_example, TestServer};
use nkv::client::{Client, ClientOptions};
use nkv::protocol::Condition;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Kills and reaps the child when dropped (also when a test fails).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `nkv.pc` for the build tree, written into `dir`.
fn write_pc(dir: &Path) {
    let template = std::fs::read_to_string(manifest_dir().join("nkv.pc.in")).expect("nkv.pc.in");
    assert!(
        template.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "nkv.pc.in's Version differs from Cargo.toml's {}",
        env!("CARGO_PKG_VERSION")
    );
    let pc = template
        .replace("@PREFIX@", &manifest_dir().display().to_string())
        .replace("@LIBDIR@", &lib_dir().display().to_string());
    std::fs::write(dir.join("nkv.pc"), pc).unwrap();
}

/// Compiler and linker flags for libnkv: from pkg-config when installed.
fn nkv_flags(dir: &Path) -> Vec<String> {
    write_pc(dir);
    match Command::new("pkg-config")
        .args(["--cflags", "--libs", "nkv"])
        .env("PKG_CONFIG_PATH", dir)
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        Ok(out) => panic!(
            "pkg-config rejected nkv.pc: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => {
            eprintln!("note: pkg-config is not installed; using the flags nkv.pc would give");
            vec![
                format!("-I{}", manifest_dir().join("include").display()),
                format!("-L{}", lib_dir().display()),
                "-lnkv".into(),
            ]
        }
    }
}

/// Runs a watcher of `net`, changes data, expects the matching lines, then
/// sends SIGINT and expects a clean exit. Returns everything printed.
fn drive_watcher(mut cmd: Command, server: &TestServer) -> String {
    let client = Client::connect(
        &server.addr().parse().expect("address"),
        ClientOptions::default(),
    )
    .expect("connect");
    client
        .put("net.eth0.state", b"up", Condition::None)
        .expect("put");
    client.put("other", b"x", Condition::None).expect("put");

    // cargo test's LD_LIBRARY_PATH beats the rpath and may name an older
    // libnkv.so (target/<profile>/): drop it.
    cmd.env_remove("LD_LIBRARY_PATH")
        .env("NKV_ADDR", server.addr())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = KillOnDrop(cmd.spawn().expect("spawn the example"));
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut expect = |prefix: &str| loop {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.starts_with(prefix) {
                    return;
                }
            }
            Err(_) => panic!("no line starting with {prefix:?}; the example printed:\n{seen}"),
        }
    };
    expect("UPDATE net.eth0.state = up");
    expect("SYNCED");
    client
        .put("net.eth0.mtu", b"1500", Condition::None)
        .expect("put");
    expect("UPDATE net.eth0.mtu = 1500");
    client
        .delete("net.eth0.state", Condition::None)
        .expect("delete");
    expect("DELETE net.eth0.state");

    let status = Command::new("kill")
        .arg("-INT")
        .arg(child.0.id().to_string())
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let mut exit = None;
    for _ in 0..500 {
        if let Some(s) = child.0.try_wait().expect("try_wait") {
            exit = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let exit = exit.unwrap_or_else(|| panic!("the example ignored Ctrl-C; printed:\n{seen}"));
    while let Ok(line) = lines.recv_timeout(Duration::from_millis(500)) {
        seen.push_str(&line);
        seen.push('\n');
    }
    assert!(
        exit.success(),
        "the example exited with {exit}; printed:\n{seen}"
    );
    assert!(
        !seen.contains("other"),
        "a key outside the prefix was printed:\n{seen}"
    );
    client.close();
    seen
}

#[test]
fn watch_c_example_builds_with_pkg_config_and_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = dir.path().join("watch");
    let mut cc = Command::new("cc");
    cc.args(["-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror"])
        .arg(manifest_dir().join("examples/watch.c"))
        .arg("-o")
        .arg(&exe)
        .args(nkv_flags(dir.path()))
        .arg(format!("-Wl,-rpath,{}", lib_dir().display()));
    let out = cc.output().expect("run cc");
    assert!(
        out.status.success(),
        "examples/watch.c does not build: {cc:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = TestServer::start();
    let mut cmd = Command::new(&exe);
    cmd.arg("net");
    let printed = drive_watcher(cmd, &server);
    assert!(
        printed.contains("CLOSED"),
        "no CLOSED line after Ctrl-C:\n{printed}"
    );
}

#[test]
fn watch_py_example_runs() {
    let server = TestServer::start();
    let mut cmd = Command::new("python3");
    cmd.arg(manifest_dir().join("examples/watch.py"))
        .arg("net")
        .env("NKV_LIB", lib_dir().join("libnkv.so"))
        .env("PYTHONPATH", manifest_dir().join("bindings/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    drive_watcher(cmd, &server);
}

#[test]
fn async_watch_example_prints_every_state_of_the_key() {
    let server = TestServer::start();
    let out = Command::new(rust_example("async_watch"))
        .arg("demo.light")
        .env("NKV_ADDR", server.addr())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the example");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the example failed; printed:\n{printed}"
    );
    let lines: Vec<&str> = printed.lines().collect();
    // The watch holds the newest value: it may skip one replaced before it
    // looked, but it starts absent, ends absent, and sees the last value.
    assert_eq!(
        lines.first(),
        Some(&"watch demo.light: (absent)"),
        "{printed}"
    );
    assert_eq!(
        lines.last(),
        Some(&"watch demo.light: (absent)"),
        "{printed}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("watch demo.light: \"off\" (revision ")),
        "the last value was not seen:\n{printed}"
    );
    let client = Client::connect(
        &server.addr().parse().expect("address"),
        ClientOptions::default(),
    )
    .expect("connect");
    assert_eq!(client.get("demo.light").expect("get"), None);
}

/// The async client makes the blocking client's check before it connects
/// to the default socket: a runtime directory anyone may write to is
/// refused, naming the problem, before anything is connected to.
#[test]
fn async_watch_example_refuses_a_loose_default_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = Command::new(rust_example("async_watch"))
        .env_remove("NKV_ADDR")
        .env("XDG_RUNTIME_DIR", &runtime)
        .stdin(Stdio::null())
        .output()
        .expect("run the example");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it connected: {stderr}");
    assert!(
        stderr.contains("refusing to connect") && stderr.contains("writable by group or others"),
        "{stderr}"
    );
}
