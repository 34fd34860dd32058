//! The revision counter across restarts when some keys live in memory.
//!
//! A write to the log carries its revision in its record, so a restart
//! finds the highest one. A write kept in memory leaves no record: after a
//! `kill -9` the log alone would hand its revision out again, and a client
//! that saw it would resume from a revision that now means something else.
//! So before memory takes a revision above the last one reserved, a small
//! file in the data directory reserves the next [`RESERVE_STEP`] of them
//! (one file write per 65,536 such writes). It also says whether this run
//! kept anything in memory (`dirty`): if so, the next start raises the
//! tombstone floor above every revision handed out, so every resume across
//! the restart gets RESET and a snapshot (the memory keys are gone, and no
//! tombstone tells a client so). The floor is kept in the same file.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::store::StoreError;

/// Name of the file in the data directory.
pub const REVISION_FILE: &str = "memory.state";

/// Revisions reserved at a time.
pub const RESERVE_STEP: u64 = 1 << 16;

/// How far a start skips when the file is damaged: far more revisions than
/// memory could have taken since any reserve the file could have held.
pub const DAMAGED_SKIP: u64 = 1 << 40;

/// What the file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Reserved {
    /// No revision above this was handed out.
    pub up_to: u64,
    /// The tombstone floor set by restarts.
    pub floor: u64,
    /// Whether memory held keys since the last start.
    pub dirty: bool,
}

/// The file and what it says now.
#[derive(Debug)]
pub(super) struct Reservation {
    path: PathBuf,
    pub state: Reserved,
}

impl Reservation {
    /// Reads the file in `dir` (all zero when there is none). A damaged
    /// file is reported as `None` in the second place: the caller cannot
    /// know the reserve, and must skip far ahead (see [`DAMAGED_SKIP`]).
    pub fn load(dir: &Path) -> Result<(Reservation, Option<Reserved>), StoreError> {
        let path = dir.join(REVISION_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => std::str::from_utf8(&bytes).ok().and_then(parse),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Reserved::default()),
            Err(e) => return Err(StoreError::io(format!("reading {}", path.display()), e)),
        };
        let reservation = Reservation {
            path,
            state: state.unwrap_or_default(),
        };
        Ok((reservation, state))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file with `state`, durably (temporary file, fsync,
    /// rename, fsync of the directory).
    pub fn store(&mut self, state: Reserved) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("state.tmp");
        let text = format!(
            "reserved {}\nfloor {}\ndirty {}\n",
            state.up_to,
            state.floor,
            u8::from(state.dirty)
        );
        let io = |what: &str, e| StoreError::io(format!("{what} {}", tmp.display()), e);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("creating", e))?;
        file.write_all(text.as_bytes())
            .map_err(|e| io("writing", e))?;
        file.sync_data().map_err(|e| io("syncing", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io("renaming", e))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("syncing the directory of", e))?;
        }
        self.state = state;
        Ok(())
    }
}

fn parse(text: &str) -> Option<Reserved> {
    let mut fields = text.lines().map(|line| {
        let (_, value) = line.split_once(' ')?;
        value.parse::<u64>().ok()
    });
    let (up_to, floor, dirty) = (fields.next()??, fields.next()??, fields.next()??);
    Some(Reserved {
        up_to,
        floor,
        dirty: dirty != 0,
    })
}
