"""The guard in front of every route but webhooks: Host, token, and same-origin JSON for changes.

- A `Host` other than the bound address or localhost is refused (421): a page on another
  name that rebinds its DNS to 127.0.0.1 cannot read runs.
- Bound to a non-loopback address, every request needs the token printed at start: as
  `?token=` once (it is then kept in a same-site cookie), a `wf_token` cookie, or
  `Authorization: Bearer`.
- A state-changing request (any method but GET/HEAD/OPTIONS) needs `Content-Type:
  application/json` (415 otherwise) and must come from this origin: its `Origin` names this
  server, or, without `Origin`, `Sec-Fetch-Site` is absent, `same-origin` or `none` (403).
- Every answer but a webhook's forbids framing (no clickjacking of the action buttons), loads
  scripts only from this server, and sends no referrer (a URL may carry the token).
- Webhooks (`/.well-known/workflow/v1/webhook/`) skip all of this: their token is the secret,
  and they must work from anywhere that can reach the server.
"""

from __future__ import annotations

import hmac
import ipaddress
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

WEBHOOK_PREFIX = "/.well-known/workflow/v1/webhook/"
TOKEN_COOKIE = "wf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                 b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                                 b"base-uri 'none'; form-action 'self'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name part of a Host header: `[::1]:3000` -> `::1`, `Example:80` -> `example`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """ASGI middleware enforcing the rules above."""

    def __init__(self, app: ASGIApp, *, bound_host: str, token: str | None) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = set(LOCAL_NAMES) | {host_name(bound_host)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(WEBHOOK_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.token is None and host_name(host) not in self.allowed_hosts:
            await _refuse(send, 421, f"this server does not answer for host {host!r}")
            return
        if self.token is not None:
            verdict = self._check_token(scope, headers)
            if verdict == "redirect":
                await _redirect_setting_cookie(scope, send, self.token)
                return
            if verdict != "ok":
                await _refuse(send, 401, "this server needs its token: open the URL `wf ui`/`wf dev` printed at start")
                return
        if scope["method"] not in SAFE_METHODS:
            problem = _change_problem(scope, headers)
            if problem is not None:
                await _refuse(send, *problem)
                return
        await self.app(scope, receive, _with_headers(send))

    def _check_token(self, scope: Scope, headers: dict[str, str]) -> str:
        assert self.token is not None
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and _same(auth[7:].strip(), self.token):
            return "ok"
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header counts as no cookie
            cookie = SimpleCookie()
        if TOKEN_COOKIE in cookie and _same(cookie[TOKEN_COOKIE].value, self.token):
            return "ok"
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if _same(query.get("token", ""), self.token):
            return "redirect" if scope["method"] == "GET" else "ok"
        return "no"


def _with_headers(send: Send) -> Send:
    async def sender(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
        await send(message)

    return sender


def _same(given: str, token: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


def _change_problem(scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        return 415, "state-changing requests need Content-Type: application/json"
    origin = headers.get("origin")
    if origin is not None:
        own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}".lower()
        if origin.lower() != own:
            return 403, f"cross-origin request refused (Origin {origin!r})"
        return None
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        return 403, f"cross-site request refused (Sec-Fetch-Site {fetch_site!r})"
    return None


async def _refuse(send: Send, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _redirect_setting_cookie(scope: Scope, send: Send, token: str) -> None:
    query = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1")) if k != "token"]
    location = scope["path"] + ("?" + urlencode(query) if query else "")
    cookie = f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
    headers: list[Any] = [(b"location", location.encode()), (b"set-cookie", cookie.encode()),
                          (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
