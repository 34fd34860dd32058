//! Failures of the disk: a failed fsync, a full disk, and a compaction
//! interrupted at each of its steps. Faults are injected through the
//! store's file layer (armed per thread, so tests stay independent).

use std::path::Path;

use nkv::store::{errno, faults, Condition, CrashPoint, FileOp, Options, Store, StoreError};

type Snapshot = (u64, Vec<(String, Vec<u8>, u64)>);

fn snapshot(s: &Store) -> Snapshot {
    let all = s.scan_prefix("").unwrap();
    (
        s.revision(),
        all.into_iter()
            .map(|(k, e)| (k, e.value.to_vec(), e.revision))
            .collect(),
    )
}

fn no_temp_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp"))
}

#[test]
fn failed_fsync_poisons_the_store_and_earlier_data_survives() {
    faults::clear();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), Options::default()).unwrap();
    s.put("a", b"acked", Condition::None).unwrap();
    s.commit().unwrap();
    s.put("b", b"in the failing batch", Condition::None)
        .unwrap();
    s.put("c", b"in the failing batch", Condition::None)
        .unwrap();
    faults::fail_syncs(true);
    let err = s.commit().expect_err("batch must not be acknowledged");
    assert!(matches!(err, StoreError::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("fdatasync"), "{err}");
    faults::fail_syncs(false);
    // No retry as if nothing happened: every later write is refused.
    assert!(matches!(s.commit(), Err(StoreError::Poisoned { .. })));
    assert!(matches!(s.sync(), Err(StoreError::Poisoned { .. })));
    assert!(matches!(
        s.put("d", b"x", Condition::None),
        Err(StoreError::Poisoned { .. })
    ));
    assert!(matches!(s.compact(), Err(StoreError::Poisoned { .. })));
    drop(s);
    let s = Store::open(dir.path(), Options::default()).unwrap();
    let a = s.get("a").unwrap().unwrap();
    assert_eq!((a.value.as_ref(), a.revision), (&b"acked"[..], 1));
    assert_eq!(s.get("d").unwrap(), None);
    assert!(s.revision() >= 1);
}

#[test]
fn disk_full_rolls_back_the_write_and_the_store_stays_usable() {
    faults::clear();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), Options::default()).unwrap();
    s.put("a", b"acked", Condition::None).unwrap();
    s.commit().unwrap();
    let before = s.stats().total_bytes;
    faults::enospc_after(Some(0));
    let err = s
        .put("b", &[7u8; 300], Condition::None)
        .expect_err("disk full");
    assert!(matches!(err, StoreError::DiskFull), "{err}");
    faults::clear();
    assert_eq!(s.get("b").unwrap(), None);
    assert_eq!(s.revision(), 1, "the failed write used no revision");
    assert_eq!(s.stats().total_bytes, before);
    // Still usable: the next write takes the next revision.
    assert_eq!(s.put("c", b"later", Condition::None).unwrap(), 2);
    s.commit().unwrap();
    drop(s);
    let s = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(s.get("a").unwrap().unwrap().revision, 1);
    assert_eq!(s.get("b").unwrap(), None);
    assert_eq!(s.get("c").unwrap().unwrap().revision, 2);
}

#[test]
fn disk_full_while_rolling_or_compacting_keeps_data() {
    faults::clear();
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_size: 512,
        ..Options::default()
    };
    let mut s = Store::open(dir.path(), opts.clone()).unwrap();
    for i in 0..20u32 {
        s.put(&format!("k.{}", i % 5), &[i as u8; 40], Condition::None)
            .unwrap();
    }
    s.commit().unwrap();
    let expect = snapshot(&s);
    // Compaction runs out of space writing its output: temp files go away.
    faults::enospc_after(Some(0));
    assert!(matches!(s.compact(), Err(StoreError::DiskFull)));
    faults::clear();
    assert!(no_temp_files(dir.path()));
    assert_eq!(snapshot(&s), expect);
    // A value too big for the active segment forces a roll; creating the
    // new segment fails: the write is refused, nothing half-made remains.
    let segments = s.stats().segments;
    faults::enospc_after(Some(0));
    assert!(matches!(
        s.put("roll", &[1u8; 600], Condition::None),
        Err(StoreError::DiskFull)
    ));
    faults::clear();
    assert_eq!(s.stats().segments, segments);
    assert_eq!(snapshot(&s), expect);
    s.put("roll", &[2u8; 600], Condition::None).unwrap();
    assert_eq!(s.stats().segments, segments + 1);
    s.commit().unwrap();
    drop(s);
    let s = Store::open(dir.path(), opts).unwrap();
    assert_eq!(s.get("roll").unwrap().unwrap().value.as_ref(), &[2u8; 600]);
    assert_eq!(s.revision(), expect.0 + 1);
}

/// A history that spreads over several segments, overwrites keys, deletes
/// keys (tombstones old enough to be dropped) and deletes a prefix.
fn history(s: &mut Store) {
    for i in 0..120u32 {
        s.put(
            &format!("k.{}", i % 30),
            format!("v{i}").repeat(4).as_bytes(),
            Condition::None,
        )
        .unwrap();
        if i % 10 == 9 {
            s.commit().unwrap();
        }
    }
    for i in 0..10u32 {
        s.delete(&format!("k.{i}"), Condition::None).unwrap();
    }
    s.put("gone.a", b"1", Condition::None).unwrap();
    s.put("gone.b", b"1", Condition::None).unwrap();
    s.delete_prefix("gone").unwrap();
    for i in 0..20u32 {
        s.put(&format!("late.{i}"), b"fresh", Condition::None)
            .unwrap();
    }
    s.commit().unwrap();
}

#[test]
fn compaction_interrupted_at_every_step_loses_and_reverts_nothing() {
    faults::clear();
    let opts = Options {
        segment_size: 700,
        tombstone_retention: 5,
        ..Options::default()
    };
    for point in CrashPoint::ALL {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), opts.clone()).unwrap();
        history(&mut s);
        assert!(s.stats().segments >= 4, "{point:?}: need several inputs");
        let expect = snapshot(&s);
        faults::crash_at(Some(point));
        assert!(
            s.compact().is_err(),
            "{point:?}: the crash point was not reached"
        );
        faults::clear();
        assert!(matches!(
            s.put("x", b"", Condition::None),
            Err(StoreError::Poisoned { .. })
        ));
        drop(s); // the "crash"

        let mut s = Store::open(dir.path(), opts.clone()).unwrap();
        assert_eq!(snapshot(&s), expect, "{point:?}: state after reopen");
        assert!(no_temp_files(dir.path()), "{point:?}");
        for i in 0..10u32 {
            assert_eq!(
                s.get(&format!("k.{i}")).unwrap(),
                None,
                "{point:?}: deleted key came back"
            );
        }
        let rev = s.put("after", b"crash", Condition::None).unwrap();
        assert_eq!(rev, expect.0 + 1, "{point:?}: revisions stay monotonic");
        s.commit().unwrap();
        s.compact().unwrap();
        let expect2 = snapshot(&s);
        drop(s);
        let s = Store::open(dir.path(), opts.clone()).unwrap();
        assert_eq!(snapshot(&s), expect2, "{point:?}: after a clean compaction");
        assert!(s.tombstone_floor() <= s.revision());
    }
}

#[test]
fn failed_fsync_while_rolling_a_segment_poisons() {
    faults::clear();
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_size: 300,
        ..Options::default()
    };
    let mut s = Store::open(dir.path(), opts.clone()).unwrap();
    s.put("a", &[1u8; 100], Condition::None).unwrap();
    s.commit().unwrap();
    faults::fail_syncs(true);
    // This put needs a new segment; sealing the old one must fsync it.
    let err = s
        .put("b", &[2u8; 250], Condition::None)
        .expect_err("roll must fail");
    faults::clear();
    assert!(matches!(err, StoreError::Poisoned { .. }), "{err}");
    assert!(s.poisoned().is_some());
    assert!(matches!(
        s.put("c", b"x", Condition::None),
        Err(StoreError::Poisoned { .. })
    ));
    drop(s);
    let s = Store::open(dir.path(), opts).unwrap();
    assert_eq!(s.get("a").unwrap().unwrap().value.as_ref(), &[1u8; 100]);
    assert_eq!(s.get("b").unwrap(), None);
    assert_eq!(s.revision(), 1);
}

/// The bug a full disk used to trigger: preallocation failed, the record was
/// written past the reserved space anyway, and the next preallocation
/// zero-filled over it. Now a failed reservation falls back to exactly the
/// space the record needs, and acknowledged records are never overwritten.
#[test]
fn a_failed_preallocation_never_overwrites_acknowledged_records() {
    faults::clear();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), Options::default()).unwrap();
    let value = |i: u32| format!("value {i} ").repeat(40).into_bytes();
    for i in 0..600u32 {
        if i % 50 == 0 {
            // The next write (a chunk of zeros ahead, if one is due) fails.
            faults::inject(FileOp::Write, errno::ENOSPC, 0, Some(1));
        }
        match s.put(&format!("k.{i}"), &value(i), Condition::None) {
            Ok(_) => {}
            Err(StoreError::DiskFull) => {
                faults::clear();
                s.put(&format!("k.{i}"), &value(i), Condition::None)
                    .unwrap();
            }
            Err(e) => panic!("{e}"),
        }
        s.commit().unwrap();
    }
    faults::clear();
    let check = |s: &Store| {
        for i in 0..600u32 {
            let got = s.get(&format!("k.{i}")).unwrap().expect("acknowledged");
            assert_eq!(got.value.as_ref(), value(i).as_slice(), "k.{i}");
        }
        assert_eq!(s.scan_prefix("").unwrap().len(), 600);
    };
    check(&s);
    drop(s);
    check(&Store::open(dir.path(), Options::default()).unwrap());
}

#[test]
fn no_space_even_for_the_record_refuses_it_with_nothing_written() {
    faults::clear();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), Options::default()).unwrap();
    s.put("a", b"1", Condition::None).unwrap();
    s.commit().unwrap();
    // Fill the reserved chunk so the next record needs a new reservation.
    let big = vec![9u8; 1 << 20];
    s.put("big", &big, Condition::None).unwrap();
    s.commit().unwrap();
    // Both reservation attempts (a chunk ahead, then the exact size) fail.
    faults::inject(FileOp::Write, errno::ENOSPC, 0, Some(2));
    let err = s.put("b", &big, Condition::None).expect_err("no space");
    assert!(matches!(err, StoreError::DiskFull), "{err}");
    assert!(err.is_transient());
    assert!(s.poisoned().is_none());
    assert_eq!(s.revision(), 2);
    assert_eq!(s.get("b").unwrap(), None);
    // Space is back: the same write goes through, no restart needed.
    assert_eq!(s.put("b", &big, Condition::None).unwrap(), 3);
    s.commit().unwrap();
    drop(s);
    let s = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(s.get("b").unwrap().unwrap().value.len(), big.len());
    assert_eq!(s.get("a").unwrap().unwrap().value.as_ref(), b"1");
}

/// Running out of descriptors or memory while rolling to a new segment
/// fails that write with a clear, transient error and never poisons.
#[test]
fn no_descriptor_or_memory_for_a_new_segment_fails_the_write_only() {
    for code in [errno::EMFILE, errno::ENFILE, errno::ENOMEM] {
        faults::clear();
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            segment_size: 300,
            ..Options::default()
        };
        let mut s = Store::open(dir.path(), opts.clone()).unwrap();
        s.put("a", &[1u8; 200], Condition::None).unwrap();
        s.commit().unwrap();
        faults::inject(FileOp::Create, code, 0, Some(1));
        let err = s
            .put("b", &[2u8; 200], Condition::None)
            .expect_err("the roll must fail");
        assert!(
            matches!(err, StoreError::OutOfResources { .. }),
            "errno {code}: {err}"
        );
        assert!(err.is_transient());
        assert!(err.to_string().contains("retry"), "{err}");
        assert!(s.poisoned().is_none(), "errno {code}: must not poison");
        assert_eq!(s.revision(), 1);
        // The descriptor is free again: the same write succeeds.
        assert_eq!(s.put("b", &[2u8; 200], Condition::None).unwrap(), 2);
        s.commit().unwrap();
        drop(s);
        let s = Store::open(dir.path(), opts).unwrap();
        assert_eq!(s.get("b").unwrap().unwrap().value.as_ref(), &[2u8; 200]);
        assert_eq!(s.get("a").unwrap().unwrap().value.as_ref(), &[1u8; 200]);
    }
}

fn data_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "LOCK")
        .collect();
    names.sort();
    names
}

/// After a failed compaction the directory holds what it held before plus,
/// at most, what starting one does: the sealed active segment's hint and
/// the new active segment (an id above every other). Nothing else: no
/// output, no temporary file.
fn assert_only_rolled(before: &[String], after: &[String], label: &str) {
    for name in before {
        assert!(after.contains(name), "{label}: {name} was removed");
    }
    let extra: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
    let new_segments: Vec<&&String> = extra.iter().filter(|n| n.ends_with(".seg")).collect();
    assert!(new_segments.len() <= 1, "{label}: leftovers {extra:?}");
    let highest_before = before.iter().filter(|n| n.ends_with(".seg")).max();
    for seg in &new_segments {
        assert!(
            Some(**seg) > highest_before,
            "{label}: leftover output {seg}"
        );
    }
    for name in &extra {
        assert!(
            name.ends_with(".seg") || name.ends_with(".hint"),
            "{label}: leftover {name}"
        );
    }
}

/// A compaction that fails on a full disk or without descriptors, at any
/// of its file operations before the switch-over, removes what it made and
/// leaves the store usable and unchanged.
#[test]
fn compaction_failing_at_any_file_operation_rolls_back() {
    let opts = Options {
        segment_size: 700,
        tombstone_retention: 5,
        ..Options::default()
    };
    let mut reached = 0;
    for (op, code) in [
        (FileOp::Create, errno::EMFILE),
        (FileOp::Create, errno::ENOSPC),
        (FileOp::Write, errno::ENOSPC),
        (FileOp::Rename, errno::ENOSPC),
        (FileOp::Rename, errno::EIO),
        (FileOp::DirSync, errno::EMFILE),
    ] {
        for after in 0..8 {
            faults::clear();
            let dir = tempfile::tempdir().unwrap();
            let mut s = Store::open(dir.path(), opts.clone()).unwrap();
            history(&mut s);
            let expect = snapshot(&s);
            let files = data_files(dir.path());
            faults::inject(op, code, after, Some(1));
            let result = s.compact();
            faults::clear();
            let label = format!("{op:?} errno {code} after {after}");
            match result {
                Ok(_) => {
                    // The fault was armed past the compaction's last
                    // operation of that kind: a normal compaction.
                    assert_eq!(snapshot(&s), expect, "{label}");
                }
                Err(e) => {
                    reached += 1;
                    assert!(s.poisoned().is_none(), "{label}: poisoned by {e}");
                    assert_eq!(snapshot(&s), expect, "{label}");
                    assert_only_rolled(&files, &data_files(dir.path()), &label);
                    // Usable at once, and a later compaction succeeds.
                    s.put("after", b"x", Condition::None).unwrap();
                    s.commit().unwrap();
                    s.compact().unwrap();
                }
            }
            let expect = snapshot(&s);
            drop(s);
            let s = Store::open(dir.path(), opts.clone()).unwrap();
            assert_eq!(snapshot(&s), expect, "{label}: after reopen");
            for i in 0..10u32 {
                assert_eq!(s.get(&format!("k.{i}")).unwrap(), None, "{label}");
            }
        }
    }
    assert!(reached >= 20, "faults reached only {reached} times");
}

/// Old segments that cannot be removed after a compaction stay as dead
/// segments (a suffix, oldest removed first): nothing comes back, and the
/// next compaction removes them.
#[test]
fn compaction_that_cannot_remove_old_segments_keeps_them_safely() {
    let opts = Options {
        segment_size: 700,
        tombstone_retention: 5,
        ..Options::default()
    };
    // Removals alternate: a segment, then its hint (whose failure is
    // harmless and ignored); these fail the first, second and third segment.
    for after in [0, 2, 4] {
        faults::clear();
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), opts.clone()).unwrap();
        history(&mut s);
        let expect = snapshot(&s);
        faults::inject(FileOp::Remove, errno::EIO, after, Some(1));
        s.compact()
            .expect("removal failures do not fail the compaction");
        faults::clear();
        assert!(s.poisoned().is_none());
        assert_eq!(snapshot(&s), expect);
        let kept = s.stats().segments;
        drop(s);
        let mut s = Store::open(dir.path(), opts.clone()).unwrap();
        assert_eq!(snapshot(&s), expect, "after {after}: reopen");
        for i in 0..10u32 {
            assert_eq!(s.get(&format!("k.{i}")).unwrap(), None, "resurrected");
        }
        s.compact().unwrap();
        assert!(
            s.stats().segments < kept,
            "the next compaction cleans up: {} then {kept}, after {after}",
            s.stats().segments
        );
        assert_eq!(snapshot(&s), expect);
    }
}

/// An I/O error on a write (half the record reached the file) poisons the
/// store; after a reopen the half record is cut as a torn tail and every
/// earlier write is there.
#[test]
fn an_io_error_on_a_write_poisons_and_the_half_record_is_cut_at_open() {
    faults::clear();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), Options::default()).unwrap();
    s.put("a", b"acked", Condition::None).unwrap();
    s.commit().unwrap();
    // Skip the reservation write; fail the record write itself.
    s.put("fill", &[1u8; 10], Condition::None).unwrap();
    s.commit().unwrap();
    faults::inject(FileOp::Write, errno::EIO, 0, Some(1));
    let err = s
        .put("b", &[2u8; 500], Condition::None)
        .expect_err("EIO on the write");
    faults::clear();
    assert!(matches!(err, StoreError::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("write failed"), "{err}");
    drop(s);
    let s = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(s.get("a").unwrap().unwrap().value.as_ref(), b"acked");
    assert_eq!(s.get("b").unwrap(), None);
    assert_eq!(s.revision(), 2);
}
