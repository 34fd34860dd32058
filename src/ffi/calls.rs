//! The exported request functions: ping, put (plain and ephemeral), get,
//! list, delete, stats, compact, and the client's settings and state.

use std::ffi::{c_char, c_int, c_void};
use std::time::Duration;

use super::handle::{acquire, nkv_client};
use super::types::{nkv_conn_state, nkv_entries, nkv_stats_list, nkv_value, OwnedValue};
use super::{bytes_arg, guard, invalid, key_arg, nkv_status, Failure};
use crate::client::{ConnState, Error, ErrorKind, WaitFor};
use crate::protocol::Condition;

/// Writes `value` through `out` when `out` is not NULL.
///
/// # Safety
/// `out` is NULL or valid for writes.
unsafe fn store_opt<T>(out: *mut T, value: T) {
    // SAFETY: non-NULL output pointers are writable by contract.
    if let Some(slot) = unsafe { out.as_mut() } {
        *slot = value;
    }
}

/// The condition of `nkv_put_if` / `nkv_delete_if`: 0 means "must not
/// exist", R means "the current revision must be R".
fn expect(expected_revision: u64) -> Condition {
    match expected_revision {
        0 => Condition::MustNotExist,
        r => Condition::RevisionEquals(r),
    }
}

/// A write's outcome to C: the revision on success, and for a failed
/// condition the key's current revision (0: absent) in the same output.
///
/// # Safety
/// `out_revision` is NULL or writable.
unsafe fn written(result: Result<u64, Error>, out_revision: *mut u64) -> Result<(), Failure> {
    match result {
        Ok(revision) => {
            // SAFETY: NULL or writable.
            unsafe { store_opt(out_revision, revision) };
            Ok(())
        }
        Err(e) => {
            if e.kind == ErrorKind::ConditionFailed {
                // SAFETY: NULL or writable.
                unsafe { store_opt(out_revision, e.current_revision.unwrap_or(0)) };
            }
            Err(e.into())
        }
    }
}

/// Sets how long each request of this client waits for its answer before
/// failing with `NKV_ERR_TIMEOUT` (default 10000 ms). 0 is refused.
///
/// # Safety
/// `client` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn nkv_set_timeout(client: *mut nkv_client, timeout_ms: u32) -> nkv_status {
    guard(|| {
        // SAFETY: contract of this function.
        let handle = unsafe { acquire(client) }?;
        if timeout_ms == 0 {
            return Err(invalid("timeout_ms must be positive"));
        }
        handle
            .client
            .set_timeout(Duration::from_millis(u64::from(timeout_ms)));
        Ok(())
    })
}

/// Gives every nkv call this thread makes from now on until
/// `nkv_deadline_clear` at most `timeout_ms` from now, all together: a call
/// still waiting when the deadline passes fails with `NKV_ERR_TIMEOUT`
/// (a per-call timeout: set it just before the call). The client's own
/// timeout still applies when it is shorter.
#[no_mangle]
pub extern "C" fn nkv_deadline_set(timeout_ms: u32) {
    crate::client::set_deadline(Duration::from_millis(u64::from(timeout_ms)));
}

/// Removes this thread's deadline.
#[no_mangle]
pub extern "C" fn nkv_deadline_clear() {
    crate::client::clear_deadline();
}

/// The state of the client's connection now; `NKV_STATE_CLOSED` for NULL.
///
/// # Safety
/// `client` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn nkv_state(client: *mut nkv_client) -> nkv_conn_state {
    let mut state = nkv_conn_state::NKV_STATE_CLOSED;
    let _ = guard(|| {
        // SAFETY: contract of this function.
        let handle = unsafe { acquire(client) }?;
        state = match handle.client.state() {
            ConnState::Connected => nkv_conn_state::NKV_STATE_CONNECTED,
            ConnState::Disconnected => nkv_conn_state::NKV_STATE_DISCONNECTED,
            ConnState::Connecting => nkv_conn_state::NKV_STATE_CONNECTING,
            ConnState::Closed => nkv_conn_state::NKV_STATE_CLOSED,
        };
        Ok(())
    });
    state
}

/// The server's limits from its handshake (each output may be NULL):
/// longest key, largest value, largest frame, in bytes.
///
/// # Safety
/// `client` is NULL or a live handle; the outputs NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_server_limits(
    client: *mut nkv_client,
    out_max_key: *mut u32,
    out_max_value: *mut u32,
    out_max_frame: *mut u32,
) -> nkv_status {
    guard(|| {
        // SAFETY: contract of this function.
        let handle = unsafe { acquire(client) }?;
        let limits = handle.client.server_limits();
        // SAFETY: NULL or writable.
        unsafe {
            store_opt(out_max_key, limits.max_key);
            store_opt(out_max_value, limits.max_value);
            store_opt(out_max_frame, limits.max_frame);
        }
        Ok(())
    })
}

/// Checks that the server answers.
///
/// # Safety
/// `client` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn nkv_ping(client: *mut nkv_client) -> nkv_status {
    guard(|| {
        // SAFETY: contract of this function.
        unsafe { acquire(client) }?.client.ping()?;
        Ok(())
    })
}

/// Writes `len` bytes at `data` to the key (`key_len` bytes at `key`, or
/// `NKV_NUL` for a NUL-terminated key). On success `*out_revision` (if not
/// NULL) holds the revision of the write, which is durable under the
/// server's fsync policy. `NKV_ERR_TIMEOUT` means the answer did not come
/// in time: the write may still have happened.
///
/// # Safety
/// `client` is NULL or a live handle; `key` NULL or `key_len` readable bytes
/// (NUL-terminated with `NKV_NUL`); `data` NULL (with `len` 0) or `len`
/// readable bytes; `out_revision` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_put(
    client: *mut nkv_client,
    key: *const c_char,
    key_len: usize,
    data: *const c_void,
    len: usize,
    out_revision: *mut u64,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe {
        put(
            client,
            key,
            key_len,
            data,
            len,
            Condition::None,
            out_revision,
        )
    }
}

/// Like `nkv_put`, but only if the key's current revision equals
/// `expected_revision`, or, with 0, only if the key does not exist.
/// Otherwise `NKV_ERR_CONDITION_FAILED`, nothing is written, and
/// `*out_revision` holds the key's current revision (0: it does not exist).
///
/// # Safety
/// As `nkv_put`.
#[no_mangle]
pub unsafe extern "C" fn nkv_put_if(
    client: *mut nkv_client,
    key: *const c_char,
    key_len: usize,
    data: *const c_void,
    len: usize,
    expected_revision: u64,
    out_revision: *mut u64,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe {
        put(
            client,
            key,
            key_len,
            data,
            len,
            expect(expected_revision),
            out_revision,
        )
    }
}

/// Like `nkv_put`, but the key is ephemeral: it belongs to this client's
/// connection, and the server deletes it (subscribers see a DELETE) when
/// the connection ends however it ends (`nkv_close`, a crash, a lost
/// connection) and `grace_ms` more milliseconds have passed (at most
/// 600000; 0: at once). After a reconnect within the grace period the
/// client takes the key back by itself (the same value and grace, only if
/// nobody wrote the key meanwhile). A plain write or delete of the key, by
/// anyone, makes it an ordinary key again. Never written to disk.
///
/// # Safety
/// As `nkv_put`.
#[no_mangle]
pub unsafe extern "C" fn nkv_put_ephemeral(
    client: *mut nkv_client,
    key: *const c_char,
    key_len: usize,
    data: *const c_void,
    len: usize,
    grace_ms: u32,
    out_revision: *mut u64,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe {
        put_ephemeral(
            client,
            key,
            key_len,
            data,
            len,
            Condition::None,
            grace_ms,
            out_revision,
        )
    }
}

/// `nkv_put_ephemeral` with the condition of `nkv_put_if`: with
/// `expected_revision` 0 the key must not exist, which makes it a leader
/// claim (of several clients exactly one succeeds, and the key is freed
/// when that client goes away); otherwise its revision must equal
/// `expected_revision`. A failed condition gives
/// `NKV_ERR_CONDITION_FAILED` and the key's current revision in
/// `*out_revision`.
///
/// # Safety
/// As `nkv_put`.
#[no_mangle]
pub unsafe extern "C" fn nkv_put_ephemeral_if(
    client: *mut nkv_client,
    key: *const c_char,
    key_len: usize,
    data: *const c_void,
    len: usize,
    expected_revision: u64,
    grace_ms: u32,
    out_revision: *mut u64,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe {
        put_ephemeral(
            client,
            key,
            key_len,
            data,
            len,
            expect(expected_revision),
            grace_ms,
            out_revision,
        )
    }
}

/// # Safety
/// As `nkv_put`.
unsafe fn put(
    client: *mut nkv_client,
    key: *const c_char,
    key_len: usize,
    data: *const c_void,
    len: usize,
    condition: Condition,
    out_revision: *mut u64,
) -> nkv_status {
    guard(|| {
        // SAFETY: the caller's contract covers every pointer.
        let (handle, key, value) = unsafe {
            (
                acquire(client)?,
                key_arg(key, key_len, "key")?,
                bytes_arg(data.cast(), len)?,
            )
        };
        // SAFETY: NULL or writable.
        unsafe { written(handle.client.put(key, value, condition), out_revision) }
    })
}

/// # Safety
/// As `nkv_put`.
#[allow(clippy::too_many_arguments)] // the C signature
unsafe fn put_ephemeral(
    client: *mut nkv_client,
    key: *const c_char,
    key_len: usize,
    data: *const c_void,
    len: usize,
    condition: Condition,
    grace_ms: u32,
    out_revision: *mut u64,
) -> nkv_status {
    guard(|| {
        // SAFETY: the caller's contract covers every pointer.
        let (handle, key, value) = unsafe {
            (
                acquire(client)?,
                key_arg(key, key_len, "key")?,
                bytes_arg(data.cast(), len)?,
            )
        };
        let grace = Duration::from_millis(u64::from(grace_ms));
        let result = handle.client.put_ephemeral(key, value, condition, grace);
        // SAFETY: NULL or writable.
        unsafe { written(result, out_revision) }
    })
}

/// Reads the key. On success `*out` holds the value, to free with
/// `nkv_value_free`. A missing key gives `NKV_ERR_NOT_FOUND`.
///
/// # Safety
/// `client` is NULL or a live handle; `key` as in `nkv_put`; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_get(
    client: *mut nkv_client,
    key: *const c_char,
    key_len: usize,
    out: *mut *mut nkv_value,
) -> nkv_status {
    guard(|| {
        // SAFETY: contract of this function.
        let (handle, key) = unsafe { (acquire(client)?, key_arg(key, key_len, "key")?) };
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let entry = handle.client.get(key)?.ok_or_else(|| Failure {
            status: nkv_status::NKV_ERR_NOT_FOUND,
            message: format!("key {key:?} does not exist"),
        })?;
        // SAFETY: checked non-NULL above.
        unsafe { *out = OwnedValue::into_raw(entry) };
        Ok(())
    })
}

/// Lists every key under the prefix (`""` = every key), sorted by key. On
/// success `*out` holds the listing, to free with `nkv_entries_free`.
///
/// # Safety
/// `client` is NULL or a live handle; `prefix` as a key in `nkv_put`;
/// `out` writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_list(
    client: *mut nkv_client,
    prefix: *const c_char,
    prefix_len: usize,
    out: *mut *mut nkv_entries,
) -> nkv_status {
    guard(|| {
        // SAFETY: contract of this function.
        let (handle, prefix) =
            unsafe { (acquire(client)?, key_arg(prefix, prefix_len, "prefix")?) };
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let listing = handle.client.list(prefix)?;
        // SAFETY: checked non-NULL above.
        unsafe { *out = nkv_entries::into_raw(listing) };
        Ok(())
    })
}

/// Deletes the key; `NKV_ERR_NOT_FOUND` when it does not exist.
///
/// # Safety
/// `client` is NULL or a live handle; `key` as in `nkv_put`;
/// `out_revision` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_delete(
    client: *mut nkv_client,
    key: *const c_char,
    key_len: usize,
    out_revision: *mut u64,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe { delete(client, key, key_len, Condition::None, out_revision) }
}

/// Deletes the key only if its current revision equals `expected_revision`
/// (which must not be 0); otherwise `NKV_ERR_CONDITION_FAILED` and
/// `*out_revision` holds the key's current revision (0: it does not exist).
///
/// # Safety
/// As `nkv_delete`.
#[no_mangle]
pub unsafe extern "C" fn nkv_delete_if(
    client: *mut nkv_client,
    key: *const c_char,
    key_len: usize,
    expected_revision: u64,
    out_revision: *mut u64,
) -> nkv_status {
    if expected_revision == 0 {
        return guard(|| Err(invalid("expected_revision must not be 0")));
    }
    // SAFETY: the same contract.
    unsafe {
        delete(
            client,
            key,
            key_len,
            expect(expected_revision),
            out_revision,
        )
    }
}

/// # Safety
/// As `nkv_delete`.
unsafe fn delete(
    client: *mut nkv_client,
    key: *const c_char,
    key_len: usize,
    condition: Condition,
    out_revision: *mut u64,
) -> nkv_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let (handle, key) = unsafe { (acquire(client)?, key_arg(key, key_len, "key")?) };
        // SAFETY: NULL or writable.
        unsafe { written(handle.client.delete(key, condition), out_revision) }
    })
}

/// Deletes the prefix and every key below it in one atomic write (`""` =
/// every key). `*out_count` (if not NULL) gets the number of keys deleted,
/// `*out_revision` the revision of the delete (the current revision when
/// nothing matched).
///
/// # Safety
/// `client` is NULL or a live handle; `prefix` as a key in `nkv_put`; the
/// outputs NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_delete_prefix(
    client: *mut nkv_client,
    prefix: *const c_char,
    prefix_len: usize,
    out_revision: *mut u64,
    out_count: *mut u64,
) -> nkv_status {
    guard(|| {
        // SAFETY: contract of this function.
        let (handle, prefix) =
            unsafe { (acquire(client)?, key_arg(prefix, prefix_len, "prefix")?) };
        let (revision, count) = handle.client.delete_prefix(prefix)?;
        // SAFETY: NULL or writable.
        unsafe {
            store_opt(out_revision, revision);
            store_opt(out_count, u64::from(count));
        }
        Ok(())
    })
}

/// The server's counters (protocol.md, "STATS names"). On success `*out`
/// holds them, to free with `nkv_stats_free`.
///
/// # Safety
/// `client` is NULL or a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_stats(
    client: *mut nkv_client,
    out: *mut *mut nkv_stats_list,
) -> nkv_status {
    guard(|| {
        // SAFETY: contract of this function.
        let handle = unsafe { acquire(client) }?;
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let stats = handle.client.stats()?;
        // SAFETY: checked non-NULL above.
        unsafe { *out = nkv_stats_list::into_raw(stats) };
        Ok(())
    })
}

/// Asks the server to compact its store now; the bytes of its data files
/// before and after go to the outputs (each may be NULL).
///
/// # Safety
/// `client` is NULL or a live handle; the outputs NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_compact(
    client: *mut nkv_client,
    out_bytes_before: *mut u64,
    out_bytes_after: *mut u64,
) -> nkv_status {
    guard(|| {
        // SAFETY: contract of this function.
        let handle = unsafe { acquire(client) }?;
        let (before, after) = handle.client.compact()?;
        // SAFETY: NULL or writable.
        unsafe {
            store_opt(out_bytes_before, before);
            store_opt(out_bytes_after, after);
        }
        Ok(())
    })
}

/// The state `nkv_wait` waits for.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum nkv_wait_for {
    /// The key exists, whatever its value.
    NKV_WAIT_PRESENT = 0,
    /// The key holds exactly the bytes given.
    NKV_WAIT_VALUE = 1,
    /// The key does not exist.
    NKV_WAIT_ABSENT = 2,
}

/// Blocks until the key is in the state `until` (an `nkv_wait_for`) asks for (at once if it is
/// already): `NKV_OK` then; `NKV_ERR_TIMEOUT` when `timeout_ms` passes
/// first (a negative `timeout_ms` waits without limit). `data`/`len` is the
/// value for `NKV_WAIT_VALUE` (ignored otherwise). Goes on waiting across
/// a lost connection. Needs the dispatcher thread: in manual dispatch mode,
/// or from inside a callback, `NKV_ERR_INVALID_ARGUMENT`. A start-up gate
/// for services: Android's wait-for-property.
///
/// # Safety
/// `client` is NULL or a live handle; `key` as in `nkv_put`; `data` NULL
/// (with `len` 0) or `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn nkv_wait(
    client: *mut nkv_client,
    key: *const c_char,
    key_len: usize,
    until: c_int,
    data: *const c_void,
    len: usize,
    timeout_ms: i64,
) -> nkv_status {
    guard(|| {
        // SAFETY: the caller's contract covers every pointer.
        let (handle, key, value) = unsafe {
            (
                acquire(client)?,
                key_arg(key, key_len, "key")?,
                bytes_arg(data.cast(), len)?,
            )
        };
        // An int, not the enum: a value C passes outside it is refused,
        // never undefined behaviour.
        let until = match until {
            u if u == nkv_wait_for::NKV_WAIT_PRESENT as c_int => WaitFor::Present,
            u if u == nkv_wait_for::NKV_WAIT_VALUE as c_int => {
                WaitFor::Value(bytes::Bytes::copy_from_slice(value))
            }
            u if u == nkv_wait_for::NKV_WAIT_ABSENT as c_int => WaitFor::Absent,
            other => return Err(invalid(format!("unknown wait state {other}"))),
        };
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        match handle.client.wait(key, &until, timeout)? {
            true => Ok(()),
            false => Err(Failure::from(Error::new(
                ErrorKind::Timeout,
                format!("{key} did not reach the state in {timeout_ms} ms"),
            ))),
        }
    })
}
