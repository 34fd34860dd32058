"""nkv: Python client of nkv, a notify key-value store.

A ctypes binding of ``libnkv.so`` (found through ``$NKV_LIB``, a copy inside
this package, or the system library path)::

    import nkv

    with nkv.Client() as client:            # $NKV_ADDR, else the default socket
        rev = client.put("net.eth0.state", b"up")
        client.get("net.eth0.state")        # b"up"
        with client.subscribe("net", print):
            ...

Errors raise :class:`nkv.Error` subclasses named after the C statuses.
:mod:`nkv.aio` is the asyncio client.
"""

__version__ = "0.1.0"


from .client import (
    Client,
    Closed,
    ConditionFailed,
    ConnectionFailed,
    Entry,
    Error,
    Event,
    EventKind,
    InvalidArgument,
    InvalidKey,
    Limits,
    LimitReached,
    NotFound,
    Panic,
    ProtocolError,
    ServerError,
    State,
    Status,
    StorageError,
    Subscription,
    Timeout,
    TooLarge,
    Txn,
    TxnResult,
    Unauthorized,
    Unsupported,
    UnsupportedVersion,
    Watch,
    version,
)

__all__ = [
    "Client",
    "Closed",
    "ConditionFailed",
    "ConnectionFailed",
    "Entry",
    "Error",
    "Event",
    "EventKind",
    "InvalidArgument",
    "InvalidKey",
    "Limits",
    "LimitReached",
    "NotFound",
    "Panic",
    "ProtocolError",
    "ServerError",
    "State",
    "Status",
    "StorageError",
    "Subscription",
    "Timeout",
    "TooLarge",
    "Txn",
    "TxnResult",
    "Unauthorized",
    "Unsupported",
    "UnsupportedVersion",
    "Watch",
    "version",
]
