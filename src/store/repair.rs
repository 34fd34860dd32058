//! Repair: salvage every intact record of a damaged data directory.
//!
//! Every segment is walked; where a record fails its checksum, the scan
//! slides forward byte by byte to the next valid record (the salted CRC
//! makes false matches practically impossible) and reports the skipped
//! range. If anything was dropped, every salvaged record is copied, in its
//! original order and with its original revision, into new segments (ids
//! above all old ones; temporary file, fsync, rename, directory fsync), and
//! then the old segments are removed, oldest first. A crash part-way leaves
//! old and new side by side; replaying the same records twice gives the same
//! state, so repair can simply be run again.
//!
//! Dropped records may have been deletes, so the tombstone floor is raised
//! to the current revision: a resuming subscriber gets a full snapshot.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::db::{lock_dir, max_record_len};
use super::error::StoreError;
use super::format::{encode_record, new_salt, SegmentHeader, HEADER_LEN, H_BASE_REVISION, H_SALT};
use super::io;
use super::recovery::{find_valid_record, list_dir, walk};
use super::segment::{hint_path, segment_path, temp_path, SegmentBytes};
use super::Options;

/// A byte range that repair could not salvage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedRange {
    /// The damaged segment file.
    pub file: PathBuf,
    /// First dropped byte.
    pub offset: u64,
    /// Number of dropped bytes.
    pub len: u64,
    /// Why the first record there was invalid.
    pub reason: String,
}

/// What repair found and did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RepairReport {
    /// Segment files examined.
    pub segments_scanned: u64,
    /// Whole, valid records kept.
    pub records_salvaged: u64,
    /// Ranges dropped, in file order.
    pub dropped: Vec<DroppedRange>,
    /// Total bytes dropped.
    pub bytes_dropped: u64,
    /// Whether the segments were rewritten (false: nothing was damaged).
    pub rewritten: bool,
    /// The store revision after repair (never lower than before).
    pub revision: u64,
    /// The tombstone floor after repair.
    pub tombstone_floor: u64,
}

impl std::fmt::Display for RepairReport {
    /// A summary for the operator, one dropped range per line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "scanned {} segment(s), salvaged {} record(s), dropped {} byte(s) in {} range(s)",
            self.segments_scanned,
            self.records_salvaged,
            self.bytes_dropped,
            self.dropped.len()
        )?;
        for d in &self.dropped {
            write!(
                f,
                "\n  dropped {} byte(s) of {} at offset {}: {}",
                d.len,
                d.file.display(),
                d.offset,
                d.reason
            )?;
        }
        if self.rewritten {
            write!(
                f,
                "\nsegments rewritten; revision {}, tombstone floor raised to {} \
                 (subscribers will resync)",
                self.revision, self.tombstone_floor
            )
        } else {
            write!(f, "\nnothing to repair; revision {}", self.revision)
        }
    }
}

/// The intact records of one segment, found by pass 1.
struct Salvaged {
    /// The segment, mapped read-only.
    map: SegmentBytes,
    /// Its salt (from the header, even a damaged one).
    salt: u64,
    /// (offset, length) of every valid record, in file order.
    good: Vec<(usize, usize)>,
}

/// Salvages every intact record in `dir` and reports what was dropped.
/// Takes the directory lock, so the server must not be running.
pub fn repair(dir: &Path, options: Options) -> Result<RepairReport, StoreError> {
    let _lock = lock_dir(dir)?;
    let max_len = max_record_len(&options);
    let (ids, _) = list_dir(dir, true)?;
    let mut report = RepairReport::default();
    let (mut revision, mut floor) = (0u64, 0u64);
    // Pass 1: find the valid records of every segment.
    let mut segs: Vec<Salvaged> = Vec::new();
    for (n, &id) in ids.iter().enumerate() {
        let is_last = n + 1 == ids.len();
        let path = segment_path(dir, id);
        let ctx = || format!("reading {}", path.display());
        let file = std::fs::File::open(&path).map_err(|e| StoreError::io(ctx(), e))?;
        let len = file.metadata().map_err(|e| StoreError::io(ctx(), e))?.len();
        report.segments_scanned += 1;
        if len < HEADER_LEN as u64 {
            report.dropped.push(DroppedRange {
                file: path,
                offset: 0,
                len,
                reason: "segment header cut short".into(),
            });
            continue;
        }
        let mut hb = [0u8; HEADER_LEN];
        file.read_exact_at(&mut hb, 0)
            .map_err(|e| StoreError::io(ctx(), e))?;
        let salt = match SegmentHeader::decode(&hb) {
            Ok(h) => {
                revision = revision.max(h.base_revision);
                floor = floor.max(h.floor);
                if h.id != id {
                    // A renamed or copied file: open refuses it, so its
                    // records are salvaged into new segments.
                    report.dropped.push(DroppedRange {
                        file: path.clone(),
                        offset: 0,
                        len: HEADER_LEN as u64,
                        reason: format!(
                            "segment header names id {} but the file name says {id}",
                            h.id
                        ),
                    });
                }
                h.salt
            }
            Err(reason) => {
                // Try the stored salt anyway: if only another header field
                // was hit, the records still validate.
                report.dropped.push(DroppedRange {
                    file: path.clone(),
                    offset: 0,
                    len: HEADER_LEN as u64,
                    reason: reason.into(),
                });
                // Keep the stored base revision too: a revision must
                // never go down, and a too-high one only skips numbers.
                let field = |at: usize| u64::from_le_bytes(hb[at..at + 8].try_into().expect("8"));
                revision = revision.max(field(H_BASE_REVISION));
                field(H_SALT)
            }
        };
        // Repair truncates nothing and the directory lock keeps writers out.
        let map = SegmentBytes::load(&path, &file)?;
        let mut good = Vec::new();
        let mut at = HEADER_LEN;
        while at < map.len() {
            let w = walk(&map, at, salt, max_len, |off, rec, _| {
                revision = revision.max(rec.revision);
                good.push((off, rec.len));
            });
            let Some((bad, reason)) = w.damage else { break };
            // Zeros after the last record of the last segment are
            // preallocated space; every other segment was trimmed before a
            // later one existed, so open refuses zeros there: drop them.
            if is_last && map[bad..].iter().all(|&b| b == 0) {
                break;
            }
            let next = find_valid_record(&map, bad + 1, salt, max_len).unwrap_or(map.len());
            tracing::warn!(
                "repair: dropping {} bytes of {} at offset {bad}: {reason}",
                next - bad,
                path.display()
            );
            report.dropped.push(DroppedRange {
                file: path.clone(),
                offset: bad as u64,
                len: (next - bad) as u64,
                reason: reason.into(),
            });
            at = next;
        }
        report.records_salvaged += good.len() as u64;
        segs.push(Salvaged { map, salt, good });
    }
    report.bytes_dropped = report.dropped.iter().map(|d| d.len).sum();
    if report.dropped.is_empty() {
        report.revision = revision;
        report.tombstone_floor = floor;
        return Ok(report);
    }
    floor = revision;

    // Pass 2: copy the salvaged records, in order, into new segments.
    let mut next_id = ids.last().map_or(1, |l| l + 1);
    let mut outputs: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut cur: Option<(u64, u64, Vec<u8>)> = None; // (id, salt, bytes)
    for seg in &segs {
        for &(off, len) in &seg.good {
            let rec = super::format::decode_record(&seg.map[off..off + len], seg.salt, len)
                .expect("validated in pass 1");
            let full = cur.as_ref().is_some_and(|(_, _, b)| {
                b.len() > HEADER_LEN && (b.len() + len) as u64 > options.segment_size
            });
            if full {
                let (id, _, b) = cur.take().expect("some");
                outputs.push((id, b));
            }
            let (_, out_salt, bytes) = cur.get_or_insert_with(|| {
                let h = SegmentHeader {
                    id: next_id,
                    salt: new_salt(),
                    base_revision: revision,
                    floor,
                };
                next_id += 1;
                (h.id, h.salt, h.encode().to_vec())
            });
            encode_record(bytes, *out_salt, rec.revision, rec.kind, rec.key, rec.value);
        }
    }
    if let Some((id, _, b)) = cur.take() {
        outputs.push((id, b));
    }
    if outputs.is_empty() {
        // Nothing salvaged: one empty segment still carries the revision.
        let h = SegmentHeader {
            id: next_id,
            salt: new_salt(),
            base_revision: revision,
            floor,
        };
        outputs.push((h.id, h.encode().to_vec()));
    }
    let ioe = |what: String, e| StoreError::io(what, e);
    for (id, bytes) in &outputs {
        let tmp = temp_path(&segment_path(dir, *id));
        let f =
            io::create_truncate(&tmp).map_err(|e| ioe(format!("creating {}", tmp.display()), e))?;
        io::write_at(&f, bytes, 0)
            .and_then(|_| io::sync_data(&f))
            .map_err(|e| ioe(format!("writing {}", tmp.display()), e))?;
    }
    for (id, _) in &outputs {
        let path = segment_path(dir, *id);
        io::rename(&temp_path(&path), &path)
            .map_err(|e| ioe(format!("renaming {}", path.display()), e))?;
    }
    io::sync_dir(dir).map_err(|e| ioe(format!("syncing {}", dir.display()), e))?;
    drop(segs);
    for id in &ids {
        let path = segment_path(dir, *id);
        io::remove_file(&path).map_err(|e| ioe(format!("removing {}", path.display()), e))?;
        let _ = io::remove_file(&hint_path(dir, *id));
    }
    io::sync_dir(dir).map_err(|e| ioe(format!("syncing {}", dir.display()), e))?;
    report.rewritten = true;
    report.revision = revision;
    report.tombstone_floor = floor;
    Ok(report)
}
