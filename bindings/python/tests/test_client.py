"""Tests of the nkv Python binding against a live nkv-server.

Needs ``NKV_SERVER_BIN`` (path of the ``nkv-server`` binary) and the library
(``NKV_LIB``, see nkv/_native.py). Each test class starts its own server in a
temporary directory; the reconnect test kills and restarts it.

    NKV_LIB=target/debug/libnkv.so NKV_SERVER_BIN=target/debug/nkv-server \\
    PYTHONPATH=bindings/python python3 -m unittest discover -s bindings/python/tests -v
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
from typing import Callable, List, Optional

import nkv
from nkv import EventKind

WAIT = 20.0  # seconds; generous for slow machines


class Server:
    """An nkv-server process on ``DIR/NAME.sock`` with data in ``DIR/data``."""

    def __init__(self, directory: str, name: str = "nkv", *args: str) -> None:
        binary = os.environ.get("NKV_SERVER_BIN")
        if not binary:
            raise unittest.SkipTest("NKV_SERVER_BIN is not set")
        self.binary = binary
        self.dir = directory
        self.socket = os.path.join(directory, name + ".sock")
        self.addr = "unix:" + self.socket
        self.proc: Optional[subprocess.Popen] = None
        self.args = list(args)
        self.start()

    def start(self) -> None:
        env = dict(os.environ, RUST_LOG="warn")
        env.pop("NKV_ADDR", None)
        self.proc = subprocess.Popen(
            [self.binary, "--listen", self.addr, "--data-dir", os.path.join(self.dir, "data")]
            + self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + WAIT
        while True:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(self.socket)
                return
            except OSError:
                pass
            finally:
                s.close()
            if self.proc.poll() is not None:
                raise RuntimeError(f"nkv-server exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("nkv-server did not start")
            time.sleep(0.02)

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        self.kill9()


class Recorder:
    """A callback that records events; thread-safe, with waiting helpers."""

    def __init__(self, hook: Optional[Callable[[nkv.Event], None]] = None) -> None:
        self.events: List[nkv.Event] = []
        self.threads: set = set()
        self.cond = threading.Condition()
        self.hook = hook

    def __call__(self, event: nkv.Event) -> None:
        with self.cond:
            self.events.append(event)
            self.threads.add(threading.get_ident())
            self.cond.notify_all()
        if self.hook is not None:
            self.hook(event)

    def wait_for(
        self, kind: EventKind, key: Optional[str] = None, start: int = 0, timeout: float = WAIT
    ) -> int:
        """Index of the first matching event at or after ``start``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.events)):
                    e = self.events[i]
                    if e.kind is kind and (key is None or e.key == key):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {kind.name} {key or ''} after event {start} within {timeout} s; "
                        f"got {self.events}"
                    )
                self.cond.wait(left)

    def snapshot(self) -> List[nkv.Event]:
        with self.cond:
            return list(self.events)


class ServerTest(unittest.TestCase):
    """Base: a fresh server per test, and a client to it."""

    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.server = Server(self.tmp.name)
        self.addCleanup(self.server.stop)
        self.client = nkv.Client(self.server.addr)
        self.addCleanup(self.client.close)


class TestTokens(unittest.TestCase):
    """Over TCP a server with a token file needs the token at HELLO."""

    SECRET = "5f0c3e2a9b7d41e68a2c4b1d9e0f7a36"

    def test_token_token_file_and_environment(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        tokens = os.path.join(tmp.name, "tokens")
        with open(tokens, "w") as f:
            f.write(f"backup {self.SECRET}\n")
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        server = Server(tmp.name, "nkv", "--listen", f"tcp:127.0.0.1:{port}", "--token-file", tokens)
        self.addCleanup(server.stop)
        addr = f"tcp:127.0.0.1:{port}"
        with self.assertRaises(nkv.Unauthorized):
            nkv.Client(addr, reconnect=False)
        with self.assertRaises(nkv.Unauthorized):
            nkv.Client(addr, token="0" * 32, reconnect=False)
        with nkv.Client(addr, token=self.SECRET) as c:
            c.put("a.b", b"1")
        with nkv.Client(addr, token_file=tokens) as c:
            self.assertEqual(c.get("a.b"), b"1")
        os.environ["NKV_TOKEN_FILE"] = tokens
        try:
            with nkv.Client(addr) as c:
                self.assertEqual(c.get("a.b"), b"1")
        finally:
            del os.environ["NKV_TOKEN_FILE"]
        # Over the Unix socket the uid identifies the caller: no token.
        with nkv.Client(server.addr) as c:
            self.assertEqual(c.get("a.b"), b"1")


class TestWait(ServerTest):
    """client.wait: a start-up gate."""

    def test_wait_for_present_value_and_absent(self) -> None:
        self.assertFalse(self.client.wait("svc.up", timeout=0.1))
        writer = threading.Timer(0.2, lambda: self.client.put("svc.up", b"yes"))
        writer.start()
        self.addCleanup(writer.cancel)
        self.assertTrue(self.client.wait("svc.up", b"yes", timeout=10))
        self.assertTrue(self.client.wait("svc.up"))
        self.assertFalse(self.client.wait("svc.up", b"no", timeout=0.1))
        self.client.delete("svc.up")
        self.assertTrue(self.client.wait("svc.up", absent=True, timeout=5))
        with self.assertRaises(ValueError):
            self.client.wait("svc.up", b"x", absent=True)
        with self.assertRaises(nkv.InvalidKey):
            self.client.wait("bad..key", timeout=0.1)


class TestRequests(ServerTest):
    def test_version(self) -> None:
        self.assertEqual(nkv.version(), "0.1.0")
        self.assertEqual(nkv.__version__, nkv.version())

    def test_put_get_entry(self) -> None:
        c = self.client
        r1 = c.put("a.b", b"one")
        r2 = c.put("a.b", bytearray(b"two"))
        self.assertGreater(r1, 0)
        self.assertGreater(r2, r1)
        self.assertEqual(c.get("a.b"), b"two")
        self.assertEqual(c.entry("a.b"), nkv.Entry(b"two", r2))
        self.assertIsNone(c.get("a.missing"))
        self.assertIsNone(c.entry("a.missing"))
        binary = bytes(range(256))
        c.put("a.bin", memoryview(binary))
        self.assertEqual(c.get("a.bin"), binary)
        c.put("a.empty", b"")
        self.assertEqual(c.get("a.empty"), b"")
        big = os.urandom(512 * 1024)
        c.put("a.big", big)
        self.assertEqual(c.get("a.big"), big)
        c.put("a.ünï", b"utf-8 key")
        self.assertEqual(c.get("a.ünï"), b"utf-8 key")

    def test_put_rejects_str_values(self) -> None:
        with self.assertRaises(TypeError):
            self.client.put("a.b", "text")  # type: ignore[arg-type]

    def test_put_expect(self) -> None:
        c = self.client
        r1 = c.put("cond.k", b"first", expect=0)
        with self.assertRaises(nkv.ConditionFailed) as cm:
            c.put("cond.k", b"again", expect=0)
        self.assertEqual(cm.exception.status, nkv.Status.CONDITION_FAILED)
        with self.assertRaises(nkv.ConditionFailed):
            c.put("cond.k", b"stale", expect=r1 + 100)
        r2 = c.put("cond.k", b"second", expect=r1)
        self.assertGreater(r2, r1)
        with self.assertRaises(nkv.ConditionFailed):
            c.put("cond.k", b"stale", expect=r1)
        self.assertEqual(c.entry("cond.k"), nkv.Entry(b"second", r2))

    def test_list(self) -> None:
        c = self.client
        rb = c.put("l.b", b"B")
        ra = c.put("l.a", b"A")
        rax = c.put("l.a.x", b"AX")
        c.put("lx", b"not under l")
        self.assertEqual(c.list("l"), [("l.a", b"A", ra), ("l.a.x", b"AX", rax), ("l.b", b"B", rb)])
        everything = c.list()
        self.assertEqual([k for k, _, _ in everything], ["l.a", "l.a.x", "l.b", "lx"])
        self.assertEqual(c.list("nothing"), [])

    def test_delete(self) -> None:
        c = self.client
        r1 = c.put("del.k", b"v")
        self.assertTrue(c.delete("del.k"))
        self.assertIsNone(c.get("del.k"))
        self.assertFalse(c.delete("del.k"))
        r2 = c.put("del.c", b"v")
        self.assertGreater(r2, r1)
        with self.assertRaises(nkv.ConditionFailed):
            c.delete("del.c", expect=r2 + 100)
        self.assertEqual(c.get("del.c"), b"v")
        self.assertTrue(c.delete("del.c", expect=r2))
        # with a condition, an absent key fails the condition (protocol.md)
        with self.assertRaises(nkv.ConditionFailed):
            c.delete("del.c", expect=r2)

    def test_delete_prefix(self) -> None:
        c = self.client
        for k in ("d", "d.a", "d.b", "d.b.c", "dd"):
            c.put(k, b"x")
        self.assertEqual(c.delete_prefix("d"), 4)
        self.assertEqual(c.list("d"), [])
        self.assertEqual(c.get("dd"), b"x")
        self.assertEqual(c.delete_prefix("d"), 0)

    def test_errors(self) -> None:
        c = self.client
        for bad in ("", "a..b", ".a", "a.", "a b", "net.*"):
            with self.assertRaises(nkv.InvalidKey, msg=repr(bad)) as cm:
                c.put(bad, b"v")
            self.assertIsInstance(cm.exception, nkv.Error)
            self.assertEqual(cm.exception.status, nkv.Status.INVALID_KEY)
            self.assertTrue(cm.exception.message, "no detailed message")
        # protocol.md says TOO_LARGE for a key over max_key; server and
        # client answer INVALID_KEY (see tests/c/test_api.c)
        with self.assertRaises(nkv.InvalidKey):
            c.put("k" * 1100, b"v")
        with self.assertRaises(nkv.TooLarge):
            c.put("a.huge", bytes(1024 * 1024 + 1))
        with self.assertRaises(nkv.InvalidKey):
            c.list("bad..prefix")
        with self.assertRaises(nkv.ConnectionFailed) as cm2:
            nkv.Client("unix:/nonexistent-nkv-dir/nkv.sock")
        self.assertIn("CONNECTION", str(cm2.exception))
        with self.assertRaises(nkv.InvalidArgument):
            nkv.Client("bogus-address")
        c.ping()  # the client survived all of that

    def test_addr_from_environment(self) -> None:
        old = os.environ.get("NKV_ADDR")
        os.environ["NKV_ADDR"] = self.server.addr
        try:
            with nkv.Client() as c:
                c.ping()
        finally:
            if old is None:
                del os.environ["NKV_ADDR"]
            else:
                os.environ["NKV_ADDR"] = old

    def test_timeout(self) -> None:
        c = nkv.Client(self.server.addr, timeout=0.3)
        self.addCleanup(c.close)
        with self.assertRaises(ValueError):
            c.set_timeout(0)
        assert self.server.proc is not None
        pid = self.server.proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_stopped(pid)
            t0 = time.monotonic()
            with self.assertRaises(nkv.Timeout):
                c.ping()
            took = time.monotonic() - t0
        finally:
            os.kill(pid, signal.SIGCONT)
        self.assertGreaterEqual(took, 0.25)
        self.assertLess(took, 5)
        c.set_timeout(10)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                c.ping()
                break
            except nkv.Error:
                self.assertLess(time.monotonic(), deadline, "never recovered after a timeout")
                time.sleep(0.05)

    def test_close(self) -> None:
        c = nkv.Client(self.server.addr)
        c.put("x", b"1")
        c.close()
        c.close()  # idempotent
        self.assertTrue(c.closed)
        with self.assertRaises(nkv.Closed):
            c.get("x")
        with nkv.Client(self.server.addr) as c2:
            self.assertEqual(c2.get("x"), b"1")
        self.assertTrue(c2.closed)


def wait_stopped(pid: int) -> None:
    """kill() returns before the target stops: wait until /proc says it has."""
    deadline = time.monotonic() + 5
    while True:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        if stat[stat.rindex(")") + 2] == "T":
            return
        if time.monotonic() > deadline:
            raise AssertionError("server did not stop")
        time.sleep(0.005)


class TestSubscriptions(ServerTest):
    def test_snapshot_synced_live_in_order(self) -> None:
        c = self.client
        ra = c.put("s.a", b"1")
        rb = c.put("s.b", b"2")
        rcd = c.put("s.c.d", b"3")
        c.put("t", b"outside")
        c.put("sx", b"outside too")
        rec = Recorder()
        sub = c.subscribe("s", rec)
        self.addCleanup(sub.close)
        self.assertEqual(rec.wait_for(EventKind.SYNCED), 3)
        snap = rec.snapshot()
        self.assertEqual(
            sorted((e.kind, e.key, e.value, e.revision, e.coalesced) for e in snap[:3]),
            [
                (EventKind.UPDATE, "s.a", b"1", ra, 0),
                (EventKind.UPDATE, "s.b", b"2", rb, 0),
                (EventKind.UPDATE, "s.c.d", b"3", rcd, 0),
            ],
        )
        synced = snap[3]
        self.assertIsNone(synced.key)
        self.assertGreaterEqual(synced.revision, rcd)

        r1 = c.put("s.a", b"10")
        c.put("t", b"ignored")
        c.delete("s.b")
        c.put("s.new", b"new")
        self.assertEqual(c.delete_prefix("s.c"), 1)
        r5 = c.put("s.zz", b"marker")
        rec.wait_for(EventKind.UPDATE, "s.zz", start=4)
        live = rec.snapshot()[4:]
        self.assertEqual(
            [(e.kind, e.key, e.value) for e in live],
            [
                (EventKind.UPDATE, "s.a", b"10"),
                (EventKind.DELETE, "s.b", None),
                (EventKind.UPDATE, "s.new", b"new"),
                (EventKind.DELETE, "s.c.d", None),
                (EventKind.UPDATE, "s.zz", b"marker"),
            ],
        )
        self.assertEqual(live[0].revision, r1)
        self.assertEqual(live[-1].revision, r5)
        revs = [e.revision for e in live]
        self.assertEqual(revs, sorted(revs))
        self.assertGreater(revs[0], synced.revision)
        # one dispatcher thread, not ours
        self.assertEqual(len(rec.threads), 1)
        self.assertNotIn(threading.get_ident(), rec.threads)

    def test_close_subscription_stops_events(self) -> None:
        c = self.client
        rec, witness = Recorder(), Recorder()
        sub = c.subscribe("u", rec)
        wsub = c.subscribe("u", witness)
        self.addCleanup(wsub.close)
        rec.wait_for(EventKind.SYNCED)
        c.put("u.a", b"1")
        rec.wait_for(EventKind.UPDATE, "u.a")
        self.assertTrue(sub.active)
        sub.close()
        self.assertFalse(sub.active)
        sub.close()  # idempotent
        n = len(rec.snapshot())
        c.put("u.b", b"2")
        witness.wait_for(EventKind.UPDATE, "u.b")
        self.assertEqual(len(rec.snapshot()), n, "events after Subscription.close()")

    def test_context_manager_subscription(self) -> None:
        rec = Recorder()
        with self.client.subscribe("cm", rec) as sub:
            rec.wait_for(EventKind.SYNCED)
            self.assertTrue(sub.active)
        self.assertFalse(sub.active)

    def test_close_waits_for_running_callback(self) -> None:
        c = self.client
        entered, finished = threading.Event(), threading.Event()

        def slow(event: nkv.Event) -> None:
            if event.key == "w.slow":
                entered.set()
                time.sleep(0.4)
                finished.set()

        rec = Recorder(hook=slow)
        sub = c.subscribe("w", rec)
        rec.wait_for(EventKind.SYNCED)
        c.put("w.slow", b"v")
        self.assertTrue(entered.wait(WAIT))
        c.put("w.after", b"v")
        sub.close()
        self.assertTrue(finished.is_set(), "close() returned while the callback ran")
        n = len(rec.snapshot())
        c.put("w.later", b"v")
        c.ping()
        time.sleep(0.3)
        self.assertEqual(len(rec.snapshot()), n)

    def test_unsubscribe_from_inside_callback(self) -> None:
        c = self.client
        holder: dict = {}
        done = threading.Event()

        def stop(event: nkv.Event) -> None:
            if event.key == "x.stop":
                holder["sub"].close()  # must not deadlock
                done.set()

        rec = Recorder(hook=stop)
        witness = Recorder()
        wsub = c.subscribe("x", witness)
        self.addCleanup(wsub.close)
        holder["sub"] = c.subscribe("x", rec)
        c.put("x.before", b"v")
        c.put("x.stop", b"v")
        c.put("x.after", b"v")
        self.assertTrue(done.wait(WAIT), "close() inside the callback did not return")
        witness.wait_for(EventKind.UPDATE, "x.after")
        c.ping()
        self.assertFalse(holder["sub"].active)
        self.assertNotIn("x.after", [e.key for e in rec.snapshot()])

    def test_raising_callback_does_not_kill_the_dispatcher(self) -> None:
        c = self.client
        seen: List[nkv.Event] = []
        cond = threading.Condition()

        def flaky(event: nkv.Event) -> None:
            with cond:
                seen.append(event)
                cond.notify_all()
            if event.key == "boom":
                raise ValueError("callback failure on purpose")

        with self.assertLogs("nkv", level="ERROR") as logs:
            sub = c.subscribe("", flaky)
            self.addCleanup(sub.close)
            c.put("boom", b"1")
            c.put("fine", b"2")
            with cond:
                self.assertTrue(
                    cond.wait_for(lambda: any(e.key == "fine" for e in seen), WAIT),
                    "no event after the callback raised",
                )
        self.assertTrue(any("callback failure on purpose" in line for line in logs.output))
        # other subscriptions of the client keep working too
        rec = Recorder()
        with c.subscribe("", rec):
            rec.wait_for(EventKind.SYNCED)
            c.put("more", b"3")
            rec.wait_for(EventKind.UPDATE, "more")

    def test_subscribe_since(self) -> None:
        c = self.client
        r1 = c.put("v.a", b"a")
        r2 = c.put("v.b", b"b")
        c.delete("v.a")
        r4 = c.put("v.c", b"c")
        rec = Recorder()
        with c.subscribe("v", rec, since=r1):
            i = rec.wait_for(EventKind.SYNCED)
            got = sorted((e.kind.name, e.key, e.value) for e in rec.snapshot()[:i])
            self.assertEqual(
                got, [("DELETE", "v.a", None), ("UPDATE", "v.b", b"b"), ("UPDATE", "v.c", b"c")]
            )
        self.assertGreater(r4, r2)
        rec2 = Recorder()
        with c.subscribe("v", rec2, since=r4 + 10**6):
            i = rec2.wait_for(EventKind.SYNCED)
            events = rec2.snapshot()
            self.assertIs(events[0].kind, EventKind.RESET)
            self.assertEqual(sorted(e.key for e in events[1:i]), ["v.b", "v.c"])

    def test_client_close_sends_closed(self) -> None:
        c = nkv.Client(self.server.addr)
        a, b = Recorder(), Recorder()
        sa = c.subscribe("cl", a)
        sb = c.subscribe("", b)
        c.put("cl.k", b"v")
        a.wait_for(EventKind.UPDATE, "cl.k")
        b.wait_for(EventKind.UPDATE, "cl.k")
        c.close()
        for rec, sub in ((a, sa), (b, sb)):
            events = rec.snapshot()
            self.assertIs(events[-1].kind, EventKind.CLOSED)
            self.assertEqual([e.kind for e in events].count(EventKind.CLOSED), 1)
            self.assertTrue(events[-1].reason)
            self.assertFalse(sub.active)
            sub.close()  # harmless after the client closed

    def test_close_inside_callback_closes_the_client(self) -> None:
        c = nkv.Client(self.server.addr)
        self.addCleanup(c.close)
        done = threading.Event()
        other = Recorder()
        c.subscribe("y", other)

        def close_me(event: nkv.Event) -> None:
            if event.kind is EventKind.SYNCED:
                c.close()  # allowed: the handle outlives this callback
                done.set()

        c.subscribe("z", close_me)
        self.assertTrue(done.wait(WAIT))
        other.wait_for(EventKind.CLOSED)
        self.assertTrue(c.closed)
        with self.assertRaises(nkv.Closed):
            c.ping()

    def test_watch_iterator(self) -> None:
        c = self.client
        c.put("wt.a", b"1")
        got = []
        with c.watch("wt", timeout=5) as w:
            for ev in w:
                got.append(ev)
                if ev.kind is EventKind.SYNCED:
                    c.put("wt.b", b"2")
                if ev.key == "wt.b":
                    break
        self.assertEqual(
            [(e.kind, e.key) for e in got],
            [(EventKind.UPDATE, "wt.a"), (EventKind.SYNCED, None), (EventKind.UPDATE, "wt.b")],
        )
        # a quiet watch ends after its timeout
        t0 = time.monotonic()
        w2 = c.watch("quiet", timeout=0.3)
        events = list(w2)
        self.assertEqual([e.kind for e in events], [EventKind.SYNCED])
        self.assertTrue(w2.timed_out)
        self.assertLess(time.monotonic() - t0, 5)

    def test_slow_callback_coalesces_but_accounts_for_every_update(self) -> None:
        c = self.client
        n = 150

        def slow(event: nkv.Event) -> None:
            time.sleep(0.005)

        rec = Recorder(hook=slow)
        with c.subscribe("co", rec):
            rec.wait_for(EventKind.SYNCED)
            last = 0
            for i in range(n):
                last = c.put("co.k", f"v{i}".encode())
            c.put("co.end", b"end")
            rec.wait_for(EventKind.UPDATE, "co.end", timeout=60)
            updates = [e for e in rec.snapshot() if e.key == "co.k"]
            self.assertEqual(updates[-1].value, f"v{n - 1}".encode())
            self.assertEqual(updates[-1].revision, last)
            self.assertEqual(sum(1 + e.coalesced for e in updates), n)


class TestRegressions(ServerTest):
    """Each of these failed with the binding of the previous release."""

    def test_a_nul_in_a_key_is_refused_not_truncated(self) -> None:
        c = self.client
        c.put("keep.me", b"1")
        with self.assertRaises(nkv.InvalidKey):
            c.put("a\x00x", b"v")
        self.assertIsNone(c.get("a"), "the key was cut at the NUL")
        with self.assertRaises(nkv.InvalidKey):
            c.delete_prefix("\x00x")  # used to delete every key
        with self.assertRaises(nkv.InvalidKey):
            c.get("keep\x00.me")
        with self.assertRaises(nkv.InvalidKey):
            c.subscribe("\x00", lambda e: None)
        self.assertEqual(c.get("keep.me"), b"1")

    def test_condition_failed_carries_the_current_revision(self) -> None:
        c = self.client
        rev = c.put("cf.k", b"1")
        with self.assertRaises(nkv.ConditionFailed) as ctx:
            c.put("cf.k", b"2", expect=rev + 5)
        self.assertEqual(ctx.exception.revision, rev)
        with self.assertRaises(nkv.ConditionFailed) as ctx:
            c.put("cf.k", b"2", expect=0)
        self.assertEqual(ctx.exception.revision, rev)
        with self.assertRaises(nkv.ConditionFailed) as ctx:
            c.put("cf.absent", b"2", expect=7)
        self.assertEqual(ctx.exception.revision, 0)
        with self.assertRaises(nkv.ConditionFailed) as ctx:
            c.delete("cf.k", expect=rev + 1)
        self.assertEqual(ctx.exception.revision, rev)
        self.assertEqual(c.get("cf.k"), b"1")

    def test_expect_must_be_a_revision(self) -> None:
        c = self.client
        for bad in (-1, 1 << 64):
            with self.assertRaises(ValueError):
                c.put("ex.k", b"v", expect=bad)
        with self.assertRaises(TypeError):
            c.put("ex.k", b"v", expect=True)  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            c.delete("ex.k", expect=-1)
        self.assertIsNone(c.get("ex.k"))

    @staticmethod
    def _threads(prefix: str) -> set:
        """Ids of this process's threads whose name starts with ``prefix``."""
        found = set()
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    if f.read().startswith(prefix):
                        found.add(tid)
            except OSError:
                pass
        return found

    def _connections(self) -> int:
        return self.client.stats()["connections"]

    def test_a_client_dropped_on_its_dispatcher_thread_is_closed(self) -> None:
        import gc

        # By thread id, not name: a thread names itself after it started.
        before = self._threads("")
        holder = {"client": nkv.Client(self.server.addr)}
        mine = self._threads("") - before
        self.assertEqual(len(mine), 2, "an I/O and a dispatcher thread")
        connections = self._connections()
        done = threading.Event()

        def drop_it(event: nkv.Event) -> None:
            if event.kind is EventKind.SYNCED and "client" in holder:
                del holder["client"]  # the last reference goes here
                gc.collect()
                done.set()

        holder["client"].subscribe("gone", drop_it)
        self.assertTrue(done.wait(WAIT))
        deadline = time.monotonic() + WAIT
        while mine & self._threads("") and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(mine & self._threads(""), set(), "its threads leaked")
        self.assertEqual(self._connections(), connections - 1, "its connection leaked")

    def test_keepalive_notices_a_hung_server(self) -> None:
        c = nkv.Client(self.server.addr, keepalive=0.2, timeout=2)
        self.addCleanup(c.close)
        rec = Recorder()
        c.subscribe("ka", rec)
        rec.wait_for(EventKind.SYNCED)
        self.assertIs(c.state, nkv.State.CONNECTED)
        os.kill(self.server.proc.pid, signal.SIGSTOP)
        try:
            rec.wait_for(EventKind.DISCONNECTED, timeout=10)
            self.assertIsNot(c.state, nkv.State.CONNECTED)
        finally:
            os.kill(self.server.proc.pid, signal.SIGCONT)
        i = rec.wait_for(EventKind.SYNCED, start=1)
        self.assertGreater(i, 0)
        deadline = time.monotonic() + WAIT
        while c.state is not nkv.State.CONNECTED and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertIs(c.state, nkv.State.CONNECTED)

    def test_a_slow_callback_costs_memory_bounded_by_the_keys(self) -> None:
        fast_dir = os.path.join(self.tmp.name, "fast")
        os.mkdir(fast_dir)
        fast = Server(fast_dir, "nkv", "--fsync", "never")
        self.addCleanup(fast.stop)
        c = nkv.Client(fast.addr)
        self.addCleanup(c.close)
        keys = 50

        def rss_kib() -> int:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
            raise AssertionError("no VmRSS")

        def slow(event: nkv.Event) -> None:
            time.sleep(0.005)

        rec = Recorder(hook=slow)
        sub = c.subscribe("mem", rec)
        self.addCleanup(sub.close)
        rec.wait_for(EventKind.SYNCED)
        before = rss_kib()
        value = b"x" * 1000

        def writer(w: int) -> None:
            with nkv.Client(fast.addr) as wc:
                for i in range(5000):
                    wc.put(f"mem.k{(w * 5000 + i) % keys}", value + str(i).encode())

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        grown = rss_kib() - before
        c.put("mem.end", b"end")
        rec.wait_for(EventKind.UPDATE, "mem.end", timeout=60)
        events = rec.snapshot()
        # 20,000 events of 1 KB would be over 20 MiB waiting; merged per key
        # the queue holds at most ~1,074 (1024 + 50 keys).
        self.assertLess(grown, 12 * 1024, f"grew {grown} KiB while the callback lagged")
        self.assertGreater(sum(e.coalesced for e in events), 0, "nothing was coalesced")
        self.assertLess(len(events), 20_000)
        final = {k: v for k, v, _ in c.list("mem")}
        seen = {}
        for e in events:
            if e.kind is EventKind.UPDATE:
                seen[e.key] = e.value
        self.assertEqual(seen, final, "the callback did not end with the stored values")

    def test_closing_a_subscription_does_not_wait_for_another_callback(self) -> None:
        c = self.client
        gate, entered = threading.Event(), threading.Event()

        def blocked(event: nkv.Event) -> None:
            if event.key == "busy.block":
                entered.set()
                gate.wait(WAIT)

        busy = Recorder(hook=blocked)
        busy_sub = c.subscribe("busy", busy)
        self.addCleanup(busy_sub.close)
        busy.wait_for(EventKind.SYNCED)
        other = Recorder()
        other_sub = c.subscribe("idle", other)
        other.wait_for(EventKind.SYNCED)
        c.put("busy.block", b"v")
        self.assertTrue(entered.wait(WAIT))
        for i in range(200):  # queued behind the blocked callback
            c.put(f"busy.k{i}", b"v")
        closer = threading.Thread(target=other_sub.close)
        closer.start()
        closer.join(WAIT)
        still_waiting = closer.is_alive()
        gate.set()
        closer.join()
        self.assertFalse(
            still_waiting, "closing one subscription waited for another's running callback"
        )
        self.assertFalse(other_sub.active)

    def test_a_timed_out_subscribe_never_calls_back(self) -> None:
        c = nkv.Client(self.server.addr, timeout=0.3)
        self.addCleanup(c.close)
        calls: List[nkv.Event] = []
        assert self.server.proc is not None
        pid = self.server.proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_stopped(pid)
            with self.assertRaises(nkv.Timeout):
                c.subscribe("late", calls.append)
        finally:
            os.kill(pid, signal.SIGCONT)
        # The server now answers the SUB: the client must cancel it, not
        # start calling a callback whose subscribe already failed.
        c.set_timeout(10)
        self.client.put("late.k", b"v")
        deadline = time.monotonic() + WAIT
        while self.client.stats()["subscriptions"] != 0:
            self.assertLess(time.monotonic(), deadline, "the late subscription was not cancelled")
            time.sleep(0.05)
        c.ping()
        self.assertEqual(calls, [])

    def test_stats_limits_compact(self) -> None:
        c = self.client
        c.put("st.a", b"xy")
        stats = c.stats()
        self.assertEqual(stats["keys"], 1)
        self.assertEqual(stats["bytes"], len("st.a") + 2)
        self.assertEqual(c.limits, nkv.Limits(1024, 1 << 20, 2 << 20))
        before, after = c.compact()
        self.assertGreater(before, 0)
        self.assertEqual(c.get("st.a"), b"xy")

    def test_a_library_of_another_version_is_refused(self) -> None:
        from nkv import _native

        lib = _native.lib()
        real = _native._package_version
        _native._package_version = lambda: "9.9.9"  # type: ignore[assignment]
        try:
            with self.assertRaises(OSError) as ctx:
                _native._check(lib, "libnkv.so")
            self.assertIn("9.9.9", str(ctx.exception))
        finally:
            _native._package_version = real  # type: ignore[assignment]


class TestAsyncio(ServerTest):
    def test_requests_and_subscriptions(self) -> None:
        import asyncio

        import nkv.aio

        addr = self.server.addr
        self.client.put("aio.a", b"1")

        async def main() -> list:
            seen = []
            async with await nkv.aio.AsyncClient.connect(addr) as client:
                # no dispatcher thread: callbacks run on this loop's thread
                self.assertEqual(await client.get("aio.a"), b"1")
                loop_thread = threading.get_ident()
                threads = set()
                sub = await client.subscribe("aio")
                orig = sub._push

                def spy(event: nkv.Event) -> None:
                    threads.add(threading.get_ident())
                    orig(event)

                sub._push = spy  # type: ignore[method-assign]
                async for event in sub:
                    seen.append((event.kind, event.key))
                    if event.kind is EventKind.SYNCED:
                        await client.put("aio.b", b"2")
                    if event.key == "aio.b":
                        break
                self.assertEqual(threads - {loop_thread}, set())
                await sub.aclose()
                rest = [e async for e in sub]
                self.assertEqual(rest, [])
                other = await client.subscribe("aio")
            # closing the client ends the other subscription's iteration
            tail = [e.kind async for e in other]
            self.assertEqual(tail[-1], EventKind.CLOSED)
            return seen

        seen = asyncio.run(main())
        self.assertEqual(
            seen,
            [
                (EventKind.UPDATE, "aio.a"),
                (EventKind.SYNCED, None),
                (EventKind.UPDATE, "aio.b"),
            ],
        )


class TestTransactions(ServerTest):
    """client.txn(): with-block and explicit commit, failed conditions."""

    def test_with_block_commits_and_a_failed_condition_names_the_key(self) -> None:
        c = self.client
        x = c.put("net.x", b"1")
        c.put("net.old", b"o")
        c.put("tmp.a", b"a")
        c.put("tmp.b.c", b"c")
        with c.txn() as t:
            t.if_revision("net.x", x).if_absent("net.lock")
            t.put("net.lock", b"me")
            t.delete("net.old")
            t.delete_prefix("tmp")
        self.assertEqual(t.deleted, 3)
        lock = c.entry("net.lock")
        self.assertEqual(lock, nkv.Entry(b"me", t.revision))
        self.assertIsNone(c.get("net.old"))
        self.assertEqual(c.list("tmp"), [])

        with self.assertRaises(nkv.ConditionFailed) as ctx:
            with c.txn() as t2:
                t2.if_absent("net.lock").put("net.lock", b"you")
        self.assertEqual(ctx.exception.key, "net.lock")
        self.assertEqual(ctx.exception.revision, t.revision)
        self.assertIn("net.lock", str(ctx.exception))
        self.assertEqual(c.get("net.lock"), b"me")

        # An exception in the block commits nothing.
        with self.assertRaises(RuntimeError):
            with c.txn() as t3:
                t3.put("net.never", b"1")
                raise RuntimeError("changed my mind")
        self.assertIsNone(c.get("net.never"))

    def test_explicit_commit_results_and_limits(self) -> None:
        c = self.client
        result = c.txn().put("a.1", b"1").put("a.2", b"2").commit()
        self.assertIsInstance(result, nkv.TxnResult)
        self.assertEqual(result.deleted, 0)
        self.assertEqual(c.entry("a.2"), nkv.Entry(b"2", result.revision))
        t = c.txn().if_present("a.1").delete_prefix("a")
        self.assertEqual(t.commit().deleted, 2)
        with self.assertRaises(nkv.ConditionFailed) as ctx:
            t.commit()  # a.1 is gone now
        self.assertEqual((ctx.exception.key, ctx.exception.revision), ("a.1", 0))
        t.close()
        with self.assertRaises(nkv.Closed):
            t.put("a.3", b"3")
        many = c.txn()
        for i in range(257):
            many.if_absent(f"k{i}")
        with self.assertRaises(nkv.LimitReached):
            many.commit()
        with self.assertRaises(nkv.InvalidKey):
            c.txn().put("bad..key", b"v").commit()
        with self.assertRaises(TypeError):
            c.txn().put("k", "not bytes")


class TestEphemeral(ServerTest):
    """put(..., ephemeral=True): gone with its client; leader claims."""

    def test_an_ephemeral_key_goes_with_its_client(self) -> None:
        watch = Recorder()
        sub = self.client.subscribe("svc", watch)
        self.addCleanup(sub.close)
        watch.wait_for(EventKind.SYNCED)
        owner = nkv.Client(self.server.addr)
        rev = owner.put("svc.netd.alive", b"1", ephemeral=True)
        self.assertEqual(self.client.entry("svc.netd.alive"), nkv.Entry(b"1", rev))
        owner.close()
        watch.wait_for(EventKind.DELETE, "svc.netd.alive")
        self.assertIsNone(self.client.get("svc.netd.alive"))

    def test_grace_and_leader_claims(self) -> None:
        owner = nkv.Client(self.server.addr)
        owner.put("svc.grace", b"1", ephemeral=True, grace=1.0)
        claim = owner.put("svc.leader", b"a", 0, ephemeral=True)
        with self.assertRaises(nkv.ConditionFailed) as ctx:
            self.client.put("svc.leader", b"b", 0, ephemeral=True)
        self.assertEqual(ctx.exception.revision, claim)
        owner.close()
        # The grace period keeps svc.grace a while; svc.leader goes at once.
        self.assertEqual(self.client.get("svc.grace"), b"1")
        deadline = time.monotonic() + WAIT
        while self.client.get("svc.leader") is not None or self.client.get("svc.grace"):
            self.assertLess(time.monotonic(), deadline, "ephemeral keys still there")
            time.sleep(0.05)
        self.client.put("svc.leader", b"b", 0, ephemeral=True)
        for bad in (-1, 601):
            with self.assertRaises(ValueError):
                self.client.put("svc.x", b"1", ephemeral=True, grace=bad)
        with self.assertRaises(ValueError):
            self.client.put("svc.x", b"1", grace=1)


class TestGrouped(ServerTest):
    """subscribe(..., grouped=True): GROUP, then the transaction's events."""

    def test_group_then_the_events_of_a_transaction(self) -> None:
        rec = Recorder()
        sub = self.client.subscribe("grp", rec, grouped=True)
        self.addCleanup(sub.close)
        rec.wait_for(EventKind.SYNCED)
        result = self.client.txn().put("grp.a", b"1").put("grp.b", b"2").commit()
        g = rec.wait_for(EventKind.GROUP)
        rec.wait_for(EventKind.UPDATE, "grp.b", start=g)
        events = rec.snapshot()
        group = events[g]
        self.assertEqual((group.count, group.revision), (2, result.revision))
        self.assertEqual(
            [(e.kind, e.key, e.revision) for e in events[g + 1 : g + 3]],
            [
                (EventKind.UPDATE, "grp.a", result.revision),
                (EventKind.UPDATE, "grp.b", result.revision),
            ],
        )
        # Resumed and grouped: the changes since, then SYNCED.
        with self.client.watch("grp", since=result.revision - 1, timeout=WAIT, grouped=True) as w:
            kinds = []
            for e in w:
                kinds.append(e.kind)
                if e.kind is EventKind.SYNCED:
                    break
        self.assertEqual(kinds, [EventKind.UPDATE, EventKind.UPDATE, EventKind.SYNCED])

    def test_asyncio_txn_ephemeral_and_grouped(self) -> None:
        import asyncio

        import nkv.aio

        addr = self.server.addr

        async def main() -> list:
            async with await nkv.aio.AsyncClient.connect(addr) as client:
                sub = await client.subscribe("aio", grouped=True)
                seen = []
                async for event in sub:
                    seen.append(event.kind)
                    if event.kind is EventKind.SYNCED:
                        async with client.txn() as t:
                            t.put("aio.a", b"1").put("aio.b", b"2")
                        await client.put("aio.e", b"1", ephemeral=True, grace=0.5)
                    if event.key == "aio.e":
                        break
                with self.assertRaises(nkv.ConditionFailed) as ctx:
                    await client.txn().if_absent("aio.a").put("aio.c", b"3").commit()
                self.assertEqual(ctx.exception.key, "aio.a")
                await sub.aclose()
                return seen

        seen = asyncio.run(main())
        self.assertEqual(
            seen,
            [EventKind.SYNCED, EventKind.GROUP, EventKind.UPDATE, EventKind.UPDATE, EventKind.UPDATE],
        )


class TestReadme(ServerTest):
    """The README's Python example of ephemeral keys and transactions runs
    as written (against this test's server, through $NKV_ADDR)."""

    def test_the_readme_example_runs(self) -> None:
        import contextlib
        import io
        import re

        readme = os.path.join(os.path.dirname(__file__), "..", "..", "..", "README.md")
        with open(readme, encoding="utf-8") as f:
            blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
        example = [b for b in blocks if "client.txn()" in b]
        self.assertEqual(len(example), 1, "one README example uses client.txn()")
        old = os.environ.get("NKV_ADDR")
        os.environ["NKV_ADDR"] = self.server.addr
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(example[0], "README.md", "exec"), {})
        finally:
            if old is None:
                del os.environ["NKV_ADDR"]
            else:
                os.environ["NKV_ADDR"] = old
        rev = self.client.entry("net.lock").revision
        self.assertEqual(out.getvalue(), f"{rev} 0\nheld: net.lock at revision {rev}\n")


class TestThreads(ServerTest):
    def test_many_threads_share_a_client(self) -> None:
        c = self.client
        watch = Recorder()
        wsub = c.subscribe("th", watch)
        self.addCleanup(wsub.close)
        watch.wait_for(EventKind.SYNCED)
        threads, rounds, errors = 8, 60, []
        last = {}

        def writer(t: int) -> None:
            try:
                prev = 0
                for i in range(rounds):
                    key = f"th.{t}.{i % 4}"
                    val = f"t{t}-r{i}".encode()
                    rev = c.put(key, val)
                    assert rev > prev, "revisions must grow"
                    prev = rev
                    last[key] = (val, rev)
                    assert c.entry(key) == nkv.Entry(val, rev), f"crossed answer for {key}"
                    if i % 20 == 0:
                        assert all(k.startswith(f"th.{t}.") for k, _, _ in c.list(f"th.{t}"))
            except BaseException as e:  # reported below
                errors.append(e)

        def churner() -> None:
            try:
                for _ in range(20):
                    rec = Recorder()
                    with c.subscribe("th", rec):
                        pass
            except BaseException as e:
                errors.append(e)

        pool = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        pool.append(threading.Thread(target=churner))
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        self.assertEqual(errors, [])
        c.put("th.end", b"end")
        watch.wait_for(EventKind.UPDATE, "th.end", timeout=60)
        final = {}
        accounted = 0
        for e in watch.snapshot():
            if e.kind is EventKind.UPDATE and e.key != "th.end":
                final[e.key] = (e.value, e.revision)
                accounted += 1 + e.coalesced
        self.assertEqual(final, last)
        self.assertEqual(accounted, threads * rounds)


class TestReconnect(unittest.TestCase):
    """The server is killed; the data changes through a second server on the
    same data directory while the client cannot see it; the server comes
    back. The callback sees DISCONNECTED, the missed changes (or RESET and a
    snapshot), then SYNCED; requests during the outage fail fast."""

    def test_reconnect_after_kill9(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        server = Server(tmp.name)
        self.addCleanup(server.stop)
        c = nkv.Client(server.addr, timeout=3)
        self.addCleanup(c.close)
        for k, v in (("r.a", b"1"), ("r.b", b"2"), ("r.c", b"3")):
            c.put(k, v)
        rec = Recorder()
        c.subscribe("r", rec)
        self.assertEqual(rec.wait_for(EventKind.SYNCED), 3)

        server.kill9()
        disc = rec.wait_for(EventKind.DISCONNECTED, start=4)
        self.assertEqual(disc, 4)
        t0 = time.monotonic()
        with self.assertRaises(nkv.ConnectionFailed):
            c.put("r.during", b"x")
        with self.assertRaises(nkv.ConnectionFailed):
            c.get("r.a")
        self.assertLess(time.monotonic() - t0, 2, "requests during the outage must fail fast")

        side = Server(tmp.name, name="side")  # same data directory, other socket
        try:
            with nkv.Client(side.addr) as other:
                other.put("r.a", b"after")
                other.delete("r.b")
                other.put("r.d", b"new")
                other.put("q.x", b"not covered")
        finally:
            side.stop()
        server.start()

        synced = rec.wait_for(EventKind.SYNCED, start=disc + 1, timeout=30)
        between = rec.snapshot()[disc + 1 : synced]
        kinds = {e.kind for e in between}
        self.assertFalse(kinds & {EventKind.DISCONNECTED, EventKind.CLOSED})
        if between and between[0].kind is EventKind.RESET:
            self.assertEqual(
                sorted((e.key, e.value) for e in between[1:]),
                [("r.a", b"after"), ("r.c", b"3"), ("r.d", b"new")],
            )
        else:
            self.assertEqual(
                sorted((e.kind.name, e.key, e.value) for e in between),
                [("DELETE", "r.b", None), ("UPDATE", "r.a", b"after"), ("UPDATE", "r.d", b"new")],
            )
        # the callback's view equals the server's state
        view = {}
        for e in rec.snapshot()[: synced + 1]:
            if e.kind is EventKind.UPDATE:
                view[e.key] = (e.value, e.revision)
            elif e.kind is EventKind.DELETE:
                view.pop(e.key, None)
            elif e.kind is EventKind.RESET:
                view.clear()
        deadline = time.monotonic() + WAIT
        while True:
            try:
                c.ping()
                break
            except nkv.ConnectionFailed:
                self.assertLess(time.monotonic() - deadline, 0, "requests fail after resync")
                time.sleep(0.05)
        self.assertEqual(view, {k: (v, r) for k, v, r in c.list("r")})
        rl = c.put("r.live", b"again")
        i = rec.wait_for(EventKind.UPDATE, "r.live", start=synced + 1)
        self.assertEqual(i, synced + 1)
        self.assertEqual(rec.snapshot()[i].revision, rl)


class TestFork(ServerTest):
    def test_forked_child_fails_fast(self) -> None:
        c = self.client
        c.put("f.parent", b"p")
        rec = Recorder()
        c.subscribe("f", rec)
        rec.wait_for(EventKind.SYNCED)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report through the pipe, never return into unittest
            code = 1
            try:
                signal.alarm(20)
                os.close(r)
                t0 = time.monotonic()
                results = []
                for call in (
                    lambda: c.put("f.child", b"x"),
                    lambda: c.get("f.parent"),
                    c.ping,
                ):
                    try:
                        call()
                        results.append("ok")
                    except nkv.ConnectionFailed:
                        results.append("ConnectionFailed")
                    except BaseException as e:
                        results.append(type(e).__name__)
                c.close()
                took = time.monotonic() - t0
                os.write(w, f"{','.join(results)};{took:.3f}".encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        _, status = os.waitpid(pid, 0)
        with os.fdopen(r, "rb") as f:
            report = f.read().decode()
        self.assertFalse(
            os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM, "the child hung"
        )
        self.assertEqual(os.waitstatus_to_exitcode(status), 0, report)
        results, took = report.split(";")
        self.assertEqual(results, "ConnectionFailed,ConnectionFailed,ConnectionFailed")
        self.assertLess(float(took), 5)
        # the parent is unaffected
        self.assertIsNone(c.get("f.child"))
        c.put("f.after", b"a")
        i = rec.wait_for(EventKind.UPDATE, "f.after")
        self.assertEqual(i, 2, "events between SYNCED and f.after in the parent")


if __name__ == "__main__":
    logging.basicConfig()
    unittest.main()
