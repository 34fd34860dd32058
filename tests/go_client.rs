//! Runs the Go client's checks in `bindings/go`: `gofmt -l` (nothing
//! unformatted), `go vet ./...`, and `go test ./...` against the freshly
//! built `nkv-server` (`NKV_SERVER_BIN`); the Go suite starts and kills its
//! own servers.
//!
//! Without `go` on PATH this test fails when `CI` is set (`.ci/run` sets it
//! and installs Debian's `golang-go`), and otherwise prints
//! `SKIPPED: go not installed` and passes. The module has no dependencies;
//! the go command runs offline (`GOPROXY=off`, `GOFLAGS=-mod=mod`) with its
//! build cache under cargo's target directory unless `GOCACHE` is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The go command with an environment that works from a clean clone
/// without network or a writable home.
fn go_cmd(program: &str, dir: &Path) -> Command {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let mut cmd = Command::new(program);
    cmd.current_dir(dir)
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOTELEMETRY", "off")
        .env("CGO_ENABLED", "0")
        .env("NKV_SERVER_BIN", env!("CARGO_BIN_EXE_nkv-server"))
        .env_remove("NKV_ADDR")
        .env_remove("NKV_TOKEN_FILE")
        .stdin(Stdio::null());
    if std::env::var_os("GOCACHE").is_none() {
        cmd.env("GOCACHE", tmp.join("go-build"));
    }
    if std::env::var_os("GOPATH").is_none() {
        cmd.env("GOPATH", tmp.join("go-path"));
    }
    cmd
}

fn run(mut cmd: Command, what: &str) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    assert!(status.success(), "{what} failed ({status}):\n{out}");
    out
}

#[test]
fn go_client_is_formatted_vetted_and_passes_its_tests() {
    let have_go = Command::new("go")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_go {
        assert!(
            !ci(),
            "go is not installed but CI is set: the Go client (bindings/go) must be tested in CI; \
             install Debian's golang-go (.ci/run does)"
        );
        println!("SKIPPED: go not installed");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bindings/go");

    // gofmt lives beside the go command.
    let goroot = run(
        {
            let mut c = go_cmd("go", &dir);
            c.args(["env", "GOROOT"]);
            c
        },
        "go env GOROOT",
    );
    let gofmt = Path::new(goroot.trim()).join("bin/gofmt");
    let unformatted = run(
        {
            let mut c = go_cmd(gofmt.to_str().expect("GOROOT is UTF-8"), &dir);
            c.args(["-l", "."]);
            c
        },
        "gofmt -l",
    );
    assert!(
        unformatted.trim().is_empty(),
        "files not formatted with gofmt:\n{unformatted}"
    );

    run(
        {
            let mut c = go_cmd("go", &dir);
            c.args(["vet", "./..."]);
            c
        },
        "go vet ./...",
    );

    let report = run(
        {
            let mut c = go_cmd("go", &dir);
            c.args(["test", "-count=1", "-timeout", "150s", "-v", "./..."]);
            c
        },
        "go test ./...",
    );
    let passed = report.lines().filter(|l| l.starts_with("--- PASS")).count();
    assert!(passed > 0, "go test ran no tests:\n{report}");
    assert!(
        !report.contains("--- SKIP"),
        "some Go tests were skipped:\n{report}"
    );
    eprintln!("{passed} Go tests passed");
}
