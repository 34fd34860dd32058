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

use super::format::{decode_record, Kind, HEADER_LEN};
use super::index::Loc;
use super::segment::{hint_path, temp_path};

/// Magic bytes at offset 0 of a hint file.
pub const HINT_MAGIC: [u8; 8] = *b"NKVHINT\n";
/// Hint header: magic (8), segment id (8), salt (8), covered length (8), entry count (8).
pub const HINT_HEADER_LEN: usize = 40;
/// Hint entry fixed part: offset u64, rec_len u32, revision u64, kind u8,
/// key_len u16, value_offset u32, value_len u32; the key follows.
pub const HINT_ENTRY_LEN: usize = 31;

/// One operation listed in a hint.
#[derive(Debug, Clone)]
pub(crate) struct HintEntry<'a> {
    /// Revision of the record.
    pub revision: u64,
    /// Put, Delete or DeletePrefix.
    pub kind: Kind,
    /// The key (or prefix).
    pub key: &'a str,
    /// Where the record and its value are.
    pub loc: Loc,
}

/// Builds hint bytes for segment bytes `seg` (already validated).
pub(crate) fn build(id: u64, salt: u64, seg: &[u8], max_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HINT_HEADER_LEN + seg.len() / 8);
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
        for op in ops {
            out.extend_from_slice(&(at as u64).to_le_bytes());
            out.extend_from_slice(&(rec.len as u32).to_le_bytes());
            out.extend_from_slice(&rec.revision.to_le_bytes());
            out.push(op.kind as u8);
            out.extend_from_slice(&(op.key.len() as u16).to_le_bytes());
            out.extend_from_slice(&(op.value_offset as u32).to_le_bytes());
            out.extend_from_slice(&(op.value.len() as u32).to_le_bytes());
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

/// Writes hint bytes for segment `id` (temp file, then rename; no fsync,
/// see the module comment).
pub(crate) fn write(dir: &Path, id: u64, bytes: &[u8]) -> std::io::Result<()> {
    let path = hint_path(dir, id);
    let tmp = temp_path(&path);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, &path)
}

/// Parses hint bytes for a segment with this id and salt. Returns the
/// covered length and the entries, or `None` if the hint does not belong to
/// this segment or is damaged.
pub(crate) fn parse(
    bytes: &[u8],
    id: u64,
    salt: u64,
    seg_len: u64,
) -> Option<(u64, Vec<HintEntry<'_>>)> {
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
    let mut entries = Vec::with_capacity(count.min(1 << 24) as usize);
    let mut at = HINT_HEADER_LEN;
    for _ in 0..count {
        let e = body.get(at..at + HINT_ENTRY_LEN)?;
        let key_len = u16::from_le_bytes([e[21], e[22]]) as usize;
        let key =
            std::str::from_utf8(body.get(at + HINT_ENTRY_LEN..at + HINT_ENTRY_LEN + key_len)?)
                .ok()?;
        let u32_at = |i: usize| u32::from_le_bytes(e[i..i + 4].try_into().expect("4"));
        entries.push(HintEntry {
            revision: u64::from_le_bytes(e[12..20].try_into().expect("8")),
            kind: Kind::from_u8(e[20])?,
            key,
            loc: Loc {
                segment: id,
                offset: u64::from_le_bytes(e[0..8].try_into().expect("8")),
                rec_len: u32_at(8),
                value_offset: u32_at(23),
                value_len: u32_at(27),
            },
        });
        at += HINT_ENTRY_LEN + key_len;
    }
    (at == body.len()).then_some((covered, entries))
}
