"""The Starlette app: routes for webhooks, the JSON API, server-sent events and the HTML pages.

    POST /.well-known/workflow/v1/webhook/<token>   the request becomes the hook's payload (202; 404 unknown)
    GET  /health                                    {"ok": true, "workflows": [...], "requests": N}
    GET  /api/runs?status=&workflow=&since=&until=&q=&cursor=&limit=   a page of runs, newest first, and counts
    POST /api/runs          {"workflow": NAME, "args": [...], "kwargs": {...}}  -> 201 {"run_id": ...}
    GET  /api/runs/<id>     the run's story: run, steps, hooks, waits, streams, children, trace, events
    GET  /api/runs/<id>/steps/<step>   one step with its input and output (the story leaves them out)
    GET  /api/runs/<id>/callsites      file:line of each step, sleep and hook call (replayed on loaded code)
    GET  /api/runs/<id>/replay         replays cleanly, or the divergence
    POST /api/runs/<id>/cancel {"reason": ...}   POST /api/runs/<id>/fork {"at": N}
    POST /api/hooks/resume {"token": T, "payload": ...}
    GET  /api/workflows     the loaded workflows
    GET  /api/live/runs, /api/live/runs/<id>, /api/live/runs/<id>/streams/<name>   server-sent events
    GET  /, /runs/<id>, /workflows, /fragments/runs   the UI
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html import escape
from importlib import resources
from typing import Any
from urllib.parse import unquote

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..runtime.errors import InvalidIdError, NotFoundError, RunNotFoundError, StorageUnavailableError
from ..runtime.ids import validate_id
from ..runtime.registry import REGISTRY
from ..runtime.world import World
from . import actions, live, pages
from .limits import BodyReader, HttpError, Limits, parse_json
from .runs_query import RunsQuery, StatusCounts, list_runs
from .security import WEBHOOK_PREFIX, Guard
from .story import run_row, run_story, step_json

log = logging.getLogger("wf.web")


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str)


@dataclass
class WebSettings:
    """How the app is served: the bound host (for the Host check), the token (non-loopback binds), limits."""

    host: str = "127.0.0.1"
    token: str | None = None
    limits: Limits = field(default_factory=Limits)


class WebApp:
    """The handlers, sharing the World, the body reader, the counts cache and the runs watcher."""

    def __init__(self, world: World, settings: WebSettings) -> None:
        self.world = world
        self.settings = settings
        self.bodies = BodyReader(settings.limits)
        self.counts = StatusCounts()
        self.watch = live.RunsWatch(world, on_change=self.counts.observe)
        self.requests = 0
        #: Set when the server is about to stop: event streams end, so no request outlives it.
        self.closing = asyncio.Event()

    async def json_body(self, request: Request) -> Any:
        body = await self.bodies.read(request)
        return parse_json(body or b"{}", self.settings.limits.max_json_depth)

    # --- webhook and health ---

    async def webhook(self, request: Request) -> Response:
        token = unquote(request.url.path[len(WEBHOOK_PREFIX):])
        if request.method != "POST":
            raise HttpError(405, "webhooks take POST")
        if not token:
            raise HttpError(404, "no hook token in the URL")
        raw = await self.bodies.read(request)
        content_type = request.headers.get("content-type", "")
        body: Any
        if "json" in content_type and raw:
            body = parse_json(raw, self.settings.limits.max_json_depth)
        else:
            try:
                body = raw.decode()
            except UnicodeDecodeError:
                body = raw
        query = request.url.query
        payload = {"method": request.method, "headers": dict(request.headers.items()), "body": body,
                   "query": unquote(query) if query else ""}
        await actions.resume_hook(self.world, token, payload)
        return ORJSONResponse({"ok": True}, status_code=202)

    async def health(self, request: Request) -> Response:
        return ORJSONResponse({"ok": True, "workflows": sorted(REGISTRY.workflows), "requests": self.requests})

    # --- JSON API ---

    async def api_runs(self, request: Request) -> Response:
        if request.method == "POST":
            run_id = await actions.start(self.world, await self.json_body(request))
            return ORJSONResponse({"run_id": run_id}, status_code=201)
        query = RunsQuery.from_params(request.query_params)
        page = await list_runs(self.world, query)
        return ORJSONResponse({"runs": [run_row(r) for r in page.runs], "next_cursor": page.next_cursor,
                               "scanned": page.scanned, "partial": page.partial,
                               "counts": await self.counts.get(self.world)})

    async def api_run(self, request: Request) -> Response:
        return ORJSONResponse(await run_story(self.world, request.path_params["run_id"]))

    async def api_step(self, request: Request) -> Response:
        return ORJSONResponse(await step_json(self.world, request.path_params["run_id"],
                                              request.path_params["step_id"]))

    async def api_callsites(self, request: Request) -> Response:
        return ORJSONResponse(await actions.call_sites(self.world, request.path_params["run_id"]))

    async def api_replay(self, request: Request) -> Response:
        return ORJSONResponse(await actions.check_replay(self.world, request.path_params["run_id"]))

    async def api_cancel(self, request: Request) -> Response:
        data = await self.json_body(request)
        reason = data.get("reason") if isinstance(data, dict) else None
        return ORJSONResponse(await actions.cancel(self.world, request.path_params["run_id"], reason))

    async def api_fork(self, request: Request) -> Response:
        data = await self.json_body(request)
        at = data.get("at") if isinstance(data, dict) else None
        return ORJSONResponse(await actions.fork(self.world, request.path_params["run_id"], at), status_code=201)

    async def api_resume(self, request: Request) -> Response:
        data = await self.json_body(request)
        if not isinstance(data, dict):
            raise HttpError(400, 'expected {"token": TOKEN, "payload": ...}')
        await actions.resume_hook(self.world, data.get("token"), data.get("payload"))
        return ORJSONResponse({"ok": True}, status_code=202)

    async def api_workflows(self, request: Request) -> Response:
        return ORJSONResponse({"workflows": actions.workflows()})

    async def api_stream_read(self, request: Request) -> Response:
        run_id, name = request.path_params["run_id"], request.path_params["name"]
        await _checked_run(self.world, run_id)
        chunks, closed = await self.world.streams.read(run_id, _checked(name, "stream name"))
        return ORJSONResponse({"chunks": [live._show(c) for c in chunks], "closed": closed})

    # --- server-sent events ---

    async def live_runs(self, request: Request) -> Response:
        return self._event_stream(self.watch.stream())

    async def live_run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        run = await _checked_run(self.world, run_id)
        after = _int_param(request, "after", run.event_count - 1)
        return self._event_stream(live.run_events(self.world, run_id, after))

    async def live_stream(self, request: Request) -> Response:
        run_id, name = request.path_params["run_id"], request.path_params["name"]
        await _checked_run(self.world, run_id)
        start = _int_param(request, "start", 0)
        return self._event_stream(live.stream_chunks(self.world, run_id, _checked(name, "stream name"), start))

    def _event_stream(self, source: AsyncIterator[bytes]) -> Response:
        return StreamingResponse(live.until_set(source, self.closing), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # --- pages ---

    async def page_runs(self, request: Request) -> Response:
        query = RunsQuery.from_params(request.query_params)
        page = await list_runs(self.world, query)
        counts = await self.counts.get(self.world)
        return HTMLResponse(pages.runs_page(query, page, counts, sorted(REGISTRY.workflows)))

    async def fragment_runs(self, request: Request) -> Response:
        query = RunsQuery.from_params(request.query_params)
        page = await list_runs(self.world, query)
        return HTMLResponse(pages.runs_fragment(query, page, await self.counts.get(self.world)))

    async def page_run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        await _checked_run(self.world, run_id)
        return HTMLResponse(pages.run_page(run_id))

    async def page_workflows(self, request: Request) -> Response:
        return HTMLResponse(pages.workflows_page(actions.workflows()))

    async def close(self) -> None:
        self.closing.set()
        await self.watch.close()
        await self.counts.close()


def _checked(value: str, what: str) -> str:
    try:
        return validate_id(value, what)
    except InvalidIdError as exc:
        raise HttpError(404, str(exc)) from None


async def _checked_run(world: World, run_id: str) -> Any:
    from .story import get_run

    return await get_run(world, run_id, resolve_data=False)


def _int_param(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise HttpError(400, f"{name} must be a number") from None


def _handler(app: WebApp, fn: Any) -> Any:
    async def endpoint(request: Request) -> Response:
        app.requests += 1
        started = time.perf_counter()
        try:
            response = await fn(request)
        except HttpError as exc:
            response = _error(request, exc.status, str(exc), exc.headers)
        except (NotFoundError, RunNotFoundError) as exc:
            response = _error(request, 404, _line(exc))
        except StorageUnavailableError as exc:
            response = _error(request, 503, _line(exc), {"Retry-After": "5"})
        except Exception:
            log.exception("error handling %s %s", request.method, request.url.path)
            response = _error(request, 500, "internal error (see the server's log)")
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    return endpoint


def _error(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    if "text/html" in request.headers.get("accept", "") and not request.url.path.startswith("/api/"):
        body = pages.layout("Error", f"<h1>{status}</h1><p class=err>{escape(message)}</p><p><a href='/'>Runs</a></p>",
                            active="")
        return HTMLResponse(body, status_code=status, headers=headers)
    return ORJSONResponse({"error": message}, status_code=status, headers=headers)


def _line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]


def create_app(world: World, settings: WebSettings | None = None) -> Any:
    """The ASGI app for `world` (the Starlette app inside the Guard). `.state.web` holds the WebApp."""
    settings = settings or WebSettings()
    web = WebApp(world, settings)
    h = lambda fn: _handler(web, fn)  # noqa: E731
    static = resources.files("wf.web").joinpath("static")
    routes = [
        Route(WEBHOOK_PREFIX + "{token:path}", h(web.webhook), methods=["POST", "GET", "PUT", "DELETE", "PATCH"]),
        Route("/health", h(web.health)),
        Route("/api/runs", h(web.api_runs), methods=["GET", "POST"]),
        Route("/api/runs/{run_id}", h(web.api_run)),
        Route("/api/runs/{run_id}/steps/{step_id}", h(web.api_step)),
        Route("/api/runs/{run_id}/callsites", h(web.api_callsites)),
        Route("/api/runs/{run_id}/replay", h(web.api_replay)),
        Route("/api/runs/{run_id}/cancel", h(web.api_cancel), methods=["POST"]),
        Route("/api/runs/{run_id}/fork", h(web.api_fork), methods=["POST"]),
        Route("/api/runs/{run_id}/streams/{name}", h(web.api_stream_read)),
        Route("/api/hooks/resume", h(web.api_resume), methods=["POST"]),
        Route("/api/workflows", h(web.api_workflows)),
        Route("/api/live/runs", h(web.live_runs)),
        Route("/api/live/runs/{run_id}", h(web.live_run)),
        Route("/api/live/runs/{run_id}/streams/{name}", h(web.live_stream)),
        Route("/", h(web.page_runs)),
        Route("/fragments/runs", h(web.fragment_runs)),
        Route("/runs/{run_id}", h(web.page_run)),
        Route("/workflows", h(web.page_workflows)),
        Mount("/static", StaticFiles(directory=str(static)), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        message = f"no route for {request.method} {request.url.path}" if status == 404 else str(
            getattr(exc, "detail", "")) or "error"
        return _error(request, status, message)

    starlette = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    starlette.state.web = web
    guarded = Guard(starlette, bound_host=settings.host, token=settings.token)
    guarded.web = web  # type: ignore[attr-defined]
    return guarded
