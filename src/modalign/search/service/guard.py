"""The service's gate, as plain ASGI middleware (outermost, before any routing or body parsing).

For every request, in this order:
  1. security headers on every response (CSP, X-Frame-Options, nosniff, no Referer);
  2. the API key, from a header only (`Authorization: Bearer KEY` or `X-API-Key: KEY`; never a URL);
  3. admission: at most `max_inflight` requests at once; more get 503 + Retry-After before their body
     is read (shedding early costs almost nothing, so the admitted ones keep a bounded latency);
  4. the body limit, on the declared Content-Length AND counted while the body streams (chunked bodies,
     uploads), so an oversized body is refused after `max_request_bytes`, never read whole;
  5. the per-request timeout (504); the work behind a timed-out request is cancelled (batching.py).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from modalign.search.service.config import ServiceConfig

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health", "/", "/app.js", "/app.css", "/favicon.ico"})  # no key needed
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
                                 b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a body passes the limit (an HTTPException: FastAPI's body parsing
    passes it through as is, so the answer is a 413, not "error parsing the body")."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


def key_of(scope: Scope) -> bytes:
    """The API key a request sends, from `Authorization: Bearer KEY` or `X-API-Key: KEY`; b"" if none."""
    auth = api = b""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            auth = value
        elif name == b"x-api-key":
            api = value
    if auth[:7].lower() == b"bearer ":
        return auth[7:].strip()
    return api.strip()


class Guard:
    def __init__(self, app: ASGIApp, config: ServiceConfig, retry_after: Callable[[], int]):
        self.app, self.config, self.retry_after = app, config, retry_after
        self.inflight = 0  # admitted requests not finished (the event loop is the only writer)
        self._key = str(config.api_key or "").encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"started": False}
        send = self._sending(send, state)
        refusal = self._refusal(scope)
        if refusal is not None:
            await _respond(send, *refusal)
            return
        guarded = scope["path"] not in OPEN_PATHS
        self.inflight += guarded
        try:
            async with asyncio.timeout(self.config.timeout_s):
                await self.app(scope, self._limited(receive), send)
        except TimeoutError:
            if not state["started"]:
                await _respond(send, 504, f"request took longer than {self.config.timeout_s} s; its work "
                                          f"was cancelled")
        except BodyTooLarge as e:
            if not state["started"]:
                await _respond(send, 413, str(e.detail))
        finally:
            self.inflight -= guarded

    def _refusal(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        """(status, message, headers) when the request is refused before it starts, else None."""
        if scope["path"] in OPEN_PATHS:
            return None
        if not self.config.no_auth:
            given = key_of(scope)
            if not given or not hmac.compare_digest(given, self._key):
                return 401, "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'", {}
        if self.inflight >= self.config.max_inflight:
            wait = self.retry_after()
            return 503, (f"the server is busy ({self.inflight} requests in progress); retry in {wait} s"), \
                {"retry-after": str(wait)}
        size = dict(scope.get("headers", [])).get(b"content-length", b"")
        if size.isdigit() and int(size) > self.config.max_request_bytes:
            return 413, f"request body of {int(size)} bytes exceeds the limit of {self.config.max_request_bytes}", {}
        return None

    def _limited(self, receive: Receive) -> Receive:
        limit, seen = self.config.max_request_bytes, [0]

        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise BodyTooLarge(limit)
            return message
        return counted

    @staticmethod
    def _sending(send: Send, state: dict[str, bool]) -> Send:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)
        return with_headers


async def _respond(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})
