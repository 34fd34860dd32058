//! Rules of `protocol.md` that a client written from the spec alone trips
//! over if the server gets them wrong: answers to odd first frames, STATS
//! `bytes`, the tombstone floor and RESET, the shape of a resume, the
//! pre-HELLO limit, IPv6 addresses.

mod common;

use bytes::Bytes;
use common::{TestServer, Wire};
use nkv::protocol::{wire, Condition, ErrorCode, Event, Request, Response};

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn hello_with_name(id: u32, name: &[u8]) -> Vec<u8> {
    let mut body = vec![wire::frame_type::HELLO];
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(&wire::MAGIC);
    body.extend_from_slice(&wire::PROTOCOL_VERSION.to_be_bytes());
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name);
    frame(&body)
}

fn expect_error(wire: &mut Wire, id: u32, code: ErrorCode) {
    match wire.response() {
        (got, Response::Error(e)) => assert_eq!((got, e.code), (id, code), "{}", e.message),
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

fn put(wire: &mut Wire, key: &str, value: &[u8]) -> u64 {
    match wire.call(Request::Put {
        key: key.into(),
        value: Bytes::copy_from_slice(value),
        condition: Condition::None,
    }) {
        Response::PutOk { revision } => revision,
        other => panic!("{other:?}"),
    }
}

fn del(wire: &mut Wire, key: &str) -> u64 {
    match wire.call(Request::Delete {
        key: key.into(),
        condition: Condition::None,
    }) {
        Response::DelOk { revision, .. } => revision,
        other => panic!("{other:?}"),
    }
}

fn stat(wire: &mut Wire, name: &str) -> u64 {
    match wire.call(Request::Stats) {
        Response::StatsOk { stats } => stats
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {name}")),
        other => panic!("{other:?}"),
    }
}

/// Reads a subscription's events up to SYNCED.
fn until_synced(wire: &mut Wire, id: u32) -> (Vec<Event>, u64) {
    let mut events = Vec::new();
    loop {
        let (sub, event) = wire.event();
        assert_eq!(sub, id);
        match event {
            Event::Synced { revision } => return (events, revision),
            other => events.push(other),
        }
    }
}

#[test]
fn a_hello_whose_name_is_not_utf8_gets_invalid_argument_with_its_id() {
    let server = TestServer::start();
    let mut wire = Wire::connect_unix(&server.socket());
    wire.send_raw(&hello_with_name(42, b"bad\xff\xfename"));
    expect_error(&mut wire, 42, ErrorCode::InvalidArgument);
    assert!(wire.closed());
}

#[test]
fn a_hello_over_the_pre_hello_limit_is_too_large_and_a_long_name_under_it_works() {
    let server = TestServer::start();
    // length = 4097: refused on the length alone.
    let mut wire = Wire::connect_unix(&server.socket());
    let long = hello_with_name(1, &vec![b'n'; 4097 - 13]);
    assert_eq!(u32::from_be_bytes(long[..4].try_into().unwrap()), 4097);
    wire.send_raw(&long);
    expect_error(&mut wire, 0, ErrorCode::TooLarge);
    assert!(wire.closed());
    // length = 4096 is fine.
    let mut wire = Wire::connect_unix(&server.socket());
    wire.send_raw(&hello_with_name(1, &vec![b'n'; 4096 - 13]));
    assert!(matches!(wire.response(), (1, Response::HelloOk { .. })));
}

#[test]
fn an_unknown_frame_type_is_unsupported_but_with_id_0_it_is_a_protocol_error() {
    let server = TestServer::start();
    let mut wire = server.wire();
    let mut body = vec![0x7e];
    body.extend_from_slice(&5u32.to_be_bytes());
    wire.send_raw(&frame(&body));
    expect_error(&mut wire, 5, ErrorCode::Unsupported);
    assert_eq!(wire.call(Request::Ping), Response::Pong);
    let mut body = vec![0x7e];
    body.extend_from_slice(&0u32.to_be_bytes());
    wire.send_raw(&frame(&body));
    expect_error(&mut wire, 0, ErrorCode::Protocol);
    assert!(wire.closed());
}

#[test]
fn stats_bytes_counts_keys_and_values_of_live_keys_only() {
    let server = TestServer::start();
    let mut wire = server.wire();
    assert_eq!(stat(&mut wire, "bytes"), 0);
    put(&mut wire, "a", b"b");
    assert_eq!(stat(&mut wire, "bytes"), 2);
    put(&mut wire, "net.eth0", b"up");
    assert_eq!(stat(&mut wire, "bytes"), 2 + 8 + 2);
    put(&mut wire, "a", b"longer");
    assert_eq!(stat(&mut wire, "bytes"), 1 + 6 + 8 + 2);
    del(&mut wire, "a");
    assert_eq!(stat(&mut wire, "bytes"), 8 + 2);
    assert_eq!(stat(&mut wire, "keys"), 1);
}

/// A resume tells each key's state once: a key deleted and written again
/// after `since` is one UPDATE; a key written and then deleted is one
/// DELETE; untouched keys are not sent.
#[test]
fn a_resume_reports_each_changed_key_once_with_its_state_now() {
    let server = TestServer::start();
    let mut wire = server.wire();
    put(&mut wire, "r.stays", b"1");
    put(&mut wire, "r.again", b"first");
    let since = put(&mut wire, "r.gone", b"x");
    del(&mut wire, "r.again");
    let again = put(&mut wire, "r.again", b"second");
    put(&mut wire, "r.gone", b"y");
    let gone = del(&mut wire, "r.gone");
    let id = wire.send(Request::Subscribe {
        prefix: "r".into(),
        since: Some(since),
    });
    assert_eq!(wire.response(), (id, Response::SubOk));
    let (events, synced) = until_synced(&mut wire, id);
    assert_eq!(synced, gone);
    assert_eq!(
        events,
        vec![
            Event::Update {
                revision: again,
                coalesced: 0,
                key: "r.again".into(),
                value: Bytes::from_static(b"second"),
            },
            Event::Delete {
                revision: gone,
                coalesced: 0,
                key: "r.gone".into(),
            },
        ]
    );
}

/// The tombstone floor rises when compaction forgets old deletes; STATS
/// shows it, and a resume from below it gets RESET and a full snapshot.
#[test]
fn the_tombstone_floor_rises_at_compaction_and_a_resume_below_it_is_reset() {
    let server = TestServer::start_with(&["--tombstone-retention", "2"]);
    let mut wire = server.wire();
    put(&mut wire, "t.kept", b"k");
    put(&mut wire, "t.old", b"o");
    let deleted = del(&mut wire, "t.old");
    for i in 0..5u32 {
        put(&mut wire, "t.kept", format!("{i}").as_bytes());
    }
    assert_eq!(stat(&mut wire, "tombstone_floor"), 0);
    match wire.call(Request::Compact) {
        Response::CompactOk { .. } => {}
        other => panic!("{other:?}"),
    }
    let floor = stat(&mut wire, "tombstone_floor");
    assert_eq!(floor, deleted, "the floor is the newest dropped delete");
    // From below the floor: RESET, then the full snapshot.
    let id = wire.send(Request::Subscribe {
        prefix: "t".into(),
        since: Some(floor - 1),
    });
    assert_eq!(wire.response(), (id, Response::SubOk));
    assert_eq!(wire.event(), (id, Event::Reset));
    let (events, _) = until_synced(&mut wire, id);
    assert_eq!(events.len(), 1, "{events:?}");
    // From the floor itself: a normal resume, no RESET.
    let id = wire.send(Request::Subscribe {
        prefix: "t".into(),
        since: Some(floor),
    });
    assert_eq!(wire.response(), (id, Response::SubOk));
    let (events, _) = until_synced(&mut wire, id);
    assert!(events.iter().all(|e| !matches!(e, Event::Reset)));
}

#[test]
fn an_ipv6_address_in_brackets_works_for_server_and_client() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback on this machine");
        return;
    }
    let port = common::free_port();
    let addr = format!("tcp:[::1]:{port}");
    let server = TestServer::start_with(&["--listen", &addr]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nkv"))
        .args(["--addr", &addr, "put", "v6.key", "yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut wire = server.wire();
    match wire.call(Request::Get {
        key: "v6.key".into(),
    }) {
        Response::GetOk { value, .. } => assert_eq!(&value[..], b"yes"),
        other => panic!("{other:?}"),
    }
}
