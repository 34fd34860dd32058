//! Byte layout of segment files: the header and the records.
//!
//! Every constant here mirrors a row of the tables in `docs/storage.md`;
//! change both together. All integers are little-endian.

/// File name suffix of a segment file (`<16 hex digits of id>.seg`).
pub const SEGMENT_SUFFIX: &str = "seg";
/// File name suffix of a hint file (`<16 hex digits of id>.hint`).
pub const HINT_SUFFIX: &str = "hint";
/// Suffix of a file being written by compaction or repair; such files are
/// deleted at open because they were never renamed into place.
pub const TEMP_SUFFIX: &str = "tmp";
/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// Magic bytes at offset 0 of every segment.
pub const MAGIC: [u8; 8] = *b"NKVSEG\r\n";
/// Current on-disk format version.
pub const FORMAT_VERSION: u32 = 1;

/// Segment header: offset of the magic.
pub const H_MAGIC: usize = 0;
/// Segment header: offset of the format version (u32).
pub const H_VERSION: usize = 8;
/// Segment header: offset of the reserved flags (u32, zero).
pub const H_FLAGS: usize = 12;
/// Segment header: offset of the segment id (u64).
pub const H_SEGMENT_ID: usize = 16;
/// Segment header: offset of the random salt (u64).
pub const H_SALT: usize = 24;
/// Segment header: offset of the store revision when the segment was created (u64).
pub const H_BASE_REVISION: usize = 32;
/// Segment header: offset of the tombstone floor when the segment was created (u64).
pub const H_FLOOR: usize = 40;
/// Segment header: offset of the CRC-32 of bytes `0..H_CRC` (u32); bytes
/// 48..60 are reserved (zero) and covered by it.
pub const H_CRC: usize = 60;
/// Length of the segment header; the first record starts here.
pub const HEADER_LEN: usize = 64;

/// Record: offset of the body length (u32) = bytes after `R_CRC` field.
pub const R_LEN: usize = 0;
/// Record: offset of the CRC-32 (u32) of salt ‖ length field ‖ body.
pub const R_CRC: usize = 4;
/// Record: offset of the revision (u64); the body starts here.
pub const R_REVISION: usize = 8;
/// Record: offset of the kind (u8).
pub const R_KIND: usize = 16;
/// Record: offset of the flags (u8, zero).
pub const R_FLAGS: usize = 17;
/// Record: offset of the key length (u16).
pub const R_KEY_LEN: usize = 18;
/// Record: offset of the value length (u32).
pub const R_VALUE_LEN: usize = 20;
/// Record: offset of the key bytes; the value follows the key.
pub const R_KEY: usize = 24;
/// Length of the fixed record header.
pub const RECORD_HEADER_LEN: usize = R_KEY;
/// Largest key length the format can hold (u16 field).
pub const FORMAT_MAX_KEY_LEN: usize = u16::MAX as usize;

/// Batch sub-operation header: kind (u8), key length (u16), value length (u32).
pub const BATCH_OP_HEADER_LEN: usize = 7;

/// What a record (or batch sub-operation) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Set `key` to `value`.
    Put = 1,
    /// Delete `key` (leaves a tombstone).
    Delete = 2,
    /// Delete every key covered by the prefix in `key`; value empty.
    DeletePrefix = 3,
    /// Several puts/deletes applied atomically under one revision; the
    /// value holds the sub-operations, the key is empty.
    Batch = 4,
}

impl Kind {
    /// Parses a kind byte.
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Put),
            2 => Some(Kind::Delete),
            3 => Some(Kind::DeletePrefix),
            4 => Some(Kind::Batch),
            _ => None,
        }
    }
}

/// The decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Segment id; also the file name.
    pub id: u64,
    /// Random per-file salt mixed into every record checksum, so bytes left
    /// from an older file (or preallocation) never validate here.
    pub salt: u64,
    /// Store revision when the segment was created: the revision survives
    /// even if compaction drops every record that carried it.
    pub base_revision: u64,
    /// Tombstone floor when the segment was created.
    pub floor: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl SegmentHeader {
    /// Encodes the header into its `HEADER_LEN` bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[H_MAGIC..H_MAGIC + 8].copy_from_slice(&MAGIC);
        b[H_VERSION..H_VERSION + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[H_FLAGS..H_FLAGS + 4].copy_from_slice(&0u32.to_le_bytes());
        b[H_SEGMENT_ID..H_SEGMENT_ID + 8].copy_from_slice(&self.id.to_le_bytes());
        b[H_SALT..H_SALT + 8].copy_from_slice(&self.salt.to_le_bytes());
        b[H_BASE_REVISION..H_BASE_REVISION + 8].copy_from_slice(&self.base_revision.to_le_bytes());
        b[H_FLOOR..H_FLOOR + 8].copy_from_slice(&self.floor.to_le_bytes());
        let crc = crc32fast::hash(&b[..H_CRC]);
        b[H_CRC..H_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header; the error says what is wrong.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, &'static str> {
        if b.len() < HEADER_LEN {
            return Err("segment header is cut short");
        }
        if b[H_MAGIC..H_MAGIC + 8] != MAGIC {
            return Err("bad magic: not an nkv segment");
        }
        if crc32fast::hash(&b[..H_CRC]) != u32_at(b, H_CRC) {
            return Err("segment header checksum mismatch");
        }
        if u32_at(b, H_VERSION) != FORMAT_VERSION {
            return Err("unsupported format version");
        }
        Ok(SegmentHeader {
            id: u64_at(b, H_SEGMENT_ID),
            salt: u64_at(b, H_SALT),
            base_revision: u64_at(b, H_BASE_REVISION),
            floor: u64_at(b, H_FLOOR),
        })
    }
}

/// A fresh random salt for a new segment.
pub fn new_salt() -> u64 {
    let mut b = [0u8; 8];
    // A failing OS random source is near impossible; fall back to the clock
    // so a segment can still be created (the salt only needs to differ).
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        return t ^ 0x9e37_79b9_7f4a_7c15;
    }
    u64::from_le_bytes(b)
}

/// The checksum of a record: salt, then the length field, then the body.
fn record_crc(salt: u64, len_field: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_le_bytes());
    h.update(len_field);
    h.update(body);
    h.finalize()
}

/// One batch sub-operation to encode.
#[derive(Debug, Clone, Copy)]
pub struct OpRef<'a> {
    /// `Kind::Put` or `Kind::Delete`.
    pub kind: Kind,
    /// The key.
    pub key: &'a str,
    /// The value (empty for a delete).
    pub value: &'a [u8],
}

/// Encodes a batch value from its sub-operations.
pub fn encode_batch_value(ops: &[OpRef<'_>]) -> Vec<u8> {
    let len: usize = ops
        .iter()
        .map(|o| BATCH_OP_HEADER_LEN + o.key.len() + o.value.len())
        .sum();
    let mut v = Vec::with_capacity(len);
    for o in ops {
        v.push(o.kind as u8);
        v.extend_from_slice(&(o.key.len() as u16).to_le_bytes());
        v.extend_from_slice(&(o.value.len() as u32).to_le_bytes());
        v.extend_from_slice(o.key.as_bytes());
        v.extend_from_slice(o.value);
    }
    v
}

/// Total encoded length of a record with this key and value.
pub fn record_len(key_len: usize, value_len: usize) -> usize {
    RECORD_HEADER_LEN + key_len + value_len
}

/// Encodes one record, appending it to `out`. The caller has checked the
/// key (≤ `FORMAT_MAX_KEY_LEN`) and value (< 4 GiB) lengths.
pub fn encode_record(
    out: &mut Vec<u8>,
    salt: u64,
    revision: u64,
    kind: Kind,
    key: &str,
    value: &[u8],
) {
    let start = out.len();
    let body_len = (RECORD_HEADER_LEN - R_REVISION + key.len() + value.len()) as u32;
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // CRC, filled below
    out.extend_from_slice(&revision.to_le_bytes());
    out.push(kind as u8);
    out.push(0); // flags
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value);
    let rec = &out[start..];
    let crc = record_crc(salt, &rec[R_LEN..R_LEN + 4], &rec[R_REVISION..]);
    out[start + R_CRC..start + R_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A record decoded in place, borrowing the segment bytes.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// Total length of the record in bytes (header included).
    pub len: usize,
    /// Revision of the write.
    pub revision: u64,
    /// What the record does.
    pub kind: Kind,
    /// The key (the prefix for a delete-prefix; empty for a batch).
    pub key: &'a str,
    /// The value (sub-operations for a batch).
    pub value: &'a [u8],
}

/// One logical operation inside a record, with where its value lies.
#[derive(Debug, Clone, Copy)]
pub struct Op<'a> {
    /// Put, Delete or DeletePrefix.
    pub kind: Kind,
    /// The key (or prefix).
    pub key: &'a str,
    /// Offset of the value from the start of the record.
    pub value_offset: usize,
    /// The value bytes.
    pub value: &'a [u8],
}

/// Decodes the record starting at `buf[0]`. `max_len` bounds the total
/// record length (limits plus header) so a damaged length field cannot make
/// the reader swallow megabytes of following records. Errors say why the
/// bytes are not a whole, valid record.
pub fn decode_record(buf: &[u8], salt: u64, max_len: usize) -> Result<RecordRef<'_>, &'static str> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err("record header cut short");
    }
    let body_len = u32_at(buf, R_LEN) as usize;
    let len = body_len + R_REVISION;
    if len < RECORD_HEADER_LEN || len > max_len {
        return Err("record length out of range");
    }
    if len > buf.len() {
        return Err("record cut short");
    }
    let rec = &buf[..len];
    if record_crc(salt, &rec[R_LEN..R_LEN + 4], &rec[R_REVISION..]) != u32_at(rec, R_CRC) {
        return Err("record checksum mismatch");
    }
    let kind = Kind::from_u8(rec[R_KIND]).ok_or("unknown record kind")?;
    let key_len = u16_at(rec, R_KEY_LEN) as usize;
    let value_len = u32_at(rec, R_VALUE_LEN) as usize;
    if RECORD_HEADER_LEN + key_len + value_len != len || rec[R_FLAGS] != 0 {
        return Err("record fields disagree with its length");
    }
    let key = std::str::from_utf8(&rec[R_KEY..R_KEY + key_len]).map_err(|_| "key is not UTF-8")?;
    Ok(RecordRef {
        len,
        revision: u64_at(rec, R_REVISION),
        kind,
        key,
        value: &rec[R_KEY + key_len..],
    })
}

impl<'a> RecordRef<'a> {
    /// The logical operations of this record: one for put/delete/
    /// delete-prefix, the sub-operations for a batch.
    pub fn ops(&self) -> Result<Vec<Op<'a>>, &'static str> {
        let value_start = R_KEY + self.key.len();
        if self.kind != Kind::Batch {
            return Ok(vec![Op {
                kind: self.kind,
                key: self.key,
                value_offset: value_start,
                value: self.value,
            }]);
        }
        let mut ops = Vec::new();
        let v = self.value;
        let mut at = 0;
        while at < v.len() {
            if v.len() - at < BATCH_OP_HEADER_LEN {
                return Err("batch sub-operation cut short");
            }
            let kind = match Kind::from_u8(v[at]) {
                Some(k @ (Kind::Put | Kind::Delete)) => k,
                _ => return Err("bad batch sub-operation kind"),
            };
            let key_len = u16_at(v, at + 1) as usize;
            let value_len = u32_at(v, at + 3) as usize;
            let key_at = at + BATCH_OP_HEADER_LEN;
            let end = key_at + key_len + value_len;
            if end > v.len() {
                return Err("batch sub-operation overruns the record");
            }
            let key = std::str::from_utf8(&v[key_at..key_at + key_len])
                .map_err(|_| "batch key is not UTF-8")?;
            ops.push(Op {
                kind,
                key,
                value_offset: value_start + key_at + key_len,
                value: &v[key_at + key_len..end],
            });
            at = end;
        }
        Ok(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_checksum() {
        let h = SegmentHeader {
            id: 7,
            salt: 99,
            base_revision: 12,
            floor: 3,
        };
        let mut b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        b[H_SALT] ^= 1;
        assert!(SegmentHeader::decode(&b).is_err());
    }

    #[test]
    fn record_round_trip_and_salt() {
        let mut out = Vec::new();
        encode_record(&mut out, 5, 42, Kind::Put, "net.a", b"up");
        assert_eq!(out.len(), record_len(5, 2));
        let r = decode_record(&out, 5, 1 << 20).unwrap();
        assert_eq!(
            (r.revision, r.kind, r.key, r.value),
            (42, Kind::Put, "net.a", &b"up"[..])
        );
        assert!(
            decode_record(&out, 6, 1 << 20).is_err(),
            "other salt must not validate"
        );
        assert!(decode_record(&out[..out.len() - 1], 5, 1 << 20).is_err());
    }

    #[test]
    fn batch_ops_locate_values() {
        let ops = [
            OpRef {
                kind: Kind::Put,
                key: "a",
                value: b"1",
            },
            OpRef {
                kind: Kind::Delete,
                key: "b",
                value: b"",
            },
        ];
        let mut out = Vec::new();
        encode_record(&mut out, 1, 2, Kind::Batch, "", &encode_batch_value(&ops));
        let r = decode_record(&out, 1, 1 << 20).unwrap();
        let got = r.ops().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(&out[got[0].value_offset..got[0].value_offset + 1], b"1");
        assert_eq!(got[1].kind, Kind::Delete);
    }
}
