//! The C data types, and the Rust allocations behind the ones C frees.

use std::ffi::{c_char, c_void, CString};

use bytes::Bytes;

use crate::client::{Client, Entry, ListEntry};

/// A client connection (opaque). Create with `nkv_connect`, destroy with
/// `nkv_close`. One client may be used from many threads at once.
pub struct nkv_client {
    pub(super) client: Client,
}

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

/// One key of a listing.
#[repr(C)]
#[derive(Debug)]
pub struct nkv_entry {
    /// The key, NUL-terminated UTF-8.
    pub key: *const c_char,
    /// The value's bytes (not NUL-terminated).
    pub data: *const u8,
    /// Number of bytes at `data`.
    pub len: usize,
    /// Revision of the key's last write.
    pub revision: u64,
}

/// A listing from `nkv_list`, sorted by key; free with `nkv_entries_free`.
#[repr(C)]
#[derive(Debug)]
pub struct nkv_entries {
    /// `count` entries.
    pub items: *const nkv_entry,
    /// Number of entries.
    pub count: usize,
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
    /// `data`/`len` hold the reason as UTF-8 text. No event follows.
    NKV_EVENT_CLOSED = 5,
}

/// One subscription event. Everything it points to is borrowed for the
/// duration of the callback only: copy what you keep.
///
/// UPDATE: `key`, `data`/`len`, `revision`, `coalesced`. DELETE: `key`,
/// `revision`, `coalesced`. SYNCED: `revision`. RESET, DISCONNECTED: no
/// fields. CLOSED: `data`/`len` = the reason (not NUL-terminated).
/// `coalesced` counts the earlier updates of the key that were skipped
/// because the subscriber was behind. Unused pointers are NULL, unused
/// numbers 0.
#[repr(C)]
#[derive(Debug)]
pub struct nkv_event {
    /// What happened.
    pub kind: nkv_event_kind,
    /// The key (NUL-terminated UTF-8), or NULL.
    pub key: *const c_char,
    /// The value or reason bytes, or NULL.
    pub data: *const u8,
    /// Number of bytes at `data`.
    pub len: usize,
    /// The revision the event is about, or 0.
    pub revision: u64,
    /// Updates of this key folded into this event, or 0.
    pub coalesced: u64,
}

/// A subscription callback: runs on the client's dispatcher thread, one
/// event at a time, in order. It may call any nkv function, including
/// `nkv_unsubscribe` of its own subscription.
pub type nkv_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, event: *const nkv_event)>;

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

/// The allocation behind an `nkv_entries` handed to C.
#[repr(C)]
pub(super) struct OwnedEntries {
    public: nkv_entries,
    items: Vec<nkv_entry>,
    /// The keys the items point into; a `CString`'s heap buffer does not
    /// move when the vector does.
    keys: Vec<CString>,
    /// The values the items point into.
    values: Vec<Bytes>,
}

impl OwnedEntries {
    /// Moves a listing to the heap and returns the pointer C will hold.
    pub(super) fn into_raw(listing: Vec<ListEntry>) -> *mut nkv_entries {
        let mut keys = Vec::with_capacity(listing.len());
        let mut values = Vec::with_capacity(listing.len());
        let mut items = Vec::with_capacity(listing.len());
        for entry in listing {
            // Valid keys hold no control characters, so no NUL either.
            let key = CString::new(entry.key).unwrap_or_default();
            items.push(nkv_entry {
                key: key.as_ptr(),
                data: data_ptr(&entry.value),
                len: entry.value.len(),
                revision: entry.revision,
            });
            keys.push(key);
            values.push(entry.value);
        }
        let owned = Box::new(OwnedEntries {
            public: nkv_entries {
                items: items.as_ptr(),
                count: items.len(),
            },
            items,
            keys,
            values,
        });
        Box::into_raw(owned).cast()
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

/// Frees a listing from `nkv_list`. NULL is fine.
///
/// # Safety
/// `entries` is NULL or a pointer from `nkv_list` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn nkv_entries_free(entries: *mut nkv_entries) {
    if entries.is_null() {
        return;
    }
    // SAFETY: `entries` came from `OwnedEntries::into_raw` and is freed
    // once by contract.
    let owned = unsafe { Box::from_raw(entries.cast::<OwnedEntries>()) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(owned)));
}
