//! Runs the Python binding's unittest suite (`bindings/python/tests`) with
//! the freshly built `libnkv.so` (`NKV_LIB`) and `nkv-server`
//! (`NKV_SERVER_BIN`); the suite starts and kills its own servers.

mod common;

use common::lib_dir;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn python_unittest_suite_passes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new("python3")
        .args([
            "-m",
            "unittest",
            "discover",
            "-s",
            "bindings/python/tests",
            "-v",
        ])
        .current_dir(&root)
        .env("NKV_LIB", lib_dir().join("libnkv.so"))
        .env_remove("LD_LIBRARY_PATH")
        .env("NKV_SERVER_BIN", env!("CARGO_BIN_EXE_nkv-server"))
        .env("PYTHONPATH", root.join("bindings/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("NKV_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed to test the Python binding");
    // unittest writes its report to stderr; read both pipes off-thread.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(170);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the Python suite did not finish in time:\n{}",
                err_thread.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let report = format!(
        "{}{}",
        out_thread.join().unwrap_or_default(),
        err_thread.join().unwrap_or_default()
    );
    assert!(
        status.success(),
        "Python suite failed ({status}):\n{report}"
    );
    let ran: usize = report
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no \"Ran N tests\" line:\n{report}"));
    assert!(ran > 0, "the Python suite ran no tests:\n{report}");
    assert!(
        !report.contains("skipped"),
        "some Python tests were skipped:\n{report}"
    );
    eprintln!("{report}");
}
