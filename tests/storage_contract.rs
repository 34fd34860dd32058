//! The storage contract (`src/storage/mod.rs`, `docs/architecture.md`),
//! checked the same way for every backend: the log store, the memory
//! store, and the tiers (log and memory behind one revision, with volatile
//! prefixes). A randomized run of puts, deletes, batches and revision
//! skips against a model; after every step the backend must agree with the
//! model exactly: revision, reads, snapshot walks (with and without
//! `since`), `changes_since` from several revisions, and every snapshot
//! taken earlier must still show its own moment. A new backend is added to
//! `every_backend_matches_the_model` and must pass as it is.

use std::collections::BTreeMap;
use std::sync::Arc;

use nkv::key::covers;
use nkv::storage::{Backend, MemoryStore, Op, Placement, Snapshot, Tiers, Write};
use nkv::store::{Change, Changes, FsyncPolicy, Options, Store, ViewEntry};

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Default, Clone)]
struct Model {
    live: BTreeMap<String, (Vec<u8>, u64)>,
    deleted: BTreeMap<String, u64>,
    revision: u64,
}

impl Model {
    fn put(&mut self, k: &str, v: &[u8], rev: u64) {
        self.live.insert(k.to_string(), (v.to_vec(), rev));
        self.deleted.remove(k);
    }
    fn delete(&mut self, k: &str, rev: u64) {
        self.live.remove(k);
        self.deleted.insert(k.to_string(), rev);
    }
    /// What a walk with `since` should yield: (key, revision, live?).
    fn since(&self, prefix: &str, since: Option<u64>) -> Vec<(String, u64, bool)> {
        let mut out: Vec<_> = self
            .live
            .iter()
            .filter(|(k, (_, r))| covers(prefix, k) && since.is_none_or(|s| *r > s))
            .map(|(k, (_, r))| (k.clone(), *r, true))
            .collect();
        if let Some(s) = since {
            out.extend(
                self.deleted
                    .iter()
                    .filter(|(k, r)| covers(prefix, k) && **r > s)
                    .map(|(k, r)| (k.clone(), *r, false)),
            );
        }
        out.sort();
        out
    }
}

const KEYS: [&str; 9] = ["a", "a.b", "a.b.c", "a.c", "ab", "b", "b.x", "c", "a-b"];
const PREFIXES: [&str; 5] = ["a", "a.b", "b", "", "zz"];

fn walk(snapshot: &dyn Snapshot, prefix: &str, since: Option<u64>) -> Vec<(String, u64, bool)> {
    let mut out: Vec<_> = snapshot
        .walk(prefix, None, since)
        .map(|item| match item.unwrap() {
            ViewEntry::Live { key, entry } => (key.to_string(), entry.revision, true),
            ViewEntry::Deleted { key, revision } => (key.to_string(), revision, false),
        })
        .collect();
    let keys: Vec<_> = out.iter().map(|(k, _, _)| k.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "a walk yields each key once, in key order");
    out.sort();
    out
}

fn check(b: &dyn Backend, m: &Model) {
    let name = b.name();
    assert_eq!(b.revision(), m.revision, "{name}: revision");
    for k in KEYS {
        let mut got = None;
        b.read(k, &mut |r, v| got = Some((v.to_vec(), r))).unwrap();
        assert_eq!(got.as_ref(), m.live.get(k), "{name}: read {k}");
        assert_eq!(
            b.current(k),
            m.live.get(k).map(|e| e.1),
            "{name}: current {k}"
        );
    }
    let snapshot = b.snapshot();
    assert_eq!(snapshot.revision(), m.revision);
    assert_eq!(
        snapshot.live_keys(),
        m.live.len() as u64,
        "{name}: live keys"
    );
    for prefix in PREFIXES {
        assert_eq!(
            walk(&*snapshot, prefix, None),
            m.since(prefix, None),
            "{name}: walk {prefix:?}"
        );
        let live: Vec<String> = b.live_keys(prefix).iter().map(|k| k.to_string()).collect();
        let want: Vec<String> = m
            .live
            .keys()
            .filter(|k| covers(prefix, k))
            .cloned()
            .collect();
        assert_eq!(live, want, "{name}: live_keys {prefix:?}");
    }
    for since in [0, m.revision / 2, m.revision.saturating_sub(3), m.revision] {
        for prefix in PREFIXES {
            match b.changes_since(prefix, since).unwrap() {
                Changes::TooOld { floor } => {
                    assert!(
                        since < floor,
                        "{name}: TooOld at {since} with floor {floor}"
                    );
                    assert!(
                        snapshot.floor() > since,
                        "{name}: the snapshot's floor agrees"
                    );
                }
                Changes::Since(changes) => {
                    let mut got: Vec<_> = changes
                        .iter()
                        .map(|c| match c {
                            Change::Put { key, entry } => (key.clone(), entry.revision, true),
                            Change::Delete { key, revision } => (key.clone(), *revision, false),
                        })
                        .collect();
                    let revisions: Vec<u64> = got.iter().map(|c| c.1).collect();
                    assert!(revisions.is_sorted(), "{name}: changes by revision");
                    got.sort();
                    assert_eq!(
                        got,
                        m.since(prefix, Some(since)),
                        "{name}: changes_since({prefix:?}, {since})"
                    );
                    assert_eq!(
                        walk(&*snapshot, prefix, Some(since)),
                        got,
                        "{name}: a walk since {since} tells the same"
                    );
                }
            }
        }
    }
}

/// Runs the model test on `backend`; `reopen` restarts a durable one
/// (None: a restart would lose everything, so none happens).
fn run<B: Backend>(
    name: &str,
    seed: u64,
    mut backend: B,
    mut reopen: Option<&mut dyn FnMut(B) -> B>,
) {
    {
        let mut m = Model::default();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut snapshots: Vec<(Arc<dyn Snapshot>, Model)> = Vec::new();
        for step in 0..400u32 {
            let k = KEYS[rng.below(KEYS.len() as u64) as usize];
            let value = format!("{step}-{}", "v".repeat(rng.below(20) as usize)).into_bytes();
            match rng.below(10) {
                0..=4 => {
                    let rev = m.revision + 1;
                    backend
                        .apply(
                            rev,
                            &[Write::Put {
                                key: k,
                                value: &value,
                            }],
                        )
                        .unwrap();
                    m.revision = rev;
                    m.put(k, &value, rev);
                }
                5 | 6 if m.live.contains_key(k) => {
                    let rev = m.revision + 1;
                    backend.apply(rev, &[Write::Delete { key: k }]).unwrap();
                    m.revision = rev;
                    m.delete(k, rev);
                }
                7 => {
                    // A batch: a put and the delete of another live key.
                    let k2 = KEYS[rng.below(KEYS.len() as u64) as usize];
                    let rev = m.revision + 1;
                    let mut writes = vec![Write::Put {
                        key: k,
                        value: &value,
                    }];
                    if k2 != k && m.live.contains_key(k2) {
                        writes.push(Write::Delete { key: k2 });
                    }
                    backend.apply(rev, &writes).unwrap();
                    m.revision = rev;
                    m.put(k, &value, rev);
                    if writes.len() == 2 {
                        m.delete(k2, rev);
                    }
                }
                8 => {
                    // Another backend took some revisions.
                    m.revision += 1 + rng.below(3);
                    backend.advance(m.revision);
                }
                9 if rng.below(3) == 0 => {
                    if let Some(reopen) = reopen.as_deref_mut() {
                        // Everything applied before a sync survives.
                        backend.sync().unwrap();
                        backend = reopen(backend);
                        // Revisions only `advance`d to (taken elsewhere)
                        // may be forgotten (the tiers reserve them); the
                        // applied ones never.
                        let applied = m.live.values().map(|e| e.1);
                        let applied = applied.chain(m.deleted.values().copied()).max();
                        assert!(
                            backend.revision() >= applied.unwrap_or(0),
                            "{name}: a restart lost an applied revision"
                        );
                        m.revision = backend.revision();
                    }
                }
                _ => snapshots.push((backend.snapshot(), m.clone())),
            }
            check(&backend, &m);
        }
        // Snapshots never change.
        for (snapshot, then) in snapshots {
            assert_eq!(snapshot.revision(), then.revision);
            assert_eq!(
                walk(&*snapshot, "", None),
                then.since("", None),
                "{name}: an old snapshot changed"
            );
        }
    }
}

fn options() -> Options {
    Options {
        segment_size: 400,
        fsync: FsyncPolicy::Never,
        tombstone_retention: 1_000_000,
        ..Options::default()
    }
}

#[test]
fn every_backend_matches_the_model() {
    for seed in [1u64, 7, 42] {
        // The log store, restarted now and then.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let mut reopen = |store: Store| {
            drop(store);
            Store::open(&path, options()).unwrap()
        };
        let store = Store::open(dir.path(), options()).unwrap();
        run("log", seed, store, Some(&mut reopen));

        // The memory store.
        run("memory", seed, MemoryStore::new(&options()), None);

        // The tiers, with some keys volatile: the placement must not show.
        let dir = tempfile::tempdir().unwrap();
        let placement = Placement::volatile(&["a.b".into(), "c".into()], 1024).unwrap();
        let tiers = Tiers::open(Store::open(dir.path(), options()).unwrap(), placement).unwrap();
        run("tiers", seed, tiers, None);
    }
}

#[test]
fn where_a_key_lives_never_shows() {
    // Writes that move keys between the log and memory (ephemeral puts,
    // then plain ones) read back exactly like writes to one store.
    let dir = tempfile::tempdir().unwrap();
    let placement = Placement::volatile(&["b".into()], 1024).unwrap();
    let mut tiers = Tiers::open(Store::open(dir.path(), options()).unwrap(), placement).unwrap();
    let mut m = Model::default();
    let mut rng = Rng(0x5eed);
    for step in 0..500u32 {
        let k = KEYS[rng.below(KEYS.len() as u64) as usize];
        let value = format!("{step}").into_bytes();
        let ops = match rng.below(4) {
            0 | 1 => vec![Op::Put {
                key: k,
                value: &value,
                memory: rng.below(2) == 0,
            }],
            2 => vec![Op::Delete { key: k }],
            _ => vec![
                Op::Put {
                    key: k,
                    value: &value,
                    memory: true,
                },
                Op::DeletePrefix {
                    prefix: PREFIXES[rng.below(PREFIXES.len() as u64) as usize],
                },
                Op::Put {
                    key: KEYS[rng.below(KEYS.len() as u64) as usize],
                    value: &value,
                    memory: false,
                },
            ],
        };
        let written = tiers.write(&ops).unwrap();
        // The model applies the ops in order on its own.
        let mut finals: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        for op in &ops {
            match *op {
                Op::Put { key, value, .. } => {
                    finals.insert(key.into(), Some(value.to_vec()));
                }
                Op::Delete { key } => {
                    finals.insert(key.into(), None);
                }
                Op::DeletePrefix { prefix } => {
                    let covered = m
                        .live
                        .keys()
                        .chain(finals.keys())
                        .filter(|k| covers(prefix, k));
                    let covered: Vec<String> = covered.cloned().collect();
                    for key in covered {
                        finals.insert(key, None);
                    }
                }
            }
        }
        let changed: Vec<_> = finals
            .into_iter()
            .filter(|(k, v)| v.is_some() || m.live.contains_key(k))
            .collect();
        if changed.is_empty() {
            assert_eq!(
                written.revision, None,
                "a write that changes nothing takes no revision"
            );
        } else {
            m.revision += 1;
            assert_eq!(written.revision, Some(m.revision));
            for (key, value) in changed {
                match value {
                    Some(v) => m.put(&key, &v, m.revision),
                    None => m.delete(&key, m.revision),
                }
            }
        }
        check(&tiers, &m);
    }
}
