//! `nkv-server` as a `Type=notify` service: `READY=1` once it serves,
//! `STATUS=` lines, the watchdog, reloads and shutdown, as a
//! [`Supervisor`] of the server.
//!
//! One task (started when the server is ready) probes the engine
//! ([`Health::probe`]: the locks every write takes) on every beat and
//! sends what it found: the first answer is `READY=1`, every later one
//! `WATCHDOG=1` when a watchdog is set. A beat whose probe does not answer
//! sends nothing, so a server whose writes are stuck stops pinging, and
//! systemd restarts it after `WatchdogSec=`; a timer alone would go on
//! pinging for a server that serves no one.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::notify::{monotonic_usec, status, Notifier};
use crate::server::{Health, Stopping, Supervisor, Vitals};

/// How often `STATUS=` is refreshed when no watchdog sets the beat.
const STATUS_PERIOD: Duration = Duration::from_secs(30);

/// The server's notifications to systemd (module docs). Without
/// `NOTIFY_SOCKET` it does nothing.
#[derive(Debug)]
pub struct Service {
    /// Where notifications go; `None` when not run by systemd.
    notifier: Option<Arc<Notifier>>,
    /// `WATCHDOG_USEC`: a ping is due every half of it.
    watchdog: Option<Duration>,
    /// What changes as the server runs.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The addresses served, for `STATUS=`.
    addresses: String,
    /// `READY=1` was sent and no shutdown began: reloads are reported.
    ready: bool,
    /// The beat task, stopped when shutdown begins (its status lines
    /// would hide the shutdown's).
    beat: Option<JoinHandle<()>>,
    /// The last `STATUS=` sent, so that the beat sends only news.
    shown: String,
}

impl Service {
    /// A service notifying `notifier` (if any), with a watchdog `timeout`
    /// (if any).
    pub fn new(notifier: Option<Notifier>, watchdog: Option<Duration>) -> Arc<Service> {
        Arc::new(Service {
            notifier: notifier.map(Arc::new),
            watchdog,
            state: Mutex::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the addresses served, shown in `STATUS=`.
    pub fn set_addresses(&self, addresses: &[String]) {
        self.state().addresses = addresses.join(", ");
    }

    /// Sends `state`, if there is anyone to tell.
    fn tell(&self, state: &str) {
        if let Some(notifier) = &self.notifier {
            notifier.tell(state);
        }
    }

    /// Sends `STATUS=text`: what start-up is doing before the server is
    /// ready (opening a large store takes a while).
    pub fn status(&self, text: &str) {
        self.tell(&status(text));
    }

    /// A reload (SIGHUP) begins: `RELOADING=1`, with the monotonic time
    /// systemd uses to tell reloads apart.
    pub fn reloading(&self) {
        if self.state().ready {
            self.tell(&format!(
                "RELOADING=1\n{}\n{}",
                monotonic_usec(),
                status("reloading the token and ACL files")
            ));
        }
    }

    /// The reload is over, whatever its outcome (the old rules stay when
    /// it failed): `READY=1` again.
    pub fn reloaded(&self, outcome: Result<(), &str>) {
        if self.state().ready {
            let text = match outcome {
                Ok(()) => "access files reloaded".to_owned(),
                Err(why) => format!("reload failed, previous rules in force: {why}"),
            };
            let text = status(&text);
            self.tell(&format!("READY=1\n{text}"));
            self.state().shown = text;
        }
    }

    /// The time between two beats: half the watchdog's timeout, as
    /// sd_watchdog_enabled(3) advises.
    fn period(&self) -> Duration {
        self.watchdog.map_or(STATUS_PERIOD, |timeout| timeout / 2)
    }
}

impl Supervisor for Arc<Service> {
    fn ready(&self, health: Health) {
        let Some(notifier) = self.notifier.clone() else {
            return;
        };
        let probe = move || health.probe();
        let beat = tokio::spawn(beat(self.clone(), notifier, probe));
        self.state().beat = Some(beat);
    }

    fn stopping(&self, stage: Stopping) {
        let mut state = self.state();
        state.ready = false;
        if let Some(beat) = state.beat.take() {
            beat.abort();
        }
        drop(state);
        match stage {
            Stopping::Draining { connections } => self.tell(&format!(
                "STOPPING=1\n{}",
                status(&format!(
                    "shutting down: no new connections, finishing the requests of \
                     {connections} open"
                ))
            )),
            Stopping::Closing { connections } => self.tell(&status(&format!(
                "shutting down: closing {connections} connections still open after the grace \
                 period"
            ))),
            Stopping::Syncing => self.tell(&status("shutting down: syncing the store")),
        }
    }
}

/// Probes the server every beat (`probe` is [`Health::probe`]) and tells
/// systemd: `READY=1` on the first answer, then `WATCHDOG=1` (with a
/// watchdog) and `STATUS=` when it changed. A probe that takes longer than
/// a beat is awaited on the next beats, never started twice, and no ping
/// goes out meanwhile.
async fn beat<P>(service: Arc<Service>, notifier: Arc<Notifier>, probe: P)
where
    P: Fn() -> Option<Vitals> + Clone + Send + 'static,
{
    let period = service.period();
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running: Option<JoinHandle<Option<Vitals>>> = None;
    let mut ready = false;
    loop {
        ticks.tick().await;
        let pending = running.get_or_insert_with(|| tokio::task::spawn_blocking(probe.clone()));
        let vitals = match tokio::time::timeout(period, pending).await {
            Ok(Ok(Some(vitals))) => vitals,
            // The server has stopped.
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                running = None;
                tracing::error!("the watchdog's probe of the engine failed: {e}");
                continue;
            }
            Err(_) => {
                tracing::error!(
                    "the engine has not answered for {:?}: not telling systemd that the \
                     server is alive",
                    period
                );
                continue;
            }
        };
        running = None;
        let mut state = service.state();
        let text = status(&format!(
            "serving {} keys (revision {}) to {} connections on {}",
            vitals.keys, vitals.revision, vitals.connections, state.addresses
        ));
        let mut message = Vec::new();
        if !ready {
            message.push("READY=1");
            ready = true;
            state.ready = true;
        } else if service.watchdog.is_some() {
            message.push("WATCHDOG=1");
        }
        if text != state.shown {
            message.push(&text);
        }
        if !message.is_empty() {
            notifier.tell(&message.join("\n"));
        }
        state.shown = text;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::sync::Mutex;
    use std::time::Instant;

    /// The datagrams that arrive within `wait`.
    fn heard(socket: &UnixDatagram, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match socket.recv(&mut buf) {
                Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => break,
            }
        }
        out
    }

    /// The watchdog pings only while the probe answers: an engine stuck
    /// behind its lock gets no ping (and so a restart), and no READY=1
    /// before its first answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pings_only_while_the_engine_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let systemd = UnixDatagram::bind(&path).unwrap();
        let notifier = Arc::new(Notifier::new(path.to_str().unwrap()).unwrap());
        let service = Service::new(None, Some(Duration::from_millis(400)));
        service.set_addresses(&["unix:/run/nkv/nkv.sock".to_owned()]);
        let engine_lock = Arc::new(Mutex::new(()));
        let lock = engine_lock.clone();
        let probe = move || {
            let _held = lock.lock().unwrap();
            Some(Vitals {
                keys: 3,
                revision: 9,
                connections: 1,
            })
        };
        let stuck = engine_lock.lock().unwrap();
        let task = tokio::spawn(beat(service.clone(), notifier, probe));
        let quiet = tokio::task::block_in_place(|| heard(&systemd, Duration::from_millis(700)));
        assert!(quiet.is_empty(), "told systemd while stuck: {quiet:?}");

        drop(stuck);
        let lively = tokio::task::block_in_place(|| heard(&systemd, Duration::from_millis(700)));
        assert!(lively[0].starts_with("READY=1\n"), "{lively:?}");
        assert!(
            lively[0].contains(
                "STATUS=serving 3 keys (revision 9) to 1 connections on unix:/run/nkv/nkv.sock"
            ),
            "{lively:?}"
        );
        let pings = lively
            .iter()
            .filter(|m| m.starts_with("WATCHDOG=1"))
            .count();
        assert!((2..=5).contains(&pings), "{lively:?}");

        let stuck = engine_lock.lock().unwrap();
        // A probe may have begun before the lock was taken.
        let _ = tokio::task::block_in_place(|| heard(&systemd, Duration::from_millis(250)));
        let quiet = tokio::task::block_in_place(|| heard(&systemd, Duration::from_millis(700)));
        assert!(quiet.is_empty(), "pinged while stuck: {quiet:?}");
        drop(stuck);
        task.abort();
    }
}
