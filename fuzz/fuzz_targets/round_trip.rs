//! Frames built from the input, encoded by the sending side's codec and
//! decoded by the receiving side's: the same frames come back.
//!
//! Several frames share one buffer (back-to-back decoding). The maximum
//! frame length comes from the input, so some frames are refused: the
//! encoder must then leave its buffer untouched, and refuse exactly the
//! frames whose length is over the maximum, or whose id is 0 where 0 is
//! not allowed.

#![no_main]

use arbitrary::{Result, Unstructured};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use nkv::protocol::wire::frame_type as ft;
use nkv::protocol::{
    ClientCodec, ClientFrame, Condition, ErrorCode, ErrorFrame, Event, FrameError, Inbound,
    Request, Response, ServerCodec, ServerFrame,
};
use tokio_util::codec::{Decoder, Encoder};

fn string(u: &mut Unstructured<'_>) -> Result<String> {
    u.arbitrary()
}

fn bytes(u: &mut Unstructured<'_>) -> Result<Bytes> {
    Ok(Bytes::from(u.arbitrary::<Vec<u8>>()?))
}

fn condition(u: &mut Unstructured<'_>) -> Result<Condition> {
    Ok(match u.int_in_range(0..=2)? {
        0 => Condition::None,
        1 => Condition::MustNotExist,
        _ => Condition::RevisionEquals(u.arbitrary()?),
    })
}

fn code(u: &mut Unstructured<'_>) -> Result<ErrorCode> {
    u.choose(&ErrorCode::ALL).copied()
}

fn request(u: &mut Unstructured<'_>) -> Result<Request> {
    Ok(match u.int_in_range(0..=10)? {
        0 => Request::Hello {
            version: u.arbitrary()?,
            client_name: string(u)?,
        },
        1 => Request::Ping,
        2 => Request::Get { key: string(u)? },
        3 => Request::Put {
            key: string(u)?,
            value: bytes(u)?,
            condition: condition(u)?,
        },
        4 => Request::Delete {
            key: string(u)?,
            condition: condition(u)?,
        },
        5 => Request::DeletePrefix { prefix: string(u)? },
        6 => Request::List { prefix: string(u)? },
        7 => Request::Subscribe {
            prefix: string(u)?,
            since: u.arbitrary()?,
        },
        8 => Request::Unsubscribe {
            subscription: u.arbitrary()?,
        },
        9 => Request::Stats,
        _ => Request::Compact,
    })
}

fn response(u: &mut Unstructured<'_>) -> Result<Response> {
    Ok(match u.int_in_range(0..=11)? {
        0 => Response::HelloOk {
            version: u.arbitrary()?,
            max_frame: u.arbitrary()?,
            max_key: u.arbitrary()?,
            max_value: u.arbitrary()?,
            server_name: string(u)?,
        },
        1 => Response::Pong,
        2 => Response::GetOk {
            revision: u.arbitrary()?,
            value: bytes(u)?,
        },
        3 => Response::PutOk {
            revision: u.arbitrary()?,
        },
        4 => Response::DelOk {
            revision: u.arbitrary()?,
            deleted: u.arbitrary()?,
        },
        5 => Response::ListItem {
            revision: u.arbitrary()?,
            key: string(u)?,
            value: bytes(u)?,
        },
        6 => Response::ListOk {
            revision: u.arbitrary()?,
            count: u.arbitrary()?,
        },
        7 => Response::SubOk,
        8 => Response::UnsubOk,
        9 => Response::CompactOk {
            bytes_before: u.arbitrary()?,
            bytes_after: u.arbitrary()?,
        },
        10 => Response::StatsOk {
            stats: u.arbitrary()?,
        },
        // Any current_revision, even one the encoder ignores: the decoder
        // must give back the canonical form (see `canonical`).
        _ => Response::Error(ErrorFrame {
            code: code(u)?,
            message: string(u)?,
            current_revision: u.arbitrary()?,
        }),
    })
}

fn event(u: &mut Unstructured<'_>) -> Result<Event> {
    Ok(match u.int_in_range(0..=4)? {
        0 => Event::Update {
            revision: u.arbitrary()?,
            coalesced: u.arbitrary()?,
            key: string(u)?,
            value: bytes(u)?,
        },
        1 => Event::Delete {
            revision: u.arbitrary()?,
            coalesced: u.arbitrary()?,
            key: string(u)?,
        },
        2 => Event::Synced {
            revision: u.arbitrary()?,
        },
        3 => Event::Reset,
        _ => Event::Closed {
            code: code(u)?,
            message: string(u)?,
        },
    })
}

fn id(u: &mut Unstructured<'_>) -> Result<u32> {
    // Mostly small ids, 0 now and then (refused unless an ERROR).
    Ok(if u.ratio(1, 8)? { 0 } else { u.arbitrary()? })
}

/// The form a server frame takes on the wire: an ERROR carries a current
/// revision exactly when its code is CONDITION_FAILED (0 if none was set).
fn canonical(frame: &ServerFrame) -> ServerFrame {
    let mut frame = frame.clone();
    if let ServerFrame::Response {
        response: Response::Error(e),
        ..
    } = &mut frame
    {
        e.current_revision = if e.code == ErrorCode::ConditionFailed {
            Some(e.current_revision.unwrap_or(0))
        } else {
            None
        };
    }
    frame
}

/// Encodes `item` into `dst` with `codec` (maximum `max`), and checks it
/// against `unlimited` (no maximum): a frame is refused exactly when its id
/// is 0 where that is not allowed, or when it is over `max`, and a refusal
/// leaves `dst` untouched. Returns whether the frame was written.
fn encode<T: Copy, C: Encoder<T, Error = FrameError>>(
    codec: &mut C,
    unlimited: &mut C,
    item: T,
    zero_id_refused: bool,
    max: u32,
    dst: &mut BytesMut,
) -> bool {
    let mut reference = BytesMut::new();
    let before = dst.clone();
    let written = match unlimited.encode(item, &mut reference) {
        Ok(()) => {
            assert!(!zero_id_refused, "id 0 was accepted");
            let length = (reference.len() - 4) as u64;
            let field = u32::from_be_bytes(reference[..4].try_into().unwrap());
            assert_eq!(u64::from(field), length, "length field");
            match codec.encode(item, dst) {
                Ok(()) => {
                    assert!(length <= u64::from(max), "{length} > {max} accepted");
                    assert_eq!(&dst[before.len()..], &reference[..]);
                    true
                }
                Err(FrameError::TooLarge { length: l, max: m }) => {
                    assert_eq!((l, m), (length, max));
                    assert!(length > u64::from(max), "{length} <= {max} refused");
                    false
                }
                Err(e) => panic!("unexpected refusal: {e:?}"),
            }
        }
        Err(e) => {
            assert!(reference.is_empty(), "a refused frame wrote bytes");
            match e {
                FrameError::ZeroId { .. } => assert!(zero_id_refused, "{e:?}"),
                // A string over 65535 bytes or more than 65535 stats.
                FrameError::FieldTooLong { .. } => {}
                e => panic!("unexpected refusal: {e:?}"),
            }
            codec
                .encode(item, dst)
                .expect_err("refused without a maximum");
            false
        }
    };
    if !written {
        assert_eq!(dst, &before, "a refused frame left bytes behind");
    }
    written
}

fuzz_target!(|input: &[u8]| {
    let mut u = Unstructured::new(input);
    let Ok(max) = u.arbitrary::<u32>() else {
        return;
    };
    // Half the time no limit at all, so most frames are written.
    let max = if max & 1 == 0 { u32::MAX } else { max >> 16 };

    // Client -> server.
    let mut sent = Vec::new();
    let mut wire = BytesMut::new();
    let (mut enc, mut unlimited) = (
        ClientCodec::with_max_frame_length(max),
        ClientCodec::with_max_frame_length(u32::MAX),
    );
    let n = u.int_in_range(0..=8).unwrap_or(0);
    for _ in 0..n {
        let Ok(frame) = id(&mut u).and_then(|id| {
            Ok(ClientFrame {
                id,
                request: request(&mut u)?,
            })
        }) else {
            break;
        };
        if encode(
            &mut enc,
            &mut unlimited,
            &frame,
            frame.id == 0,
            max,
            &mut wire,
        ) {
            sent.push(frame);
        }
    }
    let mut dec = ServerCodec::with_max_frame_length(max);
    for frame in sent {
        let got = dec
            .decode(&mut wire)
            .expect("decodes")
            .expect("whole frame");
        assert_eq!(got, Inbound::Request(frame));
    }
    assert!(wire.is_empty(), "bytes left over");

    // Server -> client.
    let mut sent = Vec::new();
    let (mut enc, mut unlimited) = (
        ServerCodec::with_max_frame_length(max),
        ServerCodec::with_max_frame_length(u32::MAX),
    );
    let n = u.int_in_range(0..=8).unwrap_or(0);
    for _ in 0..n {
        let frame = if u.arbitrary().unwrap_or(false) {
            id(&mut u).and_then(|subscription| {
                Ok(ServerFrame::Event {
                    subscription,
                    event: event(&mut u)?,
                })
            })
        } else {
            id(&mut u).and_then(|id| {
                Ok(ServerFrame::Response {
                    id,
                    response: response(&mut u)?,
                })
            })
        };
        let Ok(frame) = frame else { break };
        let zero_refused = match &frame {
            ServerFrame::Response { id, response } => {
                *id == 0 && response.frame_type() != ft::ERROR
            }
            ServerFrame::Event { subscription, .. } => *subscription == 0,
        };
        if encode(
            &mut enc,
            &mut unlimited,
            &frame,
            zero_refused,
            max,
            &mut wire,
        ) {
            sent.push(frame);
        }
    }
    let mut dec = ClientCodec::with_max_frame_length(max);
    for frame in sent {
        let got = dec
            .decode(&mut wire)
            .expect("decodes")
            .expect("whole frame");
        assert_eq!(got, canonical(&frame));
    }
    assert!(wire.is_empty(), "bytes left over");
});
