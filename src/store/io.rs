//! The file layer: every file operation of the store goes through here, so
//! tests can make any of them fail the way a real disk, a descriptor limit
//! or a crash would (the "fault seam"), and so that no other file of the
//! store touches `std::fs` for a write.
//!
//! Every file the store creates is private to its user (mode `0600`), in a
//! data directory created `0700`: values are readable by no one else.
//!
//! Faults are armed per thread: a `Store` is owned by one thread, and tests
//! running in parallel (each on its own thread) must not disturb each other.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every file the store creates: its user's only.
pub(crate) const FILE_MODE: u32 = 0o600;
/// Mode of a data directory the store creates.
const DIR_MODE: u32 = 0o700;

/// The steps of a compaction at which a test can stop it, as a crash would.
/// The store then refuses further writes; the test drops it and reopens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Output written to temporary files, not yet fsynced.
    BeforeOutputSync,
    /// Outputs fsynced, not yet renamed into place.
    BeforeRename,
    /// The first output file renamed, the others not.
    AfterFirstRename,
    /// Every output renamed and the directory fsynced; no old segment
    /// removed yet.
    BeforeRemove,
    /// The oldest input segment removed, the others not.
    AfterFirstRemove,
}

impl CrashPoint {
    /// Every crash point, in the order compaction reaches them.
    pub const ALL: [CrashPoint; 5] = [
        CrashPoint::BeforeOutputSync,
        CrashPoint::BeforeRename,
        CrashPoint::AfterFirstRename,
        CrashPoint::BeforeRemove,
        CrashPoint::AfterFirstRemove,
    ];
}

/// A kind of file operation a test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOp {
    /// Creating a file (a new segment, a compaction or repair output, a hint).
    Create,
    /// `pwrite` of data or preallocated zeros. A failing write first writes
    /// half of its bytes, as a real full disk often does (a short write).
    Write,
    /// `fdatasync` of a file.
    Sync,
    /// `fsync` of the data directory.
    DirSync,
    /// Renaming a finished temporary file into place.
    Rename,
    /// Removing a file.
    Remove,
    /// Changing a file's length (trimming preallocated space).
    Truncate,
}

/// One armed fault: after `skip` more successful operations of kind `op`,
/// the next `times` of them (`None`: all) fail with `errno`.
#[derive(Debug, Clone, Copy)]
struct Rule {
    op: FileOp,
    errno: i32,
    skip: u64,
    times: Option<u64>,
}

#[derive(Default)]
struct Faults {
    rules: Vec<Rule>,
    crash: Option<CrashPoint>,
    /// Operations attempted, per kind (for tests that count retries).
    counts: Vec<(FileOp, u64)>,
}

thread_local! {
    static FAULTS: RefCell<Faults> = RefCell::new(Faults::default());
}

/// errno values tests arm most (Linux numbering).
pub mod errno {
    /// I/O error.
    pub const EIO: i32 = 5;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Too many open files in the system.
    pub const ENFILE: i32 = 23;
    /// Too many open files in this process.
    pub const EMFILE: i32 = 24;
    /// No space left on the device.
    pub const ENOSPC: i32 = 28;
}

/// Fault injection for tests. Not part of the supported API.
#[doc(hidden)]
pub mod faults {
    use super::*;

    /// After `after` more successful operations of kind `op` on this thread,
    /// the next `times` operations of that kind (`None`: every one until
    /// cleared) fail with `errno`.
    pub fn inject(op: FileOp, errno: i32, after: u64, times: Option<u64>) {
        FAULTS.with(|f| {
            f.borrow_mut().rules.push(Rule {
                op,
                errno,
                skip: after,
                times,
            })
        });
    }

    /// After `n` more successful writes, every write on this thread fails
    /// with ENOSPC (having written half of its bytes, like a real short
    /// write). `None` disarms every write fault.
    pub fn enospc_after(n: Option<u64>) {
        FAULTS.with(|f| f.borrow_mut().rules.retain(|r| r.op != FileOp::Write));
        if let Some(n) = n {
            inject(FileOp::Write, errno::ENOSPC, n, None);
        }
    }

    /// While `on`, every fsync/fdatasync on this thread fails with EIO.
    pub fn fail_syncs(on: bool) {
        FAULTS.with(|f| {
            f.borrow_mut()
                .rules
                .retain(|r| !matches!(r.op, FileOp::Sync | FileOp::DirSync))
        });
        if on {
            inject(FileOp::Sync, errno::EIO, 0, None);
            inject(FileOp::DirSync, errno::EIO, 0, None);
        }
    }

    /// Stop the next compaction on this thread at `point`.
    pub fn crash_at(point: Option<CrashPoint>) {
        FAULTS.with(|f| f.borrow_mut().crash = point);
    }

    /// Disarms every fault on this thread and resets the counts.
    pub fn clear() {
        FAULTS.with(|f| *f.borrow_mut() = Faults::default());
    }

    /// How many operations of kind `op` this thread attempted since the
    /// last `clear`, failed or not.
    pub fn count(op: FileOp) -> u64 {
        FAULTS.with(|f| {
            f.borrow()
                .counts
                .iter()
                .find(|(o, _)| *o == op)
                .map_or(0, |(_, n)| *n)
        })
    }
}

/// The armed error for one operation of kind `op`, if any (and counts it).
fn injected(op: FileOp) -> Option<io::Error> {
    FAULTS.with(|f| {
        let mut f = f.borrow_mut();
        match f.counts.iter_mut().find(|(o, _)| *o == op) {
            Some((_, n)) => *n += 1,
            None => f.counts.push((op, 1)),
        }
        let rule = f.rules.iter_mut().find(|r| r.op == op)?;
        if rule.skip > 0 {
            rule.skip -= 1;
            return None;
        }
        let errno = rule.errno;
        if let Some(times) = rule.times.as_mut() {
            *times -= 1;
            if *times == 0 {
                f.rules.retain(|r| r.op != op || r.times != Some(0));
            }
        }
        Some(io::Error::from_raw_os_error(errno))
    })
}

/// Creates a new file for reading and writing; fails if it exists.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    if let Some(e) = injected(FileOp::Create) {
        return Err(e);
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Creates (or empties) a file for reading and writing: the temporary
/// outputs of compaction, repair and hint writing.
pub(crate) fn create_truncate(path: &Path) -> io::Result<File> {
    if let Some(e) = injected(FileOp::Create) {
        return Err(e);
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    // A leftover of an older version keeps its mode through O_CREAT. Best
    // effort: a filesystem without modes (vfat) refuses, and has none to fix.
    let _ = file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE));
    Ok(file)
}

/// Creates the data directory `dir` with mode `0700` (its missing parents
/// with the usual modes). An existing directory is used as it is, with a
/// warning when group or others have any access to it: they can list it,
/// read files an older nkv created `0644`, and, if they may write, replace
/// or remove files.
pub(crate) fn create_data_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let mode = std::fs::metadata(dir)?.mode() & 0o7777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            "the data directory {} is open to other users (mode {mode:04o}); make it private \
             with: chmod 700 {}",
            dir.display(),
            crate::perms::shell_quote(dir)
        );
    }
    Ok(())
}

/// Writes all of `buf` at `offset` (pwrite), honouring an armed fault.
pub(crate) fn write_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    if let Some(e) = injected(FileOp::Write) {
        // A real full disk often accepts part of a write first.
        file.write_all_at(&buf[..buf.len() / 2], offset)?;
        return Err(e);
    }
    file.write_all_at(buf, offset)
}

/// fdatasync, honouring an armed fault.
pub(crate) fn sync_data(file: &File) -> io::Result<()> {
    if let Some(e) = injected(FileOp::Sync) {
        return Err(e);
    }
    file.sync_data()
}

/// fsync of a directory, so a created, renamed or removed entry survives a
/// power cut.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    if let Some(e) = injected(FileOp::DirSync) {
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

/// Renames `from` to `to` (in the same directory).
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(e) = injected(FileOp::Rename) {
        return Err(e);
    }
    std::fs::rename(from, to)
}

/// Removes a file.
pub(crate) fn remove_file(path: &Path) -> io::Result<()> {
    if let Some(e) = injected(FileOp::Remove) {
        return Err(e);
    }
    std::fs::remove_file(path)
}

/// Sets a file's length. The store only ever shortens files this way
/// (never extends them with a hole), and never a mapped one.
pub(crate) fn set_len(file: &File, len: u64) -> io::Result<()> {
    if let Some(e) = injected(FileOp::Truncate) {
        return Err(e);
    }
    file.set_len(len)
}

/// Offset of the first hole (unallocated range) of `file` below `len`, if
/// any. A hole reads as zeros, but touching it through a memory map makes
/// the kernel allocate a block, which on a full tmpfs kills the process
/// with SIGBUS: such a file is read, never mapped.
pub(crate) fn first_hole(file: &File, len: u64) -> Option<u64> {
    if len == 0 {
        return None;
    }
    // Filesystems without hole tracking report the whole file as data.
    match rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(0)) {
        Ok(at) if at < len => Some(at),
        _ => None,
    }
}

/// Fails with a simulated crash if the test armed `point`.
pub(crate) fn crash_point(point: CrashPoint) -> io::Result<()> {
    let hit = FAULTS.with(|f| f.borrow().crash == Some(point));
    if hit {
        FAULTS.with(|f| f.borrow_mut().crash = None);
        return Err(io::Error::other(SimulatedCrash(point)));
    }
    Ok(())
}

/// The error a test-armed crash point raises.
#[derive(Debug)]
pub(crate) struct SimulatedCrash(CrashPoint);

impl std::fmt::Display for SimulatedCrash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "simulated crash at {:?}", self.0)
    }
}

impl std::error::Error for SimulatedCrash {}

/// True when `e` is a simulated crash (the files must stay as they are).
pub(crate) fn is_simulated_crash(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<SimulatedCrash>())
}
