//! Compaction in stages (start, run without the store, install in chunks)
//! while writes go on: writes made at any stage win over the copies, the
//! index is right after every chunk, a restart sees the same thing, and a
//! crash at any step with writes in between loses nothing.

use std::collections::BTreeMap;
use std::path::Path;

use nkv::store::{faults, Changes, Condition, CrashPoint, Options, Store, StoreError};

type Model = BTreeMap<String, Vec<u8>>;

fn opts() -> Options {
    Options {
        segment_size: 4096,
        tombstone_retention: 50,
        ..Options::default()
    }
}

fn contents(s: &Store) -> Model {
    s.scan_prefix("")
        .unwrap()
        .into_iter()
        .map(|(k, e)| (k, e.value.to_vec()))
        .collect()
}

fn put(s: &mut Store, model: &mut Model, key: &str, value: &str) {
    s.put(key, value.as_bytes(), Condition::None).unwrap();
    model.insert(key.to_owned(), value.as_bytes().to_vec());
}

fn delete(s: &mut Store, model: &mut Model, key: &str) {
    match s.delete(key, Condition::None) {
        Ok(_) => assert!(model.remove(key).is_some()),
        Err(StoreError::NotFound) => assert!(!model.contains_key(key)),
        Err(e) => panic!("{e}"),
    }
}

/// A history with overwrites, deletes and a prefix delete, so there are
/// dead bytes and tombstones on both sides of the retention.
fn history(s: &mut Store, model: &mut Model, keys: u32) {
    for round in 0..3u32 {
        for i in 0..keys {
            put(s, model, &format!("k.{i:04}"), &format!("v{round}.{i}"));
        }
    }
    for i in (0..keys).step_by(7) {
        delete(s, model, &format!("k.{i:04}"));
    }
    for i in 0..10u32 {
        put(s, model, &format!("gone.{i}"), "x");
    }
    s.delete_prefix("gone").unwrap();
    model.retain(|k, _| !k.starts_with("gone."));
    s.commit().unwrap();
}

/// Writes touching keys the job copies, deletes some, adds new ones.
fn meanwhile(s: &mut Store, model: &mut Model, tag: &str, keys: u32) {
    meanwhile_every(s, model, tag, keys, 5);
}

/// [`meanwhile`], overwriting every `step`-th key.
fn meanwhile_every(s: &mut Store, model: &mut Model, tag: &str, keys: u32, step: usize) {
    for i in (0..keys).step_by(step) {
        put(s, model, &format!("k.{i:04}"), &format!("{tag}.{i}"));
    }
    for i in (3..keys).step_by(11) {
        delete(s, model, &format!("k.{i:04}"));
    }
    put(s, model, &format!("new.{tag}"), tag);
    s.commit().unwrap();
}

fn no_temp_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp"))
}

#[test]
fn writes_at_every_stage_win_over_the_copies() {
    faults::clear();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), opts()).unwrap();
    let mut model = Model::new();
    let keys = 20_000;
    history(&mut s, &mut model, keys);
    let before = s.stats();

    let mut job = s.start_compaction().unwrap();
    assert!(matches!(
        s.start_compaction(),
        Err(StoreError::CompactionRunning)
    ));
    meanwhile(&mut s, &mut model, "after-start", keys);
    job.run().unwrap();
    meanwhile(&mut s, &mut model, "after-run", keys);
    let mut chunks = 0;
    let report = loop {
        chunks += 1;
        let done = s.install_compaction(&mut job).unwrap();
        // Between chunks the store reads right and takes writes (fewer
        // than at the other stages: there are many chunks).
        assert_eq!(contents(&s), model, "after chunk {chunks}");
        meanwhile_every(&mut s, &mut model, &format!("chunk{chunks}"), keys, 37);
        if let Some(report) = done {
            break report;
        }
    };
    assert!(chunks > 1, "{keys} keys should take several chunks");
    assert!(!s.is_compacting());
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    assert!(s.stats().dead_bytes < before.dead_bytes);
    assert_eq!(s.stats().keys, model.len() as u64);
    assert_eq!(contents(&s), model);
    let revision = s.revision();
    drop(s);

    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(contents(&s), model, "after reopening");
    assert_eq!(s.revision(), revision);
    assert!(no_temp_files(dir.path()));
}

#[test]
fn a_crash_at_any_step_with_writes_in_between_loses_nothing() {
    faults::clear();
    for point in CrashPoint::ALL {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), opts()).unwrap();
        let mut model = Model::new();
        let keys = 300;
        history(&mut s, &mut model, keys);
        let mut job = s.start_compaction().unwrap();
        meanwhile(&mut s, &mut model, "a", keys);
        faults::crash_at(Some(point));
        let crashed = match job.run() {
            Err(e) => {
                s.abandon_compaction(job, &e).expect("a crash poisons");
                true
            }
            Ok(()) => {
                meanwhile(&mut s, &mut model, "b", keys);
                loop {
                    match s.install_compaction(&mut job) {
                        Ok(Some(_)) => break false,
                        Ok(None) => {}
                        Err(_) => break true,
                    }
                }
            }
        };
        faults::clear();
        assert!(crashed, "{point:?} was not reached");
        drop(s); // the "crash"

        let mut s = Store::open(dir.path(), opts()).unwrap();
        assert_eq!(contents(&s), model, "{point:?}: state after reopen");
        assert!(no_temp_files(dir.path()), "{point:?}");
        // And the store compacts cleanly afterwards.
        meanwhile(&mut s, &mut model, "c", keys);
        s.compact().unwrap();
        assert_eq!(contents(&s), model, "{point:?}: after a clean compaction");
    }
}

#[test]
fn a_failed_run_leaves_the_store_as_it_was() {
    use nkv::store::{errno, FileOp};
    faults::clear();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), opts()).unwrap();
    let mut model = Model::new();
    history(&mut s, &mut model, 500);
    let mut job = s.start_compaction().unwrap();
    faults::inject(FileOp::Rename, errno::ENOSPC, 0, None);
    let err = job.run().expect_err("no rename");
    faults::clear();
    assert!(s.abandon_compaction(job, &err).is_none(), "rolled back");
    assert!(s.poisoned().is_none());
    assert!(!s.is_compacting());
    assert!(no_temp_files(dir.path()));
    meanwhile(&mut s, &mut model, "after", 500);
    assert_eq!(contents(&s), model);
    s.compact().unwrap();
    assert_eq!(contents(&s), model);
}

/// A compaction that drops every tombstone and copies nothing still
/// raises the tombstone floor for good: a resume from before the deletes
/// must get a full snapshot after a restart too, or the deletes are lost.
#[test]
fn the_raised_floor_survives_a_restart_when_nothing_is_copied() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        tombstone_retention: 0,
        ..Options::default()
    };
    let mut s = Store::open(dir.path(), opts.clone()).unwrap();
    s.put("a", b"1", Condition::None).unwrap();
    s.put("b", b"2", Condition::None).unwrap();
    s.delete("a", Condition::None).unwrap();
    let last_delete = s.delete("b", Condition::None).unwrap();
    s.commit().unwrap();
    assert_eq!(s.tombstone_floor(), 0);
    let report = s.compact().unwrap();
    assert_eq!(report.records_copied, 0, "{report:?}");
    assert_eq!(report.tombstones_dropped, 2, "{report:?}");
    assert_eq!(s.tombstone_floor(), last_delete);
    drop(s);
    let s = Store::open(dir.path(), opts).unwrap();
    assert_eq!(s.tombstone_floor(), last_delete, "after reopening");
    assert!(
        matches!(s.changes_since("", 1), Ok(Changes::TooOld { .. })),
        "a resume from before the deletes"
    );
}
