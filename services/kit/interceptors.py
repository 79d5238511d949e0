"""The one server interceptor every service runs.

For each call it binds the request id for logging and the caller (services/kit/auth.py), and
turns whatever the handler raises into a gRPC status: domain errors keep their code and message
and gain `google.rpc` details (`ErrorInfo`, and `BadRequest` field violations for validation
errors); the generated base servicer's `NotImplementedError` becomes UNIMPLEMENTED naming the
method; anything else is logged with its traceback and answered INTERNAL without one. Requests
that are not valid UTF-8 or hold NUL characters are refused with INVALID_ARGUMENT before the
handler (services/kit/decoding.py), except Envoy's own streams (ENVOY_METHODS). It also
records each call's status and latency (services/kit/prometheus.py).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.kit.auth import Authenticator, judge_request
from services.kit.db import DATABASE_UNAVAILABLE, database_unreachable
from services.kit.decoding import checked_deserializer, checked_stream, refuse_undecodable
from services.kit.errors import ERROR_DOMAIN, DomainError, Unavailable, Unimplemented, ValidationFailed
from services.kit.logs import request_id
from services.kit.prometheus import MethodMetrics

log = logging.getLogger(__name__)

#: A handler behaviour, whatever its call shape (the generated stubs type them loosely).
Behavior = Callable[..., Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in the stubs
#: Calls from the gateway itself (its access log), not relayed requests of clients: what they
#: carry passed Envoy's HTTP codecs, which refuse NUL in paths and header values. The NUL check
#: walks every field of every message in Python: 25 µs per access-log entry (measured),
#: which doubled what the registry and the metrics service spend per invocation.
ENVOY_METHODS = "/envoy.service."


def _status_of(error: DomainError, method: str) -> status_pb2.Status:
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata={"method": method})
    )
    details = [info]
    if isinstance(error, ValidationFailed):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=".".join(map(str, v.loc)), description=v.msg
                )
                for v in error.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        details.append(packed)
    return status_pb2.Status(code=error.code.value[0], message=error.detail, details=details)


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any],
    method: str,
    exc: Exception,
    metrics: MethodMetrics,
    started: float,
) -> None:
    if isinstance(exc, NotImplementedError):
        exc = Unimplemented(f"{method} is not implemented yet")
    if not isinstance(exc, DomainError) and database_unreachable(exc):
        # PostgreSQL restarting is an outage to wait out, not a bug: one line, and a 503.
        log.warning("%s: database unreachable (%s)", method, type(exc).__name__)
        exc = Unavailable(DATABASE_UNAVAILABLE)
    if not isinstance(exc, DomainError):
        log.exception("unhandled error in %s", method)
        exc = DomainError("Internal server error")
        exc.code = grpc.StatusCode.INTERNAL
    status = rpc_status.to_status(_status_of(exc, method))
    # Recorded before the status goes out: a client that has its answer finds it counted.
    metrics.record(status.code, started)
    await context.abort(
        status.code, status.details, trailing_metadata=(*status.trailing_metadata, *exc.trailing_metadata())
    )


async def _bind_call(
    context: grpc.aio.ServicerContext[Any, Any], authenticator: Authenticator | None
) -> None:
    """Bind the request id and the caller. grpc.aio serves each call in its own task, so the
    bindings end with the call."""
    metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
    request_id.set(metadata.get("x-request-id") or uuid.uuid4().hex)
    if authenticator is not None:
        await authenticator.resolve(metadata)


def _checked(method: str, request: Any) -> Any:
    """The request, or (a client stream) the stream, refusing what the deserializer refused; a
    scoped key is judged on the message too (services/kit/auth.py `judge_request`)."""
    if hasattr(request, "__aiter__"):
        return checked_stream(request)
    refuse_undecodable(request)
    judge_request(method, request)
    return request


def _wrap_unary_response(method: str, behavior: Behavior, authenticator: Authenticator | None) -> Behavior:
    metrics = MethodMetrics(method)

    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        try:
            await _bind_call(context, authenticator)
            reply = await behavior(_checked(method, request), context)
            # OK (None) unless the handler set a code; recorded before the reply goes out.
            metrics.record(context.code(), started)
            return reply
        except grpc.aio.AbortError:  # the handler aborted (its status is already sent)
            metrics.record(context.code(), started)
            raise
        except asyncio.CancelledError:
            metrics.record(grpc.StatusCode.CANCELLED, started)
            raise
        except Exception as exc:
            await _abort(context, method, exc, metrics, started)

    return handle


def _wrap_stream_response(method: str, behavior: Behavior, authenticator: Authenticator | None) -> Behavior:
    metrics = MethodMetrics(method)

    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        started = time.perf_counter()
        try:
            await _bind_call(context, authenticator)
            result = behavior(_checked(method, request), context)
            if inspect.isasyncgen(result):
                async for message in result:
                    yield message
            else:  # a coroutine that writes with context.write()
                await result
            metrics.record(context.code(), started)  # latency to the end of the stream
        except grpc.aio.AbortError:
            metrics.record(context.code(), started)
            raise
        except (asyncio.CancelledError, GeneratorExit):  # the client went away mid-stream
            metrics.record(grpc.StatusCode.CANCELLED, started)
            raise
        except Exception as exc:
            await _abort(context, method, exc, metrics, started)

    return handle


class RequestInterceptor(grpc.aio.ServerInterceptor):
    """Binds the request id and the caller, and maps exceptions to statuses, for all four call
    shapes. Without an authenticator every caller is anonymous (tests of the gateway)."""

    def __init__(self, authenticator: Authenticator | None = None) -> None:
        self.authenticator = authenticator
        # grpc.aio asks the interceptor on every call; a method's handler never changes, so its
        # wrapped form is built once.
        self._wrapped: dict[str, Handler | None] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        if method not in self._wrapped:
            self._wrapped[method] = _wrap(
                method, await continuation(handler_call_details), self.authenticator
            )
        return self._wrapped[method]


def _wrap(method: str, handler: Handler | None, auth: Authenticator | None) -> Handler | None:
    if handler is None:
        return None
    deserializer = handler.request_deserializer
    codec = {
        "request_deserializer": deserializer
        if method.startswith(ENVOY_METHODS)
        else checked_deserializer(deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary_response(method, handler.unary_unary, auth), **codec
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_unary_response(method, handler.stream_unary, auth), **codec
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream_response(method, handler.unary_stream, auth), **codec
        )
    assert handler.stream_stream is not None  # the only shape left
    return grpc.stream_stream_rpc_method_handler(
        _wrap_stream_response(method, handler.stream_stream, auth), **codec
    )
