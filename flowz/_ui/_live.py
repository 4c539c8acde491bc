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

from .._logging import get_logger
from ..errors import FlowzError, RunNotFoundError, StoreError
from ..store._protocol import Store

__all__ = ["LiveHub"]

Renderer = Callable[[], Awaitable[dict[str, str]]]
log = get_logger("flowz.ui")


class LiveHub:
    """Counts database changes and shares each version's rendering between browsers."""

    def __init__(
        self,
        store: Store,
        *,
        refresh: float = 2.0,
        min_interval: float = 0.3,
        share: float = 0.03,
    ) -> None:
        self._store = store
        #: Seconds between renders when nothing signalled (durations and rates move on;
        #: PostgreSQL does not notify every journal write).
        self.refresh = refresh
        #: Seconds between two versions at least: bursts of commits coalesce.
        self.min_interval = min_interval
        #: The share of time rendering may take: a page that takes 100 ms to render
        #: (a run with a wide gather) is updated every 3.3 s, not every 0.3 s, so watching
        #: a run never slows it much, however big it is.
        self.share = share
        self._spent = 0.0  #: seconds spent rendering the current version
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
            try:
                await self._store.wait_for_change(self.refresh, mark)
            except StoreError as exc:  # the database is away: pages keep what they show
                log.warning("flowz ui: waiting for changes failed (%s); retrying", exc)
                await anyio.sleep(self.refresh)
            if self.watchers:
                self.version += 1
                self._spent = 0.0
                self._changed.set()
                self._changed = anyio.Event()
                self._cache.clear()
                # Pages no one renders now need no lock: the table stays as small as the
                # set of pages open, however many were opened since the start.
                self._locks = {k: lock for k, lock in self._locks.items() if lock.locked()}
            await anyio.sleep(self.min_interval)
            if self._spent > self.min_interval * self.share:
                await anyio.sleep(self._spent / self.share - self.min_interval)

    async def _render(self, key: str, renderer: Renderer) -> dict[str, str]:
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            cached = self._cache.get(key)
            if cached is None or cached[0] != self.version:
                version = self.version
                started = time.perf_counter()
                try:
                    result: dict[str, str] | BaseException = await renderer()
                except Exception as exc:  # every watcher of this version gets it
                    result = exc
                self._spent += time.perf_counter() - started
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
                except RunNotFoundError as exc:  # pruned, say: nothing more to show
                    yield _event("gone", json.dumps({"message": str(exc)}))
                    return
                except FlowzError:  # the database is away: try again at the next version
                    fragments = {}
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
