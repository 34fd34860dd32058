//! A per-thread deadline: every call this thread makes fails with
//! [`ErrorKind::Timeout`](super::ErrorKind::Timeout) once it has passed,
//! whatever the client's own timeout. It bounds a whole sequence of calls
//! ("these three writes within 50 ms"), or one call when set just before it.

use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Calls on this thread must finish within `timeout` from now, until
/// [`clear_deadline`].
pub fn set_deadline(timeout: Duration) {
    DEADLINE.with(|d| d.set(Instant::now().checked_add(timeout)));
}

/// Removes this thread's deadline.
pub fn clear_deadline() {
    DEADLINE.with(|d| d.set(None));
}

/// `timeout`, shortened to what is left of this thread's deadline.
pub(crate) fn limit(timeout: Duration) -> Duration {
    match DEADLINE.with(Cell::get) {
        Some(deadline) => timeout.min(deadline.saturating_duration_since(Instant::now())),
        None => timeout,
    }
}
