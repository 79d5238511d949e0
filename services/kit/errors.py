"""Domain errors: handlers raise these, the error interceptor turns them into gRPC statuses.

Each error knows its gRPC code and the HTTP status the real (FastAPI) API answers with. Where
Envoy's transcoder maps the gRPC code to a different HTTP status (402, 422, 413), the status is
sent as trailing metadata `x-http-status` and the gateway's Lua filter applies it; a FastAPI-shaped
body (the 422 list) travels as `x-http-body`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

#: The `google.rpc.ErrorInfo.domain` of every error the suite raises.
ERROR_DOMAIN = "chutes-suite"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid input, as FastAPI reports it: where (`loc`), what (`msg`) and its kind (`type`)."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"


Range = tuple[tuple[str | int, ...], float, float, float]


def out_of_range(*checks: Range) -> list[FieldViolation]:
    """A FastAPI-style violation for each `(loc, value, low, high)` whose value is outside
    [low, high]."""
    return [
        FieldViolation(loc, f"Input should be between {low:g} and {high:g}", "value_error")
        for loc, value, low, high in checks
        if not low <= value <= high
    ]


#: The HTTP status Envoy's transcoder gives each gRPC code (the ones the suite raises).
ENVOY_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
}


#: The longest detail an error carries. Details often repeat a client's input, and they travel
#: in gRPC trailers, which Envoy refuses past its header limit: a 502 naming Envoy's insides
#: (issue 16: a 4 KB body of 1,000 empty scopes was enough).
MAX_DETAIL_CHARS = 1024
#: The most FastAPI-shaped violations one 422 lists (x-http-body is a trailer too).
MAX_VIOLATIONS = 20
#: The longest value a violation repeats.
_MAX_ECHOED = 200


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DomainError(Exception):
    """Base of every error a handler may raise on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    #: The HTTP status REST clients see; sent explicitly only when Envoy would map `code` otherwise.
    http_status: int = 500
    reason: str = "ERROR"

    def __init__(self, detail: str) -> None:
        detail = _bounded(detail, MAX_DETAIL_CHARS)
        super().__init__(detail)
        self.detail = detail

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata the gateway reads to shape the REST answer (none when Envoy's mapping fits)."""
        if ENVOY_HTTP_STATUS.get(self.code) == self.http_status:
            return ()
        return (("x-http-status", str(self.http_status)),)


class InvalidArgument(DomainError):
    code, http_status, reason = grpc.StatusCode.INVALID_ARGUMENT, 400, "INVALID_ARGUMENT"


class Unauthenticated(DomainError):
    code, http_status, reason = grpc.StatusCode.UNAUTHENTICATED, 401, "UNAUTHENTICATED"


class PaymentRequired(DomainError):
    code, http_status, reason = grpc.StatusCode.FAILED_PRECONDITION, 402, "PAYMENT_REQUIRED"


class PermissionDenied(DomainError):
    code, http_status, reason = grpc.StatusCode.PERMISSION_DENIED, 403, "PERMISSION_DENIED"


class NotFound(DomainError):
    code, http_status, reason = grpc.StatusCode.NOT_FOUND, 404, "NOT_FOUND"


class AlreadyExists(DomainError):
    code, http_status, reason = grpc.StatusCode.ALREADY_EXISTS, 409, "ALREADY_EXISTS"


class TooManyRequests(DomainError):
    code, http_status, reason = grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "TOO_MANY_REQUESTS"


class Unimplemented(DomainError):
    code, http_status, reason = grpc.StatusCode.UNIMPLEMENTED, 501, "UNIMPLEMENTED"


class Unavailable(DomainError):
    code, http_status, reason = grpc.StatusCode.UNAVAILABLE, 503, "UNAVAILABLE"


class ValidationFailed(DomainError):
    """Request validation failure: REST 422 with FastAPI's `{"detail": [{loc, msg, type}]}` list."""

    code, http_status, reason = grpc.StatusCode.INVALID_ARGUMENT, 422, "VALIDATION_FAILED"

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        self.violations = tuple(
            FieldViolation(tuple(_bounded(str(p), _MAX_ECHOED) if isinstance(p, str) else p for p in v.loc),
                           _bounded(v.msg, _MAX_ECHOED), v.type)
            for v in violations[:MAX_VIOLATIONS]
        )  # fmt: skip
        super().__init__("; ".join(f"{'.'.join(map(str, v.loc))}: {v.msg}" for v in self.violations))

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        body = {"detail": [{"loc": list(v.loc), "msg": v.msg, "type": v.type} for v in self.violations]}
        # ASCII JSON: gRPC metadata values must be printable ASCII.
        return (*super().trailing_metadata(), ("x-http-body", json.dumps(body)))
