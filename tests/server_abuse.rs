//! Malformed input: each gets its documented answer, and the server keeps
//! serving other clients.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{TestServer, Wire};
use nkv::protocol::{wire, Condition, ErrorCode, Request, Response};

/// A well-formed HELLO frame.
fn hello_bytes() -> Vec<u8> {
    let name = b"raw";
    let mut body = vec![wire::frame_type::HELLO];
    body.extend_from_slice(&1u32.to_be_bytes());
    body.extend_from_slice(&wire::MAGIC);
    body.extend_from_slice(&wire::PROTOCOL_VERSION.to_be_bytes());
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name);
    frame(&body)
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A GET frame whose key bytes are given raw.
fn get_frame(id: u32, key: &[u8]) -> Vec<u8> {
    let mut body = vec![wire::frame_type::GET];
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(&(key.len() as u16).to_be_bytes());
    body.extend_from_slice(key);
    frame(&body)
}

fn expect_error(wire: &mut Wire, id: u32, code: ErrorCode) {
    match wire.response() {
        (got, Response::Error(e)) => {
            assert_eq!(got, id, "error id");
            assert_eq!(e.code, code, "{}", e.message);
            assert!(!e.message.is_empty());
        }
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

/// The server still answers a fresh client.
fn still_serving(server: &TestServer) {
    let mut other = server.wire();
    assert_eq!(other.call(Request::Ping), Response::Pong);
}

#[test]
fn huge_length_prefix_is_refused_before_reading_the_body() {
    let server = TestServer::start();
    let mut wire = server.wire();
    // Announce 4 GiB - 1 and send nothing more: the answer must come at once.
    wire.send_raw(&u32::MAX.to_be_bytes());
    expect_error(&mut wire, 0, ErrorCode::TooLarge);
    assert!(wire.closed());
    still_serving(&server);
}

#[test]
fn truncated_fields_are_a_protocol_error_that_closes() {
    let server = TestServer::start();
    let mut wire = server.wire();
    // GET whose key length says 10 but the frame ends after 2 bytes.
    let mut body = vec![wire::frame_type::GET];
    body.extend_from_slice(&5u32.to_be_bytes());
    body.extend_from_slice(&10u16.to_be_bytes());
    body.extend_from_slice(b"ab");
    wire.send_raw(&frame(&body));
    expect_error(&mut wire, 0, ErrorCode::Protocol);
    assert!(wire.closed());
    still_serving(&server);
}

#[test]
fn a_frame_cut_short_by_disconnect_harms_nobody() {
    let server = TestServer::start();
    let mut wire = server.wire();
    let whole = get_frame(3, b"some.key");
    wire.send_raw(&whole[..whole.len() - 3]);
    drop(wire);
    still_serving(&server);
}

#[test]
fn wrong_magic_is_refused() {
    let server = TestServer::start();
    let mut wire = Wire::connect_unix(&server.socket());
    let mut bad = hello_bytes();
    bad[9] = b'X'; // first magic byte
    wire.send_raw(&bad);
    expect_error(&mut wire, 0, ErrorCode::Protocol);
    assert!(wire.closed());
    still_serving(&server);
}

#[test]
fn request_before_hello_is_refused() {
    let server = TestServer::start();
    let mut wire = Wire::connect_unix(&server.socket());
    wire.send_raw(&get_frame(1, b"k"));
    expect_error(&mut wire, 0, ErrorCode::Protocol);
    assert!(wire.closed());
}

#[test]
fn a_second_hello_is_a_protocol_error_that_closes() {
    let server = TestServer::start();
    let mut wire = server.wire();
    wire.send_raw(&hello_bytes());
    expect_error(&mut wire, 0, ErrorCode::Protocol);
    assert!(wire.closed());
}

#[test]
fn unknown_frame_type_is_refused_and_the_connection_lives() {
    let server = TestServer::start();
    let mut wire = server.wire();
    let mut body = vec![0x5A];
    body.extend_from_slice(&9u32.to_be_bytes());
    body.extend_from_slice(b"whatever");
    wire.send_raw(&frame(&body));
    expect_error(&mut wire, 9, ErrorCode::Unsupported);
    assert_eq!(wire.call(Request::Ping), Response::Pong);
}

#[test]
fn invalid_utf8_and_invalid_keys_are_refused_and_the_connection_lives() {
    let server = TestServer::start();
    let mut wire = server.wire();
    wire.send_raw(&get_frame(4, &[0x66, 0xFF, 0xFE]));
    expect_error(&mut wire, 4, ErrorCode::InvalidKey);
    for (id, key) in [(5, "a..b"), (6, ".a"), (7, "a b"), (8, "net.*"), (9, "")] {
        wire.send_raw(&get_frame(id, key.as_bytes()));
        expect_error(&mut wire, id, ErrorCode::InvalidKey);
    }
    let put = |key: &str, len: usize| Request::Put {
        key: key.into(),
        value: Bytes::from(vec![0u8; len]),
        condition: Condition::None,
    };
    let id = wire.send(put("k", 1_048_577));
    expect_error(&mut wire, id, ErrorCode::TooLarge);
    let id = wire.send(put(&"k".repeat(1025), 1));
    expect_error(&mut wire, id, ErrorCode::InvalidKey);
    assert!(matches!(
        wire.call(put("k", 1_048_576)),
        Response::PutOk { .. }
    ));
    still_serving(&server);
}

#[test]
fn silent_client_is_timed_out_at_handshake() {
    let server = TestServer::start_with(&["--handshake-timeout", "1"]);
    let mut wire = Wire::connect_unix(&server.socket());
    let started = Instant::now();
    expect_error(&mut wire, 0, ErrorCode::Timeout);
    assert!(wire.closed());
    assert!(started.elapsed() < Duration::from_secs(15));
    still_serving(&server);
}

#[test]
fn unsupported_version_is_refused() {
    let server = TestServer::start();
    let mut wire = Wire::connect_unix(&server.socket());
    let mut hello = hello_bytes();
    // version field: after len(4) type(1) id(4) magic(4)
    hello[13] = 0;
    hello[14] = 0;
    wire.send_raw(&hello);
    expect_error(&mut wire, 1, ErrorCode::UnsupportedVersion);
    assert!(wire.closed());
}

#[test]
fn connection_cap_is_enforced_with_a_clear_error() {
    let server = TestServer::start_with(&["--max-connections", "2"]);
    // Connections count from accept: idle ones (no HELLO) fill the cap.
    // (The start-up probe's connection may still count for a moment, so
    // keep connecting until two idle ones are in.)
    let mut idle = Vec::new();
    let mut refused = None;
    while idle.len() < 2 || refused.is_none() {
        let mut stream = std::os::unix::net::UnixStream::connect(server.socket()).unwrap();
        // A refusal is written at accept; an accepted idle connection
        // hears nothing before the handshake timeout (5 s).
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut answer = Vec::new();
        match std::io::Read::read_to_end(&mut stream, &mut answer) {
            Ok(_) => refused = Some(answer),
            Err(_) => idle.push(stream),
        }
        assert!(idle.len() <= 2, "more than 2 connections accepted");
    }
    // The refusal: ERROR LIMIT with id 0, then the connection closed.
    let answer = refused.unwrap();
    assert_eq!(answer[4], wire::frame_type::ERROR);
    assert_eq!(&answer[5..9], &[0, 0, 0, 0]);
    assert_eq!(
        u16::from_be_bytes([answer[9], answer[10]]),
        ErrorCode::Limit.as_u16()
    );
    // A slot frees when a connection goes.
    idle.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = Wire::connect_unix(&server.socket());
        next.send_raw(&hello_bytes());
        match next.response() {
            (_, Response::HelloOk { .. }) => break,
            (0, Response::Error(e)) if e.code == ErrorCode::Limit => {
                assert!(Instant::now() < deadline, "the slot never freed");
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn subscription_cap_is_enforced_and_the_connection_lives() {
    let server = TestServer::start_with(&["--max-subscriptions", "2"]);
    let mut wire = server.wire();
    for _ in 0..2 {
        let id = wire.send(Request::Subscribe {
            prefix: "p".into(),
            since: None,
        });
        assert_eq!(wire.response(), (id, Response::SubOk));
        wire.event(); // SYNCED
    }
    let id = wire.send(Request::Subscribe {
        prefix: "p".into(),
        since: None,
    });
    expect_error(&mut wire, id, ErrorCode::Limit);
    assert_eq!(wire.call(Request::Ping), Response::Pong);
}
