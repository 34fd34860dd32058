//! Subscriptions: C callbacks driven by the client's dispatcher thread.

use std::ffi::{c_char, c_void, CString};

use super::calls::client_ref;
use super::types::{data_ptr, nkv_callback, nkv_client, nkv_event, nkv_event_kind};
use super::{guard, invalid, nkv_status, text, Failure};
use crate::client::SubscriptionEvent;

/// The C side of one subscription: its callback, its user data, and the
/// function that frees the user data when the subscription is over.
struct CallbackHandler {
    callback: unsafe extern "C" fn(*mut c_void, *const nkv_event),
    user_data: *mut c_void,
    free_user_data: Option<unsafe extern "C" fn(*mut c_void)>,
}

// SAFETY: the user data is only ever touched by the C callbacks, which the
// API documents as running on the dispatcher thread; passing the pointer
// there is the point of the API.
unsafe impl Send for CallbackHandler {}

impl CallbackHandler {
    fn deliver(&mut self, event: &SubscriptionEvent) {
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
            key: key.as_ref().map_or(std::ptr::null(), |k| k.as_ptr()),
            data: data_ptr(data),
            len: data.len(),
            revision,
            coalesced,
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

/// Subscribes to `key` and everything below it. `cb` receives an UPDATE
/// per existing key, then SYNCED, then every change, on the client's
/// dispatcher thread, in order. On success `*out_subscription` (if not
/// NULL) holds the id for `nkv_unsubscribe`. `free_user_data` (may be NULL)
/// is called once with `user_data` when the subscription is over; on
/// failure it has been called before this returns.
///
/// # Safety
/// `client` is NULL or a live handle; `key` NULL or NUL-terminated;
/// `cb` and `free_user_data` callable from another thread with `user_data`;
/// `out_subscription` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nkv_subscribe(
    client: *mut nkv_client,
    key: *const c_char,
    cb: nkv_callback,
    user_data: *mut c_void,
    free_user_data: Option<unsafe extern "C" fn(*mut c_void)>,
    out_subscription: *mut u64,
) -> nkv_status {
    // SAFETY: the same contract.
    unsafe {
        subscribe(
            client,
            key,
            None,
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
    key: *const c_char,
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
            key,
            Some(since_revision),
            cb,
            user_data,
            free_user_data,
            out_subscription,
        )
    }
}

/// # Safety
/// As `nkv_subscribe`.
unsafe fn subscribe(
    client: *mut nkv_client,
    key: *const c_char,
    since: Option<u64>,
    cb: nkv_callback,
    user_data: *mut c_void,
    free_user_data: Option<unsafe extern "C" fn(*mut c_void)>,
    out_subscription: *mut u64,
) -> nkv_status {
    guard(|| {
        // Built first, so that every failure below frees the user data.
        let handler = cb.map(|callback| CallbackHandler {
            callback,
            user_data,
            free_user_data,
        });
        let Some(mut handler) = handler else {
            if let Some(free) = free_user_data {
                // SAFETY: the subscription will never exist; free now, once.
                unsafe { free(user_data) };
            }
            return Err(invalid("cb is NULL"));
        };
        // SAFETY: the caller's contract.
        let (client, key) = unsafe { (client_ref(client)?, text(key, "key")?) };
        let id = client.subscribe(key, since, Box::new(move |event| handler.deliver(event)))?;
        // SAFETY: NULL or writable.
        if let Some(out) = unsafe { out_subscription.as_mut() } {
            *out = u64::from(id);
        }
        Ok(())
    })
}

/// Ends a subscription. When this returns, its callback is not running and
/// will not run again, and `free_user_data` has been called (from inside
/// the subscription's own callback: right after that callback returns).
/// `NKV_ERR_NOT_FOUND` for an unknown id.
///
/// # Safety
/// `client` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn nkv_unsubscribe(client: *mut nkv_client, subscription: u64) -> nkv_status {
    guard(|| {
        // SAFETY: contract of this function.
        let client = unsafe { client_ref(client) }?;
        let id = u32::try_from(subscription).map_err(|_| Failure {
            status: nkv_status::NKV_ERR_NOT_FOUND,
            message: format!("no subscription {subscription}"),
        })?;
        client.unsubscribe(id)?;
        Ok(())
    })
}
