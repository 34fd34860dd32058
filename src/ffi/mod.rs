//! The C ABI over [`crate::client`]: `libnkv.so`, `libnkv.a` and
//! `include/nkv.h` (generated from this module by cbindgen).
//!
//! Conventions, as in every exported function:
//! - every pointer is checked; NULL where a value is needed gives
//!   `NKV_ERR_INVALID_ARGUMENT`;
//! - output pointers are written only on success;
//! - every function runs behind a panic boundary: a Rust panic becomes
//!   `NKV_ERR_PANIC`, never an unwind into C;
//! - a failing call leaves a detailed message for `nkv_last_error` on the
//!   calling thread;
//! - every `_free` and `nkv_close` accept NULL.

#![allow(non_camel_case_types)] // C names are the contract

mod calls;
mod subscribe;
mod types;

use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::client::{Error, ErrorKind};

pub use calls::*;
pub use subscribe::*;
pub use types::*;

/// Result of every fallible C function. The numbers equal the wire error
/// codes where both exist, so a server's answer passes through unchanged.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum nkv_status {
    /// Success.
    NKV_OK = 0,
    /// The key (or subscription) does not exist.
    NKV_ERR_NOT_FOUND = 1,
    /// The condition of a put or delete did not hold.
    NKV_ERR_CONDITION_FAILED = 2,
    /// The key or prefix is not valid (see protocol.md, "Keys").
    NKV_ERR_INVALID_KEY = 3,
    /// The value is over the server's limit.
    NKV_ERR_TOO_LARGE = 4,
    /// A NULL pointer, bad UTF-8 or another unusable argument.
    NKV_ERR_INVALID_ARGUMENT = 5,
    /// No connection to the server (down, restarting, or a forked child).
    NKV_ERR_CONNECTION = 6,
    /// The server did not answer within the timeout.
    NKV_ERR_TIMEOUT = 7,
    /// The server sent something this client cannot understand.
    NKV_ERR_PROTOCOL = 8,
    /// The server refused access.
    NKV_ERR_UNAUTHORIZED = 9,
    /// The server failed internally.
    NKV_ERR_SERVER = 10,
    /// The client, or the subscription, is closed (or the server is
    /// shutting down).
    NKV_ERR_CLOSED = 11,
    /// A bug: the library panicked. The client may be unusable.
    NKV_ERR_PANIC = 12,
    /// The server does not support the request.
    NKV_ERR_UNSUPPORTED = 13,
    /// A server limit was reached (connections, subscriptions).
    NKV_ERR_LIMIT = 14,
    /// The server could not persist the write (disk full, I/O error).
    NKV_ERR_STORAGE = 15,
    /// The server speaks no protocol version this client implements.
    NKV_ERR_UNSUPPORTED_VERSION = 16,
}

impl nkv_status {
    fn from_kind(kind: ErrorKind) -> nkv_status {
        use nkv_status::*;
        match kind {
            ErrorKind::NotFound => NKV_ERR_NOT_FOUND,
            ErrorKind::ConditionFailed => NKV_ERR_CONDITION_FAILED,
            ErrorKind::InvalidKey => NKV_ERR_INVALID_KEY,
            ErrorKind::TooLarge => NKV_ERR_TOO_LARGE,
            ErrorKind::InvalidArgument => NKV_ERR_INVALID_ARGUMENT,
            ErrorKind::Connection => NKV_ERR_CONNECTION,
            ErrorKind::Timeout => NKV_ERR_TIMEOUT,
            ErrorKind::Protocol => NKV_ERR_PROTOCOL,
            ErrorKind::Unauthorized => NKV_ERR_UNAUTHORIZED,
            ErrorKind::Server => NKV_ERR_SERVER,
            ErrorKind::Closed => NKV_ERR_CLOSED,
            ErrorKind::Unsupported => NKV_ERR_UNSUPPORTED,
            ErrorKind::Limit => NKV_ERR_LIMIT,
            ErrorKind::Storage => NKV_ERR_STORAGE,
            ErrorKind::UnsupportedVersion => NKV_ERR_UNSUPPORTED_VERSION,
            #[allow(unreachable_patterns)]
            _ => NKV_ERR_SERVER,
        }
    }

    fn name(self) -> &'static CStr {
        use nkv_status::*;
        match self {
            NKV_OK => c"NKV_OK",
            NKV_ERR_NOT_FOUND => c"NKV_ERR_NOT_FOUND",
            NKV_ERR_CONDITION_FAILED => c"NKV_ERR_CONDITION_FAILED",
            NKV_ERR_INVALID_KEY => c"NKV_ERR_INVALID_KEY",
            NKV_ERR_TOO_LARGE => c"NKV_ERR_TOO_LARGE",
            NKV_ERR_INVALID_ARGUMENT => c"NKV_ERR_INVALID_ARGUMENT",
            NKV_ERR_CONNECTION => c"NKV_ERR_CONNECTION",
            NKV_ERR_TIMEOUT => c"NKV_ERR_TIMEOUT",
            NKV_ERR_PROTOCOL => c"NKV_ERR_PROTOCOL",
            NKV_ERR_UNAUTHORIZED => c"NKV_ERR_UNAUTHORIZED",
            NKV_ERR_SERVER => c"NKV_ERR_SERVER",
            NKV_ERR_CLOSED => c"NKV_ERR_CLOSED",
            NKV_ERR_PANIC => c"NKV_ERR_PANIC",
            NKV_ERR_UNSUPPORTED => c"NKV_ERR_UNSUPPORTED",
            NKV_ERR_LIMIT => c"NKV_ERR_LIMIT",
            NKV_ERR_STORAGE => c"NKV_ERR_STORAGE",
            NKV_ERR_UNSUPPORTED_VERSION => c"NKV_ERR_UNSUPPORTED_VERSION",
        }
    }
}

/// Why a call failed, before it becomes a status and a message.
struct Failure {
    status: nkv_status,
    message: String,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            status: nkv_status::from_kind(error.kind()),
            message: error.to_string(),
        }
    }
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure {
        status: nkv_status::NKV_ERR_INVALID_ARGUMENT,
        message: message.into(),
    }
}

thread_local! {
    /// The detailed message of this thread's last failed call.
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(message: String) {
    LAST_ERROR.with(|last| *last.borrow_mut() = message);
}

/// Runs `body` behind the panic boundary and turns its result into a
/// status, recording the message of a failure.
fn guard(body: impl FnOnce() -> Result<(), Failure>) -> nkv_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => nkv_status::NKV_OK,
        Ok(Err(failure)) => {
            set_last_error(failure.message);
            failure.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(format!("internal error (panic): {what}"));
            nkv_status::NKV_ERR_PANIC
        }
    }
}

/// Borrows a C string argument as UTF-8.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string valid for `'a`.
unsafe fn text<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let c = unsafe { CStr::from_ptr(ptr) };
    c.to_str()
        .map_err(|_| invalid(format!("{what} is not valid UTF-8")))
}

/// Borrows a byte buffer argument; NULL is allowed only with length 0.
///
/// # Safety
/// `data` is NULL or points to `len` readable bytes valid for `'a`.
unsafe fn bytes_arg<'a>(data: *const u8, len: usize) -> Result<&'a [u8], Failure> {
    if data.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(invalid("data is NULL but len is not 0"))
        };
    }
    // SAFETY: the caller guarantees `len` readable bytes at `data`.
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// The name of a status as a static string, e.g. `"NKV_ERR_NOT_FOUND"`;
/// never NULL.
#[no_mangle]
pub extern "C" fn nkv_status_str(status: nkv_status) -> *const c_char {
    status.name().as_ptr()
}

/// Copies this thread's last detailed error message into `buf` (at most
/// `len - 1` bytes, then a NUL) and returns the message's full length, so a
/// return value `>= len` means it was truncated. `buf` may be NULL when
/// `len` is 0.
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn nkv_last_error(buf: *mut c_char, len: usize) -> usize {
    catch_unwind(|| {
        LAST_ERROR.with(|last| {
            let message = last.borrow();
            if !buf.is_null() && len > 0 {
                let n = message.len().min(len - 1);
                // SAFETY: `buf` has `len` writable bytes and `n < len`.
                unsafe {
                    std::ptr::copy_nonoverlapping(message.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            message.len()
        })
    })
    .unwrap_or(0)
}

/// The library version, e.g. `"0.1.0"` (also `NKV_VERSION_STRING`).
#[no_mangle]
pub extern "C" fn nkv_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => panic!("the version has no NUL"),
        };
    VERSION.as_ptr()
}
