"""ctypes declarations of libnkv.so (mirrors include/nkv.h).

Every C function is declared with ``argtypes`` and ``restype``. The library
is loaded on first use from, in order: ``$NKV_LIB``, the ``libnkv.so`` inside
this package (put there by ``pip install``), ``ctypes.util.find_library``.
It must be the version of this package and implement the C ABI this module
declares, or loading fails with a message saying which.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char_p,
    c_int,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Optional

__all__ = [
    "ABI_VERSION",
    "NkvValue",
    "NkvEvent",
    "CALLBACK",
    "FREE_USER_DATA",
    "lib",
    "library_path",
]

#: The C ABI these declarations follow (``NKV_ABI_VERSION``).
ABI_VERSION = 0

#: ``NKV_DISPATCH_MANUAL``
DISPATCH_MANUAL = 1

#: ``NKV_SUBSCRIBE_RESUME`` and ``NKV_SUBSCRIBE_GROUPED`` (``nkv_subscribe_flags``)
SUBSCRIBE_RESUME = 1
SUBSCRIBE_GROUPED = 2


class NkvValue(Structure):
    """``nkv_value``."""

    _fields_ = [("data", POINTER(c_uint8)), ("len", c_size_t), ("revision", c_uint64)]


class NkvEvent(Structure):
    """``nkv_event`` (``kind`` is a C enum: an ``int``)."""

    _fields_ = [
        ("kind", c_int),
        ("subscription", c_uint64),
        ("key", POINTER(c_uint8)),
        ("key_len", c_size_t),
        ("data", POINTER(c_uint8)),
        ("len", c_size_t),
        ("revision", c_uint64),
        ("coalesced", c_uint64),
        ("count", c_uint32),
    ]


#: ``void (*nkv_callback)(void *user_data, const nkv_event *event)``
CALLBACK = CFUNCTYPE(None, c_void_p, POINTER(NkvEvent))
#: ``void (*free_user_data)(void *)``
FREE_USER_DATA = CFUNCTYPE(None, c_void_p)

_p = c_void_p  # every opaque pointer: client, options, entries, stats
_status = c_int
_u64_p = POINTER(c_uint64)
_u32_p = POINTER(c_uint32)
_size_p = POINTER(c_size_t)

# name: (restype, argtypes). Keys are (pointer, length) pairs.
_SIGNATURES = {
    "nkv_status_str": (c_char_p, [c_int]),
    "nkv_state_str": (c_char_p, [c_int]),
    "nkv_last_error": (c_size_t, [c_char_p, c_size_t]),
    "nkv_version": (c_char_p, []),
    "nkv_abi_version": (c_uint32, []),
    "nkv_options_new_abi": (_p, [c_uint32]),
    "nkv_options_free": (None, [_p]),
    "nkv_options_set_name": (_status, [_p, c_char_p]),
    "nkv_options_set_token": (_status, [_p, c_char_p]),
    "nkv_options_set_token_file": (_status, [_p, c_char_p]),
    "nkv_options_set_connect_timeout": (_status, [_p, c_uint32]),
    "nkv_options_set_request_timeout": (_status, [_p, c_uint32]),
    "nkv_options_set_reconnect": (_status, [_p, c_int, c_uint32, c_uint32]),
    "nkv_options_set_keepalive": (_status, [_p, c_uint32]),
    "nkv_options_set_dispatch": (_status, [_p, c_int]),
    "nkv_options_set_queue_limit": (_status, [_p, c_size_t]),
    "nkv_connect_abi": (_status, [c_uint32, c_char_p, _p, POINTER(_p)]),
    "nkv_close": (None, [_p]),
    "nkv_state": (c_int, [_p]),
    "nkv_server_limits": (_status, [_p, _u32_p, _u32_p, _u32_p]),
    "nkv_set_timeout": (_status, [_p, c_uint32]),
    "nkv_ping": (_status, [_p]),
    "nkv_put": (_status, [_p, c_char_p, c_size_t, c_char_p, c_size_t, _u64_p]),
    "nkv_wait": (_status, [_p, c_char_p, c_size_t, c_int, c_char_p, c_size_t, c_int64]),
    "nkv_put_if": (_status, [_p, c_char_p, c_size_t, c_char_p, c_size_t, c_uint64, _u64_p]),
    "nkv_put_ephemeral": (
        _status,
        [_p, c_char_p, c_size_t, c_char_p, c_size_t, c_uint32, _u64_p],
    ),
    "nkv_put_ephemeral_if": (
        _status,
        [_p, c_char_p, c_size_t, c_char_p, c_size_t, c_uint64, c_uint32, _u64_p],
    ),
    "nkv_txn_new": (_p, []),
    "nkv_txn_free": (None, [_p]),
    "nkv_txn_if_absent": (_status, [_p, c_char_p, c_size_t]),
    "nkv_txn_if_present": (_status, [_p, c_char_p, c_size_t]),
    "nkv_txn_if_revision": (_status, [_p, c_char_p, c_size_t, c_uint64]),
    "nkv_txn_put": (_status, [_p, c_char_p, c_size_t, c_char_p, c_size_t]),
    "nkv_txn_delete": (_status, [_p, c_char_p, c_size_t]),
    "nkv_txn_delete_prefix": (_status, [_p, c_char_p, c_size_t]),
    "nkv_txn_commit": (_status, [_p, _p, _u64_p, _u32_p]),
    "nkv_txn_failed_key": (POINTER(c_uint8), [_p, _size_p]),
    "nkv_get": (_status, [_p, c_char_p, c_size_t, POINTER(POINTER(NkvValue))]),
    "nkv_value_free": (None, [POINTER(NkvValue)]),
    "nkv_list": (_status, [_p, c_char_p, c_size_t, POINTER(_p)]),
    "nkv_entries_count": (c_size_t, [_p]),
    "nkv_entries_key": (POINTER(c_uint8), [_p, c_size_t, _size_p]),
    "nkv_entries_value": (POINTER(c_uint8), [_p, c_size_t, _size_p]),
    "nkv_entries_revision": (c_uint64, [_p, c_size_t]),
    "nkv_entries_free": (None, [_p]),
    "nkv_delete": (_status, [_p, c_char_p, c_size_t, _u64_p]),
    "nkv_delete_if": (_status, [_p, c_char_p, c_size_t, c_uint64, _u64_p]),
    "nkv_delete_prefix": (_status, [_p, c_char_p, c_size_t, _u64_p, _u64_p]),
    "nkv_stats": (_status, [_p, POINTER(_p)]),
    "nkv_stats_count": (c_size_t, [_p]),
    "nkv_stats_name": (c_char_p, [_p, c_size_t]),
    "nkv_stats_value": (c_uint64, [_p, c_size_t]),
    "nkv_stats_free": (None, [_p]),
    "nkv_compact": (_status, [_p, _u64_p, _u64_p]),
    "nkv_subscribe": (
        _status,
        [_p, c_char_p, c_size_t, CALLBACK, c_void_p, FREE_USER_DATA, _u64_p],
    ),
    "nkv_subscribe_since": (
        _status,
        [_p, c_char_p, c_size_t, c_uint64, CALLBACK, c_void_p, FREE_USER_DATA, _u64_p],
    ),
    "nkv_subscribe_flags": (
        _status,
        [_p, c_char_p, c_size_t, c_uint32, c_uint64, CALLBACK, c_void_p, FREE_USER_DATA, _u64_p],
    ),
    "nkv_unsubscribe": (_status, [_p, c_uint64]),
    "nkv_fd": (c_int, [_p]),
    "nkv_dispatch": (_status, [_p, c_size_t, _size_p]),
}

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_path: Optional[str] = None


def _candidates() -> list:
    env = os.environ.get("NKV_LIB")
    if env:
        return [env]  # an explicit choice: no silent fallback
    found = []
    bundled = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libnkv.so")
    if os.path.exists(bundled):
        found.append(bundled)
    system = ctypes.util.find_library("nkv")
    if system:
        found.append(system)
    return found


def _package_version() -> str:
    from . import __version__

    return __version__


def _check(loaded: ctypes.CDLL, path: str) -> None:
    """Refuses a library of another version or C ABI than this package."""
    abi = loaded.nkv_abi_version()
    version = loaded.nkv_version().decode()
    if abi != ABI_VERSION:
        raise OSError(
            f"{path} implements libnkv C ABI {abi}, this nkv package needs ABI {ABI_VERSION}"
        )
    if version != _package_version():
        raise OSError(
            f"{path} is libnkv {version}, this nkv package is {_package_version()}: "
            "install the matching library (or point NKV_LIB at it)"
        )


def lib() -> ctypes.CDLL:
    """The loaded, fully declared libnkv (loaded on first call)."""
    global _lib, _path
    with _lock:
        if _lib is not None:
            return _lib
        candidates = _candidates()
        if not candidates:
            raise OSError(
                "libnkv.so not found: pip install the nkv package (it builds and bundles "
                "the library), set NKV_LIB to its path, or install it where the dynamic "
                "linker finds it"
            )
        errors = []
        for path in candidates:
            try:
                loaded = ctypes.CDLL(path)
                for name, (restype, argtypes) in _SIGNATURES.items():
                    fn = getattr(loaded, name)
                    fn.restype = restype
                    fn.argtypes = argtypes
                _check(loaded, path)
            except (OSError, AttributeError) as e:
                errors.append(f"{path}: {e}")
                continue
            _lib, _path = loaded, path
            return loaded
        raise OSError("cannot load libnkv: " + "; ".join(errors))


def library_path() -> Optional[str]:
    """Path of the loaded library (None before the first use)."""
    return _path
