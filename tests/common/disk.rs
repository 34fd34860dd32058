//! A real small disk for failure tests: a tmpfs of a few MiB, or an ext4
//! image on a loop device, mounted on a temporary directory. Mounting needs
//! root (CI runs as root); elsewhere the helpers return `None` after
//! printing why, and the test skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

/// Tests of one binary that use a small disk run one at a time: mounting
/// forks helper programs, and a child forked while another test's store
/// has just closed its lock file still holds that lock until it execs, so
/// the store could not be reopened at once.
static SERIAL: Mutex<()> = Mutex::new(());

/// A mounted filesystem, unmounted (lazily) when dropped.
pub struct SmallDisk {
    mount: PathBuf,
    /// Keeps the mount point (and the ext4 image) alive.
    _dir: tempfile::TempDir,
    _serial: MutexGuard<'static, ()>,
}

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The effective user id, from /proc (0 for root).
fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn skip(why: &str) -> Option<SmallDisk> {
    eprintln!("SKIPPED: {why}");
    None
}

impl SmallDisk {
    /// A tmpfs of `mib` MiB, or `None` (with the reason printed) when this
    /// process cannot mount one.
    pub fn tmpfs(mib: u64) -> Option<SmallDisk> {
        if euid() != Some(0) {
            return skip("mounting a small tmpfs needs root (CI runs as root)");
        }
        let serial = serial();
        let dir = tempfile::tempdir().expect("temp dir");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700")])
            .arg("tmpfs")
            .arg(&mount)
            .status();
        match status {
            Ok(s) if s.success() => Some(SmallDisk {
                mount,
                _dir: dir,
                _serial: serial,
            }),
            other => skip(&format!("mount -t tmpfs failed: {other:?}")),
        }
    }

    /// An ext4 filesystem of `mib` MiB in an image on a loop device, or
    /// `None` (with the reason printed) when this process cannot make one.
    pub fn ext4(mib: u64) -> Option<SmallDisk> {
        if euid() != Some(0) {
            return skip("mounting a loop ext4 image needs root (CI runs as root)");
        }
        let serial = serial();
        let dir = tempfile::tempdir().expect("temp dir");
        let image = dir.path().join("disk.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(mib << 20).unwrap();
        drop(file);
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image)
            .status();
        if !matches!(made, Ok(s) if s.success()) {
            return skip(&format!("mkfs.ext4 failed: {made:?}"));
        }
        let status = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount)
            .status();
        match status {
            Ok(s) if s.success() => Some(SmallDisk {
                mount,
                _dir: dir,
                _serial: serial,
            }),
            other => skip(&format!("mount -o loop failed: {other:?}")),
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// Free bytes for an unprivileged writer (statvfs, as `df` shows).
    pub fn free_bytes(&self) -> u64 {
        let stat = rustix::fs::statvfs(&self.mount).expect("statvfs");
        stat.f_bavail * stat.f_frsize
    }

    /// Fills the disk with a file of zeros until at most `leave` bytes are
    /// free; returns the filler's path (remove it to free the space).
    pub fn fill_leaving(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let path = self.mount.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while self.free_bytes() > leave {
            let room = (self.free_bytes() - leave).min(chunk.len() as u64) as usize;
            if file.write_all(&chunk[..room.max(1)]).is_err() {
                break;
            }
            file.sync_all().unwrap();
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}
