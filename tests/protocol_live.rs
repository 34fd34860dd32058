//! Every worked session of `protocol.md`, replayed byte for byte against a
//! live server: each `c->s` block is sent as is, and each `s->c` block must
//! be what the server sends next on that connection. Texts the server
//! chooses (`server_name`, ERROR messages) may differ, as `protocol.md`
//! says; everything else must match.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use bytes::BytesMut;
use common::hexdoc::{load, Example};
use common::{TestServer, Wire};
use nkv::protocol::{ClientCodec, Response, ServerFrame};
use tokio_util::codec::Decoder;

/// Blanks the parts of a frame the server may choose freely.
fn normalize(frame: ServerFrame) -> ServerFrame {
    match frame {
        ServerFrame::Response {
            id,
            response:
                Response::HelloOk {
                    version,
                    max_frame,
                    max_key,
                    max_value,
                    ..
                },
        } => ServerFrame::Response {
            id,
            response: Response::HelloOk {
                version,
                max_frame,
                max_key,
                max_value,
                server_name: String::new(),
            },
        },
        ServerFrame::Response {
            id,
            response: Response::Error(mut error),
        } => {
            error.message.clear();
            ServerFrame::Response {
                id,
                response: Response::Error(error),
            }
        }
        other => other,
    }
}

fn decode_one(bytes: &[u8]) -> ServerFrame {
    let mut buf = BytesMut::from(bytes);
    let frame = ClientCodec::new()
        .decode(&mut buf)
        .expect("example decodes")
        .expect("example is a whole frame");
    assert!(buf.is_empty(), "one frame per example");
    frame
}

/// Replays one session; returns how many server frames were compared.
fn replay(session: &str, blocks: &[&Example]) -> usize {
    let server = TestServer::start();
    let mut compared = 0;
    let mut conns: BTreeMap<String, Wire> = BTreeMap::new();
    for block in blocks {
        let conn = block.attrs["conn"].clone();
        let wire = conns
            .entry(conn.clone())
            .or_insert_with(|| Wire::connect_unix(&server.socket()));
        if block.direction == "c->s" {
            wire.send_raw(&block.bytes);
        } else {
            let got = wire
                .recv()
                .unwrap_or_else(|| panic!("{session}/{}: connection closed", block.name));
            assert_eq!(
                normalize(got),
                normalize(decode_one(&block.bytes)),
                "session {session}, block {} on conn {conn}",
                block.name
            );
            compared += 1;
        }
    }
    compared
}

#[test]
fn every_worked_session_replays_against_a_live_server() {
    let examples = load();
    let sessions: BTreeSet<&str> = examples
        .iter()
        .filter_map(|e| e.attrs.get("session").map(String::as_str))
        .collect();
    assert!(sessions.len() >= 2, "protocol.md has its worked sessions");
    for session in sessions {
        let blocks: Vec<&Example> = examples
            .iter()
            .filter(|e| e.attrs.get("session").map(String::as_str) == Some(session))
            .collect();
        let compared = replay(session, &blocks);
        assert!(
            compared >= 5,
            "session {session} compared only {compared} frames"
        );
    }
}
