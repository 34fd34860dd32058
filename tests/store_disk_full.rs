//! A full disk, for real: the store on a small tmpfs and on a small ext4
//! loop image (root only; skipped with a printed reason otherwise). Writes
//! fail with `DiskFull` once the space is gone, every acknowledged write
//! stays readable (now and after a reopen), nothing is poisoned, and
//! writes resume by themselves once space is freed.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::disk::SmallDisk;
use nkv::store::{Condition, Options, Store, StoreError};

fn value(i: u32) -> Vec<u8> {
    let mut v = format!("value of key {i}:").into_bytes();
    v.resize(4096, b'a' + (i % 26) as u8);
    v
}

fn check(store: &Store, acked: &BTreeMap<String, Vec<u8>>) {
    for (key, value) in acked {
        let got = store
            .get(key)
            .unwrap()
            .expect("acknowledged key is missing");
        assert_eq!(&got.value[..], &value[..], "{key}");
    }
    let listed = store.scan_prefix("").unwrap();
    assert_eq!(
        listed.len(),
        acked.len(),
        "LIST sees exactly the acked keys"
    );
}

/// Puts 4 KiB values (each committed, as the server does) until the disk
/// refuses 20 of them in a row; returns the next key number. More
/// acknowledged bytes than the disk holds would mean acknowledged records
/// were overwritten to make room.
fn fill(store: &mut Store, from: u32, capacity: u64, acked: &mut BTreeMap<String, Vec<u8>>) -> u32 {
    let mut refused = 0;
    let mut i = from;
    while refused < 20 {
        let key = format!("k.{i}");
        match store.put(&key, &value(i), Condition::None) {
            Ok(_) => {
                store.commit().expect("commit after an accepted put");
                acked.insert(key, value(i));
                refused = 0;
                assert!(
                    acked.len() as u64 * 4096 <= capacity,
                    "{} writes of 4 KiB acknowledged on a disk of {capacity} bytes",
                    acked.len()
                );
            }
            Err(e) => {
                assert!(matches!(e, StoreError::DiskFull), "{e}");
                assert!(store.poisoned().is_none());
                refused += 1;
            }
        }
        i += 1;
    }
    i
}

fn full_disk_scenario(disk: &SmallDisk, segment_size: u64) {
    let dir = disk.path().join(format!("data-{segment_size}"));
    let opts = Options {
        segment_size,
        ..Options::default()
    };
    // Leave a few MiB, so the store fills the disk quickly.
    let filler = disk.fill_leaving(3 << 20);
    let mut store = Store::open(&dir, opts.clone()).unwrap();
    let mut acked = BTreeMap::new();
    let next = fill(&mut store, 0, 3 << 20, &mut acked);
    assert!(acked.len() > 100, "only {} writes fit", acked.len());
    // Reads keep working on a full disk.
    check(&store, &acked);

    // Space comes back: writes resume by themselves, no restart.
    std::fs::remove_file(&filler).unwrap();
    let key = format!("k.{next}");
    store
        .put(&key, &value(next), Condition::None)
        .expect("writes resume once space is freed");
    store.commit().unwrap();
    acked.insert(key, value(next));
    check(&store, &acked);
    drop(store);

    // And everything acknowledged survives a reopen.
    let store = Store::open(&dir, opts).unwrap();
    check(&store, &acked);
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn remove_all(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

#[test]
fn full_tmpfs_refuses_writes_and_loses_nothing() {
    let Some(disk) = SmallDisk::tmpfs(8) else {
        return;
    };
    full_disk_scenario(&disk, 64 << 20);
    remove_all(disk.path());
    // Small segments: the disk fills while rolling to new segments too.
    full_disk_scenario(&disk, 256 << 10);
}

#[test]
fn full_ext4_refuses_writes_and_loses_nothing() {
    let Some(disk) = SmallDisk::ext4(16) else {
        return;
    };
    full_disk_scenario(&disk, 64 << 20);
    remove_all(disk.path());
    full_disk_scenario(&disk, 256 << 10);
}
