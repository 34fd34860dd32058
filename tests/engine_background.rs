//! What the engine leaves to its background threads so that writers never
//! wait for it: hint files of sealed segments, writeback of the active
//! segment ahead of its seal, and the tombstone floor a compaction raises.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nkv::engine::{Command, Engine, Outcome};
use nkv::store::{Condition, FsyncPolicy, Options, Store, WRITEBACK_BYTES};

fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// Puts `count` values of `size` bytes through the engine, as a connection
/// would, in batches of 16.
fn put_many(engine: &Engine, count: usize, size: usize) {
    let (to, _answers) = tokio::sync::mpsc::unbounded_channel();
    let value = Bytes::from(vec![7u8; size]);
    let mut out = Vec::new();
    for batch in 0..count.div_ceil(16) {
        let mut commands: Vec<_> = (0..16)
            .map(|i| {
                let n = batch * 16 + i;
                let put = Command::Put {
                    key: format!("k.{}", n % 1000),
                    value: value.clone(),
                    condition: Condition::None,
                    ephemeral: None,
                };
                (n as u64, put)
            })
            .collect();
        engine.submit(1, &mut commands, &to, &mut out);
        assert!(out.drain(..).all(|(_, reply)| reply.is_ok()));
    }
}

fn syncs(engine: &Engine) -> u64 {
    let (to, _answers) = tokio::sync::mpsc::unbounded_channel();
    let mut out = Vec::new();
    engine.submit(1, &mut vec![(0, Command::Stats)], &to, &mut out);
    match out.pop() {
        Some((_, Ok(Outcome::Stats(stats)))) => stats.store.syncs,
        other => panic!("STATS answered {other:?}"),
    }
}

fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sealed_segments_get_their_hints_from_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_size: 256 << 10,
        fsync: FsyncPolicy::Never,
        ..Options::default()
    };
    let engine = Engine::start(Store::open(dir.path(), opts).unwrap()).unwrap();
    put_many(&engine, 2000, 1000);
    let segments = files_ending(dir.path(), ".seg");
    assert!(segments.len() >= 5, "expected several rolls: {segments:?}");
    // Every segment but the active (last) one gets a hint.
    let sealed: Vec<String> = segments[..segments.len() - 1]
        .iter()
        .map(|s| s.replace(".seg", ".hint"))
        .collect();
    until("the hints", || {
        let hints = files_ending(dir.path(), ".hint");
        sealed.iter().all(|h| hints.contains(h))
    });
    engine.close().unwrap();
}

#[test]
fn under_fsync_never_a_filling_segment_is_written_back_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        fsync: FsyncPolicy::Never,
        ..Options::default()
    };
    let engine = Engine::start(Store::open(dir.path(), opts).unwrap()).unwrap();
    put_many(&engine, 100, 1000);
    // Well under the writeback step: nothing is synced.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(syncs(&engine), 0);
    let size = 64 << 10;
    put_many(&engine, (3 * WRITEBACK_BYTES as usize) / size, size);
    // One segment (64 MiB), no seal: only the writeback syncs it.
    assert_eq!(files_ending(dir.path(), ".seg").len(), 1);
    until("a background fdatasync", || syncs(&engine) >= 1);
    engine.close().unwrap();
}
