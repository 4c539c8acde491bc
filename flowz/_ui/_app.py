"""The dashboard's web app (Starlette): pages, live streams, actions, and access control."""

from __future__ import annotations

import contextlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any
from urllib.parse import quote, urlencode

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from .._client import Client
from .._config import Settings, redacted_url
from ..errors import FlowzError, RunNotFoundError, StoreError, UsageError
from . import _pages
from ._live import LiveHub

__all__ = ["Dashboard", "create_app"]

_TOKEN_COOKIE = "flowz_token"


@dataclass
class Dashboard:
    """What every request of one `flowz ui` shares."""

    settings: Settings
    read_only: bool = False
    token: str | None = None
    #: Make the schema in a new database (a notebook's first look); `flowz ui` does not.
    create: bool = False
    client: Client = field(init=False)
    hub: LiveHub = field(init=False)
    #: Put in every form and checked on every action: another site cannot post one.
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def __post_init__(self) -> None:
        self.client = Client(settings=self.settings, create=self.create)

    def context(self, request: Request, **values: Any) -> dict[str, Any]:
        return {
            "database": redacted_url(self.settings.database_url),
            "read_only": self.read_only,
            "csrf": self.csrf,
            "live_url": None,
            "section": "",
            "notice": request.query_params.get("notice"),
            **values,
        }


def create_app(
    settings: Settings,
    *,
    read_only: bool = False,
    token: str | None = None,
    create: bool = False,
) -> Starlette:
    """The dashboard over the database of `settings`.

    With a `token`, every request must carry it: `Authorization: Bearer TOKEN`, or
    `?token=TOKEN` once (a cookie keeps it for the browser). Without `create`, a
    database that does not exist is an error, not a new empty one (a mistyped path).
    """
    board = Dashboard(settings, read_only, token, create)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with board.client:
            board.hub = LiveHub(board.client.store)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(board.hub.run)
                yield
                tasks.cancel_scope.cancel()

    def page(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except RunNotFoundError as exc:
                return _error(request, board, "Not found", str(exc), 404)
            except StoreError as exc:
                return _error(request, board, "The database did not answer", str(exc), 503)
            except FlowzError as exc:
                return _error(request, board, "That did not work", str(exc), 400)

        return guarded

    @page
    async def runs(request: Request) -> Response:
        filters = _pages.RunsFilter.from_query(request.query_params)
        version = str(board.hub.version)  # before the reads: a later change is sent
        fragments = await _pages.runs_fragments(board.client, filters)
        live = None if filters.cursor else f"/live/runs?{filters.query(v=version)}"
        return _html(
            "runs.html",
            board.context(
                request,
                section="runs",
                filters=filters,
                fragments=fragments,
                live_url=live,
            ),
        )

    @page
    async def search(request: Request) -> Response:
        run_id = request.query_params.get("id", "").strip()
        if not run_id:
            raise UsageError("type a run id to open it")
        await board.client.get_run(run_id)
        return RedirectResponse(f"/runs/{quote(run_id, safe='')}", 303)

    @page
    async def run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        version = board.hub.version
        view = await _pages.load_run(board.client, run_id, board.settings.lease_seconds)
        fragments = _pages.run_fragments(view, read_only=board.read_only, csrf=board.csrf)
        live = f"/live/run/{quote(run_id, safe='')}?v={version}"
        return _html(
            "run.html",
            board.context(
                request,
                section="runs",
                row=view.row,
                fragments=fragments,
                live_url=live,
            ),
        )

    @page
    async def failed(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        view = await _pages.load_run(board.client, run_id, board.settings.lease_seconds)
        failures = view.model.failures if view.model else []
        shown = failures[: _pages.FAILURES_SHOWN]
        return _html(
            "failed.html",
            board.context(
                request,
                section="runs",
                run_id=run_id,
                failures=shown,
                more=len(failures) - len(shown),
            ),
        )

    @page
    async def workers(request: Request) -> Response:
        version = board.hub.version
        fragment = await _pages.workers_fragment(board.client, board.settings.lease_seconds)
        return _html(
            "workers.html",
            board.context(
                request,
                section="workers",
                fragments={"workers": fragment},
                live_url=f"/live/workers?v={version}",
            ),
        )

    async def queues_fragments() -> dict[str, str]:
        html = await _pages.queues_fragment(
            board.client,
            board.settings.lease_seconds,
            read_only=board.read_only,
            csrf=board.csrf,
        )
        return {"queues": html}

    @page
    async def queues(request: Request) -> Response:
        version = board.hub.version
        return _html(
            "queues.html",
            board.context(
                request,
                section="queues",
                fragments=await queues_fragments(),
                live_url=f"/live/queues?v={version}",
            ),
        )

    async def live(request: Request) -> Response:
        what = request.path_params["what"]
        renderer: Callable[[], Awaitable[dict[str, str]]]
        if what == "runs":
            filters = _pages.RunsFilter.from_query(request.query_params)

            async def renderer() -> dict[str, str]:
                return await _pages.runs_fragments(board.client, filters)

            key = f"runs?{filters.query()}"
        elif what.startswith("run/"):
            run_id = what.removeprefix("run/")

            async def renderer() -> dict[str, str]:
                view = await _pages.load_run(board.client, run_id, board.settings.lease_seconds)
                return _pages.run_fragments(view, read_only=board.read_only, csrf=board.csrf)

            key = what
        elif what == "workers":

            async def renderer() -> dict[str, str]:
                lease = board.settings.lease_seconds
                return {"workers": await _pages.workers_fragment(board.client, lease)}

            key = what
        elif what == "queues":
            renderer, key = queues_fragments, what
        else:
            return Response("no such live page", 404)
        shown = request.query_params.get("v", "")
        return StreamingResponse(
            board.hub.follow(key, renderer, int(shown) if shown.isdigit() else None),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def act(request: Request) -> Response:
        if board.read_only:
            return Response("this dashboard is read-only (flowz ui --read-only)", 403)
        form = await request.form()
        fields = {k: str(v) for k, v in form.items()}
        if not hmac.compare_digest(fields.get("csrf", ""), board.csrf):
            return Response(
                "this form is from another page or an earlier `flowz ui`: reload and try again",
                403,
            )
        action = request.path_params["action"]
        try:
            target, notice = await _act(board, action, fields)
        except FlowzError as exc:
            run_id = fields.get("run", "")
            target, notice = (f"/runs/{quote(run_id, safe='')}" if run_id else "/runs"), str(exc)
        return RedirectResponse(f"{target}?notice={quote(notice)}", status_code=303)

    async def home(request: Request) -> Response:
        return RedirectResponse("/runs", 303)

    static = StaticFiles(directory=str(files("flowz._ui").joinpath("static")))
    middleware = [] if token is None else [Middleware(_TokenGate, token=token)]
    app = Starlette(
        routes=[
            Route("/", home),
            Route("/runs", runs),
            Route("/search", search),
            Route("/runs/{run_id:path}", run),
            Route("/failed/{run_id:path}", failed),
            Route("/workers", workers),
            Route("/queues", queues),
            Route("/live/{what:path}", live),
            Route("/actions/{action}", act, methods=["POST"]),
            Mount("/static", static, name="static"),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.dashboard = board
    return app


async def _act(board: Dashboard, action: str, fields: dict[str, str]) -> tuple[str, str]:
    """Do one action; where to go next and what to say there."""
    client = board.client
    if action in ("pause", "resume"):
        name = fields.get("schedule", "")
        if not await client.store.pause_schedule(name, action == "pause"):
            raise UsageError(f"no schedule {name!r}: a worker stores it when it starts")
        return "/queues", f"{name}: {'paused' if action == 'pause' else 'resumed'}"
    run_id = fields.get("run", "")
    await client.get_run(run_id)
    here = f"/runs/{quote(run_id, safe='')}"
    if action == "cancel":
        cancelled = await client.handle(run_id).cancel()
        return here, f"cancelled: {cancelled} execution(s)"
    if action == "retry":
        await client.handle(run_id).retry()
        return here, "pending again: a worker that imports its module resumes it"
    if action == "fork":
        try:
            at = int(fields.get("at", ""))
        except ValueError:
            raise UsageError("fork: choose the position to run again from") from None
        forked = await client.fork(run_id, at=at)
        return f"/runs/{quote(forked.id, safe='')}", f"forked from {run_id} at {at}"
    if action == "send":
        topic = fields.get("topic", "").strip()
        if not topic:
            raise UsageError("send: name the topic the workflow receives on")
        try:
            value = json.loads(fields.get("value", "null") or "null")
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"send: the value is not JSON ({exc.msg}): write it as JSON, "
                '"text" in quotes, {"approved": true}'
            ) from None
        stored = await client.send(run_id, topic, value)
        return here, f"sent on {topic!r}" if stored else "already delivered: nothing stored"
    raise UsageError(f"no action {action!r}: cancel, retry, fork, send, pause or resume")


class _TokenGate:
    """401 for every request without the dashboard's token (plain ASGI: streams pass as is)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.query_params.get("token")
        if given is not None and hmac.compare_digest(given, self.token):
            # Once from the link; then the cookie, so the token leaves the address bar.
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            response: Response = RedirectResponse(target, status_code=303)
            response.set_cookie(
                _TOKEN_COOKIE, self.token, httponly=True, samesite="strict", path="/"
            )
            await response(scope, receive, send)
            return
        header = request.headers.get("authorization", "")
        presented = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        presented = presented or request.cookies.get(_TOKEN_COOKIE, "")
        if presented and hmac.compare_digest(presented, self.token):
            await self.app(scope, receive, send)
            return
        response = HTMLResponse(
            "<h1>401: this flowz dashboard needs its token</h1><p>Open it with "
            "<code>?token=…</code> (the value of <code>--token</code> or FLOWZ_UI_TOKEN), or "
            "send <code>Authorization: Bearer …</code>.</p>",
            status_code=401,
        )
        await response(scope, receive, send)


def _html(template: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(_pages.render(template, **context), status_code=status_code)


def _error(request: Request, board: Dashboard, heading: str, message: str, code: int) -> Response:
    return _html("error.html", board.context(request, heading=heading, message=message), code)
