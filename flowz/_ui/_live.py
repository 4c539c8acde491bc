"""Live updates: one watcher of the store's change signal for every open page.

Browsers follow a page by server-sent events. A change in the database (NOTIFY on
PostgreSQL, a commit on SQLite) bumps one version; each live fragment is rendered
once per version, however many browsers show it, and sent only where it changed.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

from ..store._protocol import Store

__all__ = ["LiveHub"]

Renderer = Callable[[], Awaitable[dict[str, str]]]


class LiveHub:
    """Counts database changes and shares each version's rendering between browsers."""

    def __init__(self, store: Store, *, refresh: float = 2.0, min_interval: float = 0.3) -> None:
        self._store = store
        #: Seconds between renders when nothing signalled (durations and rates move on;
        #: PostgreSQL does not notify every journal write).
        self.refresh = refresh
        #: Seconds between two versions at most: bursts of commits coalesce.
        self.min_interval = min_interval
        self.version = 0
        self.watchers = 0
        self._changed = anyio.Event()
        self._closing = anyio.Event()
        self._cache: dict[str, tuple[int, dict[str, str] | BaseException]] = {}
        self._locks: dict[str, anyio.Lock] = {}

    async def run(self) -> None:
        """Bump the version on every change, while some page is watched (until cancelled)."""
        while True:
            mark = self._store.change_mark()
            await self._store.wait_for_change(self.refresh, mark)
            if self.watchers:
                self.version += 1
                self._changed.set()
                self._changed = anyio.Event()
                self._cache.clear()
            await anyio.sleep(self.min_interval)

    async def _render(self, key: str, renderer: Renderer) -> dict[str, str]:
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            cached = self._cache.get(key)
            if cached is None or cached[0] != self.version:
                version = self.version
                try:
                    result: dict[str, str] | BaseException = await renderer()
                except Exception as exc:  # sent as "gone" to every watcher
                    result = exc
                self._cache[key] = (version, result)
                cached = (version, result)
        if isinstance(cached[1], BaseException):
            raise cached[1]
        return cached[1]

    def close(self) -> None:
        """End every stream (the server is stopping: browsers reconnect to the next one)."""
        self._closing.set()
        self._changed.set()

    async def follow(
        self, key: str, renderer: Renderer, shown: int | None = None
    ) -> AsyncIterator[bytes]:
        """Server-sent events: each fragment of `key`'s page when it changes.

        `shown`: the version the page was rendered at; while it is current, the page
        is up to date and nothing is sent.
        """
        self.watchers += 1
        sent: dict[str, str] = {}
        quiet_since = time.monotonic()
        try:
            yield b"retry: 2000\n\n"
            if shown == self.version:
                with anyio.move_on_after(self.refresh * 2):
                    await self._changed.wait()
            while not self._closing.is_set():
                changed = self._changed
                try:
                    fragments = await self._render(key, renderer)
                except Exception as exc:
                    yield _event("gone", json.dumps({"message": str(exc)}))
                    return
                for name, html in fragments.items():
                    if sent.get(name) != html:
                        sent[name] = html
                        quiet_since = time.monotonic()
                        yield _event("fragment", json.dumps({"key": name, "html": html}))
                if time.monotonic() - quiet_since > 15:  # keeps proxies from closing it
                    quiet_since = time.monotonic()
                    yield b": still here\n\n"
                with anyio.move_on_after(max(self.refresh * 2, 1.0)):
                    await changed.wait()
        finally:
            self.watchers -= 1


def _event(name: str, data: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {name}\n{lines}\n".encode()
