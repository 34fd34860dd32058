"""asyncio client: :class:`AsyncClient`, whose subscriptions are async
iterators.

No dispatcher thread: the client runs in libnkv's manual dispatch mode, and
the event loop watches the library's descriptor (``nkv_fd``) and runs the
waiting callbacks itself (``nkv_dispatch``), so events reach the
subscription's queue on the loop's own thread. Requests are blocking C
calls; they run in the loop's default executor so the loop never blocks::

    import asyncio, nkv.aio

    async def main():
        async with await nkv.aio.AsyncClient.connect() as client:
            await client.put("net.eth0.state", b"up")
            async with await client.subscribe("net") as sub:
                async for event in sub:
                    print(event)
                    if event.kind is nkv.EventKind.SYNCED:
                        break

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from .client import (
    Bytes,
    Client,
    Entry,
    Event,
    EventKind,
    Limits,
    State,
    Subscription,
    Txn,
    TxnResult,
)

__all__ = ["AsyncClient", "AsyncSubscription", "AsyncTxn"]


class AsyncClient:
    """A client for asyncio programs; create it with :meth:`connect`.

    Every request is a coroutine. :meth:`subscribe` returns an
    :class:`AsyncSubscription` to iterate with ``async for``. Close with
    :meth:`aclose` or ``async with``.
    """

    def __init__(self, client: Client, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop
        self._fd = client._fd()
        loop.add_reader(self._fd, self._on_readable)

    @classmethod
    async def connect(cls, addr: Optional[str] = None, **options: Any) -> "AsyncClient":
        """Connects (in the executor) and attaches to the running loop.
        ``options`` are those of :class:`nkv.Client`."""
        loop = asyncio.get_running_loop()
        make = functools.partial(Client, addr, _manual=True, **options)
        client = await loop.run_in_executor(None, make)
        return cls(client, loop)

    def _on_readable(self) -> None:
        # Runs every waiting callback here, on the loop's thread.
        try:
            self._client._dispatch()
        except Exception:
            pass  # closed meanwhile; aclose removes the reader

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._loop.run_in_executor(None, functools.partial(fn, *args))

    # -- requests

    async def ping(self) -> None:
        """Checks that the server answers."""
        await self._run(self._client.ping)

    async def put(
        self,
        key: str,
        value: Bytes,
        expect: Optional[int] = None,
        *,
        ephemeral: bool = False,
        grace: float = 0.0,
    ) -> int:
        """See :meth:`nkv.Client.put` (ephemeral keys included)."""
        put = functools.partial(self._client.put, ephemeral=ephemeral, grace=grace)
        return await self._run(put, key, value, expect)

    def txn(self) -> "AsyncTxn":
        """A transaction (see :meth:`nkv.Client.txn`) whose commit is a
        coroutine::

            async with client.txn() as t:
                t.if_absent("net.lock").put("net.lock", b"me")
            # or: await client.txn().if_absent("net.lock").commit()
        """
        return AsyncTxn(self, self._client.txn())

    async def get(self, key: str) -> Optional[bytes]:
        """See :meth:`nkv.Client.get`."""
        return await self._run(self._client.get, key)

    async def entry(self, key: str) -> Optional[Entry]:
        """See :meth:`nkv.Client.entry`."""
        return await self._run(self._client.entry, key)

    async def list(self, prefix: str = "") -> List[Tuple[str, bytes, int]]:
        """See :meth:`nkv.Client.list`."""
        return await self._run(self._client.list, prefix)

    async def delete(self, key: str, expect: Optional[int] = None) -> bool:
        """See :meth:`nkv.Client.delete`."""
        return await self._run(self._client.delete, key, expect)

    async def delete_prefix(self, prefix: str) -> int:
        """See :meth:`nkv.Client.delete_prefix`."""
        return await self._run(self._client.delete_prefix, prefix)

    async def stats(self) -> Dict[str, int]:
        """See :meth:`nkv.Client.stats`."""
        return await self._run(self._client.stats)

    @property
    def limits(self) -> Limits:
        """The server's limits."""
        return self._client.limits

    @property
    def state(self) -> State:
        """The state of the connection now."""
        return self._client.state

    # -- subscriptions

    async def subscribe(
        self, prefix: str, since: Optional[int] = None, grouped: bool = False
    ) -> "AsyncSubscription":
        """Subscribes to ``prefix``; iterate the result with ``async for``
        (see :meth:`nkv.Client.subscribe` for what comes, GROUP events with
        ``grouped=True`` included)."""
        sub = AsyncSubscription(self._loop)
        sub._sub = await self._run(self._client.subscribe, prefix, sub._push, since, grouped)
        return sub

    # -- lifetime

    async def aclose(self) -> None:
        """Closes the client: every subscription's iteration ends with a
        CLOSED event."""
        self._loop.remove_reader(self._fd)
        # On the loop's thread: the final CLOSED events are delivered here.
        self._client.close()

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._client.closed

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncTxn:
    """A transaction of an :class:`AsyncClient`: the builder methods of
    :class:`nkv.Txn` (they chain), and a :meth:`commit` coroutine. As
    ``async with`` it commits when the block ends without an exception.
    """

    def __init__(self, client: AsyncClient, txn: Txn) -> None:
        self._client = client
        self._txn = txn

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._txn, name)
        if name in ("if_absent", "if_present", "if_revision", "put", "delete", "delete_prefix"):

            def chained(*args: Any) -> "AsyncTxn":
                attr(*args)
                return self

            return chained
        return attr

    async def commit(self) -> TxnResult:
        """See :meth:`nkv.Txn.commit`."""
        return await self._client._run(self._txn.commit)

    async def __aenter__(self) -> "AsyncTxn":
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is None:
                await self.commit()
        finally:
            self._txn.close()


class AsyncSubscription:
    """A subscription as an async iterator of :class:`nkv.Event`.

    The iteration ends after a CLOSED event (the client was closed or the
    server ended the subscription), or after :meth:`aclose`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.get_ident()
        self._queue: "asyncio.Queue[Optional[Event]]" = asyncio.Queue()
        self._sub: Optional[Subscription] = None
        self._done = False

    def _push(self, event: Event) -> None:
        # Callbacks run on the loop's thread (nkv_dispatch); a client closed
        # by another thread delivers its final event there.
        if threading.get_ident() == self._thread:
            self._queue.put_nowait(event)
        else:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    @property
    def id(self) -> int:
        """The subscription id."""
        return self._sub.id if self._sub is not None else 0

    def __aiter__(self) -> "AsyncSubscription":
        return self

    async def __anext__(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            self._done = True
            raise StopAsyncIteration
        if event.kind is EventKind.CLOSED:
            self._done = True
        return event

    async def aclose(self) -> None:
        """Ends the subscription; the iteration stops."""
        if self._sub is not None and self._sub.active:
            await self._loop.run_in_executor(None, self._sub.close)
        if not self._done:
            self._queue.put_nowait(None)

    async def __aenter__(self) -> "AsyncSubscription":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
