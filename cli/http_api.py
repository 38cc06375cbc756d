"""The HTTP endpoint of `wf dev`: webhooks for hooks, and a small API to start and read runs.

    POST /.well-known/workflow/v1/webhook/<token>   deliver the request to the hook (202; 404 unknown)
    POST /runs          {"workflow": NAME, "args": [...], "kwargs": {...}}  -> 201 {"run_id": ...}
    GET  /runs/<id>     the run (status, input, output, error)
    GET  /health        {"ok": true}

A plain asyncio HTTP/1.1 server (one request per connection): it binds loopback unless told
otherwise, refuses bodies over `max_body` bytes (413) and JSON nested deeper than
`MAX_JSON_DEPTH` (400), and answers every error with a JSON body `{"error": "..."}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson

from ..runtime.client import Run, resume_hook_in, start_run
from ..runtime.errors import (
    HookNotFoundError,
    InvalidIdError,
    NotFoundError,
    SerializationError,
    WorkflowNotFoundError,
)
from ..runtime.ids import validate_id
from ..runtime.registry import REGISTRY
from ..runtime.serialization import deserialize
from ..runtime.world import World

log = logging.getLogger("wf.dev")

WEBHOOK_PREFIX = "/.well-known/workflow/v1/webhook/"
MAX_BODY = 1024 * 1024
MAX_JSON_DEPTH = 64
MAX_HEADER_BYTES = 16 * 1024
READ_TIMEOUT = 10.0
#: An over-long body up to this size is read and dropped before answering 413; beyond, the connection is cut.
DISCARD_LIMIT = 16 * 1024 * 1024

_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required", 413: "Payload Too Large",
            431: "Request Header Fields Too Large", 500: "Internal Server Error"}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


def json_depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a parsed JSON value nests at most `limit` levels (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def parse_json_body(body: bytes) -> Any:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"invalid JSON body: {exc}") from None
    if not json_depth_ok(value):
        raise HttpError(400, f"JSON body nests deeper than {MAX_JSON_DEPTH} levels")
    return value


async def read_request(reader: asyncio.StreamReader, max_body: int) -> Request:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
    except asyncio.LimitOverrunError:
        raise HttpError(431, "request head too large") from None
    except (asyncio.IncompleteReadError, TimeoutError):
        raise HttpError(408, "incomplete request") from None
    if len(head) > MAX_HEADER_BYTES:
        raise HttpError(431, "request head too large")
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        raise HttpError(400, "malformed request line") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, "malformed header")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if "transfer-encoding" in headers:
        raise HttpError(411, "chunked bodies are not supported; send Content-Length")
    length_text = headers.get("content-length", "0")
    try:
        length = int(length_text)
    except ValueError:
        raise HttpError(400, "invalid Content-Length") from None
    if length < 0:
        raise HttpError(400, "invalid Content-Length")
    if length > max_body:
        if length <= DISCARD_LIMIT:  # read it away, so the client gets to read our answer
            with contextlib.suppress(asyncio.IncompleteReadError, TimeoutError):
                remaining = length
                while remaining:
                    chunk = await asyncio.wait_for(reader.read(min(remaining, 65536)), READ_TIMEOUT)
                    if not chunk:
                        break
                    remaining -= len(chunk)
        raise HttpError(413, f"body of {length} bytes is over the {max_body}-byte limit")
    if length:
        try:
            body = await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT)
        except (asyncio.IncompleteReadError, TimeoutError):
            raise HttpError(400, "body shorter than Content-Length") from None
    path, _, query = target.partition("?")
    return Request(method.upper(), path, query, headers, body)


class DevApi:
    """Routes requests to the World; one instance per `wf dev` process."""

    def __init__(self, world: World, *, max_body: int = MAX_BODY) -> None:
        self.world = world
        self.max_body = max_body
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status, payload = 500, {"error": "internal error"}
        try:
            request = await read_request(reader, self.max_body)
            self.requests += 1
            status, payload = await self.route(request)
        except HttpError as exc:
            status, payload = exc.status, {"error": str(exc)}
        except Exception:
            log.exception("error handling a request")
        try:
            body = orjson.dumps(payload)
            head = (f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode() + body)
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def route(self, request: Request) -> tuple[int, Any]:
        path = request.path
        if path.startswith(WEBHOOK_PREFIX):
            if request.method != "POST":
                raise HttpError(405, "webhooks take POST")
            return await self.webhook(unquote(path[len(WEBHOOK_PREFIX):]), request)
        if path == "/health":
            return 200, {"ok": True, "workflows": sorted(REGISTRY.workflows), "requests": self.requests}
        if path == "/runs" and request.method == "POST":
            return await self.start(request)
        if path.startswith("/runs/") and request.method == "GET":
            return await self.read_run(path[len("/runs/"):])
        raise HttpError(404, f"no route for {request.method} {path}")

    async def webhook(self, token: str, request: Request) -> tuple[int, Any]:
        if not token:
            raise HttpError(404, "no hook token in the URL")
        content_type = request.headers.get("content-type", "")
        if "json" in content_type and request.body:
            body: Any = parse_json_body(request.body)
        else:
            try:
                body = request.body.decode()
            except UnicodeDecodeError:
                body = request.body
        payload = {"method": request.method, "headers": request.headers, "body": body,
                   "query": unquote(request.query) if request.query else ""}
        try:
            await resume_hook_in(self.world, token, payload)
        except HookNotFoundError:
            raise HttpError(404, "no live hook has this token") from None
        except InvalidIdError as exc:
            raise HttpError(400, str(exc)) from None
        return 202, {"ok": True}

    async def start(self, request: Request) -> tuple[int, Any]:
        data = parse_json_body(request.body or b"{}")
        if not isinstance(data, dict) or not isinstance(data.get("workflow"), str):
            raise HttpError(400, 'expected {"workflow": NAME, "args": [...], "kwargs": {...}}')
        name = data["workflow"]
        args, kwargs = data.get("args") or [], data.get("kwargs") or {}
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise HttpError(400, "args must be a list and kwargs an object")
        try:
            REGISTRY.workflow(name)
            run = await start_run(self.world, name, args, kwargs, idempotency_key=data.get("idempotency_key"))
        except WorkflowNotFoundError as exc:
            raise HttpError(404, str(exc)) from None
        except (SerializationError, InvalidIdError) as exc:
            raise HttpError(400, str(exc)) from None
        return 201, {"run_id": run.id}

    async def read_run(self, run_id: str) -> tuple[int, Any]:
        try:
            validate_id(run_id, "run id")
            info = await Run(run_id, self.world).info_async()
        except (InvalidIdError, NotFoundError, LookupError):
            raise HttpError(404, f"no run with id {run_id!r}") from None
        output = None
        if info.output is not None:
            try:
                output = orjson.loads(orjson.dumps(deserialize(info.output), default=repr))
            except (SerializationError, TypeError):
                output = info.output
        return 200, {"run_id": info.run_id, "workflow": info.workflow_name, "status": str(info.status),
                     "output": output, "error": info.error,
                     "created_at": info.created_at.isoformat() if info.created_at else None}


async def serve(api: DevApi, host: str, port: int) -> asyncio.Server:
    """Start listening; returns the server (its sockets tell the bound port)."""
    return await asyncio.start_server(api.handle, host, port, limit=MAX_HEADER_BYTES)
