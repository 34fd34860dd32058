//! Property tests of the wire codec and the on-disk scanners: the bounded,
//! stable-toolchain twin of the fuzz targets in `fuzz/` (which run longer,
//! with coverage guidance, under cargo-fuzz).
//!
//! - Both decoders give the same frames and the same first error whether a
//!   byte stream arrives whole or in chunks, and never panic.
//! - Every valid frame survives encode → decode, and a decoded frame
//!   encodes back to the same bytes.
//! - The record walk and the hint parser never panic on any bytes; a
//!   segment written with the store's encoder walks to its end, and one bit
//!   flipped in a record stops the walk exactly at that record.
//!
//! Case counts are kept small so the file runs in a few seconds in a debug
//! build; raise them with `PROPTEST_CASES` for a longer run.

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use nkv::protocol::wire::{DEFAULT_MAX_FRAME, MAX_EPHEMERAL_GRACE_MS};
use nkv::protocol::{
    Check, ClientCodec, ClientFrame, Condition, ErrorCode, ErrorFrame, Event, Inbound, Request,
    Response, ServerCodec, ServerFrame, Txn, TxnCondition, TxnOp,
};
use nkv::store::format::{
    encode_batch_value, encode_record, Kind, OpRef, SegmentHeader, HEADER_LEN, R_KEY,
};
use nkv::store::fuzzing::{
    build_hint, find_valid_record, parse_hint, parse_hint_ops, scan_segment, walk_records,
};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

// ---------------------------------------------------------------------------
// Feeding a decoder.

/// What a decoder made of a stream: its frames, then `Err(first error)` or
/// `Ok(bytes left in the buffer)`.
#[derive(Debug, PartialEq)]
struct Outcome<T> {
    frames: Vec<T>,
    end: Result<Vec<u8>, String>,
}

/// Decodes everything `buf` holds; `Err` on the first error.
fn drain<D: Decoder>(
    codec: &mut D,
    buf: &mut BytesMut,
    frames: &mut Vec<D::Item>,
) -> Result<(), String>
where
    D::Error: Debug,
{
    loop {
        let before = buf.len();
        match codec.decode(buf) {
            Ok(Some(frame)) => {
                assert!(buf.len() < before, "a frame must consume bytes");
                frames.push(frame);
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("{e:?}")),
        }
    }
}

/// Feeds `data` in one piece.
fn feed_whole<D: Decoder>(mut codec: D, data: &[u8]) -> Outcome<D::Item>
where
    D::Error: Debug,
{
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    let end = drain(&mut codec, &mut buf, &mut frames).map(|()| buf.to_vec());
    Outcome { frames, end }
}

/// Feeds `data` in chunks of the cycled `sizes` (0: decode again with
/// nothing new; no sizes: one byte at a time), decoding after each.
fn feed_chunked<D: Decoder>(mut codec: D, data: &[u8], sizes: &[usize]) -> Outcome<D::Item>
where
    D::Error: Debug,
{
    let mut buf = BytesMut::new();
    let (mut frames, mut at, mut step, mut idle) = (Vec::new(), 0, 0, 0);
    loop {
        let mut n = sizes.get(step % sizes.len().max(1)).copied().unwrap_or(1);
        step += 1;
        if n == 0 && idle >= sizes.len() {
            n = 1; // several empty chunks in a row: make progress
        }
        idle = if n == 0 { idle + 1 } else { 0 };
        let n = n.min(data.len() - at);
        buf.extend_from_slice(&data[at..at + n]);
        at += n;
        if let Err(e) = drain(&mut codec, &mut buf, &mut frames) {
            return Outcome {
                frames,
                end: Err(e),
            };
        }
        if at == data.len() {
            return Outcome {
                frames,
                end: Ok(buf.to_vec()),
            };
        }
    }
}

// ---------------------------------------------------------------------------
// Frame strategies: every variant, every field, canonical forms only.

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter)
}

fn blob() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        Just(Condition::None),
        Just(Condition::MustNotExist),
        any::<u64>().prop_map(Condition::RevisionEquals),
    ]
}

fn code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(ErrorCode::ALL.to_vec())
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u16>(), text(), prop::option::of(text())).prop_map(
            |(version, client_name, token)| Request::Hello {
                version,
                client_name,
                token,
            }
        ),
        Just(Request::Ping),
        text().prop_map(|key| Request::Get { key }),
        (text(), blob(), condition()).prop_map(|(key, value, condition)| Request::Put {
            key,
            value,
            condition
        }),
        (text(), condition()).prop_map(|(key, condition)| Request::Delete { key, condition }),
        text().prop_map(|prefix| Request::DeletePrefix { prefix }),
        text().prop_map(|prefix| Request::List { prefix }),
        (text(), any::<Option<u64>>())
            .prop_map(|(prefix, since)| Request::Subscribe { prefix, since }),
        (text(), any::<Option<u64>>())
            .prop_map(|(prefix, since)| Request::SubscribeGrouped { prefix, since }),
        (text(), blob(), condition(), 0..=MAX_EPHEMERAL_GRACE_MS).prop_map(
            |(key, value, condition, grace_ms)| Request::PutEphemeral {
                key,
                value,
                condition,
                grace_ms
            }
        ),
        txn().prop_map(Request::Txn),
        any::<u32>().prop_map(|subscription| Request::Unsubscribe { subscription }),
        Just(Request::Stats),
        Just(Request::Compact),
    ]
}

fn txn() -> impl Strategy<Value = Txn> {
    let check = prop_oneof![
        Just(Check::Absent),
        Just(Check::Present),
        any::<u64>().prop_map(Check::RevisionEquals),
    ];
    let op = prop_oneof![
        (text(), blob()).prop_map(|(key, value)| TxnOp::Put { key, value }),
        text().prop_map(|key| TxnOp::Delete { key }),
        text().prop_map(|prefix| TxnOp::DeletePrefix { prefix }),
    ];
    (
        prop::collection::vec(
            (text(), check).prop_map(|(key, check)| TxnCondition { key, check }),
            0..4,
        ),
        prop::collection::vec(op, 0..4),
    )
        .prop_map(|(conditions, ops)| Txn { conditions, ops })
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    (1..=u32::MAX, request()).prop_map(|(id, request)| ClientFrame { id, request })
}

fn error_frame() -> impl Strategy<Value = ErrorFrame> {
    // Canonical: a current revision exactly for CONDITION_FAILED.
    (code(), text(), any::<u64>(), any::<Option<String>>()).prop_map(|(code, message, rev, key)| {
        ErrorFrame {
            code,
            message,
            current_revision: (code == ErrorCode::ConditionFailed).then_some(rev),
            key: key.filter(|_| code == ErrorCode::ConditionFailed),
        }
    })
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (any::<(u16, u32, u32, u32)>(), text()).prop_map(|((version, f, k, v), server_name)| {
            Response::HelloOk {
                version,
                max_frame: f,
                max_key: k,
                max_value: v,
                server_name,
            }
        }),
        Just(Response::Pong),
        (any::<u64>(), blob()).prop_map(|(revision, value)| Response::GetOk { revision, value }),
        any::<u64>().prop_map(|revision| Response::PutOk { revision }),
        any::<(u64, u32)>().prop_map(|(revision, deleted)| Response::DelOk { revision, deleted }),
        any::<(u64, u32)>().prop_map(|(revision, deleted)| Response::TxnOk { revision, deleted }),
        (any::<u64>(), text(), blob()).prop_map(|(revision, key, value)| Response::ListItem {
            revision,
            key,
            value
        }),
        any::<(u64, u32)>().prop_map(|(revision, count)| Response::ListOk { revision, count }),
        Just(Response::SubOk),
        Just(Response::UnsubOk),
        any::<(u64, u64)>().prop_map(|(bytes_before, bytes_after)| Response::CompactOk {
            bytes_before,
            bytes_after
        }),
        prop::collection::vec((text(), any::<u64>()), 0..5)
            .prop_map(|stats| Response::StatsOk { stats }),
        error_frame().prop_map(Response::Error),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (any::<(u64, u32)>(), text(), blob()).prop_map(|((revision, coalesced), key, value)| {
            Event::Update {
                revision,
                coalesced,
                key,
                value,
            }
        }),
        (any::<(u64, u32)>(), text()).prop_map(|((revision, coalesced), key)| Event::Delete {
            revision,
            coalesced,
            key
        }),
        any::<u64>().prop_map(|revision| Event::Synced { revision }),
        Just(Event::Reset),
        (code(), text()).prop_map(|(code, message)| Event::Closed { code, message }),
        any::<(u32, u64)>().prop_map(|(count, revision)| Event::Group { count, revision }),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        (1..=u32::MAX, response())
            .prop_map(|(id, response)| ServerFrame::Response { id, response }),
        // Only an ERROR may carry id 0.
        error_frame().prop_map(|e| ServerFrame::Response {
            id: 0,
            response: Response::Error(e)
        }),
        (1..=u32::MAX, event()).prop_map(|(subscription, event)| ServerFrame::Event {
            subscription,
            event
        }),
    ]
}

fn encode_client(frames: &[ClientFrame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        ClientCodec::new().encode(f, &mut out).expect("valid frame");
    }
    out.to_vec()
}

fn encode_server(frames: &[ServerFrame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        ServerCodec::new().encode(f, &mut out).expect("valid frame");
    }
    out.to_vec()
}

/// Damage applied to a valid stream, so decoders meet broken frames deep
/// inside well-formed input, not only at byte 0.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Set(usize, u8),
    Cut(usize),
    Append(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::None),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Damage::Set(at, b)),
        any::<usize>().prop_map(Damage::Cut),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(Damage::Append),
    ]
}

fn apply(mut data: Vec<u8>, d: &Damage) -> Vec<u8> {
    match d {
        Damage::None => {}
        Damage::Set(at, b) if !data.is_empty() => {
            let at = at % data.len();
            data[at] = *b;
        }
        Damage::Set(..) => {}
        Damage::Cut(at) => data.truncate(at % (data.len() + 1)),
        Damage::Append(junk) => data.extend_from_slice(junk),
    }
    data
}

/// A byte stream for the decoders: random bytes, or valid frames of
/// either direction, damaged or not.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (prop::collection::vec(client_frame(), 0..6), damage())
            .prop_map(|(f, d)| apply(encode_client(&f), &d)),
        (prop::collection::vec(server_frame(), 0..6), damage())
            .prop_map(|(f, d)| apply(encode_server(&f), &d)),
    ]
}

fn max_frame() -> impl Strategy<Value = u32> {
    prop_oneof![Just(DEFAULT_MAX_FRAME), 0u32..128]
}

// ---------------------------------------------------------------------------
// Segments built with the store's encoder.

/// One record to write: kind, key, value (sub-operations for a batch).
#[derive(Debug, Clone)]
struct Rec {
    revision: u64,
    kind: Kind,
    key: String,
    value: Vec<u8>,
    /// For a batch: (is a put, key, value) of each sub-operation.
    batch: Vec<(bool, String, Vec<u8>)>,
}

fn rec() -> impl Strategy<Value = Rec> {
    let key = || prop::collection::vec(any::<char>(), 0..8).prop_map(String::from_iter);
    let value = || prop::collection::vec(any::<u8>(), 0..24);
    prop_oneof![
        (key(), value()).prop_map(|(k, v)| (Kind::Put, k, v, vec![])),
        key().prop_map(|k| (Kind::Delete, k, vec![], vec![])),
        key().prop_map(|k| (Kind::DeletePrefix, k, vec![], vec![])),
        prop::collection::vec((any::<bool>(), key(), value()), 0..4).prop_map(|b| (
            Kind::Batch,
            String::new(),
            vec![],
            b
        )),
    ]
    .prop_flat_map(|(kind, key, value, batch)| {
        any::<u64>().prop_map(move |revision| Rec {
            revision,
            kind,
            key: key.clone(),
            value: value.clone(),
            batch: batch.clone(),
        })
    })
}

/// A segment: its bytes and the (offset, length) of every record.
fn segment(salt: u64, recs: &[Rec]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let header = SegmentHeader {
        id: 1,
        salt,
        base_revision: 0,
        floor: 0,
    };
    let mut bytes = header.encode().to_vec();
    let mut spans = Vec::new();
    for r in recs {
        let start = bytes.len();
        let value = if r.kind == Kind::Batch {
            let ops: Vec<OpRef<'_>> = r
                .batch
                .iter()
                .map(|(put, key, value)| OpRef {
                    kind: if *put { Kind::Put } else { Kind::Delete },
                    key,
                    value: if *put { value } else { &[] },
                })
                .collect();
            encode_batch_value(&ops)
        } else {
            r.value.clone()
        };
        encode_record(&mut bytes, salt, r.revision, r.kind, &r.key, &value);
        spans.push((start, bytes.len() - start));
    }
    (bytes, spans)
}

/// What a walk of the segment must find for `recs`, as
/// (offset, revision, kind, key, value) per operation.
fn expected_ops(recs: &[Rec], spans: &[(usize, usize)]) -> Vec<(u64, u64, Kind, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (r, &(start, _)) in recs.iter().zip(spans) {
        let at = start as u64;
        if r.kind != Kind::Batch {
            out.push((at, r.revision, r.kind, r.key.clone(), r.value.clone()));
        } else if r.batch.is_empty() {
            out.push((at, r.revision, Kind::Batch, String::new(), vec![]));
        }
        for (put, key, value) in &r.batch {
            let (kind, value) = if *put {
                (Kind::Put, value.clone())
            } else {
                (Kind::Delete, vec![])
            };
            out.push((at, r.revision, kind, key.clone(), value));
        }
    }
    out
}

const MAX_LEN: usize = 1 << 20;

// ---------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) Whole or chunked, both decoders give the same frames and the
    /// same first error (or the same bytes left over), and never panic.
    #[test]
    fn decoders_agree_whole_and_chunked(
        data in stream(),
        sizes in prop::collection::vec(0usize..12, 0..6),
        max in max_frame(),
    ) {
        let server = feed_whole(ServerCodec::with_max_frame_length(max), &data);
        let chunked = feed_chunked(ServerCodec::with_max_frame_length(max), &data, &sizes);
        prop_assert_eq!(server, chunked);
        let client = feed_whole(ClientCodec::with_max_frame_length(max), &data);
        let chunked = feed_chunked(ClientCodec::with_max_frame_length(max), &data, &sizes);
        prop_assert_eq!(client, chunked);
    }

    /// (b) Client frames: encode, decode on the server side, same frames;
    /// the bytes decode to exactly as many frames, with nothing left.
    #[test]
    fn client_frames_round_trip(frames in prop::collection::vec(client_frame(), 1..6)) {
        let bytes = encode_client(&frames);
        let got = feed_whole(ServerCodec::new(), &bytes);
        let want: Vec<Inbound> = frames.iter().cloned().map(Inbound::Request).collect();
        prop_assert_eq!(got, Outcome { frames: want, end: Ok(vec![]) });
    }

    /// (b) Server frames: encode, decode on the client side, same frames;
    /// and each frame's bytes are what the encoder writes for it alone.
    #[test]
    fn server_frames_round_trip(frames in prop::collection::vec(server_frame(), 1..6)) {
        let bytes = encode_server(&frames);
        let got = feed_whole(ClientCodec::new(), &bytes);
        prop_assert_eq!(got, Outcome { frames: frames.clone(), end: Ok(vec![]) });
        let mut at = 0;
        for f in &frames {
            let one = encode_server(std::slice::from_ref(f));
            prop_assert_eq!(&bytes[at..at + one.len()], &one[..]);
            at += one.len();
        }
    }

    /// (c) The scanners on arbitrary bytes: no panic, and what the walk
    /// reports lies within the bytes and decodes again.
    #[test]
    fn scanners_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        salt in any::<u64>(),
        max_len in prop_oneof![Just(MAX_LEN), 0usize..64],
        start in 0usize..320,
        id in any::<u64>(),
        seg_len in any::<u64>(),
    ) {
        let scan = walk_records(&bytes, start, salt, max_len);
        prop_assert!(scan.end >= start);
        prop_assert!(scan.end <= bytes.len().max(start));
        prop_assert_eq!(scan.damage.is_none(), scan.end >= bytes.len());
        for op in &scan.ops {
            prop_assert!(op.offset as usize >= start);
            prop_assert!((op.offset + op.rec_len) as usize <= scan.end);
        }
        let end = scan_segment(&bytes, salt, max_len);
        prop_assert!(end <= bytes.len());
        if let Some(p) = find_valid_record(&bytes, start, salt, max_len) {
            prop_assert!(p >= start && p < bytes.len());
        }
        prop_assert_eq!(parse_hint(&bytes, id, salt, seg_len), None);
    }

    /// (c) A segment written with the store's encoder walks to its very end
    /// and finds every operation written, where it was written; the hint
    /// the store builds from it lists the same; another salt finds nothing.
    #[test]
    fn valid_segment_scans_to_its_end(
        salt in any::<u64>(),
        recs in prop::collection::vec(rec(), 0..10),
    ) {
        let (bytes, spans) = segment(salt, &recs);
        prop_assert_eq!(scan_segment(&bytes, salt, MAX_LEN), bytes.len());
        let scan = walk_records(&bytes, HEADER_LEN, salt, MAX_LEN);
        prop_assert_eq!(scan.damage, None);
        let found: Vec<_> = scan
            .ops
            .iter()
            .map(|o| {
                let v = (o.offset + o.value_offset) as usize;
                let value = bytes[v..v + o.value_len as usize].to_vec();
                (o.offset, o.revision, o.kind, o.key.clone(), value)
            })
            .collect();
        prop_assert_eq!(found, expected_ops(&recs, &spans));
        for o in &scan.ops {
            // Outside a batch, the value follows the key.
            let i = spans.iter().position(|s| s.0 as u64 == o.offset).expect("a record start");
            if recs[i].kind != Kind::Batch {
                prop_assert_eq!(o.value_offset as usize, R_KEY + o.key.len());
            }
        }
        let hint = build_hint(1, salt, &bytes, MAX_LEN);
        let (covered, hinted) = parse_hint_ops(&hint, 1, salt, bytes.len() as u64);
        prop_assert_eq!(covered, Some(bytes.len() as u64));
        prop_assert_eq!(hinted, scan.ops);
        prop_assert_eq!(scan_segment(&bytes, salt ^ 1, MAX_LEN), HEADER_LEN);
    }

    /// (c) One bit flipped in a record stops the walk exactly at that
    /// record (the ones before it are still found), and the search for a
    /// valid record resumes at the next one. A flip in the header (which
    /// the walk does not read) changes nothing; a flip anywhere in a hint
    /// makes it refused.
    #[test]
    fn one_flipped_bit_stops_the_walk_at_its_record(
        salt in any::<u64>(),
        recs in prop::collection::vec(rec(), 1..8),
        pick in any::<prop::sample::Index>(),
        bit in 0u8..8,
        hint_pick in any::<prop::sample::Index>(),
    ) {
        let (mut bytes, spans) = segment(salt, &recs);
        let hint = build_hint(1, salt, &bytes, MAX_LEN);
        let at = pick.index(bytes.len());
        bytes[at] ^= 1 << bit;
        let scan = walk_records(&bytes, HEADER_LEN, salt, MAX_LEN);
        match spans.iter().position(|&(s, l)| (s..s + l).contains(&at)) {
            None => {
                prop_assert!(at < HEADER_LEN);
                prop_assert_eq!(scan.end, bytes.len());
            }
            Some(i) => {
                let start = spans[i].0;
                prop_assert_eq!(scan.end, start);
                prop_assert_eq!(scan.damage.map(|d| d.0), Some(start));
                prop_assert!(scan.ops.iter().all(|o| (o.offset as usize) < start));
                let kept = expected_ops(&recs[..i], &spans[..i]).len();
                prop_assert_eq!(scan.ops.len(), kept);
                let next = spans.get(i + 1).map(|s| s.0);
                prop_assert_eq!(find_valid_record(&bytes, start + 1, salt, MAX_LEN), next);
            }
        }
        let mut hint = hint;
        let h = hint_pick.index(hint.len());
        hint[h] ^= 1 << bit;
        prop_assert_eq!(parse_hint(&hint, 1, salt, bytes.len() as u64), None);
    }
}

// ---------------------------------------------------------------------------
// Bugs the fuzz targets found, kept as regression tests.

/// A hint whose CRC, id and salt are right but whose record lengths sum
/// past `u64::MAX` is refused (it used to panic with "attempt to add with
/// overflow" in debug builds and wrap in release). From fuzz target
/// `hint_scan`.
#[test]
fn hint_with_huge_record_lengths_is_refused() {
    let (id, salt) = (7u64, 9u64);
    let mut hint = b"NKVHINT\n".to_vec();
    hint.extend_from_slice(&id.to_le_bytes());
    hint.extend_from_slice(&salt.to_le_bytes());
    hint.extend_from_slice(&u64::MAX.to_le_bytes()); // covered
    hint.extend_from_slice(&1u64.to_le_bytes()); // count
                                                 // One put starting a new record of length u64::MAX (varint), revision
                                                 // 1, key "": the record cursor (64) plus that length overflows.
    hint.push(0x80 | Kind::Put as u8);
    hint.extend_from_slice(&[0xFF; 9]);
    hint.extend_from_slice(&[0x01, 1, 0]);
    let crc = crc32fast::hash(&hint);
    hint.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(parse_hint(&hint, id, salt, u64::MAX), None);
}

/// A segment whose header is valid but names another id than its file:
/// `Store::open` refuses it and tells the operator to run repair, and
/// repair salvages its records (it used to report "nothing to repair", so
/// the store never opened again). From fuzz target `store_open` (input
/// `0f`).
#[test]
fn repair_fixes_a_segment_id_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let header = SegmentHeader {
        id: 0,
        salt: 5,
        base_revision: 0,
        floor: 0,
    };
    std::fs::write(dir.path().join("0000000000000001.seg"), header.encode()).unwrap();
    let options = nkv::store::Options::default();
    assert!(nkv::store::Store::open(dir.path(), options.clone()).is_err());
    nkv::store::repair(dir.path(), options.clone()).expect("repair");
    nkv::store::Store::open(dir.path(), options).expect("open after repair");
}
