//! Codec tests: round trips at every split point, limits, and the
//! fatal/non-fatal split of bad input.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::wire::{frame_type as ft, DEFAULT_MAX_FRAME};
use super::*;

fn client_frames() -> Vec<ClientFrame> {
    let requests = vec![
        Request::Hello {
            version: 1,
            client_name: "tëst".into(),
            token: None,
        },
        Request::Hello {
            version: 1,
            client_name: "with token".into(),
            token: Some("0123abcd".into()),
        },
        Request::Ping,
        Request::Get {
            key: "net.eth0".into(),
        },
        Request::Put {
            key: "a".into(),
            value: Bytes::from_static(b"value"),
            condition: Condition::None,
        },
        Request::Put {
            key: "a.b".into(),
            value: Bytes::new(),
            condition: Condition::MustNotExist,
        },
        Request::Put {
            key: "a".into(),
            value: Bytes::from_static(&[0, 255]),
            condition: Condition::RevisionEquals(u64::MAX),
        },
        Request::Delete {
            key: "a".into(),
            condition: Condition::RevisionEquals(7),
        },
        Request::DeletePrefix { prefix: "".into() },
        Request::List {
            prefix: "net".into(),
        },
        Request::Subscribe {
            prefix: "".into(),
            since: None,
        },
        Request::Subscribe {
            prefix: "net".into(),
            since: Some(0),
        },
        Request::Unsubscribe { subscription: 3 },
        Request::Stats,
    ];
    requests
        .into_iter()
        .zip(1u32..)
        .map(|(request, id)| ClientFrame { id, request })
        .collect()
}

fn server_frames() -> Vec<ServerFrame> {
    let responses = vec![
        Response::HelloOk {
            version: 1,
            max_frame: 1,
            max_key: 2,
            max_value: 3,
            server_name: "s".into(),
        },
        Response::Pong,
        Response::GetOk {
            revision: 5,
            value: Bytes::from_static(b"v"),
        },
        Response::PutOk { revision: 6 },
        Response::DelOk {
            revision: 7,
            deleted: 2,
        },
        Response::ListItem {
            revision: 1,
            key: "k".into(),
            value: Bytes::new(),
        },
        Response::ListOk {
            revision: 9,
            count: 1,
        },
        Response::SubOk,
        Response::UnsubOk,
        Response::StatsOk {
            stats: vec![("keys".into(), 3), ("bytes".into(), u64::MAX)],
        },
        Response::Error(ErrorFrame::condition_failed(4)),
        Response::Error(ErrorFrame::new(ErrorCode::NotFound, "no such key")),
    ];
    let events = vec![
        Event::Update {
            revision: 1,
            coalesced: 2,
            key: "k".into(),
            value: Bytes::from_static(b"x"),
        },
        Event::Delete {
            revision: 3,
            coalesced: 0,
            key: "k".into(),
        },
        Event::Synced { revision: 3 },
        Event::Reset,
        Event::Closed {
            code: ErrorCode::ShuttingDown,
            message: "bye".into(),
        },
    ];
    let mut frames: Vec<ServerFrame> = responses
        .into_iter()
        .zip(1u32..)
        .map(|(response, id)| ServerFrame::Response { id, response })
        .collect();
    frames.push(ServerFrame::Response {
        id: 0,
        response: Response::Error(ErrorFrame::new(ErrorCode::Protocol, "bad frame")),
    });
    frames.extend(events.into_iter().map(|event| ServerFrame::Event {
        subscription: 42,
        event,
    }));
    frames
}

fn encode_all<T, C: Encoder<T, Error = FrameError>>(codec: &mut C, items: Vec<T>) -> BytesMut {
    let mut buf = BytesMut::new();
    for item in items {
        codec.encode(item, &mut buf).expect("encodes");
    }
    buf
}

/// Feeds `bytes` to `codec` in two pieces split at `at`, decoding after each.
fn decode_split<C: Decoder<Error = FrameError>>(
    codec: &mut C,
    bytes: &[u8],
    at: usize,
) -> Vec<C::Item> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in [&bytes[..at], &bytes[at..]] {
        buf.extend_from_slice(piece);
        while let Some(item) = codec.decode(&mut buf).expect("decodes") {
            out.push(item);
        }
    }
    assert!(buf.is_empty());
    out
}

#[test]
fn client_frames_round_trip_at_every_split_point() {
    let frames = client_frames();
    let bytes = encode_all(&mut ClientCodec::new(), frames.clone());
    let expected: Vec<Inbound> = frames.into_iter().map(Inbound::Request).collect();
    for at in 0..=bytes.len() {
        assert_eq!(
            decode_split(&mut ServerCodec::new(), &bytes, at),
            expected,
            "split at {at}"
        );
    }
}

#[test]
fn server_frames_round_trip_at_every_split_point() {
    let frames = server_frames();
    let bytes = encode_all(&mut ServerCodec::new(), frames.clone());
    for at in 0..=bytes.len() {
        assert_eq!(
            decode_split(&mut ClientCodec::new(), &bytes, at),
            frames,
            "split at {at}"
        );
    }
}

#[test]
fn byte_by_byte_input_yields_nothing_until_the_frame_is_whole() {
    let frame = ClientFrame {
        id: 1,
        request: Request::Get { key: "abc".into() },
    };
    let bytes = encode_all(&mut ClientCodec::new(), vec![frame.clone()]);
    let mut codec = ServerCodec::new();
    let mut buf = BytesMut::new();
    for (i, b) in bytes.iter().enumerate() {
        buf.put_u8(*b);
        let got = codec.decode(&mut buf).unwrap();
        if i + 1 < bytes.len() {
            assert_eq!(got, None, "after {} bytes", i + 1);
        } else {
            assert_eq!(got, Some(Inbound::Request(frame.clone())));
        }
    }
}

#[test]
fn values_share_the_input_buffer() {
    let frame = ClientFrame {
        id: 1,
        request: Request::Put {
            key: "k".into(),
            value: Bytes::from(vec![7u8; 1000]),
            condition: Condition::None,
        },
    };
    let mut buf = encode_all(&mut ClientCodec::new(), vec![frame]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Some(Inbound::Request(ClientFrame {
        request: Request::Put { value, .. },
        ..
    })) = ServerCodec::new().decode(&mut buf).unwrap()
    else {
        panic!("not a PUT");
    };
    assert!(
        range.contains(&(value.as_ptr() as usize)),
        "value was copied"
    );
}

#[test]
fn oversize_length_is_refused_before_allocating() {
    for codec_max in [DEFAULT_MAX_FRAME, 100] {
        let mut buf = BytesMut::with_capacity(16);
        buf.put_slice(&[0xFF, 0xFF, 0xFF, 0xFF, ft::PUT]);
        let capacity = buf.capacity();
        let err = ServerCodec::with_max_frame_length(codec_max)
            .decode(&mut buf)
            .unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    length: 0xFFFF_FFFF,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.code(), ErrorCode::TooLarge);
        assert_eq!(buf.capacity(), capacity, "reserved room for the body");

        let mut buf = BytesMut::from(&[0xFF, 0xFF, 0xFF, 0xFF][..]);
        let err = ClientCodec::with_max_frame_length(codec_max)
            .decode(&mut buf)
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
    }
}

#[test]
fn length_limit_is_inclusive() {
    let mut codec = ServerCodec::with_max_frame_length(100);
    let mut buf = BytesMut::new();
    buf.put_u32(100);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.capacity() >= 104);
    let mut buf = BytesMut::new();
    buf.put_u32(101);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::TooLarge {
            length: 101,
            max: 100
        })
    ));
}

#[test]
fn too_short_length_is_fatal() {
    for length in 0..5u32 {
        let mut buf = BytesMut::new();
        buf.put_u32(length);
        buf.put_slice(&[0; 8]);
        let err = ServerCodec::new().decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, FrameError::TooShort { .. }),
            "{length}: {err}"
        );
        assert_eq!(err.code(), ErrorCode::Protocol);
    }
}

/// Re-frames the payload of one encoded frame with `payload` instead.
fn reframe(encoded: &[u8], payload: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u32(5 + payload.len() as u32);
    buf.put_slice(&encoded[4..9]);
    buf.put_slice(payload);
    buf
}

#[test]
fn truncated_or_overlong_payloads_are_fatal() {
    for frame in client_frames() {
        let bytes = encode_all(&mut ClientCodec::new(), vec![frame.clone()]);
        let payload = &bytes[9..];
        // HELLO's token is an optional trailing field: cut right before it,
        // the frame is a HELLO without one.
        let tokenless = match &frame.request {
            Request::Hello {
                client_name,
                token: Some(_),
                ..
            } => Some(4 + 2 + 2 + client_name.len()),
            _ => None,
        };
        for cut in 0..payload.len() {
            let mut buf = reframe(&bytes, &payload[..cut]);
            let result = ServerCodec::new().decode(&mut buf);
            if Some(cut) == tokenless {
                assert!(
                    matches!(
                        result,
                        Ok(Some(Inbound::Request(ClientFrame {
                            request: Request::Hello { token: None, .. },
                            ..
                        })))
                    ),
                    "{frame:?} cut before its token: {result:?}"
                );
                continue;
            }
            assert!(
                matches!(result, Err(FrameError::Malformed { .. })),
                "{frame:?} cut at {cut}: {result:?}"
            );
        }
        let mut longer = payload.to_vec();
        longer.push(0);
        let result = ServerCodec::new().decode(&mut reframe(&bytes, &longer));
        assert!(
            matches!(result, Err(FrameError::Malformed { .. })),
            "{frame:?} + 1 byte: {result:?}"
        );
    }
    for frame in server_frames() {
        let bytes = encode_all(&mut ServerCodec::new(), vec![frame.clone()]);
        let payload = &bytes[9..];
        for cut in 0..payload.len() {
            let result = ClientCodec::new().decode(&mut reframe(&bytes, &payload[..cut]));
            assert!(result.is_err(), "{frame:?} cut at {cut}: {result:?}");
        }
        let mut longer = payload.to_vec();
        longer.push(0);
        let result = ClientCodec::new().decode(&mut reframe(&bytes, &longer));
        assert!(result.is_err(), "{frame:?} + 1 byte: {result:?}");
    }
}

/// Builds a client frame by hand.
fn raw(frame_type: u8, id: u32, payload: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u32(5 + payload.len() as u32);
    buf.put_u8(frame_type);
    buf.put_u32(id);
    buf.put_slice(payload);
    buf
}

fn decode_one(buf: &mut BytesMut) -> Result<Inbound, FrameError> {
    ServerCodec::new()
        .decode(buf)
        .map(|item| item.expect("a whole frame"))
}

fn assert_invalid(buf: &mut BytesMut, id: u32, code: ErrorCode) {
    match decode_one(buf) {
        Ok(Inbound::Invalid {
            id: got_id,
            code: got,
            ..
        }) => {
            assert_eq!((got_id, got), (id, code), "{buf:?}");
            assert!(buf.is_empty(), "the invalid frame was consumed");
        }
        other => panic!("expected Invalid {code}, got {other:?}"),
    }
}

#[test]
fn unknown_frame_type_is_non_fatal_and_the_stream_goes_on() {
    let mut buf = raw(0x7E, 9, b"whatever");
    buf.extend_from_slice(&raw(ft::PING, 10, b""));
    buf.extend_from_slice(&raw(ft::PUT_OK, 11, &[0; 8])); // a response type is unknown too
    let mut codec = ServerCodec::new();
    let first = codec.decode(&mut buf).unwrap().unwrap();
    assert!(matches!(
        first,
        Inbound::Invalid {
            id: 9,
            frame_type: 0x7E,
            code: ErrorCode::Unsupported,
            ..
        }
    ));
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Inbound::Request(ClientFrame {
            id: 10,
            request: Request::Ping
        }))
    );
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap().id(), 11);
}

fn str16(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

#[test]
fn invalid_utf8_is_non_fatal() {
    let bad = str16(&[b'a', 0xFF]);
    assert_invalid(&mut raw(ft::GET, 1, &bad), 1, ErrorCode::InvalidKey);
    assert_invalid(&mut raw(ft::LIST, 2, &bad), 2, ErrorCode::InvalidKey);
    let mut put = vec![0; 9];
    put.extend_from_slice(&bad);
    put.extend_from_slice(&[0, 0, 0, 0]);
    assert_invalid(&mut raw(ft::PUT, 3, &put), 3, ErrorCode::InvalidKey);
    for flags in [0, 1] {
        let mut del = vec![flags, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        del.extend_from_slice(&bad);
        assert_invalid(&mut raw(ft::DEL, 4, &del), 4, ErrorCode::InvalidKey);
    }
    let mut sub = vec![0; 9];
    sub.extend_from_slice(&bad);
    assert_invalid(&mut raw(ft::SUB, 5, &sub), 5, ErrorCode::InvalidKey);
    let mut hello = b"NKV\0\0\x01".to_vec();
    hello.extend_from_slice(&bad);
    assert_invalid(
        &mut raw(ft::HELLO, 6, &hello),
        6,
        ErrorCode::InvalidArgument,
    );
}

#[test]
fn unknown_conditions_and_flags_are_non_fatal() {
    let key = str16(b"k");
    let with = |head: &[u8], tail: &[u8]| [head, &key, tail].concat();
    let rev = |r: u64| r.to_be_bytes();
    let cases: Vec<(u8, Vec<u8>)> = vec![
        (ft::PUT, with(&[&[3u8][..], &rev(0)].concat(), &[0; 4])),
        (ft::PUT, with(&[&[0u8][..], &rev(5)].concat(), &[0; 4])),
        (ft::PUT, with(&[&[1u8][..], &rev(5)].concat(), &[0; 4])),
        (ft::DEL, with(&[&[0x02, 0][..], &rev(0)].concat(), &[])),
        (ft::DEL, with(&[&[0x80, 0][..], &rev(0)].concat(), &[])),
        (ft::DEL, with(&[&[0x01, 2][..], &rev(3)].concat(), &[])),
        (ft::DEL, with(&[&[0x01, 0][..], &rev(3)].concat(), &[])),
        (ft::DEL, with(&[&[0, 9][..], &rev(0)].concat(), &[])),
        (ft::SUB, with(&[&[0x04][..], &rev(0)].concat(), &[])),
        (ft::SUB, with(&[&[0][..], &rev(4)].concat(), &[])),
        // PUT's trailer: flags 0 (plain PUTs leave it out), an undefined
        // flag, a grace period over the maximum.
        (
            ft::PUT,
            with(
                &[&[0u8][..], &rev(0)].concat(),
                &[0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
        ),
        (
            ft::PUT,
            with(
                &[&[0u8][..], &rev(0)].concat(),
                &[0, 0, 0, 0, 2, 0, 0, 0, 0],
            ),
        ),
        (
            ft::PUT,
            with(
                &[&[0u8][..], &rev(0)].concat(),
                &[0, 0, 0, 0, 1, 0, 0x09, 0x27, 0xC1],
            ),
        ),
    ];
    for (ty, payload) in cases {
        assert_invalid(&mut raw(ty, 77, &payload), 77, ErrorCode::InvalidArgument);
    }
    // TXN: an unknown condition kind, a revision with "absent", an unknown
    // operation kind.
    let one_condition = |kind: u8, revision: u64| {
        [
            &1u16.to_be_bytes()[..],
            &[kind],
            &rev(revision),
            &key,
            &0u16.to_be_bytes(),
        ]
        .concat()
    };
    for payload in [
        one_condition(9, 0),
        one_condition(1, 7),
        [&0u16.to_be_bytes()[..], &1u16.to_be_bytes(), &[7], &key].concat(),
    ] {
        assert_invalid(
            &mut raw(ft::TXN, 78, &payload),
            78,
            ErrorCode::InvalidArgument,
        );
    }
}

#[test]
fn a_txn_over_the_limits_is_refused_whole() {
    let key = str16(b"k");
    let mut payload = (wire::MAX_TXN_CONDITIONS as u16 + 1).to_be_bytes().to_vec();
    for _ in 0..=wire::MAX_TXN_CONDITIONS {
        payload.push(wire::txn_condition::PRESENT);
        payload.extend_from_slice(&0u64.to_be_bytes());
        payload.extend_from_slice(&key);
    }
    payload.extend_from_slice(&0u16.to_be_bytes());
    assert_invalid(&mut raw(ft::TXN, 9, &payload), 9, ErrorCode::Limit);
}

#[test]
fn zero_id_and_bad_magic_are_fatal() {
    let err = decode_one(&mut raw(ft::PING, 0, b"")).unwrap_err();
    assert!(matches!(
        err,
        FrameError::ZeroId {
            frame_type: ft::PING
        }
    ));
    let err = decode_one(&mut raw(0x7E, 0, b"")).unwrap_err();
    assert!(matches!(err, FrameError::ZeroId { .. }));
    let mut hello = b"HTTP\0\x01".to_vec();
    hello.extend_from_slice(&str16(b"x"));
    let err = decode_one(&mut raw(ft::HELLO, 1, &hello)).unwrap_err();
    assert!(matches!(err, FrameError::BadMagic { magic } if &magic == b"HTTP"));
    assert_eq!(err.code(), ErrorCode::Protocol);
}

#[test]
fn client_refuses_what_a_server_must_never_send() {
    let mut codec = ClientCodec::new();
    assert!(matches!(
        codec.decode(&mut raw(ft::PONG, 0, b"")),
        Err(FrameError::ZeroId { .. })
    ));
    assert!(matches!(
        codec.decode(&mut raw(ft::RESET, 0, b"")),
        Err(FrameError::ZeroId { .. })
    ));
    assert!(matches!(
        codec.decode(&mut raw(0xC6, 1, b"")),
        Err(FrameError::UnknownType { frame_type: 0xC6 })
    ));
    assert!(matches!(
        codec.decode(&mut raw(ft::PING, 1, b"")),
        Err(FrameError::UnknownType { .. })
    ));
    let mut error = 6u16.to_be_bytes().to_vec();
    error.extend_from_slice(&str16(b"x"));
    assert!(matches!(
        codec.decode(&mut raw(ft::ERROR, 1, &error)),
        Err(FrameError::UnknownErrorCode { code: 6 })
    ));
    let mut update = vec![0; 12];
    update.extend_from_slice(&str16(&[0xC3]));
    update.extend_from_slice(&[0; 4]);
    assert!(matches!(
        codec.decode(&mut raw(ft::UPDATE, 1, &update)),
        Err(FrameError::Malformed { .. })
    ));
}

#[test]
fn encoders_refuse_oversize_frames_and_zero_ids_without_writing() {
    let mut buf = BytesMut::from(&b"keep"[..]);
    let put = ClientFrame {
        id: 1,
        request: Request::Put {
            key: "k".into(),
            value: Bytes::from(vec![0; 100]),
            condition: Condition::None,
        },
    };
    let err = ClientCodec::with_max_frame_length(100)
        .encode(&put, &mut buf)
        .unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::TooLarge {
                length: 121,
                max: 100
            }
        ),
        "{err}"
    );
    let zero = ClientFrame {
        id: 0,
        request: Request::Ping,
    };
    assert!(matches!(
        ClientCodec::new().encode(zero, &mut buf),
        Err(FrameError::ZeroId { .. })
    ));
    let pong = ServerFrame::Response {
        id: 0,
        response: Response::Pong,
    };
    assert!(matches!(
        ServerCodec::new().encode(pong, &mut buf),
        Err(FrameError::ZeroId { .. })
    ));
    let long_key = ClientFrame {
        id: 1,
        request: Request::Get {
            key: "k".repeat(70_000),
        },
    };
    assert!(matches!(
        ClientCodec::new().encode(long_key, &mut buf),
        Err(FrameError::FieldTooLong { field: "key", .. })
    ));
    assert_eq!(&buf[..], b"keep");
}

#[test]
fn condition_failed_carries_the_current_revision() {
    let frame = ServerFrame::Response {
        id: 3,
        response: Response::Error(ErrorFrame::condition_failed(0)),
    };
    let bytes = encode_all(&mut ServerCodec::new(), vec![frame.clone()]);
    assert_eq!(&bytes[bytes.len() - 8..], &[0; 8]);
    let decoded = ClientCodec::new()
        .decode(&mut bytes.clone())
        .unwrap()
        .unwrap();
    assert_eq!(decoded, frame);
}

/// The offsets of `wire::layout` (the spec's byte tables) match the encoder.
#[test]
fn layout_offsets_match_the_encoder() {
    use super::wire::layout::*;
    let client = |request| {
        encode_all(
            &mut ClientCodec::new(),
            vec![ClientFrame { id: 1, request }],
        )
    };
    let server = |response| {
        encode_all(
            &mut ServerCodec::new(),
            vec![ServerFrame::Response { id: 1, response }],
        )
    };
    let event = |event| {
        encode_all(
            &mut ServerCodec::new(),
            vec![ServerFrame::Event {
                subscription: 1,
                event,
            }],
        )
    };
    let u16_at = |b: &[u8], at: usize| u16::from_be_bytes(b[at..at + 2].try_into().unwrap());
    let u32_at = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap());

    let b = client(Request::Hello {
        version: 0x0102,
        client_name: "n".into(),
        token: None,
    });
    assert_eq!(&b[hello::MAGIC..hello::MAGIC + 4], b"NKV\0");
    assert_eq!(u16_at(&b, hello::VERSION), 0x0102);
    assert_eq!(u16_at(&b, hello::CLIENT_NAME), 1);
    let b = server(Response::HelloOk {
        version: 3,
        max_frame: 4,
        max_key: 5,
        max_value: 6,
        server_name: "sv".into(),
    });
    assert_eq!(u16_at(&b, hello_ok::VERSION), 3);
    assert_eq!(u32_at(&b, hello_ok::MAX_FRAME), 4);
    assert_eq!(u32_at(&b, hello_ok::MAX_KEY), 5);
    assert_eq!(u32_at(&b, hello_ok::MAX_VALUE), 6);
    assert_eq!(u16_at(&b, hello_ok::SERVER_NAME), 2);
    let b = client(Request::Get { key: "abc".into() });
    assert_eq!(u16_at(&b, get::KEY), 3);
    let b = server(Response::GetOk {
        revision: 7,
        value: Bytes::from_static(b"xy"),
    });
    assert_eq!(
        (u64_at(&b, get_ok::REVISION), u32_at(&b, get_ok::VALUE)),
        (7, 2)
    );
    let b = client(Request::Put {
        key: "abcd".into(),
        value: Bytes::new(),
        condition: Condition::RevisionEquals(9),
    });
    assert_eq!(b[put::CONDITION], 2);
    assert_eq!(u64_at(&b, put::EXPECTED_REVISION), 9);
    assert_eq!(u16_at(&b, put::KEY), 4);
    let b = server(Response::PutOk { revision: 8 });
    assert_eq!(u64_at(&b, put_ok::REVISION), 8);
    let b = client(Request::Delete {
        key: "k".into(),
        condition: Condition::RevisionEquals(5),
    });
    assert_eq!((b[del::FLAGS], b[del::CONDITION]), (0, 2));
    assert_eq!(u64_at(&b, del::EXPECTED_REVISION), 5);
    assert_eq!(u16_at(&b, del::KEY), 1);
    let b = server(Response::DelOk {
        revision: 4,
        deleted: 3,
    });
    assert_eq!(
        (u64_at(&b, del_ok::REVISION), u32_at(&b, del_ok::DELETED)),
        (4, 3)
    );
    let b = client(Request::List {
        prefix: "ab".into(),
    });
    assert_eq!(u16_at(&b, list::PREFIX), 2);
    let b = server(Response::ListItem {
        revision: 2,
        key: "k".into(),
        value: Bytes::new(),
    });
    assert_eq!(
        (u64_at(&b, list_item::REVISION), u16_at(&b, list_item::KEY)),
        (2, 1)
    );
    let b = server(Response::ListOk {
        revision: 2,
        count: 6,
    });
    assert_eq!(
        (u64_at(&b, list_ok::REVISION), u32_at(&b, list_ok::COUNT)),
        (2, 6)
    );
    let b = client(Request::Subscribe {
        prefix: "p".into(),
        since: Some(11),
    });
    assert_eq!(
        (
            b[sub::FLAGS],
            u64_at(&b, sub::SINCE),
            u16_at(&b, sub::PREFIX)
        ),
        (1, 11, 1)
    );
    let b = client(Request::Unsubscribe { subscription: 12 });
    assert_eq!(u32_at(&b, unsub::SUBSCRIPTION), 12);
    let b = server(Response::StatsOk {
        stats: vec![("ab".into(), 1)],
    });
    assert_eq!(
        (u16_at(&b, stats_ok::COUNT), u16_at(&b, stats_ok::ENTRIES)),
        (1, 2)
    );
    let b = server(Response::Error(ErrorFrame::new(ErrorCode::Limit, "m")));
    assert_eq!(
        (u16_at(&b, error::CODE), u16_at(&b, error::MESSAGE)),
        (14, 1)
    );
    let b = event(Event::Delete {
        revision: 3,
        coalesced: 4,
        key: "kk".into(),
    });
    assert_eq!(
        (
            u64_at(&b, update::REVISION),
            u32_at(&b, update::COALESCED),
            u16_at(&b, update::KEY)
        ),
        (3, 4, 2)
    );
    let b = event(Event::Synced { revision: 13 });
    assert_eq!(u64_at(&b, synced::REVISION), 13);
    let b = event(Event::Closed {
        code: ErrorCode::Storage,
        message: "m".into(),
    });
    assert_eq!(
        (u16_at(&b, closed::CODE), u16_at(&b, closed::MESSAGE)),
        (15, 1)
    );
}

#[test]
fn the_txn_builder_keeps_the_order_it_is_given() {
    let txn = Txn::new()
        .if_revision("net.x", 42)
        .if_absent("net.lock")
        .if_present("net.y")
        .put("net.lock", "me")
        .delete("net.old")
        .delete_prefix("tmp");
    assert_eq!(
        txn.conditions
            .iter()
            .map(|c| (c.key.as_str(), c.check))
            .collect::<Vec<_>>(),
        [
            ("net.x", Check::RevisionEquals(42)),
            ("net.lock", Check::Absent),
            ("net.y", Check::Present),
        ]
    );
    assert_eq!(
        txn.ops,
        [
            TxnOp::Put {
                key: "net.lock".into(),
                value: Bytes::from_static(b"me"),
            },
            TxnOp::Delete {
                key: "net.old".into()
            },
            TxnOp::DeletePrefix {
                prefix: "tmp".into()
            },
        ]
    );
}
