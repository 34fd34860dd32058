//! Subscriptions: C callbacks, run by the client's dispatcher thread or, in
//! manual mode, by `nkv_dispatch` on the program's own thread.
//!
//! Where `free_user_data` runs, exactly once per subscription:
//! - a failed `nkv_subscribe`: on the calling thread, before it returns
//!   (whatever the failure, a timeout included);
//! - `nkv_unsubscribe`: on the calling thread, before it returns; from
//!   inside the subscription's own callback, right after that callback
//!   returns, on the thread that ran it;
//! - `nkv_close`: on the closing thread, after the subscription's final
//!   CLOSED event, before `nkv_close` returns (from inside a callback: right
//!   after that callback returns);
//! - the server ended the subscription: after its CLOSED event, on the
//!   thread that ran that callback.

use std::ffi::{c_char, c_int, c_void, CString};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use super::handle::{acquire, nkv_client};
use super::types::{data_ptr, nkv_callback, nkv_event, nkv_event_kind, nkv_subscribe_flag};
use super::{failure, guard, invalid, key_arg, nkv_status, Failure};
use crate::client::{SubscribeOptions, SubscriptionEvent};

/// The C side of one subscription: its callback, its user data, the
/// function that frees the user data, and a reference on the client handle
/// so that the handle outlives every call of the callback (`nkv_close` from
/// inside a callback frees nothing a later callback still uses).
struct CallbackHandler {
    callback: unsafe extern "C" fn(*mut c_void, *const nkv_event),
    user_data: *mut c_void,
    free_user_data: Option<unsafe extern "C" fn(*mut c_void)>,
    _client: Arc<nkv_client>,
}

// SAFETY: the user data is only ever touched by the C callbacks and
// `free_user_data`, which the API documents as running on the threads
// listed in the module docs; passing the pointer there is the point of
// the API.
unsafe impl Send for CallbackHandler {}

impl CallbackHandler {
    fn deliver(&mut self, subscription: u32, event: &SubscriptionEvent) {
        // The key must be NUL-terminated for C; valid keys hold no NUL.
        let key_text = |key: &str| CString::new(key).unwrap_or_default();
        let (kind, key, data, revision, coalesced): (_, Option<CString>, &[u8], u64, u64) =
            match event {
                SubscriptionEvent::Update {
                    key,
                    value,
                    revision,
                    coalesced,
                } => (
                    nkv_event_kind::NKV_EVENT_UPDATE,
                    Some(key_text(key)),
                    value,
                    *revision,
                    *coalesced,
                ),
                SubscriptionEvent::Delete {
                    key,
                    revision,
                    coalesced,
                } => (
                    nkv_event_kind::NKV_EVENT_DELETE,
                    Some(key_text(key)),
                    &[],
                    *revision,
                    *coalesced,
                ),
                SubscriptionEvent::Synced { revision } => {
                    (nkv_event_kind::NKV_EVENT_SYNCED, None, &[], *revision, 0)
                }
                SubscriptionEvent::Reset => (nkv_event_kind::NKV_EVENT_RESET, None, &[], 0, 0),
                SubscriptionEvent::Group { revision, .. } => {
                    (nkv_event_kind::NKV_EVENT_GROUP, None, &[], *revision, 0)
                }
                SubscriptionEvent::Disconnected => {
                    (nkv_event_kind::NKV_EVENT_DISCONNECTED, None, &[], 0, 0)
                }
                SubscriptionEvent::Closed { reason } => (
                    nkv_event_kind::NKV_EVENT_CLOSED,
                    None,
                    reason.as_bytes(),
                    0,
                    0,
                ),
            };
        let event = nkv_event {
            kind,
            subscription: u64::from(subscription),
            key: key.as_ref().map_or(std::ptr::null(), |k| k.as_ptr()),
            key_len: key.as_ref().map_or(0, |k| k.as_bytes().len()),
            data: data_ptr(data),
            len: data.len(),
            revision,
            coalesced,
            count: match event {
                SubscriptionEvent::Group { count, .. } => *count,
                _ => 0,
            },
        };
        // SAFETY: the callback was given to `nkv_subscribe` for exactly this
        // use; `event` and what it points to outlive the call.
        unsafe { (self.callback)(self.user_data, &event) };
    }
}

impl Drop for CallbackHandler {
    fn drop(&mut self) {
        if let Some(free) = self.free_user_data {
            // SAFETY: the client drops each handler exactly once, after its
            // last callback; that is when C asked for its data to be freed.
            unsafe { free(self.user_data) };
        }
    }
}

/// Subscribes to the prefix (`prefix_len` bytes, or `NKV_NUL`) and
/// everything below it. `cb` receives an UPDATE per existing key, then
/// SYNCED, then every change, each event carrying the subscription id; the
/// first call comes only after this has returned (with the id in
/// `*out_subscription`, if not NULL). `free_user_data` (may be NULL) is
/// called once with `user_data` when the subscription is over (see the
/// header's overview for on which thread); on failure it has been called,
/// on this thread, before this returns.
///
/// # Safety
/// `client` is NULL or a live handle; `prefix` NULL or `prefix_len`
/// readable bytes (NUL-terminated with `NKV_NUL`); `cb` and
/// `free_user_data` callable from another thread with `user_data`;
/// `out_subscription` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_subscribe(
    client: *mut nkv_client,
    prefix: *const c_char,
    prefix_len: usize,
    cb: nkv_callback,
    user_data: *mut c_void,
    free_user_data: Option<unsafe extern "C" fn(*mut c_void)>,
    out_subscription: *mut u64,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe {
        subscribe(
            client,
            prefix,
            prefix_len,
            Ok(SubscribeOptions::default()),
            cb,
            user_data,
            free_user_data,
            out_subscription,
        )
    }
}

/// Like `nkv_subscribe`, resuming after `since_revision`: the callback
/// gets only the changes after it (deletes included), then SYNCED; or, when
/// the server no longer has that history, RESET and a full snapshot.
///
/// # Safety
/// As `nkv_subscribe`.
#[no_mangle]
pub unsafe extern "C" fn nkv_subscribe_since(
    client: *mut nkv_client,
    prefix: *const c_char,
    prefix_len: usize,
    since_revision: u64,
    cb: nkv_callback,
    user_data: *mut c_void,
    free_user_data: Option<unsafe extern "C" fn(*mut c_void)>,
    out_subscription: *mut u64,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe {
        subscribe(
            client,
            prefix,
            prefix_len,
            Ok(SubscribeOptions {
                since: Some(since_revision),
                grouped: false,
            }),
            cb,
            user_data,
            free_user_data,
            out_subscription,
        )
    }
}

/// Like `nkv_subscribe`, with `flags` (`nkv_subscribe_flag` values OR-ed
/// together, 0 for none): `NKV_SUBSCRIBE_RESUME` resumes after
/// `since_revision` as `nkv_subscribe_since` does (`since_revision` is
/// ignored without it); `NKV_SUBSCRIBE_GROUPED` makes the callback receive
/// an `NKV_EVENT_GROUP` before the live events of one transaction or
/// prefix delete, with their number in `count`. Unknown flags give
/// `NKV_ERR_INVALID_ARGUMENT` (and `free_user_data` has run).
///
/// # Safety
/// As `nkv_subscribe`.
#[no_mangle]
pub unsafe extern "C" fn nkv_subscribe_flags(
    client: *mut nkv_client,
    prefix: *const c_char,
    prefix_len: usize,
    flags: u32,
    since_revision: u64,
    cb: nkv_callback,
    user_data: *mut c_void,
    free_user_data: Option<unsafe extern "C" fn(*mut c_void)>,
    out_subscription: *mut u64,
) -> nkv_status {
    const RESUME: u32 = nkv_subscribe_flag::NKV_SUBSCRIBE_RESUME as u32;
    const GROUPED: u32 = nkv_subscribe_flag::NKV_SUBSCRIBE_GROUPED as u32;
    let options = if flags & !(RESUME | GROUPED) != 0 {
        Err(invalid(format!("unknown subscribe flags 0x{flags:x}")))
    } else {
        Ok(SubscribeOptions {
            since: (flags & RESUME != 0).then_some(since_revision),
            grouped: flags & GROUPED != 0,
        })
    };
    // SAFETY: the same contract.
    unsafe {
        subscribe(
            client,
            prefix,
            prefix_len,
            options,
            cb,
            user_data,
            free_user_data,
            out_subscription,
        )
    }
}

/// Frees user data of a subscription that will never exist.
///
/// # Safety
/// `free` is callable with `user_data`, and has not been called for it.
unsafe fn free_now(free_user_data: Option<unsafe extern "C" fn(*mut c_void)>, data: *mut c_void) {
    if let Some(free) = free_user_data {
        // SAFETY: the caller's contract: once, now.
        unsafe { free(data) };
    }
}

/// # Safety
/// As `nkv_subscribe`.
#[allow(clippy::too_many_arguments)] // the C signature
unsafe fn subscribe(
    client: *mut nkv_client,
    prefix: *const c_char,
    prefix_len: usize,
    options: Result<SubscribeOptions, Failure>,
    cb: nkv_callback,
    user_data: *mut c_void,
    free_user_data: Option<unsafe extern "C" fn(*mut c_void)>,
    out_subscription: *mut u64,
) -> nkv_status {
    guard(|| {
        // Every early failure frees the user data here, once.
        let checked = (|| {
            let options = options?;
            let callback = cb.ok_or_else(|| invalid("cb is NULL"))?;
            // SAFETY: the caller's contract.
            let handle = unsafe { acquire(client) }?;
            // SAFETY: the caller's contract.
            let prefix = unsafe { key_arg(prefix, prefix_len, "prefix") }?;
            Ok((options, callback, handle, prefix))
        })();
        let (options, callback, handle, prefix) = match checked {
            Ok(parts) => parts,
            Err(failure) => {
                // SAFETY: the subscription will never exist; free once.
                unsafe { free_now(free_user_data, user_data) };
                return Err(failure);
            }
        };
        let mut handler = CallbackHandler {
            callback,
            user_data,
            free_user_data,
            _client: Arc::clone(&handle),
        };
        // On failure the client has dropped the handler (and so called
        // `free_user_data`) on this thread already.
        // The id goes to `*out_subscription` before the subscription is
        // activated: the first callback may run at once and read it there.
        handle.client.subscribe_with(
            prefix,
            options,
            Box::new(move |id, event| handler.deliver(id, event)),
            &mut |id| {
                // SAFETY: NULL or writable.
                if let Some(out) = unsafe { out_subscription.as_mut() } {
                    *out = u64::from(id);
                }
            },
        )?;
        Ok(())
    })
}

/// Ends a subscription: its waiting events are dropped, a call of its
/// callback running on another thread is waited for (and only that), and
/// `free_user_data` has run, on this thread, when this returns. From inside
/// the subscription's own callback it returns at once, and
/// `free_user_data` runs right after that callback returns. Do not hold a
/// lock here that the subscription's own callback takes.
/// `NKV_ERR_NOT_FOUND` for an unknown or already ended id.
///
/// # Safety
/// `client` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn nkv_unsubscribe(client: *mut nkv_client, subscription: u64) -> nkv_status {
    guard(|| {
        // SAFETY: contract of this function.
        let handle = unsafe { acquire(client) }?;
        let id = u32::try_from(subscription).map_err(|_| {
            failure(
                nkv_status::NKV_ERR_NOT_FOUND,
                format!("no subscription {subscription}"),
            )
        })?;
        handle.client.unsubscribe(id)?;
        Ok(())
    })
}

/// In manual dispatch mode: a descriptor that becomes readable when
/// callbacks are waiting to run (add it to poll/epoll/GLib/libuv, then call
/// `nkv_dispatch`). Owned by the client: do not close it. -1 in thread
/// mode, or for NULL.
///
/// # Safety
/// `client` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn nkv_fd(client: *mut nkv_client) -> c_int {
    let mut fd = -1;
    let _ = guard(|| {
        // SAFETY: contract of this function.
        let handle = unsafe { acquire(client) }?;
        if let Some(event_fd) = handle.client.event_fd() {
            fd = event_fd.as_raw_fd();
        }
        Ok(())
    });
    fd
}

/// In manual dispatch mode: runs up to `max` waiting callbacks (0: all
/// that are waiting) on this thread, and stores how many ran in
/// `*out_ran` (if not NULL). Calls from several threads take turns;
/// from inside a callback it runs nothing. While `nkv_close` is ending the
/// subscriptions it runs their final CLOSED events whatever `max` says. In
/// thread mode it runs nothing.
///
/// # Safety
/// `client` is NULL or a live handle; `out_ran` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_dispatch(
    client: *mut nkv_client,
    max: usize,
    out_ran: *mut usize,
) -> nkv_status {
    guard(|| {
        // SAFETY: contract of this function.
        let handle = unsafe { acquire(client) }?;
        let ran = handle
            .client
            .dispatch(if max == 0 { usize::MAX } else { max });
        // SAFETY: NULL or writable.
        if let Some(out) = unsafe { out_ran.as_mut() } {
            *out = ran;
        }
        Ok(())
    })
}
