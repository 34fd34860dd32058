//! The `nkv` command line against the fake server: output formats and exit
//! statuses as a script would see them.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use bytes::Bytes;
use nkv::protocol::{ErrorCode, Event, Request, Response};

mod common;

use common::fake::{Fake, Kv};

/// A fake that serves `connections` CLI runs from one in-memory store.
fn kv_server(connections: usize) -> Fake {
    Fake::start(move |l| {
        let mut kv = Kv::default();
        for _ in 0..connections {
            let mut peer = l.accept();
            peer.handshake();
            peer.serve_kv(&mut kv);
        }
    })
}

fn nkv(fake: &Fake, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nkv"))
        .arg("--addr")
        .arg(fake.addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

#[test]
fn put_get_list_del_round_trip() {
    let fake = kv_server(12);
    let out = nkv(&fake, &["put", "net.eth0", "up"], b"");
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), "1\n"));
    // Value from stdin, raw bytes back without an added newline.
    let out = nkv(&fake, &["put", "net.eth1"], b"two\nlines\x1b");
    assert_eq!(text(&out.stdout), "2\n");
    let out = nkv(&fake, &["get", "net.eth1"], b"");
    assert_eq!(out.stdout, b"two\nlines\x1b");

    let out = nkv(&fake, &["put", "--if-absent", "net.eth0", "x"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("nkv: CONDITION_FAILED"));
    let out = nkv(
        &fake,
        &["put", "--if-revision", "1", "net.eth0", "down"],
        b"",
    );
    assert_eq!(text(&out.stdout), "3\n");

    // Values are escaped in listings, so one key is one line.
    let out = nkv(&fake, &["list", "net"], b"");
    assert_eq!(
        text(&out.stdout),
        "net.eth0 = down (rev 3)\nnet.eth1 = two\\nlines\\u{1b} (rev 2)\n"
    );
    let out = nkv(&fake, &["--json", "get", "net.eth0"], b"");
    assert_eq!(
        text(&out.stdout),
        "{\"key\":\"net.eth0\",\"revision\":3,\"value\":\"down\"}\n"
    );

    let out = nkv(&fake, &["get", "missing"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(text(&out.stderr), "nkv: key \"missing\" not found\n");
    let out = nkv(&fake, &["del", "missing"], b"");
    assert_eq!(out.status.code(), Some(1));

    let out = nkv(&fake, &["del", "net.eth1"], b"");
    assert_eq!(text(&out.stdout), "1 deleted (rev 4)\n");
    let out = nkv(&fake, &["--json", "del", "--prefix", "net"], b"");
    assert_eq!(text(&out.stdout), "{\"deleted\":1,\"revision\":5}\n");
    let out = nkv(&fake, &["stats"], b"");
    assert_eq!(text(&out.stdout), "keys      0\nrevision  5\n");
    fake.join();
}

#[test]
fn usage_and_connection_errors_exit_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("unix:{}", dir.path().join("none.sock").display());
    let out = Command::new(env!("CARGO_BIN_EXE_nkv"))
        .args(["--addr", &addr, "get", "k"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("nkv: CONNECTION: "));
    let out = Command::new(env!("CARGO_BIN_EXE_nkv"))
        .args(["--addr", &addr, "del"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn watch_prints_one_line_per_event_until_closed() {
    let fake = Fake::start(|l| {
        let mut peer = l.accept();
        peer.handshake();
        let sub = peer.expect();
        assert_eq!(
            sub.request,
            Request::Subscribe {
                prefix: "net".into(),
                since: Some(4)
            }
        );
        peer.respond(sub.id, Response::SubOk);
        let update = Event::Update {
            revision: 5,
            coalesced: 0,
            key: "net.eth0".into(),
            value: Bytes::from_static(b"up"),
        };
        peer.event(sub.id, update);
        let delete = Event::Delete {
            revision: 6,
            coalesced: 3,
            key: "net.eth1".into(),
        };
        peer.event(sub.id, delete);
        peer.event(sub.id, Event::Synced { revision: 7 });
        let closed = Event::Closed {
            code: ErrorCode::Limit,
            message: "too slow".into(),
        };
        peer.event(sub.id, closed);
        peer.pong_until_closed();
    });
    let out = nkv(&fake, &["watch", "net", "--since", "4"], b"");
    assert_eq!(
        text(&out.stdout),
        "UPDATE net.eth0 = up (rev 5)\nDELETE net.eth1 (rev 6, 3 coalesced)\n\
         SYNCED at rev 7\nCLOSED LIMIT: too slow\n"
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "nkv: subscription closed: LIMIT: too slow\n"
    );
    fake.join();
}
