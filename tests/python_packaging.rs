//! The Python package as users install it, in fresh virtual environments
//! and without `NKV_LIB`: `pip install ./bindings/python` builds libnkv with
//! cargo and bundles it; `bindings/python/build_wheel.py` makes a platform
//! wheel (`py3-none-<platform>`) holding a stripped library. Each install
//! is then imported and used against a live server.
//!
//! To reuse the library this test run built instead of a release build,
//! the installs run with `NKV_CARGO_PROFILE=debug` (setup.py's knob); the
//! rest is the README's command as written. pip fetches setuptools from
//! PyPI for its isolated build, as it does for any user.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, PoisonError};

use common::TestServer;

/// setuptools builds inside the source tree (`bindings/python/build`), so
/// two builds at once copy and strip each other's files: one at a time.
static SOURCE_TREE: Mutex<()> = Mutex::new(());

fn build_lock() -> MutexGuard<'static, ()> {
    SOURCE_TREE.lock().unwrap_or_else(PoisonError::into_inner)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A command with the environment a user's shell would have: no NKV_LIB,
/// no PYTHONPATH pointing into the source tree.
fn clean(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(root())
        .env_remove("NKV_LIB")
        .env_remove("PYTHONPATH")
        .env_remove("NKV_ADDR")
        .env("NKV_CARGO_PROFILE", "debug")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

fn venv(dir: &Path) -> PathBuf {
    run(
        Command::new("python3").args(["-m", "venv"]).arg(dir),
        "python3 -m venv",
    );
    dir.join("bin")
}

/// Imports the installed package (from `bin`'s Python) and uses it.
fn use_installed(bin: &Path, server: &TestServer, site: &Path) {
    let script = format!(
        r#"
import nkv, nkv._native as native
with nkv.Client("{addr}") as c:
    rev = c.put("pkg.key", b"installed")
    assert c.get("pkg.key") == b"installed", c.get("pkg.key")
path = native.library_path()
assert path.startswith("{site}"), path
print("ok", nkv.version(), path)
"#,
        addr = server.addr(),
        site = site.display()
    );
    let out = run(
        clean(bin.join("python")).args(["-c", &script]),
        "using the installed package",
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok 0.1.0"));
}

#[test]
fn pip_install_builds_and_bundles_the_library() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let bin = venv(&dir.path().join("venv"));
    let _tree = build_lock();
    // The README's command, from the repository root.
    run(
        clean(bin.join("pip")).args(["install", "./bindings/python"]),
        "pip install ./bindings/python",
    );
    use_installed(&bin, &server, &dir.path().join("venv"));
}

#[test]
fn the_wheel_script_makes_a_tagged_wheel_with_a_stripped_library() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("dist");
    let tree = build_lock();
    let out = run(
        clean("python3")
            .arg("bindings/python/build_wheel.py")
            .arg("--out")
            .arg(&out_dir),
        "build_wheel.py",
    );
    drop(tree);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let wheel = PathBuf::from(stdout.lines().last().expect("the wheel's path").trim());
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("nkv-0.1.0-py3-none-linux_"), "{name}");
    assert!(!name.ends_with("-any.whl"), "{name}");

    // The library inside: present and stripped.
    let extracted = dir.path().join("x");
    run(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&extracted),
        "unzipping the wheel",
    );
    let lib = extracted.join("nkv/libnkv.so");
    let sections = run(
        Command::new("readelf").args(["-S", "-W"]).arg(&lib),
        "readelf",
    );
    let sections = String::from_utf8_lossy(&sections.stdout);
    assert!(sections.contains(".dynsym"), "{sections}");
    assert!(!sections.contains(" .symtab "), "not stripped");
    assert!(!sections.contains(" .debug_info "), "not stripped");

    // Installed into a fresh environment, it works.
    let bin = venv(&dir.path().join("venv"));
    run(
        clean(bin.join("pip")).arg("install").arg(&wheel),
        "pip install the wheel",
    );
    use_installed(&bin, &server, &dir.path().join("venv"));
}
