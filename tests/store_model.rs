//! A randomized run against a simple model (a map of key → value and
//! revision, plus delete revisions): puts, conditional puts, deletes,
//! prefix deletes, batches, compactions and reopens, small segments. After
//! every step the store must agree with the model exactly, including
//! `changes_since` from several revisions.

use std::collections::BTreeMap;

use nkv::key::covers;
use nkv::store::{BatchOp, Change, Changes, Condition, FsyncPolicy, Options, Store};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
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
}

const KEYS: [&str; 9] = ["a", "a.b", "a.b.c", "a.c", "ab", "b", "b.x", "c", "a-b"];
const PREFIXES: [&str; 5] = ["a", "a.b", "b", "", "zz"];

fn check(s: &Store, m: &Model) {
    assert_eq!(s.revision(), m.revision);
    let got: Vec<(String, Vec<u8>, u64)> = s
        .scan_prefix("")
        .unwrap()
        .into_iter()
        .map(|(k, e)| (k, e.value.to_vec(), e.revision))
        .collect();
    let want: Vec<(String, Vec<u8>, u64)> = m
        .live
        .iter()
        .map(|(k, (v, r))| (k.clone(), v.clone(), *r))
        .collect();
    assert_eq!(got, want);
    for since in [0, m.revision / 2, m.revision.saturating_sub(3), m.revision] {
        for prefix in PREFIXES {
            match s.changes_since(prefix, since).unwrap() {
                Changes::TooOld { floor } => {
                    assert!(since < floor);
                    assert_eq!(floor, s.tombstone_floor());
                }
                Changes::Since(changes) => {
                    let mut want: Vec<(String, u64, bool)> = m
                        .live
                        .iter()
                        .filter(|(k, (_, r))| *r > since && covers(prefix, k))
                        .map(|(k, (_, r))| (k.clone(), *r, true))
                        .chain(
                            m.deleted
                                .iter()
                                .filter(|(k, r)| **r > since && covers(prefix, k))
                                .map(|(k, r)| (k.clone(), *r, false)),
                        )
                        .collect();
                    want.sort_by_key(|w| (w.1, w.0.clone()));
                    let mut got: Vec<(String, u64, bool)> = changes
                        .iter()
                        .map(|c| match c {
                            Change::Put { key, entry } => (key.clone(), entry.revision, true),
                            Change::Delete { key, revision } => (key.clone(), *revision, false),
                        })
                        .collect();
                    got.sort_by_key(|w| (w.1, w.0.clone()));
                    assert_eq!(got, want, "changes_since({prefix:?}, {since})");
                }
            }
        }
    }
}

#[test]
fn random_operations_match_the_model() {
    // (seed, tombstone retention): a huge retention keeps every tombstone; a
    // small one lets compaction drop them and raise the floor.
    for (seed, retention) in [(1u64, 1_000_000), (7, 1_000_000), (42, 5), (99, 20)] {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            segment_size: 400,
            fsync: FsyncPolicy::Never,
            tombstone_retention: retention,
            compaction_min_dead_bytes: 1500,
            ..Options::default()
        };
        let mut s = Store::open(dir.path(), opts.clone()).unwrap();
        let mut m = Model::default();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        for step in 0..600u32 {
            let k = KEYS[rng.below(KEYS.len() as u64) as usize];
            let value = format!("{step}-{}", "v".repeat(rng.below(20) as usize)).into_bytes();
            match rng.below(12) {
                0..=4 => {
                    let rev = s.put(k, &value, Condition::None).unwrap();
                    m.revision += 1;
                    assert_eq!(rev, m.revision);
                    m.put(k, &value, rev);
                }
                5 => {
                    let cur = m.live.get(k).map(|e| e.1);
                    let cond = Condition::RevisionIs(cur.unwrap_or(1));
                    match s.put(k, &value, cond) {
                        Ok(rev) => {
                            assert_eq!(Some(rev - 1), cur.map(|_| m.revision));
                            m.revision += 1;
                            m.put(k, &value, rev);
                        }
                        Err(_) => assert!(cur.is_none()),
                    }
                }
                6 | 7 => match s.delete(k, Condition::None) {
                    Ok(rev) => {
                        m.revision += 1;
                        assert_eq!(rev, m.revision);
                        m.delete(k, rev);
                    }
                    Err(_) => assert!(!m.live.contains_key(k)),
                },
                8 => {
                    let p = PREFIXES[rng.below(PREFIXES.len() as u64) as usize];
                    let d = s.delete_prefix(p).unwrap();
                    let doomed: Vec<String> =
                        m.live.keys().filter(|x| covers(p, x)).cloned().collect();
                    let deleted: Vec<String> = d.keys.iter().map(|k| k.to_string()).collect();
                    assert_eq!(deleted, doomed);
                    if let Some(rev) = d.revision {
                        m.revision += 1;
                        assert_eq!(rev, m.revision);
                        doomed.iter().for_each(|x| m.delete(x, rev));
                    }
                }
                9 => {
                    let k2 = KEYS[rng.below(KEYS.len() as u64) as usize];
                    let ops = [
                        BatchOp::Put {
                            key: k,
                            value: &value,
                        },
                        BatchOp::Delete { key: k2 },
                    ];
                    let rev = s.write_batch(&ops).unwrap();
                    m.revision += 1;
                    m.put(k, &value, rev);
                    m.delete(k2, rev); // later operation wins, also on the same key
                }
                10 => {
                    s.commit().unwrap();
                    if rng.below(4) == 0 {
                        s.compact().unwrap();
                    }
                }
                _ => {
                    s.sync().unwrap();
                    drop(s);
                    s = Store::open(dir.path(), opts.clone()).unwrap();
                }
            }
            check(&s, &m);
        }
        if retention < 100 {
            assert!(
                s.tombstone_floor() > 0,
                "seed {seed}: compaction never dropped a tombstone"
            );
        }
    }
}
