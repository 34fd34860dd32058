//! Arbitrary bytes into both decoders, whole and in chunks.
//!
//! Input: byte 0 picks the maximum frame length (0: the default, else
//! `8 * byte`), byte 1 the number `k` (mod 32) of chunk sizes that follow,
//! then `k` chunk sizes (cycled; 0 means "decode again with nothing new";
//! none means one byte at a time), then the stream itself.
//!
//! Checked, for [`ServerCodec`] and [`ClientCodec`]: no panic; the frames
//! and the first error (or the bytes left over) are the same whether the
//! stream arrives whole or in chunks; a frame that decodes is encoded back
//! by the peer's codec to exactly the bytes it came from (the frame types
//! hold only canonical forms, see `nkv::protocol::frame`).

#![no_main]

use std::fmt::Debug;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use nkv::protocol::wire::DEFAULT_MAX_FRAME;
use nkv::protocol::{ClientCodec, Inbound, ServerCodec};
use tokio_util::codec::{Decoder, Encoder};

/// What a decoder made of a stream.
#[derive(Debug, PartialEq)]
struct Outcome<T> {
    /// Each frame, with the bytes it was decoded from (whole feeding only).
    frames: Vec<T>,
    /// `Err(first error)`, or `Ok(bytes left in the buffer)`.
    end: Result<Vec<u8>, String>,
}

/// Decodes everything `buf` holds; `Err` on the first error.
fn drain<D: Decoder>(
    codec: &mut D,
    buf: &mut BytesMut,
    frames: &mut Vec<D::Item>,
    mut on_frame: impl FnMut(usize),
) -> Result<(), String>
where
    D::Error: Debug,
{
    loop {
        let before = buf.len();
        match codec.decode(buf) {
            Ok(Some(frame)) => {
                assert!(buf.len() < before, "a frame must consume bytes");
                on_frame(before - buf.len());
                frames.push(frame);
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("{e:?}")),
        }
    }
}

/// Feeds `data` whole; also returns the byte range of each frame.
fn whole<D: Decoder>(mut codec: D, data: &[u8]) -> (Outcome<D::Item>, Vec<(usize, usize)>)
where
    D::Error: Debug,
{
    let mut buf = BytesMut::from(data);
    let (mut frames, mut spans, mut at) = (Vec::new(), Vec::new(), 0);
    let end = drain(&mut codec, &mut buf, &mut frames, |n| {
        spans.push((at, at + n));
        at += n;
    })
    .map(|()| buf.to_vec());
    (Outcome { frames, end }, spans)
}

/// Feeds `data` in chunks of the cycled `sizes`, decoding after each.
fn chunked<D: Decoder>(mut codec: D, data: &[u8], sizes: &[u8]) -> Outcome<D::Item>
where
    D::Error: Debug,
{
    let mut buf = BytesMut::new();
    let (mut frames, mut at, mut step, mut idle) = (Vec::new(), 0, 0, 0);
    loop {
        let mut n = sizes
            .get(step % sizes.len().max(1))
            .map_or(1, |&s| s as usize);
        step += 1;
        // Several empty chunks in a row: make progress.
        if n == 0 && idle >= sizes.len() {
            n = 1;
        }
        idle = if n == 0 { idle + 1 } else { 0 };
        let n = n.min(data.len() - at);
        buf.extend_from_slice(&data[at..at + n]);
        at += n;
        if let Err(e) = drain(&mut codec, &mut buf, &mut frames, |_| {}) {
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

fn max_frame(b: u8) -> u32 {
    if b == 0 {
        DEFAULT_MAX_FRAME
    } else {
        u32::from(b) * 8
    }
}

fuzz_target!(|input: &[u8]| {
    let [m, k, rest @ ..] = input else { return };
    let k = usize::from(*k % 32).min(rest.len());
    let (sizes, data) = rest.split_at(k);
    let max = max_frame(*m);

    // Server side: client frames in.
    let (server, spans) = whole(ServerCodec::with_max_frame_length(max), data);
    let server_chunked = chunked(ServerCodec::with_max_frame_length(max), data, sizes);
    assert_eq!(server, server_chunked, "server decoder: whole vs chunked");
    for (inbound, &(from, to)) in server.frames.iter().zip(&spans) {
        assert_eq!(
            inbound.id(),
            u32::from_be_bytes(data[from + 5..from + 9].try_into().unwrap())
        );
        match inbound {
            Inbound::Request(frame) => {
                let mut out = BytesMut::new();
                ClientCodec::with_max_frame_length(max)
                    .encode(frame, &mut out)
                    .expect("a decoded request encodes");
                assert_eq!(&out[..], &data[from..to], "request re-encodes to its bytes");
            }
            Inbound::Invalid { id, frame_type, .. } => {
                assert_ne!(*id, 0);
                assert_eq!(*frame_type, data[from + 4]);
            }
        }
    }

    // Client side: server frames in.
    let (client, spans) = whole(ClientCodec::with_max_frame_length(max), data);
    let client_chunked = chunked(ClientCodec::with_max_frame_length(max), data, sizes);
    assert_eq!(client, client_chunked, "client decoder: whole vs chunked");
    for (frame, &(from, to)) in client.frames.iter().zip(&spans) {
        let mut out = BytesMut::new();
        ServerCodec::with_max_frame_length(max)
            .encode(frame, &mut out)
            .expect("a decoded server frame encodes");
        assert_eq!(
            &out[..],
            &data[from..to],
            "server frame re-encodes to its bytes"
        );
    }
});
