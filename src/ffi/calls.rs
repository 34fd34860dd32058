//! The exported request functions: connect, close, put, get, list, delete.

use std::ffi::c_char;
use std::time::Duration;

use super::types::{nkv_client, nkv_entries, nkv_value, OwnedEntries, OwnedValue};
use super::{bytes_arg, guard, invalid, nkv_status, text, Failure};
use crate::addr::Address;
use crate::client::{Client, ClientOptions};
use crate::protocol::Condition;

/// Borrows the client behind a handle.
///
/// # Safety
/// `client` is NULL or a live pointer from `nkv_connect`.
pub(super) unsafe fn client_ref<'a>(client: *const nkv_client) -> Result<&'a Client, Failure> {
    // SAFETY: non-NULL handles are live by the caller's contract.
    unsafe { client.as_ref() }
        .map(|c| &c.client)
        .ok_or_else(|| invalid("client is NULL"))
}

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

/// Connects to `addr` (`"unix:PATH"` or `"tcp:HOST:PORT"`; NULL: the
/// `NKV_ADDR` environment variable, else the default socket) and performs
/// the handshake. On success `*out` holds a client to free with
/// `nkv_close`.
///
/// # Safety
/// `addr` is NULL or a NUL-terminated string; `out` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn nkv_connect(addr: *const c_char, out: *mut *mut nkv_client) -> nkv_status {
    guard(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let address = if addr.is_null() {
            Address::from_env_or_default()
        } else {
            // SAFETY: non-NULL and NUL-terminated by contract.
            unsafe { text(addr, "addr") }?.parse()
        }
        .map_err(|e| invalid(e.to_string()))?;
        let options = ClientOptions {
            name: concat!("libnkv ", env!("CARGO_PKG_VERSION")).into(),
            ..ClientOptions::default()
        };
        let client = Client::connect(&address, options)?;
        let handle = Box::into_raw(Box::new(nkv_client { client }));
        // SAFETY: checked non-NULL above.
        unsafe { *out = handle };
        Ok(())
    })
}

/// Closes the client: every subscription gets a final CLOSED event and its
/// `free_user_data`; requests in flight fail with `NKV_ERR_CLOSED`. NULL is
/// fine. The handle is invalid afterwards.
///
/// # Safety
/// `client` is NULL or a pointer from `nkv_connect` not yet closed, and no
/// other thread uses it during or after this call.
#[no_mangle]
pub unsafe extern "C" fn nkv_close(client: *mut nkv_client) {
    if client.is_null() {
        return;
    }
    // SAFETY: a live handle from `nkv_connect`, closed once by contract.
    let handle = unsafe { Box::from_raw(client) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle.client.close()));
}

/// Sets how long each request waits for its answer before failing with
/// `NKV_ERR_TIMEOUT` (default 10000 ms). 0 is refused.
///
/// # Safety
/// `client` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn nkv_set_timeout(client: *mut nkv_client, timeout_ms: u32) -> nkv_status {
    guard(|| {
        // SAFETY: contract of this function.
        let client = unsafe { client_ref(client) }?;
        if timeout_ms == 0 {
            return Err(invalid("timeout_ms must be positive"));
        }
        client.set_timeout(Duration::from_millis(u64::from(timeout_ms)));
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
        unsafe { client_ref(client) }?.ping()?;
        Ok(())
    })
}

/// Writes `len` bytes at `data` to `key`. On success `*out_revision` (if
/// not NULL) holds the revision of the write, which is durable under the
/// server's fsync policy.
///
/// # Safety
/// `client` is NULL or a live handle; `key` NULL or NUL-terminated; `data`
/// NULL (with `len` 0) or `len` readable bytes; `out_revision` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_put(
    client: *mut nkv_client,
    key: *const c_char,
    data: *const u8,
    len: usize,
    out_revision: *mut u64,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe { put(client, key, data, len, Condition::None, out_revision) }
}

/// Like `nkv_put`, but only if the key's current revision equals
/// `expected_revision`, or, with 0, only if the key does not exist.
/// Otherwise `NKV_ERR_CONDITION_FAILED` and nothing is written.
///
/// # Safety
/// As `nkv_put`.
#[no_mangle]
pub unsafe extern "C" fn nkv_put_if(
    client: *mut nkv_client,
    key: *const c_char,
    data: *const u8,
    len: usize,
    expected_revision: u64,
    out_revision: *mut u64,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe {
        put(
            client,
            key,
            data,
            len,
            expect(expected_revision),
            out_revision,
        )
    }
}

/// # Safety
/// As `nkv_put`.
unsafe fn put(
    client: *mut nkv_client,
    key: *const c_char,
    data: *const u8,
    len: usize,
    condition: Condition,
    out_revision: *mut u64,
) -> nkv_status {
    guard(|| {
        // SAFETY: the caller's contract covers every pointer.
        let (client, key, value) = unsafe {
            (
                client_ref(client)?,
                text(key, "key")?,
                bytes_arg(data, len)?,
            )
        };
        let revision = client.put(key, value, condition)?;
        // SAFETY: NULL or writable.
        unsafe { store_opt(out_revision, revision) };
        Ok(())
    })
}

/// Reads `key`. On success `*out` holds the value, to free with
/// `nkv_value_free`. A missing key gives `NKV_ERR_NOT_FOUND`.
///
/// # Safety
/// `client` is NULL or a live handle; `key` NULL or NUL-terminated; `out`
/// writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_get(
    client: *mut nkv_client,
    key: *const c_char,
    out: *mut *mut nkv_value,
) -> nkv_status {
    guard(|| {
        // SAFETY: contract of this function.
        let (client, key) = unsafe { (client_ref(client)?, text(key, "key")?) };
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let entry = client.get(key)?.ok_or_else(|| Failure {
            status: nkv_status::NKV_ERR_NOT_FOUND,
            message: format!("key {key:?} does not exist"),
        })?;
        // SAFETY: checked non-NULL above.
        unsafe { *out = OwnedValue::into_raw(entry) };
        Ok(())
    })
}

/// Lists every key under `prefix` (`""` = every key), sorted by key. On
/// success `*out` holds the listing, to free with `nkv_entries_free`.
///
/// # Safety
/// `client` is NULL or a live handle; `prefix` NULL or NUL-terminated;
/// `out` writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_list(
    client: *mut nkv_client,
    prefix: *const c_char,
    out: *mut *mut nkv_entries,
) -> nkv_status {
    guard(|| {
        // SAFETY: contract of this function.
        let (client, prefix) = unsafe { (client_ref(client)?, text(prefix, "prefix")?) };
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let listing = client.list(prefix)?;
        // SAFETY: checked non-NULL above.
        unsafe { *out = OwnedEntries::into_raw(listing) };
        Ok(())
    })
}

/// Deletes `key`; `NKV_ERR_NOT_FOUND` when it does not exist.
///
/// # Safety
/// `client` is NULL or a live handle; `key` NULL or NUL-terminated;
/// `out_revision` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_delete(
    client: *mut nkv_client,
    key: *const c_char,
    out_revision: *mut u64,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe { delete(client, key, Condition::None, out_revision) }
}

/// Deletes `key` only if its current revision equals `expected_revision`
/// (which must not be 0); otherwise `NKV_ERR_CONDITION_FAILED`.
///
/// # Safety
/// As `nkv_delete`.
#[no_mangle]
pub unsafe extern "C" fn nkv_delete_if(
    client: *mut nkv_client,
    key: *const c_char,
    expected_revision: u64,
    out_revision: *mut u64,
) -> nkv_status {
    if expected_revision == 0 {
        return guard(|| Err(invalid("expected_revision must not be 0")));
    }
    // SAFETY: the same contract.
    unsafe { delete(client, key, expect(expected_revision), out_revision) }
}

/// # Safety
/// As `nkv_delete`.
unsafe fn delete(
    client: *mut nkv_client,
    key: *const c_char,
    condition: Condition,
    out_revision: *mut u64,
) -> nkv_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let (client, key) = unsafe { (client_ref(client)?, text(key, "key")?) };
        let revision = client.delete(key, condition)?;
        // SAFETY: NULL or writable.
        unsafe { store_opt(out_revision, revision) };
        Ok(())
    })
}

/// Deletes `prefix` and every key below it in one atomic write (`""` =
/// every key). `*out_count` (if not NULL) gets the number of keys deleted,
/// `*out_revision` the revision of the delete (the current revision when
/// nothing matched).
///
/// # Safety
/// `client` is NULL or a live handle; `prefix` NULL or NUL-terminated; the
/// outputs NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_delete_prefix(
    client: *mut nkv_client,
    prefix: *const c_char,
    out_revision: *mut u64,
    out_count: *mut u64,
) -> nkv_status {
    guard(|| {
        // SAFETY: contract of this function.
        let (client, prefix) = unsafe { (client_ref(client)?, text(prefix, "prefix")?) };
        let (revision, count) = client.delete_prefix(prefix)?;
        // SAFETY: NULL or writable.
        unsafe {
            store_opt(out_revision, revision);
            store_opt(out_count, u64::from(count));
        }
        Ok(())
    })
}
