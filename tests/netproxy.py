"""A TCP proxy on 127.0.0.1 that misbehaves on demand, for the network fault tests.

It sits between flowz and PostgreSQL and can add latency to every statement, reset
connections (at once, or when a statement passes), and blackhole traffic: the
connections stay open and nothing passes until `heal()`, as in a network partition,
after which what was sent meanwhile is delivered late. It runs its own event loop in a
thread, so tests and worker processes use it like a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: PostgreSQL's ReadyForQuery message (idle): the end of a connection's handshake.
_READY = b"Z\x00\x00\x00\x05I"
_WINDOW = 4096  # bytes kept from a direction's last chunk, to find a pattern cut in two


@dataclass
class _Trigger:
    pattern: bytes
    then: bytes | None
    deliver: bool
    fired: int = 0
    count: int = 1


@dataclass(eq=False)
class Connection:
    """One client connection and its upstream."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    #: Set while bytes may pass; cleared by a blackhole.
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    #: What the client sent lately (for patterns) and whether it ever sent each watched one.
    tail: bytes = b""
    sent: set[bytes] = field(default_factory=set)
    armed: _Trigger | None = None
    #: Client chunks passed so far, and server chunks passed since it sent `_let_through`.
    passed: int = 0
    #: The server said ReadyForQuery once: the connection's handshake is over.
    ready: bool = False

    #: Set when the server's next reply must be swallowed and the connection reset.
    reset_on_reply: asyncio.Event = field(default_factory=asyncio.Event)


class FaultyProxy:
    """`with FaultyProxy(5432) as proxy:` listens on `proxy.port` and forwards to upstream."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        #: Seconds added before each chunk the client sends is passed on.
        self.latency = 0.0
        self.connections: list[Connection] = []
        self._sent_counts: dict[bytes, int] = {}
        self._answers: dict[bytes, int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._blackhole_new = False
        #: While blackholed, what still passes: chunks that carry this (and a handshake).
        self._let_through: bytes | None = None
        self._triggers: list[_Trigger] = []
        self._watched: set[bytes] = {b"LISTEN"}

    # -- lifecycle --------------------------------------------------------------
    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accept, "127.0.0.1", 0), wait=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for conn in list(self.connections):
                self._abort(conn)

        self._call(close(), wait=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def url(self, database_url: str) -> str:
        """`database_url` with its host and port replaced by this proxy's."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(database_url)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        return urlunsplit(
            parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host)
        )

    # -- faults, callable from any thread ------------------------------------------
    def blackhole(self, sent: bytes | None = None) -> None:
        """Stop every connection (or those whose client sent `sent`) passing anything.

        Without `sent`, connections opened from now on are blackholed too.
        """

        def apply() -> None:
            if sent is None:
                self._blackhole_new = True
            for conn in self.connections:
                if sent is None or sent in conn.sent:
                    conn.flowing.clear()

        self._loop.call_soon_threadsafe(apply)

    def heal(self) -> None:
        """Let everything pass again: what was held is delivered now, late."""

        def apply() -> None:
            self._blackhole_new = False
            self._let_through = None
            for conn in self.connections:
                conn.flowing.set()

        self._loop.call_soon_threadsafe(apply)

    def let_through(self, pattern: bytes) -> None:
        """While blackholed, pass what carries `pattern`: one statement, and its answer.

        New connections may then also open, so that a statement waiting for one gets
        through; everything else stays held.
        """

        def apply() -> None:
            self._let_through = pattern
            for conn in self.connections:
                conn.flowing.set()  # each held chunk looks again whether it may pass
                conn.flowing.clear()

        self._loop.call_soon_threadsafe(apply)

    def answered(self, pattern: bytes) -> int:
        """Server chunks passed to connections after they sent `pattern` through."""
        return self._answers.get(pattern, 0)

    def reset_all(self) -> None:
        """Reset every open connection, as a router that dropped them would."""

        def apply() -> None:
            for conn in list(self.connections):
                self._abort(conn)

        self._loop.call_soon_threadsafe(apply)

    def reset_on(
        self, pattern: bytes, *, then: bytes | None = None, deliver: bool = True, count: int = 1
    ) -> None:
        """Reset the next `count` connection(s) whose client sends `pattern` (then `then`).

        `deliver`: the statement reaches the server and the connection is reset when the
        server replies (the client never learns the outcome); else it is dropped unsent.
        """
        trigger = _Trigger(pattern, then, deliver, count=count)
        self._loop.call_soon_threadsafe(self._triggers.append, trigger)

    def fired(self) -> int:
        """How many connections `reset_on` reset so far."""
        return sum(t.fired for t in self._triggers)

    def watch(self, pattern: bytes) -> None:
        """Note from now on which connections send `pattern` (LISTEN is always watched)."""
        self._loop.call_soon_threadsafe(self._watched.add, pattern)

    def count_sent(self, pattern: bytes) -> int:
        """How many connections (open or closed) sent a watched `pattern`."""
        return self._sent_counts.get(pattern, 0)

    # -- the forwarding ----------------------------------------------------------
    def _call(self, coro: Any, *, wait: bool) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=30) if wait else future

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        conn = Connection(writer, up_writer)
        if not self._blackhole_new:
            conn.flowing.set()
        self.connections.append(conn)
        async with asyncio.TaskGroup() as pumps:
            pumps.create_task(self._pump(conn, reader, up_writer, upstream=True))
            pumps.create_task(self._pump(conn, up_reader, writer, upstream=False))
        self._abort(conn)

    async def _pump(
        self,
        conn: Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        """Pass chunks on, with the latency, triggers and blackhole in force."""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    writer.close()
                    return
                if upstream:
                    if self.latency:
                        await asyncio.sleep(self.latency)
                    if not self._inspect(conn, chunk):
                        self._abort(conn)  # dropped unsent
                        return
                while not conn.flowing.is_set() and not self._passes(conn, chunk, upstream):
                    await conn.flowing.wait()
                if upstream:
                    conn.passed += 1
                elif not conn.ready and _READY in chunk:
                    conn.ready = True
                elif self._let_through is not None and self._let_through in conn.sent:
                    self._answers[self._let_through] = self._answers.get(self._let_through, 0) + 1
                if not upstream and conn.reset_on_reply.is_set():
                    self._abort(conn)  # the server answered: the client never hears it
                    return
                writer.write(chunk)
                await writer.drain()
        except OSError:  # reset, by a side or by this proxy: the other pump sees it too
            self._abort(conn)

    def _passes(self, conn: Connection, chunk: bytes, upstream: bool) -> bool:
        """Whether a chunk passes a blackhole: only through `let_through`."""
        pattern = self._let_through
        if pattern is None:
            return False
        if not conn.ready:  # a new connection's handshake
            return True
        if not upstream:  # the server answers only what was let through
            return pattern in conn.sent
        return pattern in chunk

    def _inspect(self, conn: Connection, chunk: bytes) -> bool:
        """Note what the client sent; False when a trigger drops this chunk."""
        seen = conn.tail + chunk
        conn.tail = seen[-_WINDOW:]
        for pattern in self._watched:
            if pattern in seen and pattern not in conn.sent:
                conn.sent.add(pattern)
                self._sent_counts[pattern] = self._sent_counts.get(pattern, 0) + 1
        if conn.armed is None:
            for trigger in self._triggers:
                if trigger.fired < trigger.count and trigger.pattern in seen:
                    conn.armed = trigger
                    seen = seen[seen.index(trigger.pattern) :]
                    break
        trigger = conn.armed
        if trigger is None or (trigger.then is not None and trigger.then not in seen):
            return True
        trigger.fired += 1
        conn.armed = None
        if not trigger.deliver:
            return False
        conn.reset_on_reply.set()
        return True

    def _abort(self, conn: Connection) -> None:
        """Close both sides with a reset (SO_LINGER 0), not a graceful FIN."""
        if conn in self.connections:
            self.connections.remove(conn)
        for writer in (conn.client, conn.server):
            sock: socket.socket | None = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        conn.flowing.set()  # let blocked pumps see the closed transports and end


def wait_for(condition: Callable[[], bool], seconds: float = 60, what: str = "") -> None:
    """Poll `condition` until true (the proxy runs elsewhere; there is no event to await)."""
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)
