//! The store's public behaviour: conditions, delete of a prefix, scans on
//! segment boundaries, limits, changes since a revision, the directory lock,
//! and revisions across reopens.

use nkv::key::KeyError;
use nkv::store::{BatchOp, Change, Changes, Condition, Options, Store, StoreError};

fn small() -> Options {
    Options {
        segment_size: 4096,
        ..Options::default()
    }
}

fn value_of(s: &Store, key: &str) -> Option<(Vec<u8>, u64)> {
    s.get(key).unwrap().map(|e| (e.value.to_vec(), e.revision))
}

#[test]
fn put_get_and_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(s.revision(), 0);
    assert_eq!(s.put("net.eth0", b"up", Condition::None).unwrap(), 1);
    assert_eq!(s.put("net.eth0", b"down", Condition::None).unwrap(), 2);
    s.commit().unwrap();
    assert_eq!(value_of(&s, "net.eth0"), Some((b"down".to_vec(), 2)));
    assert_eq!(s.get("net.eth1").unwrap(), None);
    assert_eq!(s.revision(), 2);
}

#[test]
fn conditions_all_three_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), Options::default()).unwrap();
    // MustNotExist
    assert_eq!(s.put("a", b"1", Condition::MustNotExist).unwrap(), 1);
    match s.put("a", b"2", Condition::MustNotExist) {
        Err(StoreError::ConditionFailed { current: Some(1) }) => {}
        other => panic!("{other:?}"),
    }
    // RevisionIs
    match s.put("a", b"2", Condition::RevisionIs(7)) {
        Err(StoreError::ConditionFailed { current: Some(1) }) => {}
        other => panic!("{other:?}"),
    }
    match s.put("b", b"2", Condition::RevisionIs(1)) {
        Err(StoreError::ConditionFailed { current: None }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(s.put("a", b"2", Condition::RevisionIs(1)).unwrap(), 2);
    // Unconditional
    assert_eq!(s.put("a", b"3", Condition::None).unwrap(), 3);
    // A failed condition changed nothing.
    assert_eq!(s.revision(), 3);
    assert_eq!(value_of(&s, "a"), Some((b"3".to_vec(), 3)));
    assert_eq!(s.get("b").unwrap(), None);
    // Conditional delete.
    match s.delete("a", Condition::RevisionIs(2)) {
        Err(StoreError::ConditionFailed { current: Some(3) }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(s.delete("a", Condition::RevisionIs(3)).unwrap(), 4);
    assert!(matches!(
        s.delete("a", Condition::None),
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.revision(), 4);
    // A deleted key counts as absent for MustNotExist.
    assert_eq!(s.put("a", b"again", Condition::MustNotExist).unwrap(), 5);
}

#[test]
fn delete_prefix_is_one_record_on_segment_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), Options::default()).unwrap();
    for k in [
        "net",
        "net.eth0",
        "net.eth0.state",
        "network",
        "net-x",
        "other",
    ] {
        s.put(k, k.as_bytes(), Condition::None).unwrap();
    }
    let d = s.delete_prefix("net").unwrap();
    assert_eq!(d.revision, Some(7));
    assert_eq!(
        d.keys.iter().map(|k| &**k).collect::<Vec<_>>(),
        ["net", "net.eth0", "net.eth0.state"]
    );
    assert_eq!(s.revision(), 7, "one revision for the whole subtree");
    let left: Vec<String> = s
        .scan_prefix("")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(left, ["net-x", "network", "other"]);
    // Nothing matches: nothing written.
    assert_eq!(s.delete_prefix("net").unwrap().revision, None);
    assert_eq!(s.revision(), 7);
    s.commit().unwrap();
    drop(s);
    let mut s = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(s.get("net.eth0").unwrap(), None);
    assert_eq!(value_of(&s, "network"), Some((b"network".to_vec(), 4)));
    // "" deletes everything.
    let all = s.delete_prefix("").unwrap();
    assert_eq!(
        all.keys.iter().map(|k| &**k).collect::<Vec<_>>(),
        ["net-x", "network", "other"]
    );
    assert!(s.scan_prefix("").unwrap().is_empty());
}

#[test]
fn scans_follow_segment_boundaries_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), small()).unwrap();
    for k in ["net.b", "net", "network", "net.a.x", "ne", "net-x", "net.a"] {
        s.put(k, b"v", Condition::None).unwrap();
    }
    let keys = |p: &str| -> Vec<String> {
        s.scan_prefix(p)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    assert_eq!(keys("net"), ["net", "net.a", "net.a.x", "net.b"]);
    assert_eq!(keys("net.a"), ["net.a", "net.a.x"]);
    assert_eq!(keys("network"), ["network"]);
    assert_eq!(keys("").len(), 7);
    assert!(keys("nope").is_empty());
}

#[test]
fn limits_and_invalid_keys() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        max_key_len: 8,
        max_value_len: 16,
        ..Options::default()
    };
    let mut s = Store::open(dir.path(), opts).unwrap();
    assert!(matches!(
        s.put("abcdefghi", b"", Condition::None),
        Err(StoreError::InvalidKey(KeyError::TooLong { len: 9, max: 8 }))
    ));
    assert!(matches!(
        s.put("k", &[0u8; 17], Condition::None),
        Err(StoreError::ValueTooLarge { len: 17, max: 16 })
    ));
    s.put("abcdefgh", &[1u8; 16], Condition::None).unwrap();
    for bad in ["", "a..b", ".a", "a b", "a*"] {
        assert!(
            matches!(
                s.put(bad, b"", Condition::None),
                Err(StoreError::InvalidKey(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        s.scan_prefix("a*"),
        Err(StoreError::InvalidKey(_))
    ));
    assert_eq!(s.revision(), 1);
    let d = Options::default();
    assert_eq!((d.max_key_len, d.max_value_len), (1024, 1 << 20));
    let msg = StoreError::ValueTooLarge { len: 17, max: 16 }.to_string();
    assert!(msg.contains("17") && msg.contains("16"), "{msg}");
}

#[test]
fn changes_since_reports_puts_and_deletes_in_revision_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), Options::default()).unwrap();
    s.put("net.a", b"1", Condition::None).unwrap(); // 1
    s.put("net.b", b"1", Condition::None).unwrap(); // 2
    s.put("other", b"1", Condition::None).unwrap(); // 3
    s.put("net.a", b"2", Condition::None).unwrap(); // 4
    s.delete("net.b", Condition::None).unwrap(); // 5
    match s.changes_since("net", 2).unwrap() {
        Changes::Since(ch) => {
            assert_eq!(ch.len(), 2);
            assert!(
                matches!(&ch[0], Change::Put { key, entry } if key == "net.a" && entry.revision == 4)
            );
            assert_eq!(
                ch[1],
                Change::Delete {
                    key: "net.b".into(),
                    revision: 5
                }
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.changes_since("net", 5).unwrap(), Changes::Since(vec![]));
    // A client from the future (a wiped store) must resync.
    assert_eq!(
        s.changes_since("net", 6).unwrap(),
        Changes::TooOld { floor: 0 }
    );
}

#[test]
fn tombstones_below_retention_raise_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        tombstone_retention: 2,
        ..Options::default()
    };
    let mut s = Store::open(dir.path(), opts.clone()).unwrap();
    s.put("a", b"1", Condition::None).unwrap(); // 1
    s.delete("a", Condition::None).unwrap(); // 2
    s.put("b", b"1", Condition::None).unwrap(); // 3
    s.put("c", b"1", Condition::None).unwrap(); // 4
    s.put("d", b"1", Condition::None).unwrap(); // 5
    s.delete("d", Condition::None).unwrap(); // 6
    let r = s.compact().unwrap();
    assert_eq!(
        (r.tombstones_dropped, r.tombstones_kept, r.records_copied),
        (1, 1, 2)
    );
    assert_eq!(s.tombstone_floor(), 2);
    assert_eq!(
        s.changes_since("", 1).unwrap(),
        Changes::TooOld { floor: 2 }
    );
    assert!(matches!(s.changes_since("", 2).unwrap(), Changes::Since(v) if v.len() == 3));
    drop(s);
    let s = Store::open(dir.path(), opts).unwrap();
    assert_eq!(s.tombstone_floor(), 2);
    assert_eq!(s.revision(), 6);
    assert_eq!(s.stats().tombstones, 1);
}

#[test]
fn write_batch_is_atomic_under_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), Options::default()).unwrap();
    s.put("gone", b"x", Condition::None).unwrap();
    let ops = [
        BatchOp::Put {
            key: "a",
            value: b"1",
        },
        BatchOp::Put {
            key: "b",
            value: b"22",
        },
        BatchOp::Delete { key: "gone" },
    ];
    assert_eq!(s.write_batch(&ops).unwrap(), 2);
    s.commit().unwrap();
    drop(s);
    let s = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(value_of(&s, "a"), Some((b"1".to_vec(), 2)));
    assert_eq!(value_of(&s, "b"), Some((b"22".to_vec(), 2)));
    assert_eq!(s.get("gone").unwrap(), None);
}

#[test]
fn second_opener_fails_at_once_naming_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path(), Options::default()).unwrap();
    let started = std::time::Instant::now();
    let err = Store::open(dir.path(), Options::default()).expect_err("locked");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(matches!(err, StoreError::Locked { .. }));
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    // Repair must not run under a live store either.
    assert!(matches!(
        nkv::store::repair(dir.path(), Options::default()),
        Err(StoreError::Locked { .. })
    ));
    drop(_first);
    Store::open(dir.path(), Options::default()).expect("lock released on drop");
}

#[test]
fn revision_never_goes_backward_across_reopens_and_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let mut last = 0;
    for round in 0..20u64 {
        let mut s = Store::open(dir.path(), small()).unwrap();
        assert!(
            s.revision() >= last,
            "round {round}: {} < {last}",
            s.revision()
        );
        assert_eq!(s.revision(), last);
        let key = format!("k.{}", round % 3);
        s.put(&key, &[round as u8; 100], Condition::None).unwrap();
        if round % 4 == 0 {
            s.delete(&key, Condition::None).unwrap();
        }
        if round % 5 == 0 {
            s.delete_prefix("").unwrap();
            s.compact().unwrap();
        }
        s.commit().unwrap();
        last = s.revision();
    }
    let s = Store::open(dir.path(), small()).unwrap();
    assert_eq!(s.revision(), last);
}

#[test]
fn many_segments_survive_reopen_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), small()).unwrap();
    for i in 0..300u32 {
        s.put(
            &format!("k.{}", i % 50),
            &i.to_le_bytes().repeat(10),
            Condition::None,
        )
        .unwrap();
    }
    s.commit().unwrap();
    assert!(s.stats().segments > 3);
    let expect = s.scan_prefix("").unwrap();
    drop(s);
    let mut s = Store::open(dir.path(), small()).unwrap();
    assert_eq!(s.scan_prefix("").unwrap(), expect);
    let r = s.compact().unwrap();
    assert!(r.bytes_after < r.bytes_before);
    assert_eq!(s.scan_prefix("").unwrap(), expect);
    drop(s);
    let s = Store::open(dir.path(), small()).unwrap();
    assert_eq!(s.scan_prefix("").unwrap(), expect);
    assert_eq!(s.revision(), 300);
}

#[test]
fn automatic_compaction_runs_at_commit() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        compaction_min_dead_bytes: 2000,
        compaction_dead_ratio: 0.5,
        ..small()
    };
    let mut s = Store::open(dir.path(), opts).unwrap();
    for i in 0..200u32 {
        s.put("hot", &[i as u8; 50], Condition::None).unwrap();
        s.commit().unwrap();
    }
    let st = s.stats();
    assert!(st.compactions >= 1, "{st:?}");
    assert!(st.total_bytes < 200 * 50);
    assert_eq!(s.get("hot").unwrap().unwrap().revision, 200);
}

#[test]
fn fsync_policies() {
    use nkv::store::FsyncPolicy;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        fsync: FsyncPolicy::Interval(Duration::from_millis(50)),
        ..Options::default()
    };
    let mut s = Store::open(dir.path(), opts).unwrap();
    assert_eq!(s.next_sync_deadline(), None);
    s.put("a", b"1", Condition::None).unwrap();
    s.commit().unwrap();
    assert_eq!(s.stats().syncs, 0, "interval: commit does not sync");
    assert!(s.next_sync_deadline().is_some());
    assert_eq!(s.durable_revision(), 0);
    s.sync().unwrap();
    assert_eq!(s.stats().syncs, 1);
    assert_eq!(s.durable_revision(), 1);
    assert_eq!(s.next_sync_deadline(), None);
    drop(s);
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), Options::default()).unwrap();
    for i in 0..64u32 {
        s.put(&format!("k.{i}"), b"v", Condition::None).unwrap();
    }
    s.commit().unwrap();
    assert_eq!(s.stats().syncs, 1, "always: one fdatasync per batch");
    assert_eq!(s.next_sync_deadline(), None);
}

#[test]
fn store_can_move_to_its_owner_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Store>();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), Options::default()).unwrap();
    s.put("a", b"1", Condition::None).unwrap();
    let s = std::thread::spawn(move || {
        s.commit().unwrap();
        s
    })
    .join()
    .unwrap();
    assert_eq!(s.durable_revision(), 1);
}
