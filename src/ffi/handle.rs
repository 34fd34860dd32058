//! The client handle C holds: a reference-counted pointer, so that closing
//! it while other threads are inside a call on it, or from inside one of
//! its own callbacks, frees nothing they still use.
//!
//! `nkv_connect` hands C one reference; every call takes another for its
//! duration; every subscription's callback holds one until its
//! `free_user_data` has run; `nkv_close` shuts the client down and gives
//! C's reference back. The memory goes with the last reference. A call
//! that *starts* after `nkv_close` returned is still a use after free:
//! that is the one rule C must keep.

use std::sync::Arc;

use super::{guard, invalid, Failure};
use crate::client::Client;

/// A client connection (opaque). Create with `nkv_connect`, destroy with
/// `nkv_close`. One client may be used from many threads at once, and
/// closed while calls on other threads are in flight (they fail with
/// `NKV_ERR_CLOSED`) or from inside its own callbacks.
pub struct nkv_client {
    pub(super) client: Client,
}

/// Moves a client into a new handle.
pub(super) fn into_handle(client: Client) -> *mut nkv_client {
    Arc::into_raw(Arc::new(nkv_client { client })).cast_mut()
}

/// Takes a reference on a live handle for the duration of a call.
///
/// # Safety
/// `handle` is NULL or a pointer from `nkv_connect` whose `nkv_close` has
/// not returned.
pub(super) unsafe fn acquire(handle: *const nkv_client) -> Result<Arc<nkv_client>, Failure> {
    if handle.is_null() {
        return Err(invalid("client is NULL"));
    }
    // SAFETY: a live handle came from `Arc::into_raw` and C's reference
    // keeps it alive until `nkv_close`, which has not returned.
    unsafe {
        Arc::increment_strong_count(handle);
        Ok(Arc::from_raw(handle))
    }
}

/// Closes the client: stops reconnecting, fails requests in flight with
/// `NKV_ERR_CLOSED`, and ends every subscription with a final CLOSED event
/// followed by its `free_user_data`, all on the calling thread before this
/// returns. From inside a callback it is safe too; the CLOSED events and
/// `free_user_data` calls then run right after that callback returns, on
/// the thread that ran it. Calls other threads are making fail with
/// `NKV_ERR_CLOSED`; no call may start after this returned. NULL is fine.
///
/// # Safety
/// `client` is NULL or a pointer from `nkv_connect` not yet closed.
#[no_mangle]
pub unsafe extern "C" fn nkv_close(client: *mut nkv_client) {
    if client.is_null() {
        return;
    }
    let _ = guard(|| {
        // SAFETY: C's own reference, given back exactly once by contract.
        let handle = unsafe { Arc::from_raw(client.cast_const()) };
        handle.client.shutdown();
        Ok(())
    });
}
