//! The C data types, and the Rust allocations behind the ones C frees.
//!
//! Growth rules for the ABI: structs C receives by pointer (`nkv_value`,
//! `nkv_event`) may gain fields at their end; collections (`nkv_entries`,
//! `nkv_stats_list`) are opaque and read through functions, so no struct is
//! ever used as an array element.

use std::ffi::{c_char, c_int, CStr, CString};

use bytes::Bytes;

use super::{guard, invalid, nkv_status, text, Failure};
use crate::client::{Entry, ListEntry};

/// A value read by `nkv_get`; free with `nkv_value_free`.
#[repr(C)]
#[derive(Debug)]
pub struct nkv_value {
    /// The value's bytes (not NUL-terminated; NULL when `len` is 0).
    pub data: *const u8,
    /// Number of bytes at `data`.
    pub len: usize,
    /// Revision of the key's last write.
    pub revision: u64,
}

/// A listing from `nkv_list`, sorted by key (opaque): read it with
/// `nkv_entries_count`, `nkv_entries_key`, `nkv_entries_value` and
/// `nkv_entries_revision`; free it with `nkv_entries_free`.
pub struct nkv_entries {
    keys: Vec<CString>,
    values: Vec<Bytes>,
    revisions: Vec<u64>,
}

/// Named counters from `nkv_stats` (opaque): read them with
/// `nkv_stats_count`, `nkv_stats_name`, `nkv_stats_value` or
/// `nkv_stats_find`; free them with `nkv_stats_free`.
pub struct nkv_stats_list {
    names: Vec<CString>,
    values: Vec<u64>,
}

/// What a subscription event reports.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum nkv_event_kind {
    /// `key` now holds `data`/`len`, written at `revision`.
    NKV_EVENT_UPDATE = 0,
    /// `key` was deleted at `revision`.
    NKV_EVENT_DELETE = 1,
    /// The snapshot (or the resumed changes) is complete and consistent at
    /// `revision`; live events follow.
    NKV_EVENT_SYNCED = 2,
    /// Forget every key held for this subscription: a full snapshot and
    /// SYNCED follow.
    NKV_EVENT_RESET = 3,
    /// The connection was lost; the client reconnects and resumes, then
    /// sends the missed changes (or RESET and a snapshot) and SYNCED.
    NKV_EVENT_DISCONNECTED = 4,
    /// The subscription has ended (client closed, or the server ended it);
    /// `data`/`len` hold the reason as UTF-8 text. No event follows, and
    /// `free_user_data` comes right after.
    NKV_EVENT_CLOSED = 5,
    /// Grouped subscriptions only (`NKV_SUBSCRIBE_GROUPED`): the next
    /// `count` UPDATE and DELETE events belong together (one transaction or
    /// prefix delete, or updates merged across one because the callback
    /// was slow); applied together they make the view consistent at
    /// `revision`. Applying them one by one may show a state the store
    /// never had.
    NKV_EVENT_GROUP = 6,
}

/// The state of a client's connection (`nkv_state`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum nkv_conn_state {
    /// Connected.
    NKV_STATE_CONNECTED = 0,
    /// The connection was lost; the client waits before reconnecting.
    NKV_STATE_DISCONNECTED = 1,
    /// A reconnect attempt is under way.
    NKV_STATE_CONNECTING = 2,
    /// The client is closed (or the handle is NULL).
    NKV_STATE_CLOSED = 3,
}

/// One subscription event. Everything it points to is borrowed for the
/// duration of the callback only: copy what you keep.
///
/// UPDATE: `key`/`key_len`, `data`/`len`, `revision`, `coalesced`. DELETE:
/// `key`/`key_len`, `revision`, `coalesced`. SYNCED: `revision`. RESET,
/// DISCONNECTED: no fields. CLOSED: `data`/`len` = the reason (not
/// NUL-terminated). GROUP: `count`, `revision`. `coalesced` counts the
/// earlier updates of the key that were skipped because the subscriber was
/// behind (on the server's side and the client's). Unused pointers are
/// NULL, unused numbers 0.
#[repr(C)]
#[derive(Debug)]
pub struct nkv_event {
    /// What happened.
    pub kind: nkv_event_kind,
    /// The subscription the event belongs to (the id `nkv_subscribe`
    /// returned).
    pub subscription: u64,
    /// The key (NUL-terminated UTF-8), or NULL.
    pub key: *const c_char,
    /// Length of `key` in bytes (without the NUL), or 0.
    pub key_len: usize,
    /// The value or reason bytes, or NULL.
    pub data: *const u8,
    /// Number of bytes at `data`.
    pub len: usize,
    /// The revision the event is about, or 0.
    pub revision: u64,
    /// Updates of this key folded into this event, or 0.
    pub coalesced: u64,
    /// GROUP: how many of the following UPDATE and DELETE events belong to
    /// the group (2 or more); 0 for every other event.
    pub count: u32,
}

/// Flags of `nkv_subscribe_flags`, OR-ed together.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum nkv_subscribe_flag {
    /// Resume after `since_revision`: only the changes after it (or RESET
    /// and a snapshot when the server no longer has that history).
    NKV_SUBSCRIBE_RESUME = 1,
    /// Announce the events of one transaction or prefix delete with an
    /// `NKV_EVENT_GROUP` event before them.
    NKV_SUBSCRIBE_GROUPED = 2,
}

/// A subscription callback: runs on the client's dispatcher thread (or in
/// `nkv_dispatch`, in manual mode), one event at a time per client, in
/// order, and never before `nkv_subscribe` has returned its id. It may
/// call any nkv function, `nkv_unsubscribe` and `nkv_close` included.
pub type nkv_callback =
    Option<unsafe extern "C" fn(user_data: *mut std::ffi::c_void, event: *const nkv_event)>;

/// The allocation behind an `nkv_value` handed to C: the public part first
/// (so the pointer C holds is the allocation's), then what it borrows.
#[repr(C)]
pub(super) struct OwnedValue {
    public: nkv_value,
    value: Bytes,
}

impl OwnedValue {
    /// Moves `entry` to the heap and returns the pointer C will hold.
    pub(super) fn into_raw(entry: Entry) -> *mut nkv_value {
        let mut owned = Box::new(OwnedValue {
            public: nkv_value {
                data: std::ptr::null(),
                len: entry.value.len(),
                revision: entry.revision,
            },
            value: entry.value,
        });
        owned.public.data = data_ptr(&owned.value);
        Box::into_raw(owned).cast()
    }
}

impl nkv_entries {
    /// Moves a listing to the heap and returns the pointer C will hold.
    pub(super) fn into_raw(listing: Vec<ListEntry>) -> *mut nkv_entries {
        let mut out = nkv_entries {
            keys: Vec::with_capacity(listing.len()),
            values: Vec::with_capacity(listing.len()),
            revisions: Vec::with_capacity(listing.len()),
        };
        for entry in listing {
            // Valid keys hold no control characters, so no NUL either.
            out.keys.push(CString::new(entry.key).unwrap_or_default());
            out.values.push(entry.value);
            out.revisions.push(entry.revision);
        }
        Box::into_raw(Box::new(out))
    }
}

impl nkv_stats_list {
    /// Moves counters to the heap and returns the pointer C will hold.
    pub(super) fn into_raw(stats: Vec<(String, u64)>) -> *mut nkv_stats_list {
        let (names, values) = stats
            .into_iter()
            .map(|(n, v)| (CString::new(n).unwrap_or_default(), v))
            .unzip();
        Box::into_raw(Box::new(nkv_stats_list { names, values }))
    }
}

/// A pointer to the bytes, NULL for an empty value.
pub(super) fn data_ptr(bytes: &[u8]) -> *const u8 {
    if bytes.is_empty() {
        std::ptr::null()
    } else {
        bytes.as_ptr()
    }
}

/// Frees a value from `nkv_get`. NULL is fine.
///
/// # Safety
/// `value` is NULL or a pointer from `nkv_get` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn nkv_value_free(value: *mut nkv_value) {
    if value.is_null() {
        return;
    }
    // SAFETY: `value` came from `OwnedValue::into_raw` (its first field is
    // the public part, at offset 0) and is freed once by contract.
    let owned = unsafe { Box::from_raw(value.cast::<OwnedValue>()) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(owned)));
}

/// Number of entries in a listing (0 for NULL).
///
/// # Safety
/// `entries` is NULL or a live pointer from `nkv_list`.
#[no_mangle]
pub unsafe extern "C" fn nkv_entries_count(entries: *const nkv_entries) -> usize {
    // SAFETY: NULL or live by contract.
    unsafe { entries.as_ref() }.map_or(0, |e| e.keys.len())
}

/// The key of entry `i` (NUL-terminated, valid until `nkv_entries_free`),
/// its length in `*key_len` when not NULL; NULL when `i` is out of range.
///
/// # Safety
/// `entries` is NULL or live; `key_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_entries_key(
    entries: *const nkv_entries,
    i: usize,
    key_len: *mut usize,
) -> *const c_char {
    // SAFETY: NULL or live by contract.
    let Some(key) = unsafe { entries.as_ref() }.and_then(|e| e.keys.get(i)) else {
        return std::ptr::null();
    };
    // SAFETY: NULL or writable by contract.
    if let Some(out) = unsafe { key_len.as_mut() } {
        *out = key.as_bytes().len();
    }
    key.as_ptr()
}

/// The value of entry `i` (valid until `nkv_entries_free`; NULL when empty
/// or `i` is out of range), its length in `*len` when not NULL.
///
/// # Safety
/// `entries` is NULL or live; `len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_entries_value(
    entries: *const nkv_entries,
    i: usize,
    len: *mut usize,
) -> *const u8 {
    // SAFETY: NULL or live by contract.
    let value = unsafe { entries.as_ref() }.and_then(|e| e.values.get(i));
    // SAFETY: NULL or writable by contract.
    if let Some(out) = unsafe { len.as_mut() } {
        *out = value.map_or(0, |v| v.len());
    }
    value.map_or(std::ptr::null(), |v| data_ptr(v))
}

/// The revision of entry `i`'s last write (0 when `i` is out of range).
///
/// # Safety
/// `entries` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn nkv_entries_revision(entries: *const nkv_entries, i: usize) -> u64 {
    // SAFETY: NULL or live by contract.
    unsafe { entries.as_ref() }
        .and_then(|e| e.revisions.get(i).copied())
        .unwrap_or(0)
}

/// Frees a listing from `nkv_list`. NULL is fine.
///
/// # Safety
/// `entries` is NULL or a pointer from `nkv_list` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn nkv_entries_free(entries: *mut nkv_entries) {
    if entries.is_null() {
        return;
    }
    // SAFETY: from `nkv_entries::into_raw`, freed once by contract.
    let owned = unsafe { Box::from_raw(entries) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(owned)));
}

/// Number of counters (0 for NULL).
///
/// # Safety
/// `stats` is NULL or a live pointer from `nkv_stats`.
#[no_mangle]
pub unsafe extern "C" fn nkv_stats_count(stats: *const nkv_stats_list) -> usize {
    // SAFETY: NULL or live by contract.
    unsafe { stats.as_ref() }.map_or(0, |s| s.names.len())
}

/// The name of counter `i` (NUL-terminated, valid until `nkv_stats_free`),
/// or NULL when `i` is out of range.
///
/// # Safety
/// `stats` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn nkv_stats_name(stats: *const nkv_stats_list, i: usize) -> *const c_char {
    // SAFETY: NULL or live by contract.
    unsafe { stats.as_ref() }
        .and_then(|s| s.names.get(i))
        .map_or(std::ptr::null(), |n| n.as_ptr())
}

/// The value of counter `i` (0 when `i` is out of range).
///
/// # Safety
/// `stats` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn nkv_stats_value(stats: *const nkv_stats_list, i: usize) -> u64 {
    // SAFETY: NULL or live by contract.
    unsafe { stats.as_ref() }
        .and_then(|s| s.values.get(i).copied())
        .unwrap_or(0)
}

/// The value of the counter called `name` (see protocol.md, "STATS
/// names") in `*out`; `NKV_ERR_NOT_FOUND` when the server did not report it.
///
/// # Safety
/// `stats` is NULL or live; `name` NULL or NUL-terminated; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_stats_find(
    stats: *const nkv_stats_list,
    name: *const c_char,
    out: *mut u64,
) -> nkv_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let stats = unsafe { stats.as_ref() }.ok_or_else(|| invalid("stats is NULL"))?;
        // SAFETY: the caller's contract.
        let name = unsafe { text(name, "name") }?;
        // SAFETY: the caller's contract.
        let out = unsafe { out.as_mut() }.ok_or_else(|| invalid("out is NULL"))?;
        let at = stats
            .names
            .iter()
            .position(|n| n.as_bytes() == name.as_bytes())
            .ok_or_else(|| Failure {
                status: nkv_status::NKV_ERR_NOT_FOUND,
                message: format!("no counter {name:?}"),
            })?;
        *out = stats.values[at];
        Ok(())
    })
}

/// Frees counters from `nkv_stats`. NULL is fine.
///
/// # Safety
/// `stats` is NULL or a pointer from `nkv_stats` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn nkv_stats_free(stats: *mut nkv_stats_list) {
    if stats.is_null() {
        return;
    }
    // SAFETY: from `nkv_stats_list::into_raw`, freed once by contract.
    let owned = unsafe { Box::from_raw(stats) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(owned)));
}

/// The name of a connection state, e.g. `"NKV_STATE_CONNECTED"`; any other
/// integer gives `"NKV_STATE_UNKNOWN"`. Never NULL.
#[no_mangle]
pub extern "C" fn nkv_state_str(state: c_int) -> *const c_char {
    let name: &CStr = match state {
        0 => c"NKV_STATE_CONNECTED",
        1 => c"NKV_STATE_DISCONNECTED",
        2 => c"NKV_STATE_CONNECTING",
        3 => c"NKV_STATE_CLOSED",
        _ => c"NKV_STATE_UNKNOWN",
    };
    name.as_ptr()
}
