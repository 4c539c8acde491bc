"""Serving the dashboard: `flowz ui` in the foreground, `flowz.ui()` in a notebook's background."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .._config import Settings
from ..errors import ConfigError

__all__ = [
    "DashboardServer",
    "check_binding",
    "require_ui_extra",
    "serve_ui",
    "start_in_background",
    "ui",
]

logger = logging.getLogger("flowz.ui")


def check_binding(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a token."""
    if token is not None or _is_loopback(host):
        return
    raise ConfigError(
        f"--host {host} lets other machines reach the dashboard, which can cancel and retry "
        "runs: give it a secret with --token (or FLOWZ_UI_TOKEN), or bind to 127.0.0.1"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _config(
    settings: Settings,
    host: str,
    port: int,
    read_only: bool,
    token: str | None,
    *,
    create: bool = False,
) -> Any:
    import uvicorn

    from ._app import create_app

    check_binding(host, token)
    app = create_app(settings, read_only=read_only, token=token, create=create)
    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5
    )


def _server(config: Any) -> Any:
    """A uvicorn server that ends the live streams first when it stops.

    Open pages hold their event streams; a graceful shutdown waits for every
    connection, so the streams end first (browsers reconnect to the next server).
    """
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            board = config.app.state.dashboard
            if hasattr(board, "hub"):
                board.hub.close()
            await super().shutdown(sockets)

    return Server(config)


def serve_ui(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8700,
    read_only: bool = False,
    token: str | None = None,
) -> None:
    """Serve the dashboard until interrupted (Ctrl-C)."""
    require_ui_extra()
    _server(_config(settings, host, port, read_only, token)).run()


@dataclass
class DashboardServer:
    """A dashboard served from a background thread (`flowz.ui()`); shows as an IFrame."""

    url: str
    path: str = "/runs"
    height: int = 640
    _server: Any = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def page(self, run_id: str | None = None, *, height: int | None = None) -> DashboardServer:
        """The same server, showing one run's page (or the runs page)."""
        path = "/runs" if run_id is None else f"/runs/{quote(run_id, safe='')}"
        return DashboardServer(self.url, path, height or self.height, self._server, self._thread)

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def running(self) -> bool:
        """Whether the background server still serves."""
        return self._thread is not None and self._thread.is_alive()

    def _repr_html_(self) -> str:
        from html import escape

        src = escape(self.url + self.path, quote=True)
        return (
            f'<iframe src="{src}" width="100%" height="{self.height}" '
            'style="border: 1px solid #ddd; border-radius: 6px"></iframe>'
            f'<p><a href="{src}" target="_blank">Open the flowz dashboard</a></p>'
        )

    def __str__(self) -> str:
        return self.url + self.path


def start_in_background(
    settings: Settings, *, host: str = "127.0.0.1", port: int = 0, read_only: bool = False
) -> DashboardServer:
    """Start serving from a daemon thread; return once it accepts connections."""
    if port == 0:  # a free port, chosen here so the URL is known before it serves
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    server = _server(_config(settings, host, port, read_only, None, create=True))
    thread = threading.Thread(target=server.run, name="flowz-ui", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ConfigError(
                f"the dashboard did not start on {host}:{port} (its error is logged above): "
                "if the port is taken, pass another with flowz.ui(port=...)"
            )
        time.sleep(0.02)
    return DashboardServer(f"http://{host}:{port}", _server=server, _thread=thread)


_servers: dict[str, DashboardServer] = {}


def ui(
    run: Any = None, *, db: str | None = None, port: int = 0, height: int = 640
) -> DashboardServer:
    """Serve the dashboard in the background and show it (a run's page) in the notebook.

    The server starts once per database and keeps serving while the kernel lives;
    later calls show other pages of it. Outside a notebook, print it for the URL.

    Args:
        run: a run id or a handle (`wf.start(...)`): its page; None: the runs page.
        db: the database URL (default: FLOWZ_DATABASE_URL, or the embedded SQLite file).
        port: the port on 127.0.0.1 (0: a free one).
        height: the IFrame's height in pixels.

    Examples:
        >>> handle = await crawl.start(urls)      # doctest: +SKIP
        >>> flowz.ui(handle)                        # doctest: +SKIP
    """
    require_ui_extra()
    settings = Settings.from_env(database_url=db)
    server = _servers.get(settings.database_url)
    if server is None or not server.running:
        server = start_in_background(settings, port=port)
        _servers[settings.database_url] = server
    run_id = run if run is None or isinstance(run, str) else str(run.id)
    return server.page(run_id, height=height)


def require_ui_extra() -> None:
    """ConfigError naming the extra when the dashboard's libraries are missing."""
    from importlib.util import find_spec

    needed = ("starlette", "uvicorn", "jinja2", "python_multipart")
    missing = [name for name in needed if find_spec(name) is None]
    if missing:
        raise ConfigError(f"the dashboard needs {', '.join(missing)}: pip install 'flowz[ui]'")
