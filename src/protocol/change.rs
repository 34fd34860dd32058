//! A change encoded once for every subscriber that receives it.
//!
//! UPDATE and DELETE frames differ between subscribers only in the
//! subscription id and the coalesced count. [`EncodedChange`] holds the rest
//! of the payload (key, and value for UPDATE) already encoded, so the
//! server encodes a change once and each subscriber's frame is a 21-byte
//! head written in front of a copy of the shared bytes: no allocation and
//! no re-encoding per subscriber.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::FrameError;
use super::frame::{bytes32_len, str16_len, Event};
use super::wire::{frame_type as ft, CONNECTION_ID};

/// The subscriber-independent part of an UPDATE or DELETE frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedChange {
    frame_type: u8,
    revision: u64,
    /// `key: str16`, then for UPDATE `value: bytes32`.
    tail: Bytes,
}

impl EncodedChange {
    /// `key` now holds `value`, written at `revision`.
    pub fn update(revision: u64, key: &str, value: &[u8]) -> Result<Self, FrameError> {
        let len = str16_len("key", key)? + bytes32_len("value", value)?;
        let mut tail = BytesMut::with_capacity(len);
        tail.put_u16(key.len() as u16);
        tail.put_slice(key.as_bytes());
        tail.put_u32(value.len() as u32);
        tail.put_slice(value);
        Ok(EncodedChange {
            frame_type: ft::UPDATE,
            revision,
            tail: tail.freeze(),
        })
    }

    /// `key` was deleted at `revision`.
    pub fn delete(revision: u64, key: &str) -> Result<Self, FrameError> {
        let mut tail = BytesMut::with_capacity(str16_len("key", key)?);
        tail.put_u16(key.len() as u16);
        tail.put_slice(key.as_bytes());
        Ok(EncodedChange {
            frame_type: ft::DELETE,
            revision,
            tail: tail.freeze(),
        })
    }

    /// The revision of the change.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Bytes of the frame it encodes to.
    pub fn frame_len(&self) -> usize {
        super::wire::HEADER_SIZE + 8 + 4 + self.tail.len()
    }

    /// The change as a typed [`Event`] (for tests and tools).
    pub fn to_event(&self, coalesced: u32) -> Event {
        let key_len = usize::from(u16::from_be_bytes([self.tail[0], self.tail[1]]));
        let key = String::from_utf8_lossy(&self.tail[2..2 + key_len]).into_owned();
        if self.frame_type == ft::DELETE {
            return Event::Delete {
                revision: self.revision,
                coalesced,
                key,
            };
        }
        Event::Update {
            revision: self.revision,
            coalesced,
            key,
            value: self.tail.slice(2 + key_len + 4..),
        }
    }
}

impl super::ServerCodec {
    /// Encodes `change` as subscription `subscription`'s event with
    /// `coalesced` skipped updates: the same bytes as encoding the
    /// matching [`Event`].
    pub fn encode_change(
        &self,
        subscription: u32,
        coalesced: u32,
        change: &EncodedChange,
        dst: &mut BytesMut,
    ) -> Result<(), FrameError> {
        if subscription == CONNECTION_ID {
            return Err(FrameError::ZeroId {
                frame_type: change.frame_type,
            });
        }
        let payload_len = 8 + 4 + change.tail.len();
        super::codec::put_frame(
            dst,
            self.max_frame_length(),
            change.frame_type,
            subscription,
            payload_len,
            |d| {
                d.put_u64(change.revision);
                d.put_u32(coalesced);
                d.put_slice(&change.tail);
            },
        )
    }

    /// Encodes an UPDATE (or, with no value, a DELETE) from borrowed parts,
    /// for snapshot items read from a view.
    pub fn encode_key_event(
        &self,
        subscription: u32,
        revision: u64,
        key: &str,
        value: Option<&[u8]>,
        dst: &mut BytesMut,
    ) -> Result<(), FrameError> {
        let frame_type = if value.is_some() {
            ft::UPDATE
        } else {
            ft::DELETE
        };
        if subscription == CONNECTION_ID {
            return Err(FrameError::ZeroId { frame_type });
        }
        let value_len = match value {
            Some(value) => bytes32_len("value", value)?,
            None => 0,
        };
        let payload_len = 8 + 4 + str16_len("key", key)? + value_len;
        super::codec::put_frame(
            dst,
            self.max_frame_length(),
            frame_type,
            subscription,
            payload_len,
            |d| {
                d.put_u64(revision);
                d.put_u32(0);
                d.put_u16(key.len() as u16);
                d.put_slice(key.as_bytes());
                if let Some(value) = value {
                    d.put_u32(value.len() as u32);
                    d.put_slice(value);
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::codec::Encoder;

    use super::*;
    use crate::protocol::{ServerCodec, ServerFrame};

    fn typed(subscription: u32, event: Event) -> BytesMut {
        let mut out = BytesMut::new();
        ServerCodec::new()
            .encode(
                ServerFrame::Event {
                    subscription,
                    event,
                },
                &mut out,
            )
            .unwrap();
        out
    }

    #[test]
    fn shared_encoding_matches_the_typed_encoder() {
        let codec = ServerCodec::new();
        let change = EncodedChange::update(7, "net.eth0", b"up").unwrap();
        let mut out = BytesMut::new();
        codec.encode_change(3, 5, &change, &mut out).unwrap();
        assert_eq!(out, typed(3, change.to_event(5)));
        assert_eq!(out.len(), change.frame_len());
        assert_eq!(
            change.to_event(5),
            Event::Update {
                revision: 7,
                coalesced: 5,
                key: "net.eth0".into(),
                value: Bytes::from_static(b"up"),
            }
        );

        let change = EncodedChange::delete(9, "net").unwrap();
        let mut out = BytesMut::new();
        codec.encode_change(4, 0, &change, &mut out).unwrap();
        assert_eq!(out, typed(4, change.to_event(0)));

        let mut out = BytesMut::new();
        codec
            .encode_key_event(2, 11, "a.b", Some(b"v"), &mut out)
            .unwrap();
        codec
            .encode_key_event(2, 12, "a.c", None, &mut out)
            .unwrap();
        let mut expected = typed(
            2,
            Event::Update {
                revision: 11,
                coalesced: 0,
                key: "a.b".into(),
                value: Bytes::from_static(b"v"),
            },
        );
        expected.extend_from_slice(&typed(
            2,
            Event::Delete {
                revision: 12,
                coalesced: 0,
                key: "a.c".into(),
            },
        ));
        assert_eq!(out, expected);
    }

    #[test]
    fn id_zero_and_oversize_are_refused() {
        let change = EncodedChange::update(1, "k", &[0u8; 100]).unwrap();
        let mut out = BytesMut::new();
        assert!(ServerCodec::new()
            .encode_change(0, 0, &change, &mut out)
            .is_err());
        assert!(ServerCodec::with_max_frame_length(64)
            .encode_change(1, 0, &change, &mut out)
            .is_err());
        assert!(out.is_empty());
    }
}
