//! Every hex example of `protocol.md`, checked byte for byte against the codec.
//!
//! Each ```` ```hex ```` block opens with a label line
//! `# <c->s|s->c> <FRAME> name=<name> [session=<s> conn=<c>]` (see
//! `protocol.md`, section 12). For every block this test decodes the bytes
//! with the codec of the receiving side, compares the result with the value
//! listed here under the block's name, and encodes that value back to the
//! same bytes. A block without an expected value, an expected value without a
//! block, or a label that does not match the bytes, fails the test.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::hexdoc::{load, Example};

use bytes::{Bytes, BytesMut};
use nkv::protocol::wire::frame_type as ft;
use nkv::protocol::{
    Check, ClientCodec, ClientFrame, Condition, ErrorCode, ErrorFrame, Event, Inbound, Request,
    Response, ServerCodec, ServerFrame, Txn, TxnCondition, TxnOp,
};
use tokio_util::codec::{Decoder, Encoder};

/// Frame type names as `protocol.md` spells them.
const FRAME_NAMES: [(&str, u8); 30] = [
    ("HELLO", ft::HELLO),
    ("PING", ft::PING),
    ("GET", ft::GET),
    ("PUT", ft::PUT),
    ("DEL", ft::DEL),
    ("LIST", ft::LIST),
    ("SUB", ft::SUB),
    ("UNSUB", ft::UNSUB),
    ("STATS", ft::STATS),
    ("COMPACT", ft::COMPACT),
    ("TXN", ft::TXN),
    ("TXN_OK", ft::TXN_OK),
    ("GROUP", ft::GROUP),
    ("HELLO_OK", ft::HELLO_OK),
    ("PONG", ft::PONG),
    ("GET_OK", ft::GET_OK),
    ("PUT_OK", ft::PUT_OK),
    ("DEL_OK", ft::DEL_OK),
    ("LIST_OK", ft::LIST_OK),
    ("SUB_OK", ft::SUB_OK),
    ("UNSUB_OK", ft::UNSUB_OK),
    ("STATS_OK", ft::STATS_OK),
    ("COMPACT_OK", ft::COMPACT_OK),
    ("LIST_ITEM", ft::LIST_ITEM),
    ("UPDATE", ft::UPDATE),
    ("DELETE", ft::DELETE),
    ("SYNCED", ft::SYNCED),
    ("RESET", ft::RESET),
    ("CLOSED", ft::CLOSED),
    ("ERROR", ft::ERROR),
];

#[derive(Debug, Clone)]
enum Expected {
    /// A client → server frame.
    C(ClientFrame),
    /// A server → client frame.
    S(ServerFrame),
}

fn c(id: u32, request: Request) -> Expected {
    Expected::C(ClientFrame { id, request })
}

fn r(id: u32, response: Response) -> Expected {
    Expected::S(ServerFrame::Response { id, response })
}

fn e(subscription: u32, event: Event) -> Expected {
    Expected::S(ServerFrame::Event {
        subscription,
        event,
    })
}

fn hello(name: &str) -> Request {
    Request::Hello {
        version: 1,
        client_name: name.into(),
        token: None,
    }
}

fn hello_ok() -> Response {
    Response::HelloOk {
        version: 1,
        max_frame: 2_097_152,
        max_key: 1024,
        max_value: 1_048_576,
        server_name: "nkv-server 0.1.0".into(),
    }
}

fn put(key: &str, value: &'static str, condition: Condition) -> Request {
    Request::Put {
        key: key.into(),
        value: Bytes::from_static(value.as_bytes()),
        condition,
    }
}

fn update(revision: u64, coalesced: u32, key: &str, value: &'static str) -> Event {
    Event::Update {
        revision,
        coalesced,
        key: key.into(),
        value: Bytes::from_static(value.as_bytes()),
    }
}

fn delete(revision: u64, key: &str) -> Event {
    Event::Delete {
        revision,
        coalesced: 0,
        key: key.into(),
    }
}

fn error(code: ErrorCode, message: &str) -> Response {
    Response::Error(ErrorFrame::new(code, message))
}

fn item(revision: u64, key: &str, value: &'static str) -> Response {
    Response::ListItem {
        revision,
        key: key.into(),
        value: Bytes::from_static(value.as_bytes()),
    }
}

fn sub(prefix: &str, since: Option<u64>) -> Request {
    Request::Subscribe {
        prefix: prefix.into(),
        since,
    }
}

fn get(key: &str) -> Request {
    Request::Get { key: key.into() }
}

const K: &str = "net.eth0.state";
const K1: &str = "net.eth1.state";

fn expected() -> Vec<(&'static str, Expected)> {
    use Condition::{MustNotExist, RevisionEquals};
    let none = Condition::None;
    vec![
        ("hello", c(1, hello("nkv-cli 0.1.0"))),
        ("hello-ok", r(1, hello_ok())),
        (
            "hello-token",
            c(
                1,
                Request::Hello {
                    version: 1,
                    client_name: "backup".into(),
                    token: Some("5f0c3e2a9b7d41e68a2c4b1d9e0f7a36".into()),
                },
            ),
        ),
        ("ping", c(7, Request::Ping)),
        ("compact", c(16, Request::Compact)),
        (
            "compact-ok",
            r(
                16,
                Response::CompactOk {
                    bytes_before: 1 << 20,
                    bytes_after: 8192,
                },
            ),
        ),
        ("pong", r(7, Response::Pong)),
        ("get", c(8, get(K))),
        (
            "get-ok",
            r(
                8,
                Response::GetOk {
                    revision: 42,
                    value: Bytes::from_static(b"up"),
                },
            ),
        ),
        ("put", c(9, put(K, "down", RevisionEquals(42)))),
        ("put-ok", r(9, Response::PutOk { revision: 43 })),
        (
            "put-ephemeral",
            c(
                21,
                Request::PutEphemeral {
                    key: "svc.netd.alive".into(),
                    value: Bytes::from_static(b"1"),
                    condition: MustNotExist,
                    grace_ms: 3000,
                },
            ),
        ),
        (
            "txn",
            c(
                22,
                Request::Txn(Txn {
                    conditions: vec![
                        TxnCondition {
                            key: K.into(),
                            check: Check::RevisionEquals(43),
                        },
                        TxnCondition {
                            key: "net.lock".into(),
                            check: Check::Absent,
                        },
                    ],
                    ops: vec![
                        TxnOp::Put {
                            key: K.into(),
                            value: Bytes::from_static(b"up"),
                        },
                        TxnOp::DeletePrefix {
                            prefix: "net.eth1".into(),
                        },
                    ],
                }),
            ),
        ),
        (
            "txn-ok",
            r(
                22,
                Response::TxnOk {
                    revision: 44,
                    deleted: 2,
                },
            ),
        ),
        (
            "error-txn-condition",
            r(
                22,
                Response::Error(ErrorFrame::txn_condition_failed(
                    1,
                    "net.lock",
                    Check::Absent,
                    40,
                )),
            ),
        ),
        (
            "sub-grouped",
            c(
                23,
                Request::SubscribeGrouped {
                    prefix: "net".into(),
                    since: None,
                },
            ),
        ),
        (
            "group",
            e(
                23,
                Event::Group {
                    count: 3,
                    revision: 44,
                },
            ),
        ),
        (
            "del",
            c(
                10,
                Request::Delete {
                    key: K.into(),
                    condition: none,
                },
            ),
        ),
        (
            "del-prefix",
            c(
                11,
                Request::DeletePrefix {
                    prefix: "net".into(),
                },
            ),
        ),
        (
            "del-ok",
            r(
                11,
                Response::DelOk {
                    revision: 44,
                    deleted: 3,
                },
            ),
        ),
        (
            "list",
            c(
                12,
                Request::List {
                    prefix: "net".into(),
                },
            ),
        ),
        ("list-item", r(12, item(40, "net.eth0.mtu", "1500"))),
        (
            "list-ok",
            r(
                12,
                Response::ListOk {
                    revision: 44,
                    count: 1,
                },
            ),
        ),
        ("sub", c(13, sub("net", Some(40)))),
        ("sub-ok", r(13, Response::SubOk)),
        ("unsub", c(14, Request::Unsubscribe { subscription: 13 })),
        ("unsub-ok", r(14, Response::UnsubOk)),
        ("stats", c(15, Request::Stats)),
        (
            "stats-ok",
            r(
                15,
                Response::StatsOk {
                    stats: vec![("keys".into(), 3), ("revision".into(), 44)],
                },
            ),
        ),
        ("error", r(8, error(ErrorCode::NotFound, "key not found"))),
        (
            "error-condition",
            r(9, Response::Error(ErrorFrame::condition_failed(43))),
        ),
        (
            "error-connection",
            r(
                0,
                error(
                    ErrorCode::Protocol,
                    "frame length 3 is below the minimum of 5",
                ),
            ),
        ),
        ("update", e(13, update(43, 2, K, "down"))),
        ("delete", e(13, delete(44, K))),
        ("synced", e(13, Event::Synced { revision: 44 })),
        ("reset", e(13, Event::Reset)),
        (
            "closed",
            e(
                13,
                Event::Closed {
                    code: ErrorCode::ShuttingDown,
                    message: "server is shutting down".into(),
                },
            ),
        ),
        // Session `basic`.
        ("basic-01", c(1, hello("watcher"))),
        ("basic-02", r(1, hello_ok())),
        ("basic-03", c(2, put(K, "up", none))),
        ("basic-04", r(2, Response::PutOk { revision: 1 })),
        ("basic-05", c(3, sub("net", None))),
        ("basic-06", r(3, Response::SubOk)),
        ("basic-07", e(3, update(1, 0, K, "up"))),
        ("basic-08", e(3, Event::Synced { revision: 1 })),
        ("basic-09", c(1, hello("writer"))),
        ("basic-10", r(1, hello_ok())),
        ("basic-11", c(2, put(K, "down", none))),
        ("basic-12", r(2, Response::PutOk { revision: 2 })),
        ("basic-13", e(3, update(2, 0, K, "down"))),
        ("basic-14", c(4, Request::Unsubscribe { subscription: 3 })),
        ("basic-15", r(4, Response::UnsubOk)),
        // Session `ops`.
        ("ops-01", c(1, hello("ops"))),
        ("ops-02", r(1, hello_ok())),
        ("ops-03", c(2, Request::Ping)),
        ("ops-04", r(2, Response::Pong)),
        ("ops-05", c(3, put(K, "up", none))),
        ("ops-06", r(3, Response::PutOk { revision: 1 })),
        ("ops-07", c(4, put(K1, "down", none))),
        ("ops-08", r(4, Response::PutOk { revision: 2 })),
        ("ops-09", c(5, put(K, "up", MustNotExist))),
        (
            "ops-10",
            r(5, Response::Error(ErrorFrame::condition_failed(1))),
        ),
        ("ops-11", c(6, get(K))),
        (
            "ops-12",
            r(
                6,
                Response::GetOk {
                    revision: 1,
                    value: Bytes::from_static(b"up"),
                },
            ),
        ),
        (
            "ops-13",
            c(
                7,
                Request::List {
                    prefix: "net".into(),
                },
            ),
        ),
        ("ops-14", r(7, item(1, K, "up"))),
        ("ops-15", r(7, item(2, K1, "down"))),
        (
            "ops-16",
            r(
                7,
                Response::ListOk {
                    revision: 2,
                    count: 2,
                },
            ),
        ),
        (
            "ops-17",
            c(
                8,
                Request::Delete {
                    key: K1.into(),
                    condition: RevisionEquals(2),
                },
            ),
        ),
        (
            "ops-18",
            r(
                8,
                Response::DelOk {
                    revision: 3,
                    deleted: 1,
                },
            ),
        ),
        ("ops-19", c(9, get(K1))),
        ("ops-20", r(9, error(ErrorCode::NotFound, "key not found"))),
        (
            "ops-21",
            c(
                10,
                Request::DeletePrefix {
                    prefix: "net".into(),
                },
            ),
        ),
        (
            "ops-22",
            r(
                10,
                Response::DelOk {
                    revision: 4,
                    deleted: 1,
                },
            ),
        ),
        ("ops-23", c(11, sub("net", Some(3)))),
        ("ops-24", r(11, Response::SubOk)),
        ("ops-25", e(11, delete(4, K))),
        ("ops-26", e(11, Event::Synced { revision: 4 })),
        ("ops-27", c(12, sub("", Some(100)))),
        ("ops-28", r(12, Response::SubOk)),
        ("ops-29", e(12, Event::Reset)),
        ("ops-30", e(12, Event::Synced { revision: 4 })),
    ]
}

/// Decodes `ex` with the receiving side's codec and re-encodes the result
/// with the sending side's codec; checks both against `expected`.
fn check(ex: &Example, expected: &Expected) {
    let name = &ex.name;
    let mut input = BytesMut::from(&ex.bytes[..]);
    let mut output = BytesMut::new();
    match expected {
        Expected::C(frame) => {
            assert_eq!(ex.direction, "c->s", "{name}: direction");
            let decoded = ServerCodec::new()
                .decode(&mut input)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                decoded,
                Some(Inbound::Request(frame.clone())),
                "{name}: decoded"
            );
            ClientCodec::new().encode(frame, &mut output).unwrap();
        }
        Expected::S(frame) => {
            assert_eq!(ex.direction, "s->c", "{name}: direction");
            let decoded = ClientCodec::new()
                .decode(&mut input)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(decoded.as_ref(), Some(frame), "{name}: decoded");
            ServerCodec::new().encode(frame, &mut output).unwrap();
        }
    }
    assert!(input.is_empty(), "{name}: bytes left after one frame");
    assert_eq!(&output[..], &ex.bytes[..], "{name}: re-encoded bytes");
}

#[test]
fn every_hex_example_decodes_to_its_value_and_re_encodes_byte_for_byte() {
    let examples = load();
    let expected: BTreeMap<_, _> = expected().into_iter().collect();
    let mut seen = BTreeSet::new();
    for ex in &examples {
        assert!(
            seen.insert(ex.name.as_str()),
            "{}: name used twice",
            ex.name
        );
        let value = expected
            .get(ex.name.as_str())
            .unwrap_or_else(|| panic!("protocol.md example {} has no expected value", ex.name));
        let ty = FRAME_NAMES
            .iter()
            .find(|(n, _)| *n == ex.frame)
            .unwrap_or_else(|| panic!("{}: unknown frame name {}", ex.name, ex.frame))
            .1;
        assert_eq!(
            ex.bytes.get(4),
            Some(&ty),
            "{}: label says {}",
            ex.name,
            ex.frame
        );
        check(ex, value);
    }
    let missing: Vec<_> = expected.keys().filter(|n| !seen.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "expected examples missing from protocol.md: {missing:?}"
    );
}

#[test]
fn every_frame_type_has_an_example() {
    let examples = load();
    for (name, _) in FRAME_NAMES {
        assert!(
            examples.iter().any(|ex| ex.frame == name),
            "protocol.md has no hex example of {name}"
        );
    }
}

#[test]
fn sessions_are_replayable_scripts() {
    // What a live replay relies on: every session block names its
    // connection, each connection opens with HELLO from the client, and a
    // session starts with a client frame.
    let examples = load();
    let mut sessions: BTreeMap<&str, Vec<&Example>> = BTreeMap::new();
    for ex in &examples {
        if let Some(session) = ex.attrs.get("session") {
            assert!(
                ex.attrs.contains_key("conn"),
                "{}: session without conn",
                ex.name
            );
            sessions.entry(session).or_default().push(ex);
        } else {
            assert!(ex.attrs.is_empty(), "{}: unknown label attributes", ex.name);
        }
    }
    assert!(
        sessions.contains_key("basic"),
        "the worked session is there"
    );
    for (session, blocks) in sessions {
        assert_eq!(
            blocks[0].direction, "c->s",
            "session {session} starts with a request"
        );
        let mut opened = BTreeSet::new();
        for ex in blocks {
            let conn = ex.attrs["conn"].as_str();
            if opened.insert(conn) {
                assert_eq!(
                    (ex.direction.as_str(), ex.frame.as_str()),
                    ("c->s", "HELLO"),
                    "{}: connection {conn} must open with HELLO",
                    ex.name
                );
            }
        }
    }
}
