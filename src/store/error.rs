//! The one error type of the store layer.
//!
//! Each variant is something a caller can act on: a bad request (key, value,
//! condition), a state of the disk (full, corrupt, locked), or a dead store
//! (poisoned after a failed fsync). The messages are written for a person
//! reading a log line.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::key::KeyError;

/// The command an operator runs to salvage a damaged data directory.
pub const REPAIR_COMMAND: &str = "nkv-server repair --data-dir";

/// Why a store operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The key (or prefix) is not valid; includes a key over the length limit.
    InvalidKey(KeyError),
    /// The value is larger than `Options::max_value_len`.
    ValueTooLarge {
        /// Length of the refused value in bytes.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A put or delete condition did not hold; nothing was written.
    ConditionFailed {
        /// Current revision of the key, `None` if it does not exist.
        current: Option<u64>,
    },
    /// Delete of a key that does not exist; nothing was written.
    NotFound,
    /// The disk is full (ENOSPC). The write was rolled back; the store is
    /// still usable and every earlier write is intact.
    DiskFull,
    /// A compaction was asked for, but the filesystem has less free space
    /// than it needs (it writes the live data before removing the old).
    NoRoomToCompact {
        /// Bytes the compaction needs free.
        needed: u64,
        /// Bytes free.
        free: u64,
    },
    /// A compaction was asked to start while another one runs.
    CompactionRunning,
    /// The process or the system ran out of file descriptors or memory
    /// (EMFILE, ENFILE, ENOMEM) while the store needed a file or a map. The
    /// write was not stored; nothing is damaged, and the same write can
    /// succeed once the resource is free again.
    OutOfResources {
        /// What the store was doing.
        context: String,
        /// The operating system error.
        source: std::io::Error,
    },
    /// Any other I/O failure, with what the store was doing.
    Io {
        /// What the store was doing, e.g. "writing segment 0000000000000003.seg".
        context: String,
        /// The operating system error.
        source: std::io::Error,
    },
    /// A data file is damaged in a way that is not a torn tail. The store
    /// refuses to guess; the operator runs the repair command.
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the first damaged byte found.
        offset: u64,
        /// What was wrong there.
        detail: String,
    },
    /// Another process holds the lock on the data directory.
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
    /// An fsync failed earlier (or a compaction was cut short): the kernel
    /// may have dropped dirty pages, so every later write is refused. Restart
    /// the process to recover from what is really on disk.
    Poisoned {
        /// The failure that poisoned the store.
        reason: String,
    },
}

impl StoreError {
    /// Wraps an I/O error, mapping ENOSPC to [`StoreError::DiskFull`] and
    /// EMFILE, ENFILE and ENOMEM to [`StoreError::OutOfResources`].
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> StoreError {
        if is_disk_full(&source) {
            return StoreError::DiskFull;
        }
        if is_out_of_resources(&source) {
            return StoreError::OutOfResources {
                context: context.into(),
                source,
            };
        }
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    /// A corruption error for `file` at `offset`.
    pub(crate) fn corrupt(file: &Path, offset: u64, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            file: file.to_path_buf(),
            offset,
            detail: detail.into(),
        }
    }
}

/// True when `e` says the disk (or quota) is full.
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    // ENOSPC = 28, EDQUOT = 122 on Linux.
    matches!(e.raw_os_error(), Some(28) | Some(122)) || e.kind() == std::io::ErrorKind::StorageFull
}

/// True when `e` says the process or system is out of descriptors or memory.
pub(crate) fn is_out_of_resources(e: &std::io::Error) -> bool {
    // ENOMEM = 12, ENFILE = 23, EMFILE = 24 on Linux.
    matches!(e.raw_os_error(), Some(12) | Some(23) | Some(24))
        || e.kind() == std::io::ErrorKind::OutOfMemory
}

impl StoreError {
    /// True for a failure that leaves the store healthy and the write
    /// undone, so the same write may succeed later: a full disk, or no
    /// descriptor or memory to spare.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::DiskFull | StoreError::OutOfResources { .. }
        )
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::InvalidKey(e) => write!(f, "invalid key: {e}"),
            StoreError::ValueTooLarge { len, max } => {
                write!(f, "value is {len} bytes, more than the limit of {max}")
            }
            StoreError::ConditionFailed { current: Some(rev) } => {
                write!(f, "condition failed: the key exists at revision {rev}")
            }
            StoreError::ConditionFailed { current: None } => {
                write!(f, "condition failed: the key does not exist")
            }
            StoreError::NotFound => write!(f, "key not found"),
            StoreError::DiskFull => {
                write!(
                    f,
                    "disk full: the write was not stored (earlier data is intact)"
                )
            }
            StoreError::NoRoomToCompact { needed, free } => write!(
                f,
                "not enough free space to compact: needs about {needed} bytes, {free} free"
            ),
            StoreError::CompactionRunning => write!(f, "a compaction is already running"),
            StoreError::OutOfResources { context, source } => write!(
                f,
                "out of resources while {context}: {source}; the write was not \
                 stored (earlier data is intact), retry later"
            ),
            StoreError::Io { context, source } => write!(f, "I/O error while {context}: {source}"),
            StoreError::Corrupt {
                file,
                offset,
                detail,
            } => {
                let dir = file.parent().unwrap_or(Path::new("."));
                write!(
                    f,
                    "data file {} is corrupt at offset {offset}: {detail}; \
                     run `{REPAIR_COMMAND} {}` to salvage every intact record",
                    file.display(),
                    dir.display()
                )
            }
            StoreError::Locked { dir } => write!(
                f,
                "data directory {} is locked by another nkv process",
                dir.display()
            ),
            StoreError::Poisoned { reason } => write!(
                f,
                "store refuses writes after a fatal error ({reason}); restart to recover"
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::InvalidKey(e) => Some(e),
            StoreError::Io { source, .. } | StoreError::OutOfResources { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

impl From<KeyError> for StoreError {
    fn from(e: KeyError) -> Self {
        StoreError::InvalidKey(e)
    }
}
