//! nkv's wire protocol as the bench speaks it: frames encoded by hand
//! (constants from `nkv::protocol::wire`, so the numbers are the spec's),
//! answers parsed and checked by hand.
//!
//! Why not the library's codec in the hot path: it decodes into owned,
//! typed frames (a `String` per key, a `Bytes` per value), which is right
//! for a client library but would make the load generator pay for
//! allocations the Redis side does not, and the point of the generator is
//! to cost much less than the servers. Hand parsing here checks what
//! matters (frame type, request id, value length, ERROR answers) and
//! nothing else.
//!
//! Also here: [`NkvConn`], a blocking connection for control requests
//! (preload checks, COMPACT, the restart probe, the raw-protocol row).

use std::io::{Read, Write};
use std::time::Duration;

use nkv::protocol::wire::{frame_type as ft, MAGIC, PROTOCOL_VERSION};
use nkv::protocol::ErrorCode;

use crate::wire::{OpKind, Stream, Target, Wire};

/// Largest frame the bench accepts from a server (the default `max_frame`
/// plus room): anything larger means the stream is out of step.
const MAX_FRAME: usize = 4 << 20;

/// One frame, borrowed from a receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The frame type byte.
    pub ty: u8,
    /// Request id or subscription id.
    pub id: u32,
    /// Everything after the header.
    pub payload: &'a [u8],
}

/// Splits one frame off the start of `buf`: `Ok(Some((frame, consumed)))`,
/// `Ok(None)` when incomplete, `Err` when the length field is impossible.
pub fn split_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(5..=MAX_FRAME).contains(&len) {
        return Err(format!("server sent a frame of impossible length {len}"));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let frame = Frame {
        ty: buf[4],
        id: u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]),
        payload: &buf[9..4 + len],
    };
    Ok(Some((frame, 4 + len)))
}

/// Writes a frame header for a payload of `payload_len` bytes.
fn header(out: &mut Vec<u8>, ty: u8, id: u32, payload_len: usize) {
    out.extend_from_slice(&((payload_len + 5) as u32).to_be_bytes());
    out.push(ty);
    out.extend_from_slice(&id.to_be_bytes());
}

fn str16(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// HELLO with protocol version 1.
pub fn encode_hello(out: &mut Vec<u8>, id: u32, name: &str) {
    header(out, ft::HELLO, id, 4 + 2 + 2 + name.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    str16(out, name.as_bytes());
}

/// GET of `key`.
pub fn encode_get(out: &mut Vec<u8>, id: u32, key: &[u8]) {
    header(out, ft::GET, id, 2 + key.len());
    str16(out, key);
}

/// Unconditional PUT.
pub fn encode_put(out: &mut Vec<u8>, id: u32, key: &[u8], value: &[u8]) {
    header(out, ft::PUT, id, 1 + 8 + 2 + key.len() + 4 + value.len());
    out.push(0); // condition: none
    out.extend_from_slice(&0u64.to_be_bytes()); // expected_revision
    str16(out, key);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

/// SUB of `prefix` without resume (snapshot, SYNCED, then live events).
pub fn encode_sub(out: &mut Vec<u8>, id: u32, prefix: &[u8]) {
    header(out, ft::SUB, id, 1 + 8 + 2 + prefix.len());
    out.push(0); // flags
    out.extend_from_slice(&0u64.to_be_bytes()); // since
    str16(out, prefix);
}

/// COMPACT.
pub fn encode_compact(out: &mut Vec<u8>, id: u32) {
    header(out, ft::COMPACT, id, 0);
}

/// The text of an ERROR payload: code name and message.
pub fn error_text(payload: &[u8]) -> String {
    if payload.len() < 4 {
        return "malformed ERROR frame".into();
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    let name = ErrorCode::from_u16(code).map_or("unknown code", |c| c.name());
    let mlen = u16::from_be_bytes([payload[2], payload[3]]) as usize;
    let message = payload
        .get(4..4 + mlen)
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    format!("ERROR {code} {name}: {message}")
}

/// Checks that `frame` is the answer of type `ty` to request `id`.
pub fn expect(frame: &Frame<'_>, ty: u8, id: u32) -> Result<(), String> {
    if frame.ty == ft::ERROR {
        return Err(format!(
            "nkv answered request {} with {}",
            frame.id,
            error_text(frame.payload)
        ));
    }
    if frame.ty != ty || frame.id != id {
        return Err(format!(
            "nkv answered with frame type {:#04x} id {} where type {ty:#04x} id {id} was due",
            frame.ty, frame.id
        ));
    }
    Ok(())
}

/// An UPDATE event's value (`None` for any other frame type).
pub fn update_value<'a>(frame: &Frame<'a>) -> Result<Option<&'a [u8]>, String> {
    if frame.ty != ft::UPDATE {
        return Ok(None);
    }
    let p = frame.payload;
    let bad = || "malformed UPDATE event".to_string();
    // revision u64, coalesced u32, key str16, value bytes32
    let klen = p.get(12..14).ok_or_else(bad)?;
    let vstart = 14 + u16::from_be_bytes([klen[0], klen[1]]) as usize;
    let vlen = p.get(vstart..vstart + 4).ok_or_else(bad)?;
    let vlen = u32::from_be_bytes([vlen[0], vlen[1], vlen[2], vlen[3]]) as usize;
    if p.len() != vstart + 4 + vlen {
        return Err(bad());
    }
    Ok(Some(&p[vstart + 4..]))
}

/// The load generator's view of nkv: sequential request ids, answers
/// checked by type, id and (for GET) value length.
#[derive(Debug)]
pub struct NkvWire {
    next_id: u32,
    expect_id: u32,
    value_len: usize,
}

impl NkvWire {
    /// A connection whose GETs must return `value_len`-byte values.
    pub fn new(value_len: usize) -> NkvWire {
        NkvWire {
            next_id: 1,
            expect_id: 1,
            value_len,
        }
    }

    fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        // Ids are 1..=u32::MAX; wrap past 0.
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }

    fn answered(&mut self) {
        self.expect_id = self.expect_id.checked_add(1).unwrap_or(1);
    }
}

impl Wire for NkvWire {
    fn hello(&mut self, out: &mut Vec<u8>) {
        let id = self.take_id();
        encode_hello(out, id, "nkv-bench");
    }

    fn parse_hello(&mut self, buf: &[u8]) -> Result<Option<usize>, String> {
        let Some((frame, used)) = split_frame(buf)? else {
            return Ok(None);
        };
        expect(&frame, ft::HELLO_OK, self.expect_id)?;
        self.answered();
        Ok(Some(used))
    }

    fn encode(&mut self, kind: OpKind, key: &[u8], value: &[u8], out: &mut Vec<u8>) {
        let id = self.take_id();
        match kind {
            OpKind::Get => encode_get(out, id, key),
            OpKind::Put => encode_put(out, id, key, value),
        }
    }

    fn parse(&mut self, kind: OpKind, buf: &[u8]) -> Result<Option<usize>, String> {
        let Some((frame, used)) = split_frame(buf)? else {
            return Ok(None);
        };
        match kind {
            OpKind::Get => {
                expect(&frame, ft::GET_OK, self.expect_id)?;
                // revision u64, then the value's u32 length and bytes.
                let p = frame.payload;
                let vlen = p
                    .get(8..12)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
                if vlen != Some(self.value_len) || p.len() != 12 + self.value_len {
                    return Err(format!(
                        "GET_OK carries a value of {vlen:?} bytes, {} expected",
                        self.value_len
                    ));
                }
            }
            OpKind::Put => {
                expect(&frame, ft::PUT_OK, self.expect_id)?;
                if frame.payload.len() != 8 {
                    return Err("malformed PUT_OK".into());
                }
            }
        }
        self.answered();
        Ok(Some(used))
    }
}

/// A blocking nkv connection for control requests, one at a time.
#[derive(Debug)]
pub struct NkvConn {
    stream: Stream,
    buf: Vec<u8>,
    filled: usize,
    next_id: u32,
}

/// An owned answer frame.
#[derive(Debug, Clone)]
pub struct OwnedFrame {
    /// The frame type byte.
    pub ty: u8,
    /// Request id.
    pub id: u32,
    /// Everything after the header.
    pub payload: Vec<u8>,
}

impl NkvConn {
    /// Connects and completes the handshake (with a timeout so that a
    /// wedged server fails the row instead of hanging the bench).
    pub fn connect(target: &Target) -> Result<NkvConn, String> {
        let stream = target
            .connect()
            .map_err(|e| format!("cannot connect to nkv at {}: {e}", target.address()))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(|e| e.to_string())?;
        let mut conn = NkvConn {
            stream,
            buf: vec![0; 64 * 1024],
            filled: 0,
            next_id: 1,
        };
        let mut out = Vec::new();
        let id = conn.take_id();
        encode_hello(&mut out, id, "nkv-bench");
        let answer = conn.call(&out)?;
        if answer.ty != ft::HELLO_OK {
            return Err(format!("HELLO answered with type {:#04x}", answer.ty));
        }
        Ok(conn)
    }

    /// The id for the next request.
    pub fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends one encoded request and returns its answer (events are
    /// skipped). An ERROR answer is an `Err`.
    pub fn call(&mut self, request: &[u8]) -> Result<OwnedFrame, String> {
        let id = u32::from_be_bytes([request[5], request[6], request[7], request[8]]);
        self.stream
            .write_all(request)
            .map_err(|e| format!("nkv write: {e}"))?;
        loop {
            let frame = self.read_frame()?;
            if (ft::UPDATE..=ft::CLOSED).contains(&frame.ty) {
                continue;
            }
            if frame.ty == ft::ERROR {
                return Err(format!("nkv answered {}", error_text(&frame.payload)));
            }
            if frame.id != id {
                return Err(format!("nkv answered id {} where {id} was due", frame.id));
            }
            return Ok(frame);
        }
    }

    /// Reads the next frame, whatever it is.
    pub fn read_frame(&mut self) -> Result<OwnedFrame, String> {
        loop {
            if let Some((frame, used)) = split_frame(&self.buf[..self.filled])? {
                let owned = OwnedFrame {
                    ty: frame.ty,
                    id: frame.id,
                    payload: frame.payload.to_vec(),
                };
                self.buf.copy_within(used..self.filled, 0);
                self.filled -= used;
                return Ok(owned);
            }
            if self.filled == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self
                .stream
                .read(&mut self.buf[self.filled..])
                .map_err(|e| format!("nkv read: {e}"))?;
            if n == 0 {
                return Err("nkv closed the connection".into());
            }
            self.filled += n;
        }
    }

    /// GET: the value, or `None` when the key does not exist.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let mut out = Vec::new();
        let id = self.take_id();
        encode_get(&mut out, id, key);
        match self.call(&out) {
            Ok(frame) if frame.ty == ft::GET_OK && frame.payload.len() >= 12 => {
                Ok(Some(frame.payload[12..].to_vec()))
            }
            Ok(frame) => Err(format!("GET answered with type {:#04x}", frame.ty)),
            Err(e) if e.contains("NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// COMPACT: bytes of data files before and after.
    pub fn compact(&mut self) -> Result<(u64, u64), String> {
        let mut out = Vec::new();
        let id = self.take_id();
        encode_compact(&mut out, id);
        let frame = self.call(&out)?;
        let p = &frame.payload;
        if frame.ty != ft::COMPACT_OK || p.len() != 16 {
            return Err(format!("COMPACT answered with type {:#04x}", frame.ty));
        }
        let before = u64::from_be_bytes(p[0..8].try_into().expect("8 bytes"));
        let after = u64::from_be_bytes(p[8..16].try_into().expect("8 bytes"));
        Ok((before, after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use nkv::protocol::{ClientFrame, Condition, Request, ServerCodec};
    use tokio_util::codec::Decoder;

    /// The hand encoders produce what the library's server codec reads.
    #[test]
    fn hand_encoding_matches_the_library() {
        let mut out = Vec::new();
        encode_hello(&mut out, 1, "nkv-bench");
        encode_get(&mut out, 2, b"bench.k000001");
        encode_put(&mut out, 3, b"bench.k000002", b"xyz");
        encode_sub(&mut out, 4, b"bench");
        encode_compact(&mut out, 5);
        let mut buf = BytesMut::from(&out[..]);
        let mut codec = ServerCodec::new();
        let mut got = Vec::new();
        while let Some(inbound) = codec.decode(&mut buf).unwrap() {
            match inbound {
                nkv::protocol::Inbound::Request(frame) => got.push(frame),
                other => panic!("invalid: {other:?}"),
            }
        }
        let want = vec![
            ClientFrame {
                id: 1,
                request: Request::Hello {
                    version: 1,
                    client_name: "nkv-bench".into(),
                    token: None,
                },
            },
            ClientFrame {
                id: 2,
                request: Request::Get {
                    key: "bench.k000001".into(),
                },
            },
            ClientFrame {
                id: 3,
                request: Request::Put {
                    key: "bench.k000002".into(),
                    value: bytes::Bytes::from_static(b"xyz"),
                    condition: Condition::None,
                },
            },
            ClientFrame {
                id: 4,
                request: Request::Subscribe {
                    prefix: "bench".into(),
                    since: None,
                },
            },
            ClientFrame {
                id: 5,
                request: Request::Compact,
            },
        ];
        assert_eq!(got, want);
    }
}
