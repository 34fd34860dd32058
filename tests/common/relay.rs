//! A Unix-socket relay between clients and a [`TestServer`] whose
//! connections a test can cut, as a network or a peer would: the server
//! sees its connection end, the client sees its connection lost. Plain
//! threads, so blocking and async tests alike can use it.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use nkv::addr::Address;

use super::TestServer;

/// A Unix-socket relay between clients and the server whose connections
/// the test can cut, as a network or a peer would: the server sees its
/// connection end, the client sees its connection lost.
pub struct Relay {
    path: PathBuf,
    live: Arc<Mutex<Vec<UnixStream>>>,
    /// While set, new connections are hung up on at once.
    closed: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl Relay {
    pub fn start(server: &TestServer) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let target = server.socket();
        let live: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let conns = Arc::clone(&live);
        let refuse = Arc::clone(&closed);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if refuse.load(Ordering::SeqCst) {
                    continue; // dropped: the client tries again later
                }
                let Ok(upstream) = UnixStream::connect(&target) else {
                    continue;
                };
                let mut list = conns.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(upstream.try_clone().unwrap());
                drop(list);
                pump(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                pump(upstream, client);
            }
        });
        Relay {
            path,
            live,
            closed,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> Address {
        Address::Unix(self.path.clone())
    }

    /// Refuses new connections (`true`) or lets them through again.
    pub fn refuse(&self, refuse: bool) {
        self.closed.store(refuse, Ordering::SeqCst);
    }

    /// Cuts every connection made so far, both ways.
    pub fn cut(&self) {
        for stream in self.live.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn pump(mut from: UnixStream, mut to: UnixStream) {
    thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}
