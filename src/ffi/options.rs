//! `nkv_options` and connecting: an opaque object with setters, so that
//! new options never change a struct a program compiled against.

use std::ffi::{c_char, c_int};
use std::time::Duration;

use super::handle::{into_handle, nkv_client};
use super::{check_abi, guard, invalid, nkv_status, text, Failure};
use crate::addr::Address;
use crate::client::{Client, ClientOptions, DispatchMode};

/// How a client connects and behaves (opaque). Create with
/// `nkv_options_new`, set what differs from the defaults, pass to
/// `nkv_connect_opts`, free with `nkv_options_free`.
pub struct nkv_options {
    options: ClientOptions,
}

/// Who runs subscription callbacks.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum nkv_dispatch_mode {
    /// A dispatcher thread per client (the default).
    NKV_DISPATCH_THREAD = 0,
    /// The program: when `nkv_fd` is readable, call `nkv_dispatch` (for
    /// programs with their own event loop: GLib, libuv, epoll).
    NKV_DISPATCH_MANUAL = 1,
}

/// New options with the defaults: request timeout 10 s, connect timeout
/// 5 s, reconnect with backoff from 50 ms to 2 s, keepalive 15 s, a
/// dispatcher thread, queues merging from 1024 events. Programs call the
/// `nkv_options_new()` macro, which passes `NKV_ABI_VERSION`; NULL (with
/// `nkv_last_error`) when the program was built for another ABI.
#[no_mangle]
pub extern "C" fn nkv_options_new_abi(abi: u32) -> *mut nkv_options {
    let mut out = std::ptr::null_mut();
    let _ = guard(|| {
        check_abi(abi)?;
        let options = ClientOptions {
            name: concat!("libnkv ", env!("CARGO_PKG_VERSION")).into(),
            ..ClientOptions::default()
        };
        out = Box::into_raw(Box::new(nkv_options { options }));
        Ok(())
    });
    out
}

/// Frees options. NULL is fine.
///
/// # Safety
/// `options` is NULL or a pointer from `nkv_options_new` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn nkv_options_free(options: *mut nkv_options) {
    if !options.is_null() {
        // SAFETY: from `nkv_options_new`, freed once by contract.
        let _ = std::panic::catch_unwind(|| drop(unsafe { Box::from_raw(options) }));
    }
}

/// # Safety
/// `options` is NULL or a live pointer from `nkv_options_new`.
unsafe fn set(
    options: *mut nkv_options,
    change: impl FnOnce(&mut ClientOptions) -> Result<(), Failure>,
) -> nkv_status {
    guard(|| {
        // SAFETY: NULL or live, by contract.
        let options = unsafe { options.as_mut() }.ok_or_else(|| invalid("options is NULL"))?;
        change(&mut options.options)
    })
}

fn millis(ms: u32, what: &str) -> Result<Duration, Failure> {
    if ms == 0 {
        return Err(invalid(format!("{what} must be at least 1 ms")));
    }
    Ok(Duration::from_millis(u64::from(ms)))
}

/// The name the client gives the server (shown in its logs).
///
/// # Safety
/// `options` is NULL or live; `name` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn nkv_options_set_name(
    options: *mut nkv_options,
    name: *const c_char,
) -> nkv_status {
    // SAFETY: the caller's contract.
    let name = unsafe { text(name, "name") }.map(str::to_owned);
    // SAFETY: the caller's contract.
    unsafe {
        set(options, |o| {
            o.name = name?;
            Ok(())
        })
    }
}

/// The access token sent at HELLO (a secret of the server's token file;
/// needed over TCP when the server has one). NULL removes it.
///
/// # Safety
/// `options` is NULL or live; `token` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn nkv_options_set_token(
    options: *mut nkv_options,
    token: *const c_char,
) -> nkv_status {
    let token = if token.is_null() {
        Ok(None)
    } else {
        // SAFETY: the caller's contract.
        unsafe { text(token, "token") }.map(|t| Some(t.to_owned()))
    };
    // SAFETY: the caller's contract.
    unsafe {
        set(options, |o| {
            o.token = token?;
            Ok(())
        })
    }
}

/// Reads the access token from a token file (its first secret), as the
/// CLI's `--token-file` does. Fails with `NKV_ERR_INVALID_ARGUMENT` if the
/// file cannot be read or holds no token.
///
/// # Safety
/// `options` is NULL or live; `path` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn nkv_options_set_token_file(
    options: *mut nkv_options,
    path: *const c_char,
) -> nkv_status {
    // SAFETY: the caller's contract.
    let path = unsafe { text(path, "path") }.map(std::path::PathBuf::from);
    // SAFETY: the caller's contract.
    unsafe {
        set(options, |o| {
            o.token = Some(crate::client::read_token_file(&path?)?);
            Ok(())
        })
    }
}

/// How long connecting plus the handshake may take (default 5000 ms).
///
/// # Safety
/// `options` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn nkv_options_set_connect_timeout(
    options: *mut nkv_options,
    timeout_ms: u32,
) -> nkv_status {
    // SAFETY: the caller's contract.
    unsafe {
        set(options, |o| {
            o.connect_timeout = millis(timeout_ms, "connect timeout")?;
            Ok(())
        })
    }
}

/// How long each request waits for its answer (default 10000 ms); see
/// also `nkv_set_timeout` and `nkv_deadline_set`.
///
/// # Safety
/// `options` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn nkv_options_set_request_timeout(
    options: *mut nkv_options,
    timeout_ms: u32,
) -> nkv_status {
    // SAFETY: the caller's contract.
    unsafe {
        set(options, |o| {
            o.timeout = millis(timeout_ms, "request timeout")?;
            Ok(())
        })
    }
}

/// Whether a lost connection is re-established (and subscriptions
/// resumed), waiting `backoff_initial_ms` before the first attempt and
/// doubling up to `backoff_max_ms`. Defaults: on, 50, 2000.
///
/// # Safety
/// `options` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn nkv_options_set_reconnect(
    options: *mut nkv_options,
    enabled: c_int,
    backoff_initial_ms: u32,
    backoff_max_ms: u32,
) -> nkv_status {
    // SAFETY: the caller's contract.
    unsafe {
        set(options, |o| {
            let initial = millis(backoff_initial_ms, "backoff_initial_ms")?;
            let max = millis(backoff_max_ms, "backoff_max_ms")?;
            if max < initial {
                return Err(invalid("backoff_max_ms is below backoff_initial_ms"));
            }
            o.reconnect = enabled != 0;
            o.backoff_initial = initial;
            o.backoff_max = max;
            Ok(())
        })
    }
}

/// After `interval_ms` without hearing from the server the client sends a
/// PING, and after twice that it gives the connection up (DISCONNECTED,
/// then reconnecting): a hung server or a vanished network peer is
/// noticed. 0 turns it off. Default 15000.
///
/// # Safety
/// `options` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn nkv_options_set_keepalive(
    options: *mut nkv_options,
    interval_ms: u32,
) -> nkv_status {
    // SAFETY: the caller's contract.
    unsafe {
        set(options, |o| {
            o.keepalive = Duration::from_millis(u64::from(interval_ms));
            Ok(())
        })
    }
}

/// Who runs subscription callbacks: `NKV_DISPATCH_THREAD` (default) or
/// `NKV_DISPATCH_MANUAL` (see `nkv_fd` and `nkv_dispatch`).
///
/// # Safety
/// `options` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn nkv_options_set_dispatch(
    options: *mut nkv_options,
    mode: c_int,
) -> nkv_status {
    // SAFETY: the caller's contract.
    unsafe {
        set(options, |o| {
            o.dispatch = match mode {
                m if m == nkv_dispatch_mode::NKV_DISPATCH_THREAD as c_int => DispatchMode::Thread,
                m if m == nkv_dispatch_mode::NKV_DISPATCH_MANUAL as c_int => DispatchMode::Manual,
                other => return Err(invalid(format!("unknown dispatch mode {other}"))),
            };
            Ok(())
        })
    }
}

/// Events a subscription's queue holds (when its callback is slower than
/// its events) before it keeps only the latest event per key, counting
/// the skipped ones in `coalesced`. Default 1024; at least 1.
///
/// # Safety
/// `options` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn nkv_options_set_queue_limit(
    options: *mut nkv_options,
    events: usize,
) -> nkv_status {
    // SAFETY: the caller's contract.
    unsafe {
        set(options, |o| {
            if events == 0 {
                return Err(invalid("the queue limit must be at least 1"));
            }
            o.queue_limit = events;
            Ok(())
        })
    }
}

/// Connects to `addr` (`"unix:PATH"` or `"tcp:HOST:PORT"`; NULL: the
/// `NKV_ADDR` environment variable, else the default socket) with
/// `options` (NULL: the defaults) and performs the handshake. On success
/// `*out` holds a client to free with `nkv_close`. Programs call the
/// `nkv_connect()` and `nkv_connect_opts()` macros, which pass
/// `NKV_ABI_VERSION`: a program built for another ABI gets
/// `NKV_ERR_UNSUPPORTED_VERSION`.
///
/// # Safety
/// `addr` is NULL or NUL-terminated; `options` NULL or live; `out` valid
/// for writes.
#[no_mangle]
pub unsafe extern "C" fn nkv_connect_abi(
    abi: u32,
    addr: *const c_char,
    options: *const nkv_options,
    out: *mut *mut nkv_client,
) -> nkv_status {
    guard(|| {
        check_abi(abi)?;
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
        // SAFETY: NULL or live by contract.
        let options = match unsafe { options.as_ref() } {
            Some(o) => o.options.clone(),
            None => ClientOptions {
                name: concat!("libnkv ", env!("CARGO_PKG_VERSION")).into(),
                ..ClientOptions::default()
            },
        };
        let client = Client::connect(&address, options)?;
        // SAFETY: checked non-NULL above.
        unsafe { *out = into_handle(client) };
        Ok(())
    })
}
