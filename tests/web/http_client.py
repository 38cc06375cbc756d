"""A raw HTTP/1.1 client over asyncio streams: exact headers, partial bodies, slow senders."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def read_answer(reader: asyncio.StreamReader, timeout: float = 10.0) -> Answer:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
    length = int(headers.get("content-length", "0") or 0)
    body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
    return Answer(status, headers, body)


async def request(port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                  *, host: str | None = None) -> Answer:
    """One request on a fresh connection; `Host` defaults to 127.0.0.1:port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        own_host = host if host is not None else f"127.0.0.1:{port}"
        all_headers = {"Host": own_host, "Connection": "close", **(headers or {})}
        if body or method not in ("GET", "HEAD"):
            all_headers.setdefault("Content-Length", str(len(body)))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in all_headers.items()) + "\r\n"
        writer.write(head.encode("latin-1") + body)
        await writer.drain()
        return await read_answer(reader)
    finally:
        writer.close()


def json_headers(port: int, **extra: str) -> dict[str, str]:
    """What a same-origin fetch() of the UI sends with a JSON body."""
    return {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin",
            **extra}
