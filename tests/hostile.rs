//! Hostile clients: each case gets its documented answer, another client
//! is served all along, and the server's memory and descriptors stay
//! bounded and come back afterwards.
//!
//! Memory is read from `/proc/PID/status`: `VmHWM` (the peak resident
//! size) must stay within 64 MiB of the size before the attack, and
//! `VmRSS` must come back near it once the attackers are gone.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{raise_own_fd_limit, TestServer, Wire};
use nkv::protocol::{wire, Condition, ErrorCode, Event, Request, Response};

/// Peak growth allowed during an attack.
const PEAK_BUDGET_KIB: u64 = 64 * 1024;
/// How far above the pre-attack size the server may stay afterwards.
const SETTLE_KIB: u64 = 8 * 1024;

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Memory and descriptors of a server before an attack.
struct Baseline {
    rss: u64,
    fds: usize,
}

impl Baseline {
    fn take(server: &TestServer) -> Baseline {
        Baseline {
            rss: server.rss_kib(),
            fds: server.fd_count(),
        }
    }

    /// The peak stayed within budget, and memory and descriptors come
    /// back once the attackers are gone.
    fn check_after(&self, server: &TestServer, case: &str) {
        let peak = status_kib(server.pid(), "VmHWM:");
        assert!(
            peak < self.rss + PEAK_BUDGET_KIB,
            "{case}: peak {peak} KiB, from {} KiB",
            self.rss
        );
        let fds = server.settles(self.fds, || server.fd_count());
        assert!(
            fds <= self.fds,
            "{case}: {fds} descriptors, was {}",
            self.fds
        );
        let rss = server.settles(self.rss + SETTLE_KIB, || server.rss_kib());
        eprintln!(
            "{case}: rss {} KiB before, peak {peak} KiB, {rss} KiB after; {} fds before, {fds} after",
            self.rss, self.fds
        );
        assert!(
            rss <= self.rss + SETTLE_KIB,
            "{case}: {rss} KiB after, was {} KiB",
            self.rss
        );
        still_serving(server);
    }
}

fn still_serving(server: &TestServer) {
    let mut other = server.wire();
    assert_eq!(other.call(Request::Ping), Response::Pong);
    let revision = put(&mut other, "probe.key", b"alive");
    match other.call(Request::Get {
        key: "probe.key".into(),
    }) {
        Response::GetOk { value, revision: r } => {
            assert_eq!((&value[..], r), (&b"alive"[..], revision));
        }
        other => panic!("{other:?}"),
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

fn expect_error(wire: &mut Wire, id: u32, code: ErrorCode) {
    match wire.response() {
        (got, Response::Error(e)) => assert_eq!((got, e.code), (id, code), "{}", e.message),
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

fn hello_frame() -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    let frame = nkv::protocol::ClientFrame {
        id: 1,
        request: Request::Hello {
            version: wire::PROTOCOL_VERSION,
            client_name: "hostile".into(),
            token: None,
        },
    };
    tokio_util::codec::Encoder::encode(&mut nkv::protocol::ClientCodec::new(), frame, &mut out)
        .unwrap();
    out.to_vec()
}

/// Reads one whole frame (blocking).
fn read_frame(stream: &mut UnixStream) -> Vec<u8> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut body).unwrap();
    body
}

/// Writes as much of `bytes` as the socket takes without blocking.
fn write_what_fits(stream: &mut UnixStream, bytes: &[u8]) -> usize {
    stream.set_nonblocking(true).unwrap();
    let mut sent = 0;
    while sent < bytes.len() {
        match stream.write(&bytes[sent..]) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    stream.set_nonblocking(false).unwrap();
    sent
}

/// Before HELLO a frame may be at most 4 KiB: 1,500 connections that each
/// announce a 2 MiB frame are refused on the length field, and cost nothing.
#[test]
fn oversized_frames_before_hello_are_refused_on_the_length() {
    raise_own_fd_limit();
    let server = TestServer::start();
    let base = Baseline::take(&server);
    let mut body = (2u32 << 20).to_be_bytes().to_vec();
    body.extend(std::iter::repeat_n(0x11u8, 64 << 10));
    for _wave in 0..3 {
        let mut wires: Vec<Wire> = (0..500)
            .map(|_| Wire::connect_unix(&server.socket()))
            .collect();
        for wire in &mut wires {
            // The server may close before the body is through.
            let _ = wire.stream.write_all(&body);
        }
        for wire in &mut wires {
            expect_error(wire, 0, ErrorCode::TooLarge);
            assert!(wire.closed());
        }
    }
    // A 4 GiB length prefix too, before and after HELLO.
    let mut early = Wire::connect_unix(&server.socket());
    early.send_raw(&u32::MAX.to_be_bytes());
    expect_error(&mut early, 0, ErrorCode::TooLarge);
    let mut late = server.wire();
    late.send_raw(&u32::MAX.to_be_bytes());
    expect_error(&mut late, 0, ErrorCode::TooLarge);
    base.check_after(&server, "oversized pre-HELLO frames");
}

/// 1,024 pipelined `LIST ""` that are never read: the server produces
/// listings only as fast as the client reads them.
#[test]
fn pipelined_lists_that_are_never_read_cost_bounded_memory() {
    let server = TestServer::start_with(&["--fsync", "never"]);
    let mut writer = server.wire();
    let value = vec![b'v'; 1000];
    for i in 0..100u32 {
        put(&mut writer, &format!("data.{i:03}"), &value);
    }
    let base = Baseline::take(&server);
    let mut lister = Wire::connect_unix(&server.socket());
    lister.hello();
    let mut pipeline = Vec::new();
    for id in 1..=1024u32 {
        let mut out = bytes::BytesMut::new();
        let frame = nkv::protocol::ClientFrame {
            id,
            request: Request::List { prefix: "".into() },
        };
        tokio_util::codec::Encoder::encode(&mut nkv::protocol::ClientCodec::new(), frame, &mut out)
            .unwrap();
        pipeline.extend_from_slice(&out);
    }
    lister.send_raw(&pipeline);
    // Give the server every chance to build what it would build.
    std::thread::sleep(Duration::from_millis(1500));
    let peak = status_kib(server.pid(), "VmHWM:");
    // The whole answer would be about 1024 x 100 KiB = 100 MiB.
    assert!(peak < base.rss + PEAK_BUDGET_KIB, "peak {peak} KiB");
    still_serving(&server);
    // The listings are complete and consistent when read.
    for id in 1..=3u32 {
        let mut items = 0;
        loop {
            match lister.response() {
                (got, Response::ListItem { value, .. }) => {
                    assert_eq!(got, id);
                    assert_eq!(value.len(), 1000);
                    items += 1;
                }
                (got, Response::ListOk { count, .. }) => {
                    assert_eq!((got, count, items), (id, 100, 100));
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
    }
    drop(lister);
    base.check_after(&server, "pipelined LIST");
}

/// Clients that pipeline requests and never read the answers: each costs
/// at most its output bound, and the server stops reading them.
#[test]
fn clients_that_never_read_their_answers_cost_bounded_memory() {
    let server = TestServer::start_with(&["--fsync", "never"]);
    let mut writer = server.wire();
    put(&mut writer, "big.value", &vec![b'x'; 4096]);
    let base = Baseline::take(&server);
    let get = {
        let mut out = bytes::BytesMut::new();
        let frame = nkv::protocol::ClientFrame {
            id: 9,
            request: Request::Get {
                key: "big.value".into(),
            },
        };
        tokio_util::codec::Encoder::encode(&mut nkv::protocol::ClientCodec::new(), frame, &mut out)
            .unwrap();
        out.to_vec()
    };
    let burst: Vec<u8> = get
        .iter()
        .copied()
        .cycle()
        .take(get.len() * 20_000)
        .collect();
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut stream = UnixStream::connect(server.socket()).unwrap();
        stream.write_all(&hello_frame()).unwrap();
        // Until the server stops reading and every buffer is full.
        let sent = write_what_fits(&mut stream, &burst);
        assert!(sent < burst.len(), "the server read all {sent} bytes");
        clients.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    still_serving(&server);
    let peak = status_kib(server.pid(), "VmHWM:");
    assert!(peak < base.rss + PEAK_BUDGET_KIB, "peak {peak} KiB");
    drop(clients);
    base.check_after(&server, "non-reading clients");
}

/// 20 connections asking for 1,024 subscriptions of everything each: the
/// server-wide cap refuses what is over it, and writes go on.
#[test]
fn subscriptions_are_capped_server_wide() {
    let server = TestServer::start_with(&["--fsync", "never"]);
    let mut writer = server.wire();
    for i in 0..100u32 {
        put(&mut writer, &format!("k.{i:04}"), &[b'v'; 100]);
    }
    let base = Baseline::take(&server);
    let mut subscribers = Vec::new();
    let mut refused = 0;
    for _ in 0..20 {
        let mut wire = Wire::connect_unix(&server.socket());
        wire.hello();
        let mut pipeline = Vec::new();
        for id in 1..=1024u32 {
            let mut out = bytes::BytesMut::new();
            let frame = nkv::protocol::ClientFrame {
                id,
                request: Request::Subscribe {
                    prefix: "".into(),
                    since: None,
                },
            };
            tokio_util::codec::Encoder::encode(
                &mut nkv::protocol::ClientCodec::new(),
                frame,
                &mut out,
            )
            .unwrap();
            pipeline.extend_from_slice(&out);
        }
        wire.send_raw(&pipeline);
        subscribers.push(wire);
    }
    // Writes go on at full speed while none of them reads.
    for round in 0..20u32 {
        for k in 0..10u32 {
            put(
                &mut writer,
                &format!("k.{k:04}"),
                format!("{round}").as_bytes(),
            );
        }
    }
    let peak = status_kib(server.pid(), "VmHWM:");
    assert!(peak < base.rss + PEAK_BUDGET_KIB, "peak {peak} KiB");
    // The last connection's requests are all over the cap of 8192.
    let last = subscribers.last_mut().unwrap();
    for _ in 0..1024 {
        match last.recv().expect("a frame") {
            nkv::protocol::ServerFrame::Response {
                response: Response::Error(e),
                ..
            } => {
                assert_eq!(e.code, ErrorCode::Limit);
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(refused, 1024);
    drop(subscribers);
    base.check_after(&server, "subscriptions");
}

/// A frame sent one byte at a time after HELLO is given the frame timeout,
/// not forever.
#[test]
fn a_frame_trickling_in_byte_by_byte_times_out() {
    let server = TestServer::start_with(&["--frame-timeout", "2"]);
    let base = Baseline::take(&server);
    let mut slow = UnixStream::connect(server.socket()).unwrap();
    slow.write_all(&hello_frame()).unwrap();
    read_frame(&mut slow);
    let mut frame = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut nkv::protocol::ClientCodec::new(),
        nkv::protocol::ClientFrame {
            id: 5,
            request: Request::Put {
                key: "slow.key".into(),
                value: Bytes::from(vec![b's'; 200]),
                condition: Condition::None,
            },
        },
        &mut frame,
    )
    .unwrap();
    let started = Instant::now();
    let mut at = 0;
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 256];
    let answer = loop {
        if at < frame.len() {
            let _ = slow.write_all(&frame[at..at + 1]);
            at += 1;
        }
        match slow.read(&mut buf) {
            Ok(n) => break buf[..n].to_vec(),
            Err(_) => {
                still_serving(&server);
                assert!(started.elapsed() < Duration::from_secs(10), "no timeout");
            }
        }
    };
    assert!(at < frame.len(), "the whole frame got through");
    // ERROR TIMEOUT with id 0.
    assert_eq!(answer[4], wire::frame_type::ERROR);
    assert_eq!(&answer[5..9], &[0, 0, 0, 0]);
    assert_eq!(
        u16::from_be_bytes([answer[9], answer[10]]),
        ErrorCode::Timeout.as_u16()
    );
    drop(slow);
    base.check_after(&server, "byte by byte");
}

/// 10,000 connections opened and closed (half after HELLO): descriptors
/// and memory come back.
#[test]
fn ten_thousand_connects_and_closes_leak_nothing() {
    let server = TestServer::start();
    let base = Baseline::take(&server);
    let hello = hello_frame();
    for i in 0..10_000u32 {
        let mut stream = UnixStream::connect(server.socket()).unwrap();
        if i % 2 == 0 {
            stream.write_all(&hello).unwrap();
            let mut header = [0u8; 4];
            stream.read_exact(&mut header).unwrap();
        }
    }
    base.check_after(&server, "connect/close");
}

/// The same id for many pipelined requests: answered in order. An id
/// reused for a new subscription right behind its UNSUB: nothing of the
/// old subscription after UNSUB_OK, nothing outside the new prefix.
#[test]
fn reused_ids_are_answered_in_order_and_never_mixed_up() {
    let server = TestServer::start();
    let mut wire = server.wire();
    for i in 0..5u32 {
        put(&mut wire, &format!("same.{i}"), format!("{i}").as_bytes());
    }
    for i in 0..5u32 {
        wire.send_with_id(
            7,
            Request::Get {
                key: format!("same.{i}"),
            },
        );
    }
    for i in 0..5u32 {
        match wire.response() {
            (7, Response::GetOk { value, .. }) => assert_eq!(value, format!("{i}").as_bytes()),
            other => panic!("{other:?}"),
        }
    }
    unsubscribe_then_reuse(&server);
}

fn unsubscribe_then_reuse(server: &TestServer) {
    let socket = server.socket();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut wire = Wire::connect_unix(&socket);
            wire.hello();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                put(&mut wire, &format!("old.{}", i % 7), b"o");
                put(&mut wire, &format!("new.{}", i % 7), b"n");
                i += 1;
            }
        })
    };
    let mut wire = server.wire();
    for cycle in 0..50u32 {
        let sub = 1000 + cycle % 2;
        wire.send_with_id(
            sub,
            Request::Subscribe {
                prefix: "old".into(),
                since: None,
            },
        );
        wire.send_with_id(5000 + cycle, Request::Unsubscribe { subscription: sub });
        // The same id again, without waiting: it must only ever see "new".
        wire.send_with_id(
            sub,
            Request::Subscribe {
                prefix: "new".into(),
                since: None,
            },
        );
        let mut unsubscribed = false;
        let mut resubscribed = false;
        let mut synced_new = false;
        while !synced_new {
            match wire.recv().expect("a frame") {
                nkv::protocol::ServerFrame::Response { id, response } => match response {
                    Response::SubOk if unsubscribed => resubscribed = true,
                    Response::SubOk => {}
                    Response::UnsubOk => {
                        assert_eq!(id, 5000 + cycle);
                        unsubscribed = true;
                    }
                    other => panic!("{other:?}"),
                },
                nkv::protocol::ServerFrame::Event {
                    subscription,
                    event,
                } => {
                    assert_eq!(subscription, sub);
                    let key = match &event {
                        Event::Update { key, .. } | Event::Delete { key, .. } => Some(key),
                        _ => None,
                    };
                    if unsubscribed {
                        assert!(resubscribed, "cycle {cycle}: {event:?} after UNSUB_OK");
                        if let Some(key) = key {
                            assert!(key.starts_with("new."), "cycle {cycle}: {key}");
                        }
                        synced_new |= matches!(event, Event::Synced { .. });
                    } else if let Some(key) = key {
                        assert!(key.starts_with("old."), "cycle {cycle}: {key}");
                    }
                }
            }
        }
        // End it: its events may come until UNSUB_OK, none after (the
        // PONG right behind must come with nothing before it).
        let unsub = wire.send(Request::Unsubscribe { subscription: sub });
        loop {
            match wire.recv().expect("a frame") {
                nkv::protocol::ServerFrame::Response {
                    id,
                    response: Response::UnsubOk,
                } if id == unsub => break,
                nkv::protocol::ServerFrame::Event { subscription, .. } => {
                    assert_eq!(subscription, sub)
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(wire.call(Request::Ping), Response::Pong);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(wire.call(Request::Ping), Response::Pong);
}
