//! A thin file layer: every write and sync of the store goes through here,
//! so tests can make the disk fill up, an fsync fail, or a compaction
//! "crash" between two of its steps.
//!
//! Faults are armed per thread: a `Store` is owned by one thread, and tests
//! running in parallel (each on its own thread) must not disturb each other.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The steps of a compaction at which a test can stop it, as a crash would.
/// The store then refuses further writes; the test drops it and reopens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Output written to temporary files, not yet fsynced.
    BeforeOutputSync,
    /// Output fsynced, not yet renamed into place.
    BeforeRename,
    /// The first output file renamed, the others not.
    AfterFirstRename,
    /// Every output renamed and the directory fsynced; no new active segment.
    BeforeNewActive,
    /// New active segment created; no old segment removed yet.
    BeforeRemove,
    /// The oldest input segment removed, the others not.
    AfterFirstRemove,
}

impl CrashPoint {
    /// Every crash point, in the order compaction reaches them.
    pub const ALL: [CrashPoint; 6] = [
        CrashPoint::BeforeOutputSync,
        CrashPoint::BeforeRename,
        CrashPoint::AfterFirstRename,
        CrashPoint::BeforeNewActive,
        CrashPoint::BeforeRemove,
        CrashPoint::AfterFirstRemove,
    ];
}

#[derive(Default)]
struct Faults {
    /// Writes left before every write fails with ENOSPC.
    enospc_after: Option<u64>,
    /// Every fsync fails with EIO.
    fail_sync: bool,
    /// Compaction stops at this point.
    crash: Option<CrashPoint>,
}

thread_local! {
    static FAULTS: RefCell<Faults> = RefCell::new(Faults::default());
}

/// Fault injection for tests. Not part of the supported API.
#[doc(hidden)]
pub mod faults {
    use super::*;

    /// After `n` more successful writes, every write on this thread fails
    /// with ENOSPC (having written half of its bytes, like a real short
    /// write). `None` disarms.
    pub fn enospc_after(n: Option<u64>) {
        FAULTS.with(|f| f.borrow_mut().enospc_after = n);
    }

    /// While `on`, every fsync/fdatasync on this thread fails with EIO.
    pub fn fail_syncs(on: bool) {
        FAULTS.with(|f| f.borrow_mut().fail_sync = on);
    }

    /// Stop the next compaction on this thread at `point`.
    pub fn crash_at(point: Option<CrashPoint>) {
        FAULTS.with(|f| f.borrow_mut().crash = point);
    }

    /// Disarms every fault on this thread.
    pub fn clear() {
        FAULTS.with(|f| *f.borrow_mut() = Faults::default());
    }
}

/// Writes all of `buf` at `offset` (pwrite), honouring an armed ENOSPC.
pub(crate) fn write_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    let fail = FAULTS.with(|f| {
        let mut f = f.borrow_mut();
        match f.enospc_after {
            Some(0) => true,
            Some(ref mut n) => {
                *n -= 1;
                false
            }
            None => false,
        }
    });
    if fail {
        // A real full disk often accepts part of a write first.
        file.write_all_at(&buf[..buf.len() / 2], offset)?;
        return Err(io::Error::from_raw_os_error(28));
    }
    file.write_all_at(buf, offset)
}

/// fdatasync, honouring an armed sync failure.
pub(crate) fn sync_data(file: &File) -> io::Result<()> {
    if FAULTS.with(|f| f.borrow().fail_sync) {
        return Err(io::Error::from_raw_os_error(5));
    }
    file.sync_data()
}

/// fsync of a directory, so a created, renamed or removed entry survives a
/// power cut.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    if FAULTS.with(|f| f.borrow().fail_sync) {
        return Err(io::Error::from_raw_os_error(5));
    }
    File::open(dir)?.sync_all()
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
