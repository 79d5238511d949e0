"""Envoy's HTTP-mode ext_authz, served by a service beside its gRPC server.

Two services answer it: identity checks hotkey signatures (services/identity/service.py
`verdict`), the registry checks who may invoke a chute (services/registry/invocations.py).
Envoy sends the client's method, path (with query), the headers the filter allows and, when
configured, the exact body; a 200 answer lets the request through with the headers it carries,
any other answer goes back to the client as is (a 5xx makes Envoy answer its `status_on_error`).
This is a plain asyncio protocol rather than a gRPC service on purpose: a signature check is
~65 µs of Python, and grpc.aio's per-call overhead (~200 µs here) would triple it
(bench/README.md). Only Envoy talks to it (an internal port), one request at a time per
connection, always with a Content-Length.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

log = logging.getLogger(__name__)

#: Largest request head accepted (Envoy sends a handful of headers).
_MAX_HEAD_BYTES = 64 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class AuthzRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True)
class Verdict:
    """Allow (with headers for the upstream request) or deny (with the client's detail and the
    status the client gets: 401 unless said otherwise)."""

    upstream_headers: dict[str, str] | None = None
    denied: str | None = None
    status: int = 401


Check = Callable[[AuthzRequest], Awaitable[Verdict]]


def _response(status: int, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def render(verdict: Verdict) -> bytes:
    if verdict.denied is None:
        return _response(200, verdict.upstream_headers or {})
    body = json.dumps({"detail": verdict.denied}).encode()
    return _response(verdict.status, {"content-type": "application/json"}, body)


class AuthzProtocol(asyncio.Protocol):
    def __init__(self, check: Check) -> None:
        self.check = check
        self.buffer = b""
        self.busy = False
        self.answering: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport, hence no isinstance).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next()

    def _next(self) -> None:
        """Answer the next complete request in the buffer, if any (one at a time, in order)."""
        if self.busy or self.transport is None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > _MAX_HEAD_BYTES:
                self.transport.close()
            return
        try:
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
        except ValueError:
            self.transport.write(_response(400, {"connection": "close"}))
            self.transport.close()
            return
        if len(self.buffer) < end + 4 + length:
            return  # the body is still arriving
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        self.busy = True
        # Held until it finishes: the event loop keeps only weak references to tasks.
        self.answering = asyncio.ensure_future(self._answer(AuthzRequest(method, path, headers, body)))

    async def _answer(self, request: AuthzRequest) -> None:
        try:
            reply = render(await self.check(request))
        except Exception:
            # A 5xx makes Envoy answer 503 (status_on_error): never a pass.
            log.exception("authorization check failed")
            reply = _response(500, {})
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)
        self.busy = False
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(check: Check, host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: AuthzProtocol(check), host, port, reuse_address=True)
