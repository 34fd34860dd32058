"""ctypes declarations of libnkv.so (mirrors include/nkv.h).

Every C function is declared with ``argtypes`` and ``restype``. The library
is loaded on first use from, in order: ``$NKV_LIB``, a ``libnkv.so`` in this
package's directory, ``ctypes.util.find_library("nkv")``.
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
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Optional

__all__ = [
    "NkvValue",
    "NkvEntry",
    "NkvEntries",
    "NkvEvent",
    "CALLBACK",
    "FREE_USER_DATA",
    "lib",
    "library_path",
]


class NkvValue(Structure):
    """``nkv_value``."""

    _fields_ = [("data", POINTER(c_uint8)), ("len", c_size_t), ("revision", c_uint64)]


class NkvEntry(Structure):
    """``nkv_entry``."""

    _fields_ = [
        ("key", c_char_p),
        ("data", POINTER(c_uint8)),
        ("len", c_size_t),
        ("revision", c_uint64),
    ]


class NkvEntries(Structure):
    """``nkv_entries``."""

    _fields_ = [("items", POINTER(NkvEntry)), ("count", c_size_t)]


class NkvEvent(Structure):
    """``nkv_event`` (``kind`` is a C enum: an ``int``)."""

    _fields_ = [
        ("kind", c_int),
        ("key", c_char_p),
        ("data", POINTER(c_uint8)),
        ("len", c_size_t),
        ("revision", c_uint64),
        ("coalesced", c_uint64),
    ]


#: ``void (*nkv_callback)(void *user_data, const nkv_event *event)``
CALLBACK = CFUNCTYPE(None, c_void_p, POINTER(NkvEvent))
#: ``void (*free_user_data)(void *)``
FREE_USER_DATA = CFUNCTYPE(None, c_void_p)

_client_p = c_void_p
_status = c_int
_u64_p = POINTER(c_uint64)

# name: (restype, argtypes)
_SIGNATURES = {
    "nkv_status_str": (c_char_p, [c_int]),
    "nkv_last_error": (c_size_t, [c_char_p, c_size_t]),
    "nkv_version": (c_char_p, []),
    "nkv_connect": (_status, [c_char_p, POINTER(_client_p)]),
    "nkv_close": (None, [_client_p]),
    "nkv_set_timeout": (_status, [_client_p, c_uint32]),
    "nkv_ping": (_status, [_client_p]),
    "nkv_put": (_status, [_client_p, c_char_p, c_char_p, c_size_t, _u64_p]),
    "nkv_put_if": (_status, [_client_p, c_char_p, c_char_p, c_size_t, c_uint64, _u64_p]),
    "nkv_get": (_status, [_client_p, c_char_p, POINTER(POINTER(NkvValue))]),
    "nkv_value_free": (None, [POINTER(NkvValue)]),
    "nkv_list": (_status, [_client_p, c_char_p, POINTER(POINTER(NkvEntries))]),
    "nkv_entries_free": (None, [POINTER(NkvEntries)]),
    "nkv_delete": (_status, [_client_p, c_char_p, _u64_p]),
    "nkv_delete_if": (_status, [_client_p, c_char_p, c_uint64, _u64_p]),
    "nkv_delete_prefix": (_status, [_client_p, c_char_p, _u64_p, _u64_p]),
    "nkv_subscribe": (
        _status,
        [_client_p, c_char_p, CALLBACK, c_void_p, FREE_USER_DATA, _u64_p],
    ),
    "nkv_subscribe_since": (
        _status,
        [_client_p, c_char_p, c_uint64, CALLBACK, c_void_p, FREE_USER_DATA, _u64_p],
    ),
    "nkv_unsubscribe": (_status, [_client_p, c_uint64]),
}

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_path: Optional[str] = None


def _candidates() -> list:
    found = []
    env = os.environ.get("NKV_LIB")
    if env:
        return [env]  # an explicit choice: no silent fallback
    bundled = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libnkv.so")
    if os.path.exists(bundled):
        found.append(bundled)
    system = ctypes.util.find_library("nkv")
    if system:
        found.append(system)
    return found


def lib() -> ctypes.CDLL:
    """The loaded, fully declared libnkv (loaded on first call)."""
    global _lib, _path
    with _lock:
        if _lib is not None:
            return _lib
        candidates = _candidates()
        if not candidates:
            raise OSError(
                "libnkv.so not found: set NKV_LIB to its path, put it inside the nkv "
                "package directory, or install it where the dynamic linker finds it"
            )
        errors = []
        for path in candidates:
            try:
                loaded = ctypes.CDLL(path)
            except OSError as e:
                errors.append(f"{path}: {e}")
                continue
            for name, (restype, argtypes) in _SIGNATURES.items():
                fn = getattr(loaded, name)
                fn.restype = restype
                fn.argtypes = argtypes
            _lib, _path = loaded, path
            return loaded
        raise OSError("cannot load libnkv: " + "; ".join(errors))


def library_path() -> Optional[str]:
    """Path of the loaded library (None before the first use)."""
    return _path
