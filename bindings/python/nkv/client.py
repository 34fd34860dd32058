"""The Pythonic client over libnkv: :class:`Client`, :class:`Subscription`,
:class:`Watch`, events and exceptions.

Keys go to C with their length, so a key is never cut at a NUL byte (a NUL
in a key is refused as ``InvalidKey``, as by every client)."""

from __future__ import annotations

import atexit
import ctypes
import enum
import itertools
import logging
import os
import queue
import threading
import weakref
from ctypes import POINTER, byref, c_size_t, c_uint32, c_uint64, c_void_p
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

from . import _native
from ._native import CALLBACK, FREE_USER_DATA, NkvValue

__all__ = [
    "Status",
    "EventKind",
    "Event",
    "Entry",
    "Client",
    "Txn",
    "TxnResult",
    "Subscription",
    "Watch",
    "Error",
    "NotFound",
    "ConditionFailed",
    "InvalidKey",
    "TooLarge",
    "InvalidArgument",
    "ConnectionFailed",
    "Timeout",
    "ProtocolError",
    "Unauthorized",
    "ServerError",
    "Closed",
    "Panic",
    "Unsupported",
    "LimitReached",
    "StorageError",
    "UnsupportedVersion",
    "State",
    "Limits",
    "version",
]

log = logging.getLogger("nkv")

Bytes = Union[bytes, bytearray, memoryview]


class Status(enum.IntEnum):
    """``nkv_status``: the result of every fallible C call."""

    OK = 0
    NOT_FOUND = 1
    CONDITION_FAILED = 2
    INVALID_KEY = 3
    TOO_LARGE = 4
    INVALID_ARGUMENT = 5
    CONNECTION = 6
    TIMEOUT = 7
    PROTOCOL = 8
    UNAUTHORIZED = 9
    SERVER = 10
    CLOSED = 11
    PANIC = 12
    UNSUPPORTED = 13
    LIMIT = 14
    STORAGE = 15
    UNSUPPORTED_VERSION = 16


class State(enum.IntEnum):
    """``nkv_conn_state``: the state of a client's connection."""

    CONNECTED = 0
    DISCONNECTED = 1
    CONNECTING = 2
    CLOSED = 3


class EventKind(enum.Enum):
    """What a subscription event reports (``nkv_event_kind``)."""

    UPDATE = 0
    DELETE = 1
    SYNCED = 2
    RESET = 3
    DISCONNECTED = 4
    CLOSED = 5
    GROUP = 6


# ---------------------------------------------------------------- errors


class Error(Exception):
    """An nkv call failed.

    Attributes:
        status: the :class:`Status` the C library returned.
        message: the detailed message (``nkv_last_error``).
    """

    def __init__(self, status: Union[Status, int], message: str = "") -> None:
        try:
            status = Status(status)
        except ValueError:
            pass
        self.status = status
        self.message = message
        name = status.name if isinstance(status, Status) else str(status)
        if not message:
            text = name
        elif message.startswith(name):
            text = message
        else:
            text = f"{name}: {message}"
        super().__init__(text)


class NotFound(Error):
    """The key (or subscription) does not exist."""


class ConditionFailed(Error):
    """The ``expect`` condition of a put or delete, or a condition of a
    transaction, did not hold.

    Attributes:
        revision: the key's current revision (0: it does not exist).
        key: for a transaction, the key of the condition that failed (the
            first in the transaction's order); None otherwise.
    """

    revision: int = 0
    key: Optional[str] = None


class InvalidKey(Error):
    """The key or prefix is not valid."""


class TooLarge(Error):
    """The key or value is over the server's limit."""


class InvalidArgument(Error):
    """An argument the library cannot use."""


class ConnectionFailed(Error):
    """No connection to the server (down, restarting, or a forked child)."""


class Timeout(Error):
    """The server did not answer within the client's timeout."""


class ProtocolError(Error):
    """The server sent something the client cannot understand."""


class Unauthorized(Error):
    """The server refused access."""


class ServerError(Error):
    """The server failed internally."""


class Closed(Error):
    """The client or subscription is closed (or the server is shutting down)."""


class Panic(Error):
    """A bug in the library (a Rust panic caught at the C boundary)."""


class Unsupported(Error):
    """The server does not support the request."""


class LimitReached(Error):
    """A server limit (connections, subscriptions) was reached."""


class StorageError(Error):
    """The server could not persist the write."""


class UnsupportedVersion(Error):
    """The server speaks no protocol version this client implements."""


_ERRORS: Dict[int, type] = {
    Status.NOT_FOUND: NotFound,
    Status.CONDITION_FAILED: ConditionFailed,
    Status.INVALID_KEY: InvalidKey,
    Status.TOO_LARGE: TooLarge,
    Status.INVALID_ARGUMENT: InvalidArgument,
    Status.CONNECTION: ConnectionFailed,
    Status.TIMEOUT: Timeout,
    Status.PROTOCOL: ProtocolError,
    Status.UNAUTHORIZED: Unauthorized,
    Status.SERVER: ServerError,
    Status.CLOSED: Closed,
    Status.PANIC: Panic,
    Status.UNSUPPORTED: Unsupported,
    Status.LIMIT: LimitReached,
    Status.STORAGE: StorageError,
    Status.UNSUPPORTED_VERSION: UnsupportedVersion,
}


def _last_error() -> str:
    lib = _native.lib()
    n = lib.nkv_last_error(None, 0)
    buf = ctypes.create_string_buffer(n + 1)
    lib.nkv_last_error(buf, n + 1)
    return buf.value.decode("utf-8", "replace")


def _error(status: int) -> Error:
    """The exception for a failed call (reads this thread's last error)."""
    return _ERRORS.get(status, Error)(status, _last_error())


def _check(status: int) -> None:
    if status != Status.OK:
        raise _error(status)


def _key(key: str, what: str = "key") -> Tuple[bytes, int]:
    """A key as C takes it: the UTF-8 bytes and their length (embedded NULs
    kept, for the key rules to refuse)."""
    if not isinstance(key, str):
        raise TypeError(f"{what} must be str, not {type(key).__name__}")
    data = key.encode("utf-8")
    return data, len(data)


def _revision(expect: object) -> int:
    """A revision for ``expect``: an int in 0 .. 2**64 - 1."""
    if isinstance(expect, bool) or not isinstance(expect, int):
        raise TypeError(f"expect must be an int revision, not {type(expect).__name__}")
    if not 0 <= expect < 1 << 64:
        raise ValueError(f"expect must be a revision between 0 and 2**64 - 1, not {expect}")
    return expect


def _grace_ms(grace: object) -> int:
    """An ephemeral key's grace period in milliseconds: 0 to 600 seconds."""
    if isinstance(grace, bool) or not isinstance(grace, (int, float)):
        raise TypeError(f"grace must be seconds, not {type(grace).__name__}")
    ms = int(round(grace * 1000))
    if not 0 <= ms <= 600_000:
        raise ValueError("grace must be between 0 and 600 seconds")
    return ms


def _millis(seconds: float, what: str) -> int:
    ms = int(round(seconds * 1000))
    if ms <= 0 or ms > 0xFFFFFFFF:
        raise ValueError(f"{what} must be between 0.001 and 4294967 seconds")
    return ms


def _value(value: Bytes) -> bytes:
    if isinstance(value, str):
        raise TypeError("value must be bytes (encode the str first, e.g. value.encode())")
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"value must be bytes-like, not {type(value).__name__}")
    return bytes(value)


def version() -> str:
    """Version of the loaded libnkv (``nkv_version()``)."""
    return _native.lib().nkv_version().decode()


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class Entry:
    """A value with the revision of its key's last write."""

    value: bytes
    revision: int


@dataclass(frozen=True)
class Limits:
    """The server's limits, from its handshake (bytes)."""

    max_key: int
    max_value: int
    max_frame: int


@dataclass(frozen=True)
class Event:
    """One subscription event.

    UPDATE: ``key``, ``value``, ``revision``, ``coalesced``. DELETE: ``key``,
    ``revision``, ``coalesced``. SYNCED: ``revision``. RESET, DISCONNECTED:
    nothing. CLOSED: ``reason``. GROUP (``grouped=True`` subscriptions):
    ``count``, ``revision``: the next ``count`` UPDATE/DELETE events belong
    together (one transaction or prefix delete); applied at once they make
    the view the store's state at ``revision``. ``coalesced`` counts earlier
    updates of the key that were skipped because the subscriber was behind.
    ``subscription`` is the id of the subscription the event belongs to.
    """

    kind: EventKind
    key: Optional[str] = None
    value: Optional[bytes] = None
    revision: int = 0
    coalesced: int = 0
    reason: Optional[str] = None
    subscription: int = 0
    count: int = 0


def _event_from_c(ev: _native.NkvEvent) -> Event:
    kind = EventKind(ev.kind)
    data = ctypes.string_at(ev.data, ev.len) if ev.data and ev.len else b""
    key = ctypes.string_at(ev.key, ev.key_len).decode("utf-8") if ev.key else None
    sub = ev.subscription
    if kind is EventKind.UPDATE:
        return Event(kind, key, data, ev.revision, ev.coalesced, subscription=sub)
    if kind is EventKind.DELETE:
        return Event(kind, key, None, ev.revision, ev.coalesced, subscription=sub)
    if kind is EventKind.CLOSED:
        return Event(kind, reason=data.decode("utf-8", "replace"), subscription=sub)
    if kind is EventKind.GROUP:
        return Event(kind, revision=ev.revision, subscription=sub, count=ev.count)
    return Event(kind, revision=ev.revision, subscription=sub)


# ------------------------------------------------------------ callbacks
#
# One pair of C function pointers serves every subscription: the user_data
# given to C is a small integer token naming an entry of _handlers. The
# CFUNCTYPE objects are module globals, so they live as long as C may call
# them; an entry leaves _handlers only in free_user_data, which C calls
# exactly once, after the last callback of its subscription.

_handlers: Dict[int, "Subscription"] = {}
_handlers_lock = threading.Lock()
_tokens = itertools.count(1)


def _on_event(user_data: Optional[int], event_p: "ctypes._Pointer") -> None:
    try:
        with _handlers_lock:
            sub = _handlers.get(user_data or 0)
        if sub is None:
            return
        sub._deliver(_event_from_c(event_p.contents))
    except BaseException:  # never let anything unwind into C
        log.exception("nkv: error while delivering an event")


def _on_free(user_data: Optional[int]) -> None:
    try:
        with _handlers_lock:
            sub = _handlers.pop(user_data or 0, None)
        if sub is not None:
            sub._ended.set()
    except BaseException:
        log.exception("nkv: error in free_user_data")


_C_ON_EVENT = CALLBACK(_on_event)
_C_ON_FREE = FREE_USER_DATA(_on_free)

# Clients still open at interpreter exit are closed first, so that no
# dispatcher thread calls into a finalizing interpreter.
_open_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for client in list(_open_clients):
        try:
            client.close()
        except Exception:
            pass


# ---------------------------------------------------------------- client


class Client:
    """A connection to an nkv server; safe to share between threads.

    Args:
        addr: ``"unix:PATH"`` or ``"tcp:HOST:PORT"``; None: ``$NKV_ADDR``,
            else the default socket.
        timeout: seconds each request may wait for its answer (default 10).
            A write that times out may still have been applied.
        connect_timeout: seconds connecting may take (default 5).
        name: the name the server's logs show for this client.
        reconnect: re-establish a lost connection and resume subscriptions
            (default True).
        keepalive: seconds of silence from the server after which the
            client pings it; after twice that it gives the connection up
            (0 turns it off; default 15).
        queue_limit: events a subscription holds for a slow callback before
            it keeps only the latest per key (default 1024).
        token: the access token sent at HELLO (needed over TCP when the
            server has a token file).
        token_file: a file holding it (its first secret); None: the file
            named by ``$NKV_TOKEN_FILE``, if set.

    Use as a context manager, or call :meth:`close`. Closing ends every
    subscription (each callback gets a final CLOSED event). A client may be
    closed from inside one of its own callbacks, and a client that is
    garbage-collected is closed, on whatever thread that happens: keep a
    reference to the client for as long as its subscriptions should run.
    """

    def __init__(
        self,
        addr: Optional[str] = None,
        timeout: Optional[float] = None,
        *,
        connect_timeout: Optional[float] = None,
        name: Optional[str] = None,
        reconnect: bool = True,
        keepalive: Optional[float] = None,
        queue_limit: Optional[int] = None,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        _manual: bool = False,
    ) -> None:
        self._lib = _native.lib()
        self._handle: Optional[int] = None
        self._cond = threading.Condition()
        self._busy = 0
        self._closing = False
        opts = self._lib.nkv_options_new_abi(_native.ABI_VERSION)
        if not opts:
            raise _error(Status.UNSUPPORTED_VERSION)
        try:
            if name is not None:
                _check(self._lib.nkv_options_set_name(opts, name.encode("utf-8")))
            if token_file is None and token is None:
                token_file = os.environ.get("NKV_TOKEN_FILE") or None
            if token is not None:
                _check(self._lib.nkv_options_set_token(opts, token.encode("utf-8")))
            elif token_file is not None:
                _check(self._lib.nkv_options_set_token_file(opts, os.fsencode(token_file)))
            if timeout is not None:
                _check(self._lib.nkv_options_set_request_timeout(opts, _millis(timeout, "timeout")))
            if connect_timeout is not None:
                _check(
                    self._lib.nkv_options_set_connect_timeout(
                        opts, _millis(connect_timeout, "connect_timeout")
                    )
                )
            if not reconnect:
                _check(self._lib.nkv_options_set_reconnect(opts, 0, 50, 2000))
            if keepalive is not None:
                ms = 0 if keepalive == 0 else _millis(keepalive, "keepalive")
                _check(self._lib.nkv_options_set_keepalive(opts, ms))
            if queue_limit is not None:
                if queue_limit < 1:
                    raise ValueError("queue_limit must be at least 1")
                _check(self._lib.nkv_options_set_queue_limit(opts, queue_limit))
            if _manual:
                _check(self._lib.nkv_options_set_dispatch(opts, _native.DISPATCH_MANUAL))
            handle = c_void_p()
            addr_c = None if addr is None else addr.encode("utf-8")
            _check(self._lib.nkv_connect_abi(_native.ABI_VERSION, addr_c, opts, byref(handle)))
        finally:
            self._lib.nkv_options_free(opts)
        self._handle = handle.value
        _open_clients.add(self)

    # -- lifetime

    def close(self) -> None:
        """Closes the client; idempotent, and allowed from inside a callback.

        Every subscription gets a final CLOSED event. When no other thread
        is inside a call on this client, that has happened when this
        returns; otherwise the client closes as soon as those calls return
        (calls started afterwards raise :class:`Closed`).
        """
        with self._cond:
            if self._handle is None or self._closing:
                return
            self._closing = True
            if self._busy:
                return  # the last call in flight closes it
            handle, self._handle = self._handle, None
        self._release(handle)

    def _release(self, handle: int) -> None:
        _open_clients.discard(self)
        self._lib.nkv_close(handle)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._handle is None or self._closing

    @property
    def state(self) -> State:
        """The state of the connection now."""
        with self._cond:
            handle = None if self._closing else self._handle
        if handle is None:
            return State.CLOSED
        return State(self._lib.nkv_state(handle))

    def _fd(self) -> int:
        """The descriptor readable while callbacks wait (manual dispatch
        mode only, see :mod:`nkv.aio`)."""
        with self._cond:
            handle = self._handle
        fd = -1 if handle is None else self._lib.nkv_fd(handle)
        if fd < 0:
            raise Error(Status.INVALID_ARGUMENT, "not a manual-dispatch client")
        return fd

    def _dispatch(self) -> None:
        """Runs the waiting callbacks on this thread (manual dispatch mode)."""
        self._call(self._lib.nkv_dispatch, 0, None)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _call(self, fn: Callable[..., int], *args: object) -> None:
        """Runs ``fn(handle, *args)`` with the handle kept alive; raises on error."""
        with self._cond:
            if self._handle is None or self._closing:
                raise Closed(Status.CLOSED, "the client is closed")
            self._busy += 1
            handle = self._handle
        try:
            status = fn(handle, *args)
            if status != Status.OK:
                raise _error(status)
        finally:
            release = None
            with self._cond:
                self._busy -= 1
                if self._busy == 0 and self._closing and self._handle is not None:
                    release, self._handle = self._handle, None
            if release is not None:
                self._release(release)

    # -- requests

    def set_timeout(self, seconds: float) -> None:
        """Sets the per-request timeout in seconds (more than 0)."""
        self._call(self._lib.nkv_set_timeout, _millis(seconds, "timeout"))

    def ping(self) -> None:
        """Checks that the server answers; raises otherwise."""
        self._call(self._lib.nkv_ping)

    @property
    def limits(self) -> Limits:
        """The server's limits (key, value and frame sizes)."""
        key, value, frame = c_uint32(), c_uint32(), c_uint32()
        self._call(self._lib.nkv_server_limits, byref(key), byref(value), byref(frame))
        return Limits(key.value, value.value, frame.value)

    def put(
        self,
        key: str,
        value: Bytes,
        expect: Optional[int] = None,
        *,
        ephemeral: bool = False,
        grace: float = 0.0,
    ) -> int:
        """Writes ``value`` to ``key``; returns the revision of the write.

        With ``expect=0`` the key must not exist; with ``expect=R`` its
        revision must be R. Otherwise :class:`ConditionFailed` is raised
        (its ``revision`` is the key's current one) and nothing is written.

        With ``ephemeral=True`` the key belongs to this client's connection:
        the server deletes it when the connection ends (the client closes,
        the process dies, the connection is lost) and ``grace`` more seconds
        have passed (at most 600). After a reconnect within the grace period
        the client takes the key back by itself, unless someone wrote it
        meanwhile. A plain write or delete makes it an ordinary key again.
        ``expect=0`` with ``ephemeral=True`` is a leader claim: of several
        clients exactly one succeeds, and the key is freed when it goes.
        """
        data = _value(value)
        k, n = _key(key)
        rev = c_uint64()
        lib = self._lib
        if ephemeral:
            grace_ms = _grace_ms(grace)
            if expect is None:
                call = (lib.nkv_put_ephemeral, k, n, data, len(data), grace_ms)
            else:
                expected = _revision(expect)
                call = (lib.nkv_put_ephemeral_if, k, n, data, len(data), expected, grace_ms)
        elif grace:
            raise ValueError("grace applies to ephemeral keys only")
        elif expect is None:
            call = (lib.nkv_put, k, n, data, len(data))
        else:
            call = (lib.nkv_put_if, k, n, data, len(data), _revision(expect))
        try:
            self._call(*call, byref(rev))
        except ConditionFailed as e:
            e.revision = rev.value
            raise
        return rev.value

    def txn(self) -> "Txn":
        """A transaction to fill and commit: conditions on any keys, then
        puts and deletes applied in order, all or nothing under one
        revision::

            with client.txn() as t:           # committed when the block ends
                t.if_absent("net.lock")
                t.put("net.lock", b"me")
                t.delete_prefix("tmp")
            print(t.revision, t.deleted)

            client.txn().if_revision("net.x", 42).delete("net.x").commit()

        A condition that does not hold raises :class:`ConditionFailed` with
        the failed ``key`` and its current ``revision``; nothing is written.
        An exception inside the ``with`` block commits nothing.
        """
        return Txn(self)

    def wait(
        self,
        key: str,
        value: Optional[Bytes] = None,
        *,
        absent: bool = False,
        timeout: Optional[float] = None,
    ) -> bool:
        """Blocks until ``key`` exists (or holds ``value``, or with
        ``absent=True`` does not exist), now or later: True then, False when
        ``timeout`` seconds pass first (None: no limit). A start-up gate.

        It keeps the client busy: :meth:`close` from another thread takes
        effect when the wait ends, so give a timeout where that matters.
        Not from inside a callback (it would wait for its own thread).
        """
        if absent and value is not None:
            raise ValueError("give value or absent=True, not both")
        k, n = _key(key)
        if absent:
            mode, data = 2, b""
        elif value is not None:
            mode, data = 1, _value(value)
        else:
            mode, data = 0, b""
        if timeout is None:
            ms = -1
        elif timeout < 0:
            raise ValueError("timeout must not be negative")
        else:
            ms = int(timeout * 1000)
        try:
            self._call(self._lib.nkv_wait, k, n, mode, data, len(data), ms)
        except Timeout:
            return False
        return True

    def entry(self, key: str) -> Optional[Entry]:
        """The value of ``key`` with its revision, or None when it is absent."""
        out = POINTER(NkvValue)()
        try:
            self._call(self._lib.nkv_get, *_key(key), byref(out))
        except NotFound:
            return None
        try:
            v = out.contents
            data = ctypes.string_at(v.data, v.len) if v.len else b""
            return Entry(data, v.revision)
        finally:
            self._lib.nkv_value_free(out)

    def get(self, key: str) -> Optional[bytes]:
        """The value of ``key``, or None when it is absent."""
        e = self.entry(key)
        return None if e is None else e.value

    def list(self, prefix: str = "") -> List[Tuple[str, bytes, int]]:
        """Every key under ``prefix`` (``""``: all) as ``(key, value,
        revision)``, sorted by key."""
        out = c_void_p()
        self._call(self._lib.nkv_list, *_key(prefix, "prefix"), byref(out))
        lib = self._lib
        try:
            result = []
            size = c_size_t()
            for i in range(lib.nkv_entries_count(out)):
                key_p = lib.nkv_entries_key(out, i, byref(size))
                key = ctypes.string_at(key_p, size.value).decode("utf-8")
                data_p = lib.nkv_entries_value(out, i, byref(size))
                data = ctypes.string_at(data_p, size.value) if size.value else b""
                result.append((key, data, lib.nkv_entries_revision(out, i)))
            return result
        finally:
            lib.nkv_entries_free(out)

    def delete(self, key: str, expect: Optional[int] = None) -> bool:
        """Deletes ``key``; False when it did not exist.

        With ``expect=R`` the key's revision must be R, else
        :class:`ConditionFailed` with the current ``revision`` (also when the
        key does not exist: its revision is then 0, as protocol.md says).
        """
        k, n = _key(key)
        try:
            if expect is None:
                self._call(self._lib.nkv_delete, k, n, None)
            else:
                expected = _revision(expect)
                if expected == 0:
                    raise ValueError("expect must be a revision (> 0)")
                rev = c_uint64()
                try:
                    self._call(self._lib.nkv_delete_if, k, n, expected, byref(rev))
                except ConditionFailed as e:
                    e.revision = rev.value
                    raise
        except NotFound:
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Deletes ``prefix`` and every key below it in one write (``""``:
        every key); returns how many keys were deleted."""
        count = c_uint64()
        self._call(self._lib.nkv_delete_prefix, *_key(prefix, "prefix"), None, byref(count))
        return count.value

    def stats(self) -> Dict[str, int]:
        """The server's counters (protocol.md, "STATS names")."""
        out = c_void_p()
        self._call(self._lib.nkv_stats, byref(out))
        lib = self._lib
        try:
            return {
                lib.nkv_stats_name(out, i).decode("utf-8"): lib.nkv_stats_value(out, i)
                for i in range(lib.nkv_stats_count(out))
            }
        finally:
            lib.nkv_stats_free(out)

    def compact(self) -> Tuple[int, int]:
        """Asks the server to compact its store now; returns the bytes of
        its data files before and after."""
        before, after = c_uint64(), c_uint64()
        self._call(self._lib.nkv_compact, byref(before), byref(after))
        return before.value, after.value

    # -- subscriptions

    def subscribe(
        self,
        key: str,
        callback: Callable[[Event], None],
        since: Optional[int] = None,
        grouped: bool = False,
    ) -> "Subscription":
        """Calls ``callback(event)`` for ``key`` and every key below it: an
        UPDATE per existing key, SYNCED, then every change (with ``since``:
        only changes after that revision, or RESET and a snapshot). With
        ``grouped=True`` a GROUP event (``count``, ``revision``) comes before
        the events of one transaction or prefix delete: apply the ``count``
        events after it at once to never show a state the store never had.

        Callbacks run on the client's dispatcher thread, one at a time, and
        never before this has returned. One that raises is logged (logger
        ``"nkv"``) and the next event still comes. Returns a
        :class:`Subscription`; close it to stop.
        """
        if not callable(callback):
            raise TypeError("callback must be callable")
        sub = Subscription(self, callback)
        with _handlers_lock:
            _handlers[sub._token] = sub
        out = c_uint64()
        k, n = _key(key, "prefix")
        try:
            if grouped:
                flags = _native.SUBSCRIBE_GROUPED
                if since is not None:
                    flags |= _native.SUBSCRIBE_RESUME
                self._call(
                    self._lib.nkv_subscribe_flags,
                    k,
                    n,
                    flags,
                    0 if since is None else _revision(since),
                    _C_ON_EVENT,
                    sub._token,
                    _C_ON_FREE,
                    byref(out),
                )
            elif since is None:
                self._call(
                    self._lib.nkv_subscribe, k, n, _C_ON_EVENT, sub._token, _C_ON_FREE, byref(out)
                )
            else:
                self._call(
                    self._lib.nkv_subscribe_since,
                    k,
                    n,
                    _revision(since),
                    _C_ON_EVENT,
                    sub._token,
                    _C_ON_FREE,
                    byref(out),
                )
        except BaseException:
            # On failure C has already called free_user_data, on this
            # thread (or never got that far, e.g. a closed client): drop the
            # entry either way.
            with _handlers_lock:
                _handlers.pop(sub._token, None)
            sub._ended.set()
            raise
        sub.id = out.value
        return sub

    def watch(
        self,
        key: str,
        since: Optional[int] = None,
        timeout: Optional[float] = None,
        grouped: bool = False,
    ) -> "Watch":
        """An iterator of the events of ``key`` (see :meth:`subscribe`), for
        scripts::

            for ev in client.watch("net", timeout=5):
                print(ev.kind.name, ev.key, ev.value)

        The iteration ends after a CLOSED event, or when no event came for
        ``timeout`` seconds (None: wait forever). Close the watch (or use it
        as a context manager) to stop early. ``grouped``: as for
        :meth:`subscribe`.
        """
        return Watch(self, key, since, timeout, grouped)

    def __repr__(self) -> str:
        return f"<nkv.Client {'closed' if self.closed else 'open'}>"


@dataclass(frozen=True)
class TxnResult:
    """What a committed transaction did."""

    #: The transaction's revision (the current one when it changed nothing).
    revision: int
    #: How many keys it deleted.
    deleted: int


class Txn:
    """A transaction being built (see :meth:`Client.txn`): each method adds
    a condition or an operation and returns the transaction, so calls
    chain. Conditions are all checked first, against the state before the
    transaction; operations apply in the order added. Not for use by two
    threads at once.

    Attributes (after a successful commit):
        revision: the transaction's revision.
        deleted: how many keys it deleted.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lib = client._lib
        self._handle: Optional[int] = self._lib.nkv_txn_new()
        if not self._handle:
            raise _error(Status.PANIC)
        self.revision: Optional[int] = None
        self.deleted: Optional[int] = None

    def _add(self, fn: Callable[..., int], *args: object) -> "Txn":
        if self._handle is None:
            raise Closed(Status.CLOSED, "the transaction is closed")
        _check(fn(self._handle, *args))
        return self

    def if_absent(self, key: str) -> "Txn":
        """Condition: ``key`` does not exist."""
        return self._add(self._lib.nkv_txn_if_absent, *_key(key))

    def if_present(self, key: str) -> "Txn":
        """Condition: ``key`` exists."""
        return self._add(self._lib.nkv_txn_if_present, *_key(key))

    def if_revision(self, key: str, revision: int) -> "Txn":
        """Condition: ``key`` exists at exactly ``revision``."""
        return self._add(self._lib.nkv_txn_if_revision, *_key(key), _revision(revision))

    def put(self, key: str, value: Bytes) -> "Txn":
        """Operation: set ``key`` to ``value``."""
        data = _value(value)
        return self._add(self._lib.nkv_txn_put, *_key(key), data, len(data))

    def delete(self, key: str) -> "Txn":
        """Operation: delete ``key`` (nothing happens if it is absent)."""
        return self._add(self._lib.nkv_txn_delete, *_key(key))

    def delete_prefix(self, prefix: str) -> "Txn":
        """Operation: delete ``prefix`` and every key under it (``""``: all)."""
        return self._add(self._lib.nkv_txn_delete_prefix, *_key(prefix, "prefix"))

    def commit(self) -> TxnResult:
        """Applies the transaction (it may be committed again later).

        Raises :class:`ConditionFailed` (with ``key`` and ``revision``) when
        a condition does not hold, :class:`LimitReached` for more than 256
        conditions or 1024 operations.
        """
        if self._handle is None:
            raise Closed(Status.CLOSED, "the transaction is closed")
        rev, deleted = c_uint64(), c_uint32()
        try:
            self._client._call(
                self._lib.nkv_txn_commit, self._handle, byref(rev), byref(deleted)
            )
        except ConditionFailed as e:
            e.revision = rev.value
            size = c_size_t()
            key_p = self._lib.nkv_txn_failed_key(self._handle, byref(size))
            if key_p:
                e.key = ctypes.string_at(key_p, size.value).decode("utf-8")
            raise
        self.revision, self.deleted = rev.value, deleted.value
        return TxnResult(rev.value, deleted.value)

    def close(self) -> None:
        """Frees the transaction; idempotent."""
        handle, self._handle = self._handle, None
        if handle is not None:
            self._lib.nkv_txn_free(handle)

    def __enter__(self) -> "Txn":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is None:
                self.commit()
        finally:
            self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<nkv.Txn {'closed' if self._handle is None else 'open'}>"


class Subscription:
    """A live subscription (see :meth:`Client.subscribe`).

    :meth:`close` returns once the callback is not running and will not run
    again (it waits only for a running call of this subscription's own
    callback); it may be called from inside the callback itself, and then
    takes effect when the callback returns.
    """

    def __init__(self, client: Client, callback: Callable[[Event], None]) -> None:
        # Weak: a subscription must not keep its client alive, or a client
        # the program dropped (with subscriptions still running) would never
        # be closed.
        self._client_ref = weakref.ref(client)
        self._callback = callback
        self._token = next(_tokens)
        self._ended = threading.Event()
        self.id: int = 0

    def _deliver(self, event: Event) -> None:
        try:
            self._callback(event)
        except Exception:
            log.exception("nkv: subscription callback raised (event %s); continuing", event)

    @property
    def active(self) -> bool:
        """False once the subscription is over (closed, or its client closed)."""
        return not self._ended.is_set()

    def close(self) -> None:
        """Ends the subscription; idempotent."""
        client = self._client_ref()
        if self._ended.is_set() or client is None or client.closed:
            return
        try:
            client._call(client._lib.nkv_unsubscribe, self.id)
        except (NotFound, Closed):
            pass  # already over

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<nkv.Subscription id={self.id} {'active' if self.active else 'ended'}>"


_END = object()


class Watch:
    """Iterator over a subscription's events, backed by a queue (see
    :meth:`Client.watch`)."""

    def __init__(
        self,
        client: Client,
        key: str,
        since: Optional[int],
        timeout: Optional[float],
        grouped: bool = False,
    ) -> None:
        self._queue: "queue.Queue[object]" = queue.Queue()
        self._timeout = timeout
        self._done = False
        #: True when the iteration ended because no event came in time.
        self.timed_out = False
        self._sub = client.subscribe(key, self._queue.put, since=since, grouped=grouped)

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        if self._done:
            raise StopIteration
        try:
            item = self._queue.get(timeout=self._timeout)
        except queue.Empty:
            self.timed_out = True
            self.close()
            raise StopIteration from None
        assert isinstance(item, Event)
        if item.kind is EventKind.CLOSED:
            self._done = True
            self._sub.close()
        return item

    def close(self) -> None:
        """Stops watching; idempotent."""
        self._done = True
        self._sub.close()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
