//! The C ABI over [`crate::client`]: `libnkv.so` (SONAME `libnkv.so.0`),
//! `libnkv.a` and `include/nkv.h` (generated from this module by cbindgen).
//!
//! Conventions, as in every exported function:
//! - every pointer is checked; NULL where a value is needed gives
//!   `NKV_ERR_INVALID_ARGUMENT`;
//! - keys and prefixes come with their length (`NKV_NUL` for a
//!   NUL-terminated string), so a key is never cut at an embedded NUL;
//! - output pointers are written only on success (and, for a failed
//!   condition, the key's current revision);
//! - every function runs behind a panic boundary: a Rust panic becomes
//!   `NKV_ERR_PANIC`, never an unwind into C;
//! - a failing call leaves a detailed message for `nkv_last_error` on the
//!   calling thread;
//! - every `_free` and `nkv_close` accept NULL.
//!
//! Files: `handle` (the reference-counted client handle), `options`
//! (`nkv_options`, connecting), `calls` (requests), `txn` (transactions),
//! `types` (the C data types and the allocations behind them), `subscribe`
//! (callbacks and manual dispatch).

#![allow(non_camel_case_types)] // C names are the contract

mod calls;
mod handle;
mod options;
mod subscribe;
mod txn;
mod types;

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::client::{Error, ErrorKind};

pub use calls::*;
pub use handle::*;
pub use options::*;
pub use subscribe::*;
pub use txn::*;
pub use types::*;

/// The version of the C ABI this library implements (`NKV_ABI_VERSION` in
/// the header, the number in the SONAME `libnkv.so.0`). It changes when a
/// program built against an older header could no longer work with this
/// library.
pub const ABI_VERSION: u32 = 0;

/// A key length meaning "the key is NUL-terminated" (`NKV_NUL`).
pub const NUL_TERMINATED: usize = usize::MAX;

/// Result of every fallible C function. The numbers equal the wire error
/// codes where both exist, so a server's answer passes through unchanged.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum nkv_status {
    /// Success.
    NKV_OK = 0,
    /// The key (or subscription) does not exist.
    NKV_ERR_NOT_FOUND = 1,
    /// The condition of a put, delete or transaction did not hold.
    NKV_ERR_CONDITION_FAILED = 2,
    /// The key or prefix is not valid (see protocol.md, "Keys"); a key
    /// holding a NUL byte is not valid either.
    NKV_ERR_INVALID_KEY = 3,
    /// The value is over the server's limit.
    NKV_ERR_TOO_LARGE = 4,
    /// A NULL pointer, a length too large, or another unusable argument.
    NKV_ERR_INVALID_ARGUMENT = 5,
    /// No connection to the server (down, restarting, or a forked child).
    NKV_ERR_CONNECTION = 6,
    /// No answer in time (the client's timeout, or this thread's
    /// deadline). A write that timed out may still have been applied.
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
    /// A server limit was reached (connections, subscriptions, conditions
    /// or operations of a transaction).
    NKV_ERR_LIMIT = 14,
    /// The server could not persist the write (disk full, I/O error).
    NKV_ERR_STORAGE = 15,
    /// The server speaks no protocol version this client implements, or
    /// the program was built for another ABI of this library.
    NKV_ERR_UNSUPPORTED_VERSION = 16,
}

impl nkv_status {
    const ALL: [nkv_status; 17] = [
        nkv_status::NKV_OK,
        nkv_status::NKV_ERR_NOT_FOUND,
        nkv_status::NKV_ERR_CONDITION_FAILED,
        nkv_status::NKV_ERR_INVALID_KEY,
        nkv_status::NKV_ERR_TOO_LARGE,
        nkv_status::NKV_ERR_INVALID_ARGUMENT,
        nkv_status::NKV_ERR_CONNECTION,
        nkv_status::NKV_ERR_TIMEOUT,
        nkv_status::NKV_ERR_PROTOCOL,
        nkv_status::NKV_ERR_UNAUTHORIZED,
        nkv_status::NKV_ERR_SERVER,
        nkv_status::NKV_ERR_CLOSED,
        nkv_status::NKV_ERR_PANIC,
        nkv_status::NKV_ERR_UNSUPPORTED,
        nkv_status::NKV_ERR_LIMIT,
        nkv_status::NKV_ERR_STORAGE,
        nkv_status::NKV_ERR_UNSUPPORTED_VERSION,
    ];

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

fn failure(status: nkv_status, message: impl Into<String>) -> Failure {
    Failure {
        status,
        message: message.into(),
    }
}

fn invalid(message: impl Into<String>) -> Failure {
    failure(nkv_status::NKV_ERR_INVALID_ARGUMENT, message)
}

thread_local! {
    /// The detailed message of this thread's last failed call.
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(message: String) {
    LAST_ERROR.with(|last| *last.borrow_mut() = message);
}

/// Runs `body` behind the panic boundary and turns its result into a
/// status, recording the message of a failure (also inside the boundary).
fn guard(body: impl FnOnce() -> Result<(), Failure>) -> nkv_status {
    let outcome = catch_unwind(AssertUnwindSafe(|| match body() {
        Ok(()) => nkv_status::NKV_OK,
        Err(failure) => {
            set_last_error(failure.message);
            failure.status
        }
    }));
    outcome.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        // Even this may panic (out of memory): the boundary holds regardless.
        let _ = catch_unwind(|| set_last_error(format!("internal error (panic): {what}")));
        nkv_status::NKV_ERR_PANIC
    })
}

/// Borrows a key or prefix argument: `len` bytes, or up to the NUL when
/// `len` is `NKV_NUL`. Not UTF-8 is `NKV_ERR_INVALID_ARGUMENT`; an
/// embedded NUL is kept, and the key rules then refuse it.
///
/// # Safety
/// `ptr` is NULL, or points to `len` readable bytes (a NUL-terminated
/// string when `len` is `NKV_NUL`) valid for `'a`.
unsafe fn key_arg<'a>(ptr: *const c_char, len: usize, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    let bytes = if len == NUL_TERMINATED {
        // SAFETY: non-NULL and NUL-terminated by the caller's contract.
        unsafe { CStr::from_ptr(ptr) }.to_bytes()
    } else {
        // SAFETY: the same contract, for `len` bytes.
        unsafe { bytes_arg(ptr.cast(), len) }?
    };
    std::str::from_utf8(bytes).map_err(|_| invalid(format!("{what} is not valid UTF-8")))
}

/// Borrows a NUL-terminated text argument as UTF-8.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string valid for `'a`.
unsafe fn text<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    // SAFETY: the same contract.
    unsafe { key_arg(ptr, NUL_TERMINATED, what) }
}

/// Borrows a byte buffer argument; NULL is allowed only with length 0.
///
/// # Safety
/// `data` is NULL or points to `len` readable bytes valid for `'a`.
unsafe fn bytes_arg<'a>(data: *const u8, len: usize) -> Result<&'a [u8], Failure> {
    if len > isize::MAX as usize {
        return Err(invalid(format!("a length of {len} bytes is impossible")));
    }
    if data.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(invalid("data is NULL but len is not 0"))
        };
    }
    // SAFETY: the caller guarantees `len` readable bytes at `data`, and
    // `len` fits in an isize (checked above).
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// The name of a status, e.g. `"NKV_ERR_NOT_FOUND"`; any other integer
/// gives `"NKV_ERR_UNKNOWN"`. Never NULL; the string is static.
#[no_mangle]
pub extern "C" fn nkv_status_str(status: c_int) -> *const c_char {
    nkv_status::ALL
        .iter()
        .find(|s| **s as c_int == status)
        .map_or(c"NKV_ERR_UNKNOWN", |s| s.name())
        .as_ptr()
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

/// The C ABI version this library implements (`NKV_ABI_VERSION` of the
/// header it was built with). `nkv_connect` and `nkv_options_new` check it
/// against the header the program was compiled with.
#[no_mangle]
pub extern "C" fn nkv_abi_version() -> u32 {
    ABI_VERSION
}

/// Checks a program's `NKV_ABI_VERSION` against this library's.
fn check_abi(abi: u32) -> Result<(), Failure> {
    if abi == ABI_VERSION {
        return Ok(());
    }
    Err(failure(
        nkv_status::NKV_ERR_UNSUPPORTED_VERSION,
        format!(
            "the program was built for libnkv ABI {abi}, this library implements ABI \
             {ABI_VERSION} (version {}); rebuild it against this library's nkv.h",
            env!("CARGO_PKG_VERSION")
        ),
    ))
}
