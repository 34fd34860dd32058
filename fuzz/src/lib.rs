//! Helpers shared by the fuzz targets: building a valid segment from fuzz
//! input (so mutations start from records whose checksums hold, which
//! random bytes never have), and checking a walk against what was built.

use arbitrary::{Result, Unstructured};
use nkv::store::format::{
    encode_batch_value, encode_record, Kind, OpRef, SegmentHeader, HEADER_LEN, R_KEY,
};
use nkv::store::fuzzing::{Scan, HINT_MAGIC};

/// One operation written into a built segment.
#[derive(Debug, Clone)]
pub struct PlannedOp {
    /// Put, Delete, DeletePrefix, or Batch for an empty batch.
    pub kind: Kind,
    /// The key (or prefix).
    pub key: String,
    /// The value (empty unless a put).
    pub value: Vec<u8>,
}

/// One record written into a built segment.
#[derive(Debug, Clone)]
pub struct PlannedRecord {
    /// Offset of the record in the segment.
    pub start: usize,
    /// Length of the whole record.
    pub len: usize,
    /// Kind of the record.
    pub kind: Kind,
    /// Revision written.
    pub revision: u64,
    /// Its operations (one placeholder Batch op for an empty batch).
    pub ops: Vec<PlannedOp>,
}

/// A segment built with the store's own encoder.
#[derive(Debug, Clone)]
pub struct BuiltSegment {
    /// Segment id written in the header.
    pub id: u64,
    /// Revision of the last record (the base revision if none).
    pub revision: u64,
    /// Salt of the header and every record.
    pub salt: u64,
    /// The bytes: header, then the records.
    pub bytes: Vec<u8>,
    /// The records, in file order.
    pub records: Vec<PlannedRecord>,
}

impl BuiltSegment {
    /// Index of the record holding byte `at`, or `None` for the header.
    pub fn record_at(&self, at: usize) -> Option<usize> {
        self.records
            .iter()
            .position(|r| (r.start..r.start + r.len).contains(&at))
    }
}

fn key(u: &mut Unstructured<'_>) -> Result<String> {
    // Short keys keep records small, so one input holds several of them.
    let n = u.int_in_range(0..=24)?;
    Ok(String::from_utf8_lossy(u.bytes(n.min(u.len()))?).into_owned())
}

fn value(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let n = u.int_in_range(0..=64)?;
    Ok(u.bytes(n.min(u.len()))?.to_vec())
}

/// Builds a segment of up to 16 records of every kind from `u`, with
/// revisions from `base_revision` up, as a store writes them (a revision
/// may repeat: equal revisions are legal on disk).
pub fn build_segment(
    u: &mut Unstructured<'_>,
    id: u64,
    salt: u64,
    base_revision: u64,
) -> Result<BuiltSegment> {
    let header = SegmentHeader {
        id,
        salt,
        base_revision,
        floor: u.int_in_range(0..=base_revision)?,
    };
    let mut bytes = header.encode().to_vec();
    let mut records = Vec::new();
    let count = u.int_in_range(0..=16)?;
    let mut revision = base_revision;
    for _ in 0..count {
        let start = bytes.len();
        revision = revision.saturating_add(u.int_in_range(0..=2)?);
        let kind = *u.choose(&[Kind::Put, Kind::Delete, Kind::DeletePrefix, Kind::Batch])?;
        let ops = match kind {
            Kind::Put => {
                let (k, v) = (key(u)?, value(u)?);
                encode_record(&mut bytes, salt, revision, Kind::Put, &k, &v);
                vec![PlannedOp {
                    kind: Kind::Put,
                    key: k,
                    value: v,
                }]
            }
            Kind::Delete | Kind::DeletePrefix => {
                let k = key(u)?;
                encode_record(&mut bytes, salt, revision, kind, &k, b"");
                vec![PlannedOp {
                    kind,
                    key: k,
                    value: Vec::new(),
                }]
            }
            Kind::Batch => {
                let n = u.int_in_range(0..=4)?;
                let mut ops = Vec::new();
                for _ in 0..n {
                    let op = if u.arbitrary()? {
                        PlannedOp {
                            kind: Kind::Put,
                            key: key(u)?,
                            value: value(u)?,
                        }
                    } else {
                        PlannedOp {
                            kind: Kind::Delete,
                            key: key(u)?,
                            value: Vec::new(),
                        }
                    };
                    ops.push(op);
                }
                let refs: Vec<OpRef<'_>> = ops
                    .iter()
                    .map(|o| OpRef {
                        kind: o.kind,
                        key: &o.key,
                        value: &o.value,
                    })
                    .collect();
                let batch = encode_batch_value(&refs);
                encode_record(&mut bytes, salt, revision, Kind::Batch, "", &batch);
                if ops.is_empty() {
                    ops.push(PlannedOp {
                        kind: Kind::Batch,
                        key: String::new(),
                        value: Vec::new(),
                    });
                }
                ops
            }
        };
        records.push(PlannedRecord {
            start,
            len: bytes.len() - start,
            kind,
            revision,
            ops,
        });
    }
    Ok(BuiltSegment {
        id,
        revision,
        salt,
        bytes,
        records,
    })
}

/// Asserts that `scan` (a walk of `seg.bytes` from `HEADER_LEN`) found
/// exactly the first `n` records of `seg`, each op where its value lies.
pub fn assert_scan_matches(seg: &BuiltSegment, bytes: &[u8], scan: &Scan, n: usize) {
    let planned: Vec<(&PlannedRecord, &PlannedOp)> = seg.records[..n]
        .iter()
        .flat_map(|r| r.ops.iter().map(move |o| (r, o)))
        .collect();
    assert_eq!(scan.ops.len(), planned.len(), "ops found: {scan:?}");
    for (got, (rec, op)) in scan.ops.iter().zip(planned) {
        assert_eq!(got.offset as usize, rec.start);
        assert_eq!(got.rec_len as usize, rec.len);
        assert_eq!(got.revision, rec.revision);
        assert_eq!((got.kind, got.key.as_str()), (op.kind, op.key.as_str()));
        let at = (got.offset + got.value_offset) as usize;
        assert_eq!(&bytes[at..at + got.value_len as usize], &op.value[..]);
        if rec.kind != Kind::Batch {
            // A single-operation record's value follows its key.
            assert_eq!(got.value_offset as usize, R_KEY + op.key.len());
        }
    }
    let end = seg.records[..n]
        .last()
        .map_or(HEADER_LEN, |r| r.start + r.len);
    assert_eq!(scan.end, end);
}

/// Hint bytes made of the magic, `id`, `salt`, then `body` (covered
/// length, count, entries), then the right trailing CRC: what the parser
/// needs to read past its checks into the entries.
pub fn fix_hint(body: &[u8], id: u64, salt: u64) -> Vec<u8> {
    let mut out = HINT_MAGIC.to_vec();
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&salt.to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}
