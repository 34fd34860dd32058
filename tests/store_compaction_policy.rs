//! When compaction runs by itself, and what it does when it cannot:
//! small disks reclaim space, a compaction that cannot fit or failed is put
//! on hold (visible in the stats) instead of being retried at every commit,
//! and views stay readable across compactions.

mod common;

use common::disk::SmallDisk;
use nkv::store::{
    errno, faults, CompactionHold, Condition, FileOp, Options, Store, StoreError, ViewEntry,
};

/// Overwriting one 4 KiB key on an 8 MiB disk must never fill it: the
/// dead-bytes minimum scales down with the free space.
#[test]
fn a_small_disk_reclaims_space_by_itself() {
    let Some(disk) = SmallDisk::tmpfs(8) else {
        return;
    };
    let dir = disk.path().join("data");
    let mut s = Store::open(&dir, Options::default()).unwrap();
    let value = vec![b'v'; 4096];
    for i in 0..10_000u32 {
        let mut v = value.clone();
        v[..4].copy_from_slice(&i.to_be_bytes());
        s.put("only.key", &v, Condition::None)
            .unwrap_or_else(|e| panic!("write {i}: {e}"));
        s.commit().unwrap();
    }
    let stats = s.stats();
    assert!(stats.compactions > 0);
    assert_eq!(stats.compaction_hold, None);
    assert!(stats.total_bytes < 4 << 20, "{stats:?}");
    assert_eq!(stats.data_bytes, "only.key".len() as u64 + 4096);
    drop(s);
    let s = Store::open(&dir, Options::default()).unwrap();
    let got = s.get("only.key").unwrap().unwrap();
    assert_eq!(&got.value[..4], &9_999u32.to_be_bytes());
}

/// With less free space than the live data, compaction is not attempted
/// at every commit: it goes on hold with the reason in the stats, and
/// resumes by itself once space is freed.
#[test]
fn compaction_without_room_is_held_not_retried() {
    let Some(disk) = SmallDisk::tmpfs(16) else {
        return;
    };
    faults::clear();
    let dir = disk.path().join("data");
    let opts = Options {
        compaction_min_dead_bytes: 256 << 10,
        compaction_dead_ratio: 0.2,
        ..Options::default()
    };
    let mut s = Store::open(&dir, opts).unwrap();
    // 3 MiB of live data, then fill the disk so less than that is free.
    let big = vec![b'x'; 64 << 10];
    for i in 0..48u32 {
        s.put(&format!("live.{i}"), &big, Condition::None).unwrap();
    }
    s.commit().unwrap();
    let filler = disk.fill_leaving(2 << 20);
    // Dead bytes pile up; the first commit past the threshold finds no room.
    let mut held_at = None;
    for i in 0..30u32 {
        match s.put("churn", &big, Condition::None) {
            Ok(_) => s.commit().unwrap(),
            Err(e) => assert!(matches!(e, StoreError::DiskFull), "{e}"),
        }
        if let Some(hold) = s.stats().compaction_hold {
            assert!(matches!(hold, CompactionHold::NoRoom { .. }), "{hold}");
            assert_eq!(hold.code(), 1);
            assert!(hold.to_string().contains("free"), "{hold}");
            held_at = Some(i);
            break;
        }
    }
    assert!(held_at.is_some(), "compaction never went on hold");
    // While held, commits create no compaction files at all.
    let creates = faults::count(FileOp::Create);
    for _ in 0..3 {
        s.put("churn", b"small", Condition::None).unwrap();
        s.commit().unwrap();
    }
    assert_eq!(faults::count(FileOp::Create), creates, "retried while held");
    assert_eq!(s.stats().compactions, 0);

    // Space comes back: the next commits compact without being asked.
    std::fs::remove_file(filler).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    s.put("churn", b"small", Condition::None).unwrap();
    s.commit().unwrap();
    let stats = s.stats();
    assert_eq!(stats.compactions, 1, "{stats:?}");
    assert_eq!(stats.compaction_hold, None);
}

/// An operator's compaction on a disk without room gets a clear error.
#[test]
fn asking_for_a_compaction_without_room_says_why() {
    let Some(disk) = SmallDisk::tmpfs(8) else {
        return;
    };
    let dir = disk.path().join("data");
    let mut s = Store::open(&dir, Options::default()).unwrap();
    for i in 0..40u32 {
        s.put(&format!("k.{i}"), &[7u8; 64 << 10], Condition::None)
            .unwrap();
    }
    s.commit().unwrap();
    let _filler = disk.fill_leaving(1 << 20);
    let err = s.compact_if_room().expect_err("no room");
    assert!(matches!(err, StoreError::NoRoomToCompact { .. }), "{err}");
    assert!(err.to_string().contains("free"), "{err}");
    assert!(s.poisoned().is_none());
    assert_eq!(s.get("k.3").unwrap().unwrap().value.len(), 64 << 10);
}

/// A failed automatic compaction goes on hold until dead bytes have grown
/// by another threshold; it is not retried at every commit.
#[test]
fn a_failed_compaction_is_not_retried_at_every_commit() {
    faults::clear();
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        compaction_min_dead_bytes: 4096,
        ..Options::default()
    };
    let mut s = Store::open(dir.path(), opts).unwrap();
    // Only compaction renames files here (no segment fills up).
    faults::inject(FileOp::Rename, errno::EIO, 0, None);
    let mut first_hold = None;
    for i in 0..400u32 {
        s.put("k", &[i as u8; 100], Condition::None).unwrap();
        s.commit().unwrap();
        if first_hold.is_none() && s.stats().compaction_hold.is_some() {
            first_hold = Some(faults::count(FileOp::Rename));
        }
    }
    let hold = s.stats().compaction_hold.expect("on hold");
    assert_eq!(hold.code(), 2, "{hold}");
    assert!(hold.to_string().contains("failed"), "{hold}");
    assert!(s.poisoned().is_none());
    // 400 writes of ~130 bytes are about 12 thresholds of 4096 dead bytes:
    // about one retry per threshold, not one per commit. Each attempt tries
    // two renames: the hint of the segment it seals, then its first output.
    let tries = (faults::count(FileOp::Rename) - first_hold.unwrap()) / 2;
    assert!(tries <= 15, "{tries} renames tried while on hold");
    assert!(tries >= 1, "never retried after dead bytes grew");
    faults::clear();
    for i in 0..200u32 {
        s.put("k", &[i as u8; 100], Condition::None).unwrap();
        s.commit().unwrap();
    }
    assert!(s.stats().compactions > 0);
    assert_eq!(s.stats().compaction_hold, None);
}

/// A view keeps showing its revision while the store writes, deletes and
/// compacts (the compacted segments' files are gone by then).
#[test]
fn a_view_outlives_writes_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_size: 1024,
        ..Options::default()
    };
    let mut s = Store::open(dir.path(), opts).unwrap();
    for i in 0..50u32 {
        s.put(
            &format!("a.{i:02}"),
            format!("old {i}").as_bytes(),
            Condition::None,
        )
        .unwrap();
    }
    s.commit().unwrap();
    let view = s.view();
    let revision = view.revision();
    for i in 0..50u32 {
        s.put(&format!("a.{i:02}"), b"new", Condition::None)
            .unwrap();
    }
    s.delete_prefix("a").unwrap();
    s.commit().unwrap();
    s.compact().unwrap();
    assert_eq!(s.scan_prefix("a").unwrap(), vec![]);

    assert_eq!(view.revision(), revision);
    assert_eq!(view.keys(), 50);
    let got = view.get("a.07").unwrap().unwrap();
    assert_eq!(&got.value[..], b"old 7");
    let mut seen = Vec::new();
    view.walk("a", Some("a.44"), None, |e| {
        if let ViewEntry::Live { key, entry } = e {
            seen.push((key.to_string(), entry.value.to_vec()));
        }
        true
    })
    .unwrap();
    let want: Vec<_> = (45..50u32)
        .map(|i| (format!("a.{i:02}"), format!("old {i}").into_bytes()))
        .collect();
    assert_eq!(seen, want);
    // The new view sees the deletes, as tombstones since `revision`.
    let now = s.view();
    let mut deleted = 0;
    now.walk("a", None, Some(revision), |e| {
        assert!(matches!(e, ViewEntry::Deleted { .. }), "{e:?}");
        deleted += 1;
        true
    })
    .unwrap();
    assert_eq!(deleted, 50);
}
