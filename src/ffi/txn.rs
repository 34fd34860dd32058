//! Transactions: an opaque `nkv_txn` the program fills with conditions and
//! operations, then commits on a client, all or nothing.
//!
//! ```c
//! nkv_txn *t = nkv_txn_new();
//! nkv_txn_if_absent(t, "net.lock", NKV_NUL);
//! nkv_txn_put(t, "net.lock", NKV_NUL, "me", 2);
//! nkv_txn_delete_prefix(t, "tmp", NKV_NUL);
//! uint64_t rev; uint32_t deleted;
//! nkv_status s = nkv_txn_commit(client, t, &rev, &deleted);
//! if (s == NKV_ERR_CONDITION_FAILED) {
//!     size_t len;
//!     const char *key = nkv_txn_failed_key(t, &len); // rev: its revision
//! }
//! nkv_txn_free(t);
//! ```

use std::ffi::{c_char, c_void, CString};

use bytes::Bytes;

use super::handle::{acquire, nkv_client};
use super::{bytes_arg, guard, invalid, key_arg, nkv_status, Failure};
use crate::client::ErrorKind;
use crate::protocol::{Check, Txn, TxnCondition, TxnOp};

/// A transaction being built (opaque): conditions, then operations in the
/// order they are added. Create with `nkv_txn_new`, fill with
/// `nkv_txn_if_*` and `nkv_txn_put`/`_delete`/`_delete_prefix`, apply with
/// `nkv_txn_commit` (as often as wanted), free with `nkv_txn_free`. Not for
/// use by two threads at once.
pub struct nkv_txn {
    txn: Txn,
    /// The key of the condition that failed the last commit.
    failed_key: Option<CString>,
}

/// A new, empty transaction; NULL only if the library failed internally.
#[no_mangle]
pub extern "C" fn nkv_txn_new() -> *mut nkv_txn {
    let mut out = std::ptr::null_mut();
    let _ = guard(|| {
        out = Box::into_raw(Box::new(nkv_txn {
            txn: Txn::new(),
            failed_key: None,
        }));
        Ok(())
    });
    out
}

/// Frees a transaction (and the key `nkv_txn_failed_key` returned). NULL is
/// fine.
///
/// # Safety
/// `txn` is NULL or a pointer from `nkv_txn_new` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn nkv_txn_free(txn: *mut nkv_txn) {
    if !txn.is_null() {
        // SAFETY: from `nkv_txn_new`, freed once by contract.
        let _ = std::panic::catch_unwind(|| drop(unsafe { Box::from_raw(txn) }));
    }
}

/// Adds to `txn` what `add` makes of a checked key.
///
/// # Safety
/// `txn` is NULL or a live pointer from `nkv_txn_new`; `key` NULL or
/// `key_len` readable bytes (NUL-terminated with `NKV_NUL`).
unsafe fn add(
    txn: *mut nkv_txn,
    key: *const c_char,
    key_len: usize,
    what: &str,
    add: impl FnOnce(&mut Txn, String) -> Result<(), Failure>,
) -> nkv_status {
    guard(|| {
        // SAFETY: NULL or live, by contract.
        let txn = unsafe { txn.as_mut() }.ok_or_else(|| invalid("txn is NULL"))?;
        // SAFETY: the caller's contract.
        let key = unsafe { key_arg(key, key_len, what) }?;
        add(&mut txn.txn, key.to_owned())
    })
}

/// # Safety
/// As `add`.
unsafe fn condition(
    txn: *mut nkv_txn,
    key: *const c_char,
    key_len: usize,
    check: Check,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe {
        add(txn, key, key_len, "key", |t, key| {
            t.conditions.push(TxnCondition { key, check });
            Ok(())
        })
    }
}

/// Adds a condition: the key must not exist. Keys are checked by
/// `nkv_txn_commit` (`NKV_ERR_INVALID_KEY`); here only NULL and UTF-8.
///
/// # Safety
/// `txn` is NULL or live; `key` NULL or `key_len` readable bytes
/// (NUL-terminated with `NKV_NUL`).
#[no_mangle]
pub unsafe extern "C" fn nkv_txn_if_absent(
    txn: *mut nkv_txn,
    key: *const c_char,
    key_len: usize,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe { condition(txn, key, key_len, Check::Absent) }
}

/// Adds a condition: the key must exist.
///
/// # Safety
/// As `nkv_txn_if_absent`.
#[no_mangle]
pub unsafe extern "C" fn nkv_txn_if_present(
    txn: *mut nkv_txn,
    key: *const c_char,
    key_len: usize,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe { condition(txn, key, key_len, Check::Present) }
}

/// Adds a condition: the key must exist at exactly `revision`.
///
/// # Safety
/// As `nkv_txn_if_absent`.
#[no_mangle]
pub unsafe extern "C" fn nkv_txn_if_revision(
    txn: *mut nkv_txn,
    key: *const c_char,
    key_len: usize,
    revision: u64,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe { condition(txn, key, key_len, Check::RevisionEquals(revision)) }
}

/// Adds an operation: set the key to the `len` bytes at `data` (copied).
///
/// # Safety
/// As `nkv_txn_if_absent`; `data` NULL (with `len` 0) or `len` readable
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn nkv_txn_put(
    txn: *mut nkv_txn,
    key: *const c_char,
    key_len: usize,
    data: *const c_void,
    len: usize,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe {
        add(txn, key, key_len, "key", |t, key| {
            // SAFETY: `data` is NULL (len 0) or `len` readable bytes.
            let value = Bytes::copy_from_slice(bytes_arg(data.cast(), len)?);
            t.ops.push(TxnOp::Put { key, value });
            Ok(())
        })
    }
}

/// Adds an operation: delete the key (nothing happens if it is absent).
///
/// # Safety
/// As `nkv_txn_if_absent`.
#[no_mangle]
pub unsafe extern "C" fn nkv_txn_delete(
    txn: *mut nkv_txn,
    key: *const c_char,
    key_len: usize,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe {
        add(txn, key, key_len, "key", |t, key| {
            t.ops.push(TxnOp::Delete { key });
            Ok(())
        })
    }
}

/// Adds an operation: delete the prefix and every key under it (`""`:
/// every key).
///
/// # Safety
/// As `nkv_txn_if_absent`, for the prefix.
#[no_mangle]
pub unsafe extern "C" fn nkv_txn_delete_prefix(
    txn: *mut nkv_txn,
    prefix: *const c_char,
    prefix_len: usize,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe {
        add(txn, prefix, prefix_len, "prefix", |t, prefix| {
            t.ops.push(TxnOp::DeletePrefix { prefix });
            Ok(())
        })
    }
}

/// Applies the transaction on the client: every condition is checked
/// against the state before it; if all hold, every operation is applied in
/// order, all under one revision (`*out_revision`; the current revision
/// when nothing changed), deleting `*out_deleted` keys. Otherwise nothing
/// is written and the status is `NKV_ERR_CONDITION_FAILED`:
/// `nkv_txn_failed_key` names the first condition's key that failed,
/// `*out_revision` holds that key's current revision (0: absent), and the
/// last error says both. More than 256 conditions or 1024 operations give
/// `NKV_ERR_LIMIT`, too many bytes `NKV_ERR_TOO_LARGE`. The transaction is
/// left as it was: it may be committed again. Each output may be NULL.
///
/// # Safety
/// `client` is NULL or a live handle; `txn` NULL or a live pointer from
/// `nkv_txn_new`; the outputs NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_txn_commit(
    client: *mut nkv_client,
    txn: *mut nkv_txn,
    out_revision: *mut u64,
    out_deleted: *mut u32,
) -> nkv_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let handle = unsafe { acquire(client) }?;
        // SAFETY: NULL or live, by contract.
        let txn = unsafe { txn.as_mut() }.ok_or_else(|| invalid("txn is NULL"))?;
        txn.failed_key = None;
        match handle.client.txn(&txn.txn) {
            Ok(done) => {
                // SAFETY: NULL or writable.
                unsafe {
                    if let Some(out) = out_revision.as_mut() {
                        *out = done.revision;
                    }
                    if let Some(out) = out_deleted.as_mut() {
                        *out = done.deleted;
                    }
                }
                Ok(())
            }
            Err(e) => {
                if e.kind == ErrorKind::ConditionFailed {
                    // SAFETY: NULL or writable.
                    if let Some(out) = unsafe { out_revision.as_mut() } {
                        *out = e.current_revision.unwrap_or(0);
                    }
                    // Valid keys hold no NUL.
                    txn.failed_key = e.failed_key.clone().and_then(|k| CString::new(k).ok());
                }
                Err(e.into())
            }
        }
    })
}

/// After `nkv_txn_commit` returned `NKV_ERR_CONDITION_FAILED`: the key of
/// the condition that failed (NUL-terminated, `*out_len` bytes without the
/// NUL if `out_len` is not NULL), owned by `txn` until its next commit or
/// `nkv_txn_free`. NULL otherwise (and for a NULL `txn`).
///
/// # Safety
/// `txn` is NULL or a live pointer from `nkv_txn_new`; `out_len` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_txn_failed_key(
    txn: *const nkv_txn,
    out_len: *mut usize,
) -> *const c_char {
    let mut key = std::ptr::null();
    let _ = guard(|| {
        // SAFETY: NULL or live, by contract.
        let txn = unsafe { txn.as_ref() }.ok_or_else(|| invalid("txn is NULL"))?;
        if let Some(failed) = &txn.failed_key {
            key = failed.as_ptr();
            // SAFETY: NULL or writable.
            if let Some(out) = unsafe { out_len.as_mut() } {
                *out = failed.as_bytes().len();
            }
        }
        Ok(())
    });
    key
}
