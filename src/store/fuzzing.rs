//! Thin public wrappers over the crate-private scanners of the store (the
//! record walk of recovery and the hint parser), for the fuzz targets in
//! `fuzz/` and the property tests in `tests/codec_properties.rs`.
//!
//! Not part of the API (hidden from the docs, free to change): nothing here
//! adds behaviour, each function calls the code that `Store::open` and
//! `repair` run, and turns what it borrows into owned values a test can
//! compare.

use super::format::{Kind, HEADER_LEN};
use super::{db, hint, recovery, Options};

pub use super::hint::{HINT_HEADER_LEN, HINT_MAGIC};

/// One logical operation found by a scan, and where its record lies: the
/// fields of the index location recovery builds from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedOp {
    /// Offset of the whole record in the segment.
    pub offset: u64,
    /// Length of the whole record.
    pub rec_len: u64,
    /// Revision of the record.
    pub revision: u64,
    /// Put, Delete, DeletePrefix, or Batch for a batch with no operations.
    pub kind: Kind,
    /// The key (or prefix); empty for an empty batch.
    pub key: String,
    /// Offset of the value from the start of the record.
    pub value_offset: u64,
    /// Length of the value.
    pub value_len: u64,
}

/// What a record walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Offset just past the last whole, valid record.
    pub end: usize,
    /// The first invalid bytes (offset, reason), if the walk did not reach
    /// the end cleanly.
    pub damage: Option<(usize, &'static str)>,
    /// Every operation of every valid record, in file order.
    pub ops: Vec<ScannedOp>,
}

/// Walks the records of `bytes` from `start` exactly as recovery does.
///
/// An empty batch record, which holds no operation, is listed as one
/// [`Kind::Batch`] operation with an empty key and value, as a hint lists
/// it, so a walk and the hint built from the same bytes compare equal.
pub fn walk_records(bytes: &[u8], start: usize, salt: u64, max_len: usize) -> Scan {
    let mut ops = Vec::new();
    let w = recovery::walk(bytes, start, salt, max_len, |at, rec, rec_ops| {
        let scanned = |kind, key: &str, value_offset: usize, value_len: usize| ScannedOp {
            offset: at as u64,
            rec_len: rec.len as u64,
            revision: rec.revision,
            kind,
            key: key.to_owned(),
            value_offset: value_offset as u64,
            value_len: value_len as u64,
        };
        if rec_ops.is_empty() {
            ops.push(scanned(Kind::Batch, "", 0, 0));
        }
        for op in rec_ops {
            ops.push(scanned(op.kind, op.key, op.value_offset, op.value.len()));
        }
    });
    Scan {
        end: w.end,
        damage: w.damage,
        ops,
    }
}

/// How far a valid walk of a whole segment (header included, not checked:
/// recovery checks it on its own) gets: the offset just past the last
/// valid record, `HEADER_LEN` for a segment with none, 0 when `bytes` are
/// shorter than a header.
pub fn scan_segment(bytes: &[u8], salt: u64, max_len: usize) -> usize {
    if bytes.len() < HEADER_LEN {
        return 0;
    }
    walk_records(bytes, HEADER_LEN, salt, max_len).end
}

/// Offset of the first valid record at or after `from`, as recovery and
/// repair look for one after damage.
pub fn find_valid_record(bytes: &[u8], from: usize, salt: u64, max_len: usize) -> Option<usize> {
    recovery::find_valid_record(bytes, from, salt, max_len)
}

/// Parses hint bytes for segment `id` with this salt and length: the
/// covered length, or `None` if the hint is refused.
pub fn parse_hint(bytes: &[u8], id: u64, salt: u64, seg_len: u64) -> Option<u64> {
    hint::parse(bytes, id, salt, seg_len, |_| {})
}

/// Like [`parse_hint`], also returning every entry the parser passed on
/// (entries may have been passed on before a refusal, as in recovery).
pub fn parse_hint_ops(
    bytes: &[u8],
    id: u64,
    salt: u64,
    seg_len: u64,
) -> (Option<u64>, Vec<ScannedOp>) {
    let mut ops = Vec::new();
    let covered = hint::parse(bytes, id, salt, seg_len, |e| {
        ops.push(ScannedOp {
            offset: e.loc.offset,
            rec_len: e.loc.rec_len.into(),
            revision: e.revision,
            kind: e.kind,
            key: e.key.to_owned(),
            value_offset: e.loc.value_offset.into(),
            value_len: e.loc.value_len.into(),
        })
    });
    (covered, ops)
}

/// The hint bytes the store writes for segment bytes `seg`.
pub fn build_hint(id: u64, salt: u64, seg: &[u8], max_len: usize) -> Vec<u8> {
    hint::build(id, salt, seg, max_len)
}

/// The largest record `Store::open` accepts under these options (the
/// `max_len` recovery passes to the walk).
pub fn max_record_len(options: &Options) -> usize {
    db::max_record_len(options)
}
