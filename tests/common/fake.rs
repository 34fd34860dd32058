//! A scripted fake nkv server on a Unix socket, shared by the client and CLI
//! tests: a blocking thread that speaks the wire protocol through
//! `ServerCodec` and answers what each test scripts.

use std::collections::BTreeMap;
use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nkv::addr::Address;
use nkv::protocol::{
    ClientFrame, Condition, ErrorCode, ErrorFrame, Event, Inbound, Request, Response, ServerCodec,
    ServerFrame,
};
use tempfile::TempDir;
use tokio_util::codec::{Decoder, Encoder};

pub const WAIT: Duration = Duration::from_secs(10);

/// The state of [`Peer::serve_kv`], kept across connections.
#[derive(Default)]
pub struct Kv {
    store: BTreeMap<String, (Bytes, u64)>,
    revision: u64,
}

/// A listening socket in a temporary directory, and the thread running the
/// test's script against it.
pub struct Fake {
    pub addr: Address,
    thread: Option<JoinHandle<()>>,
    _dir: TempDir,
}

impl Fake {
    pub fn start(script: impl FnOnce(Listener) + Send + 'static) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nkv.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let thread = thread::spawn(move || script(Listener(listener)));
        Fake {
            addr: Address::Unix(path),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Waits for the script to end, failing the test if it panicked.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            t.join().expect("fake server script failed");
        }
    }
}

pub struct Listener(UnixListener);

impl Listener {
    pub fn accept(&self) -> Peer {
        let (stream, _) = self.0.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Peer {
            stream,
            buf: BytesMut::new(),
            codec: ServerCodec::new(),
        }
    }
}

pub struct Peer {
    stream: UnixStream,
    buf: BytesMut,
    codec: ServerCodec,
}

impl Peer {
    /// The next request, or `None` when the client closed the connection.
    pub fn recv(&mut self) -> Option<ClientFrame> {
        loop {
            if let Some(inbound) = self.codec.decode(&mut self.buf).unwrap() {
                match inbound {
                    Inbound::Request(frame) => return Some(frame),
                    other => panic!("invalid frame from the client: {other:?}"),
                }
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == IoErrorKind::ConnectionReset => return None,
                Err(e) => panic!("fake server read: {e}"),
            }
        }
    }

    pub fn expect(&mut self) -> ClientFrame {
        self.recv().expect("the client closed the connection")
    }

    pub fn send(&mut self, frame: ServerFrame) {
        let mut out = BytesMut::new();
        self.codec.encode(frame, &mut out).unwrap();
        // The client may be gone already in some scripts; that is fine.
        let _ = self.stream.write_all(&out);
    }

    pub fn respond(&mut self, id: u32, response: Response) {
        self.send(ServerFrame::Response { id, response });
    }

    pub fn event(&mut self, subscription: u32, event: Event) {
        self.send(ServerFrame::Event {
            subscription,
            event,
        });
    }

    pub fn handshake_as(&mut self, version: u16, max_key: u32, max_value: u32) {
        let hello = self.expect();
        assert!(matches!(hello.request, Request::Hello { version: 1, .. }));
        self.respond(
            hello.id,
            Response::HelloOk {
                version,
                max_frame: 1 << 20,
                max_key,
                max_value,
                server_name: "fake-server 9".into(),
            },
        );
    }

    pub fn handshake(&mut self) {
        self.handshake_as(1, 1024, 65536);
    }

    /// Answers PINGs until the client goes away.
    pub fn pong_until_closed(&mut self) {
        while let Some(frame) = self.recv() {
            match frame.request {
                Request::Ping => self.respond(frame.id, Response::Pong),
                Request::Unsubscribe { .. } => self.respond(frame.id, Response::UnsubOk),
                other => panic!("unexpected request {other:?}"),
            }
        }
    }

    /// A tiny in-memory store, enough to check how answers map to results.
    pub fn serve_kv(&mut self, kv: &mut Kv) {
        let mut store = std::mem::take(&mut kv.store);
        let mut revision = kv.revision;
        let covers = |prefix: &str, key: &str| nkv::key::covers(prefix, key);
        while let Some(ClientFrame { id, request }) = self.recv() {
            let condition_holds = |store: &BTreeMap<String, (Bytes, u64)>, key: &str, c| {
                let current = store.get(key).map_or(0, |(_, r)| *r);
                match c {
                    Condition::None => Ok(()),
                    Condition::MustNotExist if current == 0 => Ok(()),
                    Condition::RevisionEquals(r) if current == r && r != 0 => Ok(()),
                    _ => Err(ErrorFrame::condition_failed(current)),
                }
            };
            let response = match request {
                Request::Ping => Response::Pong,
                Request::Get { key } => match store.get(&key) {
                    Some((value, revision)) => Response::GetOk {
                        revision: *revision,
                        value: value.clone(),
                    },
                    None => Response::Error(ErrorFrame::new(ErrorCode::NotFound, "no such key")),
                },
                Request::Put {
                    key,
                    value,
                    condition,
                } => match condition_holds(&store, &key, condition) {
                    Ok(()) => {
                        revision += 1;
                        store.insert(key, (value, revision));
                        Response::PutOk { revision }
                    }
                    Err(e) => Response::Error(e),
                },
                Request::Delete { key, condition } => {
                    if !store.contains_key(&key) {
                        Response::Error(ErrorFrame::new(ErrorCode::NotFound, "no such key"))
                    } else if let Err(e) = condition_holds(&store, &key, condition) {
                        Response::Error(e)
                    } else {
                        revision += 1;
                        store.remove(&key);
                        Response::DelOk {
                            revision,
                            deleted: 1,
                        }
                    }
                }
                Request::DeletePrefix { prefix } => {
                    let before = store.len();
                    store.retain(|k, _| !covers(&prefix, k));
                    let deleted = (before - store.len()) as u32;
                    if deleted > 0 {
                        revision += 1;
                    }
                    Response::DelOk { revision, deleted }
                }
                Request::List { prefix } => {
                    let mut count = 0;
                    let items: Vec<_> = store
                        .iter()
                        .filter(|(k, _)| covers(&prefix, k))
                        .map(|(k, (v, r))| (k.clone(), v.clone(), *r))
                        .collect();
                    for (key, value, r) in items {
                        count += 1;
                        self.respond(
                            id,
                            Response::ListItem {
                                revision: r,
                                key,
                                value,
                            },
                        );
                    }
                    Response::ListOk { revision, count }
                }
                Request::Stats => Response::StatsOk {
                    stats: vec![
                        ("keys".into(), store.len() as u64),
                        ("revision".into(), revision),
                    ],
                },
                other => panic!("unexpected request {other:?}"),
            };
            self.respond(id, response);
        }
        kv.store = store;
        kv.revision = revision;
    }
}
