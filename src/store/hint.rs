//! Hint files: a compact list of the operations in a sealed segment (key,
//! revision, kind, where the record is), without the values. Opening a store
//! reads hints instead of segments, so start-up time follows the number of
//! keys rather than the bytes of history.
//!
//! A hint is only an accelerator: it carries the segment's id and salt and a
//! trailing CRC, and any mismatch makes open fall back to scanning the
//! segment itself. That is why hints are written without fsync: a torn or
//! lost hint costs time at the next open, never data.

use std::path::Path;

use super::format::{decode_record, Kind, Op, HEADER_LEN, R_KEY};
use super::index::Loc;
use super::segment::{hint_path, temp_path};

/// Magic bytes at offset 0 of a hint file.
pub const HINT_MAGIC: [u8; 8] = *b"NKVHINT\n";
/// Hint header: magic (8), segment id (8), salt (8), covered length (8),
/// entry count (8). Entries follow; a CRC-32 of everything ends the file.
pub const HINT_HEADER_LEN: usize = 40;
/// Entry tag bit: this entry starts a new record (record length and
/// revision follow). Records are listed in file order with no gaps, so the
/// record offset is implicit: the end of the previous record.
pub const TAG_NEW_RECORD: u8 = 0x80;
/// Entry tag bit: value offset and length are explicit (batch records);
/// otherwise the value is whatever follows the key in the record.
pub const TAG_EXPLICIT_VALUE: u8 = 0x40;
/// Entry tag bits holding the kind.
pub const TAG_KIND_MASK: u8 = 0x07;

/// One operation listed in a hint.
#[derive(Debug, Clone)]
pub(crate) struct HintEntry<'a> {
    /// Revision of the record.
    pub revision: u64,
    /// Put, Delete, DeletePrefix, or Batch for a batch with no operations.
    pub kind: Kind,
    /// The key (or prefix).
    pub key: &'a str,
    /// Where the record and its value are.
    pub loc: Loc,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Builds hint bytes for segment bytes `seg` (already validated). Entries
/// are varint-packed (a put costs about 7 bytes plus its key) so hints add
/// little to the disk footprint.
pub(crate) fn build(id: u64, salt: u64, seg: &[u8], max_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HINT_HEADER_LEN + seg.len() / 6);
    out.extend_from_slice(&HINT_MAGIC);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&salt.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // covered length, set below
    out.extend_from_slice(&0u64.to_le_bytes()); // count, set below
    let mut at = HEADER_LEN;
    let mut count = 0u64;
    while at < seg.len() {
        let Ok(rec) = decode_record(&seg[at..], salt, max_len) else {
            break;
        };
        let Ok(ops) = rec.ops() else { break };
        let explicit = rec.kind == Kind::Batch;
        let placeholder = [Op {
            kind: Kind::Batch,
            key: "",
            value_offset: 0,
            value: &[],
        }];
        let ops: &[Op<'_>] = if ops.is_empty() { &placeholder } else { &ops };
        for (n, op) in ops.iter().enumerate() {
            let mut tag = op.kind as u8;
            if n == 0 {
                tag |= TAG_NEW_RECORD;
            }
            if explicit {
                tag |= TAG_EXPLICIT_VALUE;
            }
            out.push(tag);
            if n == 0 {
                put_varint(&mut out, rec.len as u64);
                put_varint(&mut out, rec.revision);
            }
            if explicit {
                put_varint(&mut out, op.value_offset as u64);
                put_varint(&mut out, op.value.len() as u64);
            }
            put_varint(&mut out, op.key.len() as u64);
            out.extend_from_slice(op.key.as_bytes());
            count += 1;
        }
        at += rec.len;
    }
    out[24..32].copy_from_slice(&(at as u64).to_le_bytes());
    out[32..40].copy_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Writes hint bytes for segment `id` (temp file, rename, directory fsync;
/// no fsync of the hint itself, see the module comment).
pub(crate) fn write(dir: &Path, id: u64, bytes: &[u8]) -> std::io::Result<()> {
    let path = hint_path(dir, id);
    let tmp = temp_path(&path);
    let file = super::io::create_truncate(&tmp)?;
    if let Err(e) = super::io::write_at(&file, bytes, 0) {
        let _ = super::io::remove_file(&tmp);
        return Err(e);
    }
    super::io::rename(&tmp, &path)?;
    // The directory rule holds for hints too (cheap: once per sealed
    // segment); the hint's own bytes need no fsync, see the module comment.
    super::io::sync_dir(dir)
}

/// Parses hint bytes for a segment with this id and salt, calling `each`
/// for every entry in file order, and returns the covered length. `None`
/// if the hint does not belong to this segment or is damaged; entries may
/// have been passed to `each` by then, which is harmless because the caller
/// then replays the whole segment and replay is idempotent.
pub(crate) fn parse<'a>(
    bytes: &'a [u8],
    id: u64,
    salt: u64,
    seg_len: u64,
    mut each: impl FnMut(HintEntry<'a>),
) -> Option<u64> {
    if bytes.len() < HINT_HEADER_LEN + 4 || bytes[..8] != HINT_MAGIC {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8"));
    if u64_at(8) != id || u64_at(16) != salt {
        return None;
    }
    let covered = u64_at(24);
    let count = u64_at(32);
    if covered > seg_len {
        return None;
    }
    let mut at = HINT_HEADER_LEN;
    let (mut rec_offset, mut rec_len, mut revision, mut cursor) =
        (0u64, 0u64, 0u64, HEADER_LEN as u64);
    for n in 0..count {
        let tag = *body.get(at)?;
        at += 1;
        if tag & TAG_NEW_RECORD != 0 {
            rec_len = get_varint(body, &mut at)?;
            revision = get_varint(body, &mut at)?;
            rec_offset = cursor;
            // A CRC-valid hint with absurd lengths is refused, not trusted.
            cursor = cursor.checked_add(rec_len)?;
        } else if n == 0 {
            return None;
        }
        let explicit = if tag & TAG_EXPLICIT_VALUE != 0 {
            Some((get_varint(body, &mut at)?, get_varint(body, &mut at)?))
        } else {
            None
        };
        let key_len = get_varint(body, &mut at)? as usize;
        let key = std::str::from_utf8(body.get(at..at.checked_add(key_len)?)?).ok()?;
        at += key_len;
        let implicit_offset = (R_KEY + key_len) as u64;
        let (value_offset, value_len) =
            explicit.unwrap_or((implicit_offset, rec_len.checked_sub(implicit_offset)?));
        each(HintEntry {
            revision,
            kind: Kind::from_u8(tag & TAG_KIND_MASK)?,
            key,
            loc: Loc {
                segment: id,
                offset: rec_offset,
                rec_len: u32::try_from(rec_len).ok()?,
                value_offset: u32::try_from(value_offset).ok()?,
                value_len: u32::try_from(value_len).ok()?,
            },
        });
    }
    if cursor != covered {
        return None;
    }
    (at == body.len()).then_some(covered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::format::{encode_batch_value, encode_record, OpRef, SegmentHeader};

    #[test]
    fn hint_lists_every_operation_where_the_segment_has_it() {
        let salt = 77;
        let mut seg = SegmentHeader {
            id: 3,
            salt,
            base_revision: 0,
            floor: 0,
        }
        .encode()
        .to_vec();
        encode_record(&mut seg, salt, 1, Kind::Put, "a.b", b"hello");
        let batch = [
            OpRef {
                kind: Kind::Put,
                key: "x",
                value: b"12",
            },
            OpRef {
                kind: Kind::Delete,
                key: "y",
                value: b"",
            },
        ];
        encode_record(
            &mut seg,
            salt,
            2,
            Kind::Batch,
            "",
            &encode_batch_value(&batch),
        );
        encode_record(&mut seg, salt, 3, Kind::Batch, "", &[]);
        encode_record(&mut seg, salt, 4, Kind::DeletePrefix, "a", b"");
        encode_record(&mut seg, salt, 5, Kind::Put, "z", &[9u8; 300]);
        let bytes = build(3, salt, &seg, 1 << 20);
        let mut entries = Vec::new();
        let covered =
            parse(&bytes, 3, salt, seg.len() as u64, |e| entries.push(e)).expect("valid hint");
        assert_eq!(covered, seg.len() as u64);
        let got: Vec<(u64, Kind, &str)> = entries
            .iter()
            .map(|e| (e.revision, e.kind, e.key))
            .collect();
        assert_eq!(
            got,
            [
                (1, Kind::Put, "a.b"),
                (2, Kind::Put, "x"),
                (2, Kind::Delete, "y"),
                (3, Kind::Batch, ""),
                (4, Kind::DeletePrefix, "a"),
                (5, Kind::Put, "z")
            ]
        );
        for e in &entries {
            let l = e.loc;
            let rec = decode_record(&seg[l.offset as usize..], salt, l.rec_len as usize).unwrap();
            assert_eq!((rec.revision, rec.len), (e.revision, l.rec_len as usize));
        }
        let value = |e: &HintEntry<'_>| {
            let start = (e.loc.offset + e.loc.value_offset as u64) as usize;
            seg[start..start + e.loc.value_len as usize].to_vec()
        };
        assert_eq!(value(&entries[0]), b"hello");
        assert_eq!(value(&entries[1]), b"12");
        assert_eq!(value(&entries[5]), vec![9u8; 300]);
        // Another segment's hint, or a damaged one, is refused.
        assert!(parse(&bytes, 4, salt, seg.len() as u64, |_| {}).is_none());
        assert!(parse(&bytes, 3, salt + 1, seg.len() as u64, |_| {}).is_none());
        let mut bad = bytes.clone();
        bad[HINT_HEADER_LEN + 2] ^= 1;
        assert!(parse(&bad, 3, salt, seg.len() as u64, |_| {}).is_none());
    }
}
