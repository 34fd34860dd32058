//! SIGTERM: new clients are refused at once, connections without a
//! session are told and closed, the rest get a bounded grace period, and
//! the exit status tells whether the final sync worked.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::disk::SmallDisk;
use common::{Setup, TestServer, Wire};
use nkv::protocol::{Condition, ErrorCode, Request, Response};

fn put(wire: &mut Wire, key: &str, value: &[u8]) -> u64 {
    match wire.call(Request::Put {
        key: key.into(),
        value: Bytes::copy_from_slice(value),
        condition: Condition::None,
    }) {
        Response::PutOk { revision } => revision,
        other => panic!("{other:?}"),
    }
}

fn send_term(pid: u32) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A subscriber that never reads used to keep the server from exiting,
/// with the socket still bound so that new clients hung too.
#[test]
fn sigterm_with_a_subscriber_that_never_reads_ends_within_the_grace_period() {
    let mut server = TestServer::start_setup(
        &["--fsync", "never", "--shutdown-grace", "2", "--log", "info"],
        Setup {
            capture_log: true,
            ..Setup::default()
        },
    );
    let mut stuck = server.wire();
    stuck.send(Request::Subscribe {
        prefix: "".into(),
        since: None,
    });
    let mut writer = server.wire();
    let value = vec![b'w'; 2000];
    // Far more than the stuck subscriber's buffers hold.
    for i in 0..2000u32 {
        put(&mut writer, &format!("fill.{i}"), &value);
    }
    let mut no_hello = UnixStream::connect(server.socket()).unwrap();
    no_hello
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let mut child = server.child.take().unwrap();
    let started = Instant::now();
    send_term(child.id());

    // New clients are refused at once, not left hanging.
    loop {
        match UnixStream::connect(server.socket()) {
            Err(_) => break,
            Ok(_) => {
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "still accepting after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    // A connection that never finished HELLO is told and closed.
    let mut answer = Vec::new();
    no_hello.read_to_end(&mut answer).unwrap();
    assert!(answer.len() > 11, "{answer:?}");
    assert_eq!(answer[4], nkv::protocol::wire::frame_type::ERROR);
    assert_eq!(&answer[5..9], &[0, 0, 0, 0]);
    assert_eq!(
        u16::from_be_bytes([answer[9], answer[10]]),
        ErrorCode::ShuttingDown.as_u16()
    );

    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the server did not exit after its 2 s grace period"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let log = server.log();
    assert!(log.contains("grace period"), "{log}");
    assert!(log.contains("store synced"), "{log}");
    drop(stuck);
}

/// A sync that fails (the disk under the filesystem ran out of room: an
/// ext4 image bigger than the tmpfs holding it) is never hidden. Under
/// `--fsync never` the server syncs in the background once a megabyte is
/// unsynced, so the failure shows either there (later writes get STORAGE
/// naming the fdatasync) or in the final sync; either way the exit is an
/// error and the server does not claim the store was synced.
#[test]
fn a_failed_final_sync_exits_non_zero() {
    let Some(backing) = SmallDisk::tmpfs(3) else {
        return;
    };
    let Some(thin) = thin_ext4_on(&backing) else {
        return;
    };
    let mut server = TestServer::start_setup(
        &["--fsync", "never", "--log", "info"],
        Setup {
            data: Some(thin.path().join("data")),
            capture_log: true,
            ..Setup::default()
        },
    );
    let mut wire = server.wire();
    // Accepted into the page cache; a background or the final sync finds
    // out that the blocks cannot be written.
    let value = vec![0x5a; 100_000];
    let mut refused = None;
    for i in 0..60u32 {
        let answer = wire.call(Request::Put {
            key: format!("big.{i}"),
            value: Bytes::copy_from_slice(&value),
            condition: Condition::None,
        });
        match answer {
            Response::PutOk { .. } => {}
            Response::Error(e) if e.code == ErrorCode::Storage => {
                assert!(e.message.contains("fdatasync"), "{e:?}");
                refused = Some(i);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    drop(wire);
    let status = server.terminate();
    assert!(
        !status.success(),
        "exit status {status} after a failed sync (writes refused from {refused:?})"
    );
    let log = server.log();
    assert!(log.contains("final sync failed"), "{log}");
    assert!(!log.contains("store synced"), "{log}");
}

/// An ext4 filesystem of 64 MiB in a sparse image on `backing` (3 MiB):
/// writes beyond what the backing holds fail in the block layer.
fn thin_ext4_on(backing: &SmallDisk) -> Option<ThinDisk> {
    let image = backing.path().join("thin.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^has_journal", "-E", "lazy_itable_init=1"])
        .arg(&image)
        .status();
    if !matches!(made, Ok(s) if s.success()) {
        eprintln!("SKIPPED: mkfs.ext4 failed: {made:?}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(dir.path())
        .status();
    if !matches!(mounted, Ok(s) if s.success()) {
        eprintln!("SKIPPED: mount -o loop failed: {mounted:?}");
        return None;
    }
    Some(ThinDisk { dir })
}

struct ThinDisk {
    dir: tempfile::TempDir,
}

impl ThinDisk {
    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for ThinDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
