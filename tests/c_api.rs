//! The C API end to end: the C programs in `tests/c/` and the C++ check in
//! `tests/cpp/` are compiled against `include/nkv.h` and the freshly built
//! `libnkv.so`, then run against a live `nkv-server` (its address in
//! `NKV_ADDR`, its pid in `NKV_SERVER_PID`). Each program also runs under
//! valgrind (no invalid access, no definite leak), with `NKV_TEST_VALGRIND=1`
//! so that it can scale its heavy loops down (valgrind is 20 to 50 times
//! slower).
//!
//! valgrind is required when `NKV_REQUIRE_VALGRIND` is set (`.ci/run` sets
//! it); otherwise a machine without it skips those variants with a note.
//!
//! Which program checks what (each one's top comment says more):
//! - `test_api`: every function, its status codes and outputs; key lengths
//!   (embedded NUL, impossible lengths), unknown status names, ABI checks,
//!   options, stats, server limits, per-thread deadlines, request timeouts.
//! - `test_callbacks`: the callback contract: snapshot/SYNCED/live order,
//!   one thread, unsubscribe (from anywhere, never waiting behind another
//!   subscription), no callback before `nkv_subscribe` returned, `nkv_close`
//!   from the main thread and from inside a callback.
//! - `test_stopped_server`: a timed-out `nkv_subscribe` (freed before it
//!   returns, nothing after a late answer), keepalive against a hung server.
//! - `test_slow_consumer`: a slow callback costs bounded memory (the queue
//!   coalesces).
//! - `test_manual_dispatch`: `NKV_DISPATCH_MANUAL` with `poll()`.
//! - `test_reconnect`, `test_threads`, `test_fork`: reconnect after a
//!   `kill -9`, many threads on one client, a forked child.
//! - `test_txn`: ephemeral keys, transactions, grouped subscriptions.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{lib_dir, TestServer};

/// How long one program may run (valgrind included).
const PROGRAM_DEADLINE: Duration = Duration::from_secs(150);

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn include_dir() -> PathBuf {
    manifest_dir().join("include")
}

/// Kills (SIGKILL) and reaps a child process when dropped.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("not yet reaped")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a compiler; panics with its output on failure.
fn run_compiler(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {cmd:?}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The strict C flags every C file here must pass.
const C_FLAGS: &[&str] = &["-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror"];

/// Compiles `tests/c/NAME.c` into `dir/NAME`, linked against libnkv.so.
fn compile_c(name: &str, dir: &Path) -> PathBuf {
    let lib = lib_dir();
    let out = dir.join(name);
    let mut cmd = Command::new("cc");
    cmd.args(C_FLAGS)
        .arg("-g")
        .arg("-I")
        .arg(include_dir())
        .arg("-I")
        .arg(manifest_dir().join("tests/c"))
        .arg(manifest_dir().join("tests/c").join(format!("{name}.c")))
        .arg("-o")
        .arg(&out)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lnkv", "-lpthread"]);
    run_compiler(cmd, &format!("compiling tests/c/{name}.c"));
    out
}

/// True when valgrind can run; panics when it is required but missing.
fn valgrind_available() -> bool {
    let found = Command::new("valgrind")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var_os("NKV_REQUIRE_VALGRIND").is_none(),
            "NKV_REQUIRE_VALGRIND is set but valgrind is not installed"
        );
        eprintln!("note: valgrind is not installed; skipping the valgrind variant");
    }
    found
}

const VALGRIND: &[&str] = &[
    "valgrind",
    "--error-exitcode=99",
    "--leak-check=full",
    "--errors-for-leak-kinds=definite",
    "--show-leak-kinds=definite",
    "--track-fds=no",
    "--quiet",
];

/// Lines valgrind prints for invalid accesses.
const VALGRIND_ERRORS: &[&str] = &[
    "Invalid read",
    "Invalid write",
    "Invalid free",
    "Mismatched free",
    "uninitialised value",
    "Source and destination overlap",
];

/// What a program printed, and how it ended.
struct Outcome {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

/// How a C test program is run.
#[derive(Default)]
struct Program {
    /// `tests/c/NAME.c`.
    name: &'static str,
    /// Flags for its `nkv-server`.
    server_args: &'static [&'static str],
    /// Extra environment for the program.
    env: &'static [(&'static str, &'static str)],
}

/// Runs `exe` (optionally under valgrind) against `server`, answering the
/// reconnect test's KILL / RESTART requests (see tests/c/test_reconnect.c).
fn run_program(exe: &Path, server: &mut TestServer, valgrind: bool, program: &Program) -> Outcome {
    let mut cmd = if valgrind {
        let mut c = Command::new(VALGRIND[0]);
        c.args(&VALGRIND[1..])
            .arg(exe)
            .env("NKV_TEST_VALGRIND", "1");
        c
    } else {
        Command::new(exe)
    };
    cmd.envs(program.env.iter().copied());
    // cargo test sets LD_LIBRARY_PATH (to target/<profile> first), which
    // beats the rpath and may hold an older libnkv.so: drop it.
    cmd.env_remove("LD_LIBRARY_PATH")
        .env("NKV_ADDR", server.addr())
        .env("NKV_SERVER_PID", server.pid().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard = KillOnDrop(Some(cmd.spawn().expect("spawn the C program")));
    let mut stdin = guard.child().stdin.take().expect("stdin");
    let stdout = guard.child().stdout.take().expect("stdout");
    let mut stderr = guard.child().stderr.take().expect("stderr");

    let (line_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let deadline = Instant::now() + PROGRAM_DEADLINE;
    let mut side: Option<KillOnDrop> = None;
    let mut out = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                out.push_str(&line);
                out.push('\n');
                match line.as_str() {
                    "KILL" => {
                        server.kill9();
                        let (child, addr) = start_side_server(server);
                        side = Some(child);
                        writeln!(stdin, "SIDE {addr}").expect("answer KILL");
                    }
                    "RESTART" => {
                        drop(side.take()); // kills it, releasing the data directory
                        server.restart();
                        writeln!(stdin, "GO").expect("answer RESTART");
                    }
                    _ => {}
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                drop(guard);
                panic!(
                    "{} did not finish within {PROGRAM_DEADLINE:?}; output so far:\n{out}",
                    exe.display()
                );
            }
        }
    }
    let status = loop {
        if let Some(status) = guard.child().try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{} closed stdout but did not exit",
            exe.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    guard.0 = None;
    Outcome {
        stdout: out,
        stderr: err_thread.join().unwrap_or_default(),
        code: status.code(),
    }
}

/// A second server on the same data directory, on `DIR/side.sock`.
fn start_side_server(server: &TestServer) -> (KillOnDrop, String) {
    let socket = server.dir.path().join("side.sock");
    let addr = format!("unix:{}", socket.display());
    let child = Command::new(env!("CARGO_BIN_EXE_nkv-server"))
        .arg("--listen")
        .arg(&addr)
        .arg("--data-dir")
        .arg(server.data_dir())
        .env_remove("NKV_ADDR")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the side server");
    let mut guard = KillOnDrop(Some(child));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if let Some(status) = guard.child().try_wait().expect("try_wait") {
            panic!("side server exited during start-up: {status}");
        }
        assert!(Instant::now() < deadline, "side server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (guard, addr)
}

/// Compiles and runs one C test program; asserts it succeeded.
fn c_test(name: &'static str, valgrind: bool) {
    c_test_program(
        &Program {
            name,
            ..Program::default()
        },
        valgrind,
    );
}

/// Compiles and runs one C test program with its own server flags and
/// environment; asserts it succeeded.
fn c_test_program(program: &Program, valgrind: bool) {
    if valgrind && !valgrind_available() {
        return;
    }
    let name = program.name;
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile_c(name, dir.path());
    let mut server = TestServer::start_with(program.server_args);
    let started = Instant::now();
    let outcome = run_program(&exe, &mut server, valgrind, program);
    let took = started.elapsed();
    let report = format!(
        "{name}{}: exit {:?} after {took:.1?}\n--- stdout\n{}--- stderr\n{}",
        if valgrind { " under valgrind" } else { "" },
        outcome.code,
        outcome.stdout,
        outcome.stderr
    );
    if valgrind {
        assert_ne!(outcome.code, Some(99), "valgrind found errors: {report}");
        // Also in forked children, whose exit code valgrind does not set.
        for sign in VALGRIND_ERRORS {
            assert!(!outcome.stderr.contains(sign), "valgrind: {sign}: {report}");
        }
    }
    assert_eq!(outcome.code, Some(0), "{report}");
    assert!(
        outcome.stdout.contains(&format!("{name}: OK")),
        "{name} did not report OK: {report}"
    );
    eprintln!("{report}");
}

/// test_api checks that `nkv_server_limits` reports what the server was
/// started with: limits other than the defaults, passed to it in the
/// environment. (Its long-key and large-value checks fit them: a 1099-byte
/// key and a 1 MiB + 1 value are refused, a 512 KiB value is stored.)
const TEST_API: Program = Program {
    name: "test_api",
    server_args: &["--max-key", "1000", "--max-value", "1000000"],
    env: &[
        ("NKV_TEST_MAX_KEY", "1000"),
        ("NKV_TEST_MAX_VALUE", "1000000"),
    ],
};

#[test]
fn c_every_function() {
    c_test_program(&TEST_API, false);
}

#[test]
fn c_every_function_valgrind() {
    c_test_program(&TEST_API, true);
}

#[test]
fn c_callback_contract() {
    c_test("test_callbacks", false);
}

#[test]
fn c_callback_contract_valgrind() {
    c_test("test_callbacks", true);
}

#[test]
fn c_reconnect_after_kill9() {
    c_test("test_reconnect", false);
}

#[test]
fn c_reconnect_after_kill9_valgrind() {
    c_test("test_reconnect", true);
}

#[test]
fn c_many_threads_share_a_client() {
    c_test("test_threads", false);
}

#[test]
fn c_many_threads_share_a_client_valgrind() {
    c_test("test_threads", true);
}

#[test]
fn c_forked_child_fails_fast() {
    c_test("test_fork", false);
}

/// The forked child ends by exec'ing /bin/true (see test_fork.c): what the
/// parent's client threads own can never be freed in the child.
#[test]
fn c_forked_child_fails_fast_valgrind() {
    c_test("test_fork", true);
}

/// A timed-out subscribe and a hung server (SIGSTOP).
#[test]
fn c_stopped_server() {
    c_test("test_stopped_server", false);
}

#[test]
fn c_stopped_server_valgrind() {
    c_test("test_stopped_server", true);
}

/// 20,000 updates to a slow callback: its queue coalesces, memory stays
/// bounded. The server does not fsync: durability is not the point, and the
/// writers should outrun the callback by far.
const TEST_SLOW_CONSUMER: Program = Program {
    name: "test_slow_consumer",
    server_args: &["--fsync", "never"],
    env: &[],
};

#[test]
fn c_slow_consumer_memory_is_bounded() {
    c_test_program(&TEST_SLOW_CONSUMER, false);
}

#[test]
fn c_slow_consumer_memory_is_bounded_valgrind() {
    c_test_program(&TEST_SLOW_CONSUMER, true);
}

#[test]
fn c_manual_dispatch_with_poll() {
    c_test("test_manual_dispatch", false);
}

#[test]
fn c_manual_dispatch_with_poll_valgrind() {
    c_test("test_manual_dispatch", true);
}

/// Tokens from C: the server listens on loopback TCP with a token file;
/// the program connects without, with a wrong, the right token, and the
/// file.
fn c_tokens(valgrind: bool) {
    const SECRET: &str = "5f0c3e2a9b7d41e68a2c4b1d9e0f7a36";
    let files = tempfile::tempdir().expect("temp dir");
    let token_file = files.path().join("tokens");
    std::fs::write(&token_file, format!("backup {SECRET}\n")).unwrap();
    let port = common::free_port();
    let tcp = format!("tcp:127.0.0.1:{port}");
    // Program wants 'static strings: a test process can afford these.
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let program = Program {
        name: "test_token",
        server_args: Box::leak(Box::new([
            "--listen",
            leak(tcp.clone()),
            "--token-file",
            leak(token_file.display().to_string()),
        ])),
        env: Box::leak(Box::new([
            ("NKV_TEST_TCP_ADDR", leak(tcp)),
            ("NKV_TEST_TOKEN", SECRET),
            (
                "NKV_TEST_TOKEN_FILE",
                leak(token_file.display().to_string()),
            ),
        ])),
    };
    c_test_program(&program, valgrind);
}

#[test]
fn c_tokens_over_tcp() {
    c_tokens(false);
}

#[test]
fn c_tokens_over_tcp_valgrind() {
    c_tokens(true);
}

#[test]
fn c_wait_for_a_state() {
    c_test("test_wait", false);
}

#[test]
fn c_wait_for_a_state_valgrind() {
    c_test("test_wait", true);
}

/// Ephemeral keys (gone with their owner, a leader claim), transactions
/// (applied, a failed condition naming its key, limits) and grouped
/// subscriptions (GROUP, then the transaction's events).
#[test]
fn c_txn_ephemeral_and_groups() {
    c_test("test_txn", false);
}

#[test]
fn c_txn_ephemeral_and_groups_valgrind() {
    c_test("test_txn", true);
}

/// `nkv.h` compiles as strict C11 when included twice.
#[test]
fn header_compiles_as_c_included_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("twice.c");
    std::fs::write(
        &src,
        "#include \"nkv.h\"\n#include \"nkv.h\"\n\
         int main(void) {\n\
             nkv_event ev = {.kind = NKV_EVENT_SYNCED, .subscription = 3, .revision = 1};\n\
             nkv_status s = NKV_OK;\n\
             nkv_callback cb = 0;\n\
             nkv_options *o = 0;\n\
             nkv_entries *e = 0;\n\
             nkv_stats_list *st = 0;\n\
             size_t nul = NKV_NUL;\n\
             (void)cb; (void)o; (void)e; (void)st;\n\
             return (int)s + (ev.revision == 1 && ev.key == 0 ? 0 : 1) + (NKV_VERSION_MAJOR < 0)\n\
                 + (NKV_ABI_VERSION < 0) + (nul == (size_t)-1 ? 0 : 1);\n\
         }\n",
    )
    .unwrap();
    let mut cmd = Command::new("cc");
    cmd.args(C_FLAGS)
        .arg("-I")
        .arg(include_dir())
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(dir.path().join("twice.o"));
    run_compiler(cmd, "compiling nkv.h (twice) as C11");
}

/// `tests/cpp/header_check.cpp`: the header as C++17, linked and run.
#[test]
fn header_compiles_and_links_as_cpp() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lib = lib_dir();
    let exe = dir.path().join("header_check");
    let mut cmd = Command::new("g++");
    cmd.args(["-std=c++17", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(include_dir())
        .arg(manifest_dir().join("tests/cpp/header_check.cpp"))
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lnkv");
    run_compiler(cmd, "compiling tests/cpp/header_check.cpp");
    let server = TestServer::start();
    let out = Command::new(&exe)
        .env_remove("LD_LIBRARY_PATH") // see run_program
        .env("NKV_ADDR", server.addr())
        .output()
        .expect("run header_check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("header_check: OK"),
        "header_check failed: {:?}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
