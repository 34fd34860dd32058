//! The hint parser (`hint::parse`) on arbitrary bytes, and hints built from
//! valid segments.
//!
//! Input: byte 0 picks the mode.
//! - 0, raw: id, salt, segment length (u64 each), then the hint bytes as
//!   they are. Mostly refused at the magic or the CRC.
//! - 1, fixed: id, salt, segment length, then the hint body after the
//!   magic, id and salt (covered length, count, entries); the magic, id,
//!   salt and CRC are set so the parser reads the entries.
//! - else, built: a valid segment, the hint the store writes for it, then
//!   maybe one bit flipped in the hint.
//!
//! Checked: no panic. An accepted hint covers at most the segment, and its
//! entries lie within what it covers. A hint built from a segment is
//! accepted and lists exactly what a walk of the segment finds, and is
//! refused for another id, salt or a shorter segment, or with any one bit
//! flipped (its CRC).

#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use nkv::store::format::HEADER_LEN;
use nkv::store::fuzzing::{build_hint, parse_hint, parse_hint_ops, walk_records};
use nkv_fuzz::{build_segment, fix_hint};

const MAX_LEN: usize = 1 << 20;

fn check_accepted(bytes: &[u8], id: u64, salt: u64, seg_len: u64) {
    let (covered, ops) = parse_hint_ops(bytes, id, salt, seg_len);
    assert_eq!(covered, parse_hint(bytes, id, salt, seg_len));
    let Some(covered) = covered else { return };
    assert!(
        covered <= seg_len && covered >= HEADER_LEN as u64,
        "covered {covered}"
    );
    let mut next = HEADER_LEN as u64;
    for op in &ops {
        // Records are listed in file order with no gap.
        assert!(
            op.offset == next || op.offset + op.rec_len == next,
            "{op:?}"
        );
        next = op.offset + op.rec_len;
        assert!(next <= covered, "{op:?} beyond {covered}");
    }
    assert_eq!(next, covered);
}

fn input(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let mode: u8 = u.arbitrary()?;
    match mode {
        0 | 1 => {
            let (id, salt, seg_len) = (u.arbitrary()?, u.arbitrary()?, u.arbitrary()?);
            let rest = u.bytes(u.len())?;
            let bytes = if mode == 0 {
                rest.to_vec()
            } else {
                fix_hint(rest, id, salt)
            };
            check_accepted(&bytes, id, salt, seg_len);
        }
        _ => {
            let (id, salt) = (u.arbitrary()?, u.arbitrary()?);
            let base = u.arbitrary()?;
            let seg = build_segment(u, id, salt, base)?;
            let len = seg.bytes.len() as u64;
            let mut hint = build_hint(id, salt, &seg.bytes, MAX_LEN);
            let (covered, ops) = parse_hint_ops(&hint, id, salt, len);
            let scan = walk_records(&seg.bytes, HEADER_LEN, salt, MAX_LEN);
            assert_eq!(covered, Some(len));
            assert_eq!(ops, scan.ops, "the hint lists what the walk finds");
            check_accepted(&hint, id, salt, len);
            // Another segment's id or salt, or a shorter segment: refused.
            assert_eq!(parse_hint(&hint, id ^ 1, salt, len), None);
            assert_eq!(parse_hint(&hint, id, salt ^ 1, len), None);
            assert_eq!(parse_hint(&hint, id, salt, len - 1), None);
            if u.arbitrary()? {
                let at = u.choose_index(hint.len())?;
                hint[at] ^= 1 << u.int_in_range(0..=7)?;
                assert_eq!(parse_hint(&hint, id, salt, len), None, "flip at {at}");
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = input(&mut Unstructured::new(data));
});
