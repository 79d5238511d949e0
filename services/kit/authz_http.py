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

from services.kit.db import database_unreachable

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
    status the client gets: 401 unless said otherwise). `body`: an allow's body, for an endpoint
    that answers requests itself (the registry's anonymous reads)."""

    upstream_headers: dict[str, str] | None = None
    denied: str | None = None
    status: int = 401
    body: bytes = b""


Check = Callable[[AuthzRequest], Awaitable[Verdict]]
#: A verdict known without waiting (from the checker's caches), or None to run the Check. It must
#: decide exactly as the Check would: it only spares a task and a loop turn per request.
Known = Callable[[AuthzRequest], "Verdict | None"]


def _response(status: int, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def render(verdict: Verdict) -> bytes:
    if verdict.denied is None:
        return _response(200, verdict.upstream_headers or {}, verdict.body)
    body = json.dumps({"detail": verdict.denied}).encode()
    return _response(verdict.status, {"content-type": "application/json"}, body)


class AuthzProtocol(asyncio.Protocol):
    def __init__(self, check: Check, known: Known | None = None) -> None:
        self.check = check
        self.known = known
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
        """Answer the complete requests in the buffer (one at a time, in order): those `known`
        decides at once here, the first other one by a task that calls this again when done."""
        while not self.busy and self.transport is not None:
            request = self._take()
            if request is None:
                return
            verdict = None
            if self.known is not None:
                try:
                    verdict = self.known(request)
                except Exception:
                    log.exception("authorization check failed")  # the full check decides
            if verdict is not None:
                self.transport.write(render(verdict))
                continue
            self.busy = True
            # Held until it finishes: the event loop keeps only weak references to tasks.
            self.answering = asyncio.ensure_future(self._answer(request))

    def _take(self) -> AuthzRequest | None:
        """The next complete request, removed from the buffer; None while it is incomplete (or
        after answering 400 to a malformed one and closing)."""
        assert self.transport is not None
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > _MAX_HEAD_BYTES:
                self.transport.close()
            return None
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
            self.transport = None
            return None
        if len(self.buffer) < end + 4 + length:
            return None  # the body is still arriving
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        return AuthzRequest(method, path, headers, body)

    async def _answer(self, request: AuthzRequest) -> None:
        try:
            reply = render(await self.check(request))
        except Exception as error:
            # A 5xx makes Envoy answer 503 (status_on_error): never a pass.
            if database_unreachable(error):  # an outage to wait out (PostgreSQL restarting)
                log.warning("authorization check: database unreachable (%s)", type(error).__name__)
            else:
                log.exception("authorization check failed")
            reply = _response(500, {})
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)
        self.busy = False
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(check: Check, host: str, port: int, known: Known | None = None) -> asyncio.Server:
    """Answer Envoy's checks on host:port with `check`; `known`, when given, is asked first."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: AuthzProtocol(check, known), host, port, reuse_address=True)
