"""Request limits: body size, JSON depth, read timeouts and a bound on concurrent large bodies."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

MAX_BODY = 1024 * 1024
MAX_JSON_DEPTH = 64
#: Seconds a client may take to send a request's head, or its body.
READ_TIMEOUT = 10.0
#: Bodies over this size (or of unknown size) need one of the `large_slots` to be read.
LARGE_BODY = 64 * 1024
LARGE_SLOTS = 16
#: How long a large request waits for a slot before it is answered 503.
SLOT_WAIT = 5.0
#: An over-long body up to this size is read and dropped before answering 413 (so the client reads the answer).
DISCARD_LIMIT = 16 * 1024 * 1024


class HttpError(Exception):
    """An answer with a status and a one-line message, sent as {"error": message}."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@dataclass
class Limits:
    max_body: int = MAX_BODY
    max_json_depth: int = MAX_JSON_DEPTH
    read_timeout: float = READ_TIMEOUT
    large_body: int = LARGE_BODY
    large_slots: int = LARGE_SLOTS
    slot_wait: float = SLOT_WAIT


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


def parse_json(body: bytes, limit: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value of `body`; HttpError 400 if it is not JSON or nests deeper than `limit`."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"invalid JSON body: {exc}") from None
    if not json_depth_ok(value, limit):
        raise HttpError(400, f"JSON body nests deeper than {limit} levels")
    return value


class BodyReader:
    """Reads request bodies within the limits; large ones take turns (at most `large_slots` at once)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.large_slots)
        self.large_in_flight = 0

    async def read(self, request: Request) -> bytes:
        limits = self.limits
        length_text = request.headers.get("content-length")
        length: int | None = None
        if length_text is not None:
            try:
                length = int(length_text)
            except ValueError:
                raise HttpError(400, "invalid Content-Length") from None
            if length < 0:
                raise HttpError(400, "invalid Content-Length")
            if length == 0:
                return b""
        if length is not None and length <= limits.large_body:
            return await self._read(request, limits.max_body)
        try:
            await asyncio.wait_for(self._slots.acquire(), limits.slot_wait)
        except TimeoutError:
            raise HttpError(503, "too many large requests at once; try again", {"Retry-After": "1"}) from None
        self.large_in_flight += 1
        try:
            if length is not None and length > limits.max_body:
                if length <= DISCARD_LIMIT:
                    await self._discard(request)
                raise HttpError(413, f"body of {length} bytes is over the {limits.max_body}-byte limit")
            return await self._read(request, limits.max_body)
        finally:
            self.large_in_flight -= 1
            self._slots.release()

    async def _read(self, request: Request, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.limits.read_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise HttpError(413, f"body is over the {limit}-byte limit")
                    chunks.append(chunk)
        except TimeoutError:
            raise HttpError(408, "the request body took too long to arrive") from None
        except ClientDisconnect:
            raise HttpError(400, "the client went away before sending the whole body") from None
        return b"".join(chunks)

    async def _discard(self, request: Request) -> None:
        with contextlib.suppress(TimeoutError, ClientDisconnect):
            async with asyncio.timeout(self.limits.read_timeout):
                async for _ in request.stream():
                    pass
