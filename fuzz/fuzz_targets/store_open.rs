//! Segment files on disk, then `Store::open` and `repair`: never a panic,
//! always `Ok` or a clean `Err`.
//!
//! Input: byte 0 picks the mode.
//! - bit 0 clear, raw: the rest of the input is written as the only
//!   segment file, `0000000000000001.seg`.
//! - bit 0 set, built: one or two segments (bit 1) written with the
//!   store's encoder, maybe a hint for the first (bit 2), maybe a header id
//!   that does not match the file name (bit 3), then up to eight kinds of
//!   damage: bits flipped, bytes set, a tail torn, zeros or garbage
//!   appended, a range zeroed, anywhere in either segment or the hint.
//!
//! Checked, besides no panic:
//! - without a hint file, an open that succeeds can read every key it
//!   indexed, and a repair right after it finds nothing to drop;
//! - after a repair that succeeds, the store opens and reads every key
//!   (that is what `nkv-server repair` promises the operator).

#![no_main]

use std::path::Path;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use nkv::store::{repair, FsyncPolicy, Options, Store};
use nkv_fuzz::build_segment;

fn options() -> Options {
    Options {
        // tmpfs makes syncs free anyway; this keeps a run fast on disks too.
        fsync: FsyncPolicy::Never,
        ..Options::default()
    }
}

fn temp_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let b = tempfile::Builder::new().prefix("nkv-fuzz-").to_owned();
    if shm.is_dir() {
        if let Ok(d) = b.tempdir_in(shm) {
            return d;
        }
    }
    b.tempdir().expect("a temporary directory")
}

fn seg_name(id: u64) -> String {
    format!("{id:016x}.seg")
}

/// Why [`open_and_read`] failed.
enum Failure {
    /// `Store::open` refused.
    Open(String),
    /// The store opened, but reading a key it indexed failed.
    Read(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Open(e) => write!(f, "open failed: {e}"),
            Failure::Read(e) => write!(f, "open succeeded, a read failed: {e}"),
        }
    }
}

/// Opens the store and reads every key it indexed.
fn open_and_read(dir: &Path) -> Result<(), Failure> {
    let store = Store::open(dir, options()).map_err(|e| Failure::Open(e.to_string()))?;
    store
        .scan_prefix("")
        .map(|_| ())
        .map_err(|e| Failure::Read(e.to_string()))
}

/// Writes the files described by the input; returns whether a hint file
/// was written (`Err` when the input ran out).
fn write_files(u: &mut Unstructured<'_>, dir: &Path) -> arbitrary::Result<bool> {
    let mode: u8 = u.arbitrary()?;
    if mode & 1 == 0 {
        std::fs::write(dir.join(seg_name(1)), u.bytes(u.len())?).expect("write segment");
        return Ok(false);
    }
    let id = u.int_in_range(1..=1000)?;
    let header_id = if mode & 8 != 0 { u.arbitrary()? } else { id };
    let base = u.int_in_range(0..=1000)?;
    let salt = u.arbitrary()?;
    let first = build_segment(u, header_id, salt, base)?;
    let mut files = vec![(seg_name(id), first.bytes.clone())];
    if mode & 2 != 0 {
        let salt = u.arbitrary()?;
        let second = build_segment(u, id + 1, salt, first.revision)?;
        files.push((seg_name(id + 1), second.bytes));
    }
    if mode & 4 != 0 {
        let hint = nkv::store::fuzzing::build_hint(
            header_id,
            first.salt,
            &first.bytes,
            nkv::store::fuzzing::max_record_len(&options()),
        );
        files.push((format!("{id:016x}.hint"), hint));
    }
    for _ in 0..u.int_in_range(0..=8)? {
        let f = u.choose_index(files.len())?;
        let bytes = &mut files[f].1;
        if bytes.is_empty() {
            continue;
        }
        let at = u.choose_index(bytes.len())?;
        match u.int_in_range(0..=5)? {
            0 => bytes[at] ^= 1 << u.int_in_range(0..=7)?,
            1 => bytes[at] = u.arbitrary()?,
            2 => bytes.truncate(at),
            3 => bytes.resize(bytes.len() + u.int_in_range(1..=200)?, 0),
            4 => {
                let n = u.int_in_range(1..=64)?;
                bytes.extend_from_slice(u.bytes(n.min(u.len()))?);
            }
            _ => {
                let end = u.int_in_range(at..=bytes.len())?;
                bytes[at..end].fill(0);
            }
        }
    }
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).expect("write file");
    }
    Ok(mode & 4 != 0)
}

fuzz_target!(|data: &[u8]| {
    let tmp = temp_dir();
    let dir = tmp.path();
    let Ok(hinted) = write_files(&mut Unstructured::new(data), dir) else {
        return;
    };
    // Open trusts a valid hint for the bytes it covers (that is its point),
    // so with a hint, damage there shows only when a read checks the
    // record (a clean `Err`): the two checks below hold only without one.
    let opened = open_and_read(dir);
    if !hinted {
        if let Err(e @ Failure::Read(_)) = &opened {
            panic!("{e}");
        }
    }
    let repaired = repair(dir, options());
    if opened.is_ok() && !hinted {
        let report = repaired.as_ref().expect("repair after a clean open");
        assert!(
            report.dropped.is_empty(),
            "open was clean, repair drops: {report}"
        );
    }
    if let Ok(report) = &repaired {
        if let Err(e) = open_and_read(dir) {
            panic!("repair succeeded ({report}) but then {e}");
        }
    }
});
