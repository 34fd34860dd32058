//! Giving memory back to the system after a burst.
//!
//! glibc's allocator keeps what the program frees in per-thread arenas and
//! returns little of it by itself: after a few thousand connections (or a
//! few thousand subscriptions) came and went, the server kept tens to
//! hundreds of MiB it no longer used. `malloc_trim(0)` releases the free
//! pages of every arena. It runs each second for a few seconds after
//! connections closed (their subscriptions are dropped by the engine a
//! little later), and every 30 s anyway; with nothing to release it costs
//! microseconds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shared;

/// How often the task looks.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Trim at least this often even without closed connections.
const TRIM_AT_LEAST_EVERY: Duration = Duration::from_secs(30);
/// Keep trimming each second for this long after a connection closed.
const AFTER_CLOSE: Duration = Duration::from_secs(3);

/// Runs until aborted: trims after connections closed, and periodically.
pub(super) async fn give_back_after_bursts(shared: Arc<Shared>) {
    let mut closed_seen = shared.closed.load(Ordering::Relaxed);
    let mut last_close: Option<Instant> = None;
    let mut last_trim = Instant::now();
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let closed = shared.closed.load(Ordering::Relaxed);
        if closed != closed_seen {
            closed_seen = closed;
            last_close = Some(Instant::now());
        }
        let recent = last_close.is_some_and(|t| t.elapsed() <= AFTER_CLOSE);
        if recent || last_trim.elapsed() >= TRIM_AT_LEAST_EVERY {
            last_trim = Instant::now();
            trim();
        }
    }
}

/// Returns the allocator's free pages to the system.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only releases memory the
    // allocator holds unused, under its own locks; it is safe to call from
    // any thread at any time (glibc documents it MT-Safe).
    unsafe {
        libc::malloc_trim(0);
    }
}
