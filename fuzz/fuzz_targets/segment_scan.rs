//! The record walk of recovery (`walk`, `decode_record`, batch `ops`) and
//! the search for the next valid record, on arbitrary bytes and on valid
//! segments with one bit flipped or a torn tail.
//!
//! Input: byte 0 bit 0 picks the mode.
//! - Raw (bit clear): salt (8 bytes), `max_len` (u16), walk start (u16),
//!   then the segment bytes. No panic; the walk ends at or before the end
//!   of the bytes, cleanly only at the end; every record it reports decodes
//!   again on its own and lies within what was walked.
//! - Built (bit set): a segment written with the store's encoder from the
//!   input, then maybe one bit flipped and maybe the tail torn. The intact
//!   segment walks to its end finding exactly the records written; a
//!   flipped bit in a record stops the walk exactly at that record, and the
//!   search for a valid record finds the next one; a torn tail stops the
//!   walk after the last whole record.

#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use nkv::store::format::{decode_record, HEADER_LEN, RECORD_HEADER_LEN};
use nkv::store::fuzzing::{find_valid_record, scan_segment, walk_records};
use nkv_fuzz::{assert_scan_matches, build_segment};

/// A generous bound: records built here are far smaller.
const MAX_LEN: usize = 1 << 20;

fn raw(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let salt: u64 = u.arbitrary()?;
    let max_len = usize::from(u.arbitrary::<u16>()?);
    let start = usize::from(u.arbitrary::<u16>()?);
    let bytes = u.bytes(u.len())?;
    let scan = walk_records(bytes, start, salt, max_len);
    if start >= bytes.len() {
        assert_eq!((scan.end, scan.damage, scan.ops.len()), (start, None, 0));
        return Ok(());
    }
    assert!(scan.end >= start && scan.end <= bytes.len());
    match scan.damage {
        None => assert_eq!(scan.end, bytes.len()),
        Some((at, _)) => {
            assert_eq!(at, scan.end);
            // Either the record is invalid, or its batch operations are.
            let rec = decode_record(&bytes[at..], salt, max_len);
            assert!(
                !matches!(rec, Ok(r) if r.ops().is_ok()),
                "damage at {at} is valid"
            );
        }
    }
    for op in &scan.ops {
        let (at, len) = (op.offset as usize, op.rec_len as usize);
        assert!(at >= start && at + len <= scan.end && len >= RECORD_HEADER_LEN);
        let rec = decode_record(&bytes[at..], salt, max_len).expect("reported records decode");
        assert_eq!(
            (rec.len, rec.revision, rec.kind),
            (len, op.revision, op.kind)
        );
        assert!(op.value_offset + op.value_len <= op.rec_len);
    }
    let _ = scan_segment(bytes, salt, max_len);
    if let Some(p) = find_valid_record(bytes, start, salt, max_len) {
        assert!(p >= start);
        assert!(decode_record(&bytes[p..], salt, max_len).is_ok());
    }
    Ok(())
}

fn built(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let salt = u.arbitrary()?;
    let base = u.arbitrary()?;
    let seg = build_segment(u, 1, salt, base)?;
    let scan = walk_records(&seg.bytes, HEADER_LEN, salt, MAX_LEN);
    assert_eq!(scan.damage, None);
    assert_eq!(scan_segment(&seg.bytes, salt, MAX_LEN), seg.bytes.len());
    assert_scan_matches(&seg, &seg.bytes, &scan, seg.records.len());
    // Another salt validates nothing.
    let other = walk_records(&seg.bytes, HEADER_LEN, salt ^ 1, MAX_LEN);
    assert_eq!(other.end, HEADER_LEN);

    let mut bytes = seg.bytes.clone();
    if u.arbitrary()? {
        // One bit flipped.
        let at = u.choose_index(bytes.len())?;
        bytes[at] ^= 1 << u.int_in_range(0..=7)?;
        let scan = walk_records(&bytes, HEADER_LEN, salt, MAX_LEN);
        match seg.record_at(at) {
            // The walk does not read the header.
            None => assert_eq!(scan.end, bytes.len()),
            Some(i) => {
                let hit = &seg.records[i];
                assert_eq!(scan.end, hit.start, "flip at {at} not caught");
                assert_eq!(scan.damage.map(|d| d.0), Some(hit.start));
                assert_scan_matches(&seg, &bytes, &scan, i);
                let next = seg.records.get(i + 1).map(|r| r.start);
                assert_eq!(
                    find_valid_record(&bytes, hit.start + 1, salt, MAX_LEN),
                    next
                );
            }
        }
    } else {
        // A torn tail.
        let cut = u.int_in_range(HEADER_LEN..=bytes.len())?;
        bytes.truncate(cut);
        let whole = seg
            .records
            .iter()
            .take_while(|r| r.start + r.len <= cut)
            .count();
        let scan = walk_records(&bytes, HEADER_LEN, salt, MAX_LEN);
        assert_scan_matches(&seg, &bytes, &scan, whole);
        assert_eq!(scan.damage.is_some(), scan.end < cut);
        assert_eq!(find_valid_record(&bytes, scan.end, salt, MAX_LEN), None);
    }
    Ok(())
}

fuzz_target!(|input: &[u8]| {
    let mut u = Unstructured::new(input);
    let Ok(mode) = u.arbitrary::<u8>() else {
        return;
    };
    let _ = if mode & 1 == 0 {
        raw(&mut u)
    } else {
        built(&mut u)
    };
});
