//! Failures of the disk: a failed fsync, a full disk, and a compaction
//! interrupted at each of its steps. Faults are injected through the
//! store's file layer (armed per thread, so tests stay independent).

use std::path::Path;

use nkv::store::{faults, Condition, CrashPoint, Options, Store, StoreError};

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
