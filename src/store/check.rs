//! Check: verify every record of a data directory without changing
//! anything (`nkv-server check --data-dir DIR`).
//!
//! Every segment header and every record is decoded and its checksum
//! verified; where one fails, the scan slides to the next valid record
//! like repair does, so one damaged spot does not hide another. Hint files
//! are parsed against their segments. Nothing is locked, truncated,
//! removed or written, so it can run beside a live server; the segment the
//! server appends to may then grow while it is read, which is why a cut
//! record at its very end is reported as a torn tail (what a crash leaves
//! and the next open cuts), not as damage.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::db::max_record_len;
use super::error::StoreError;
use super::format::{SegmentHeader, HEADER_LEN};
use super::hint;
use super::recovery::{find_valid_record, list_dir, walk};
use super::segment::{hint_path, segment_path, SegmentBytes};
use super::Options;

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file.
    pub file: PathBuf,
    /// Where in it.
    pub offset: u64,
    /// How many bytes are affected.
    pub len: u64,
    /// What is wrong.
    pub reason: String,
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckReport {
    /// The data directory checked.
    pub dir: PathBuf,
    /// Segment files read.
    pub segments: u64,
    /// Valid records.
    pub records: u64,
    /// Hint files that match their segment.
    pub hints_valid: u64,
    /// Damage open would refuse (or repair would drop): records or headers
    /// that fail their checksum or make no sense.
    pub damaged: Vec<Finding>,
    /// Harmless: a cut record at the end of the last segment (a crash
    /// mid-write; open cuts it), hint files that do not match (open
    /// replays the segment instead and rewrites them).
    pub notes: Vec<Finding>,
    /// The highest revision seen.
    pub revision: u64,
}

impl CheckReport {
    /// True when nothing is damaged.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty()
    }
}

impl std::fmt::Display for CheckReport {
    /// A summary, one finding per line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "checked {} segment(s): {} valid record(s), {} valid hint(s), revision {}",
            self.segments, self.records, self.hints_valid, self.revision
        )?;
        for (what, list) in [("DAMAGED", &self.damaged), ("note", &self.notes)] {
            for d in list {
                write!(
                    f,
                    "\n  {what}: {} at offset {} ({} byte(s)): {}",
                    d.file.display(),
                    d.offset,
                    d.len,
                    d.reason
                )?;
            }
        }
        if self.is_clean() {
            write!(f, "\nok: no damage")
        } else {
            write!(
                f,
                "\n{} damaged range(s); with the server stopped, `nkv-server repair --data-dir {}` \
                 salvages every intact record",
                self.damaged.len(),
                self.dir.display()
            )
        }
    }
}

/// Verifies every record in `dir` (see the module docs). `Err` only when
/// the directory cannot be read at all.
pub fn check(dir: &Path, options: &Options) -> Result<CheckReport, StoreError> {
    if !dir.is_dir() {
        return Err(StoreError::io(
            format!("checking {}", dir.display()),
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such data directory"),
        ));
    }
    let max_len = max_record_len(options);
    let (ids, hints) = list_dir(dir, false)?;
    let mut report = CheckReport {
        dir: dir.to_path_buf(),
        ..CheckReport::default()
    };
    for (n, &id) in ids.iter().enumerate() {
        let is_last = n + 1 == ids.len();
        let path = segment_path(dir, id);
        let ctx = || format!("reading {}", path.display());
        let file = std::fs::File::open(&path).map_err(|e| StoreError::io(ctx(), e))?;
        let len = file.metadata().map_err(|e| StoreError::io(ctx(), e))?.len();
        report.segments += 1;
        let finding = |offset: u64, len: u64, reason: String| Finding {
            file: path.clone(),
            offset,
            len,
            reason,
        };
        let mut hb = [0u8; HEADER_LEN];
        if len < HEADER_LEN as u64 || file.read_exact_at(&mut hb, 0).is_err() {
            report
                .damaged
                .push(finding(0, len, "segment header cut short".into()));
            continue;
        }
        let header = match SegmentHeader::decode(&hb) {
            Ok(h) if h.id == id => h,
            Ok(h) => {
                report.damaged.push(finding(
                    0,
                    HEADER_LEN as u64,
                    format!(
                        "segment header names id {} but the file name says {id}",
                        h.id
                    ),
                ));
                continue;
            }
            Err(reason) => {
                report
                    .damaged
                    .push(finding(0, HEADER_LEN as u64, reason.into()));
                continue;
            }
        };
        report.revision = report.revision.max(header.base_revision);
        let bytes = SegmentBytes::load(&path, &file)?;
        let mut at = HEADER_LEN;
        while at < bytes.len() {
            let w = walk(&bytes, at, header.salt, max_len, |_, rec, _| {
                report.records += 1;
                report.revision = report.revision.max(rec.revision);
            });
            let Some((bad, reason)) = w.damage else { break };
            // Zeros after the last record of the last segment are
            // preallocated space.
            if is_last && bytes[bad..].iter().all(|&b| b == 0) {
                break;
            }
            let next = find_valid_record(&bytes, bad + 1, header.salt, max_len);
            let end = next.unwrap_or(bytes.len());
            let range = finding(bad as u64, (end - bad) as u64, reason.into());
            if is_last && next.is_none() {
                let mut range = range;
                range.reason = format!("torn tail ({reason}): a write cut short; open cuts it");
                report.notes.push(range);
            } else {
                report.damaged.push(range);
            }
            at = end;
        }
        if hints.contains(&id) {
            let hpath = hint_path(dir, id);
            let valid = std::fs::read(&hpath)
                .ok()
                .and_then(|h| hint::parse(&h, id, header.salt, len, |_| {}));
            match valid {
                Some(_) => report.hints_valid += 1,
                None => report.notes.push(Finding {
                    file: hpath,
                    offset: 0,
                    len: 0,
                    reason: "hint does not match its segment: open replays the segment instead"
                        .into(),
                }),
            }
        }
    }
    Ok(report)
}
