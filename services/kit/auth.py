"""Who is calling, in every service.

The request interceptor resolves the caller once per call, before the handler runs:
- `x-chutes-user-id` (set only by the gateway, after it verified a hotkey signature; clients'
  copies are removed at the edge) names a verified user;
- else an `Authorization` value is an API key, verified by the identity service;
- else the caller is anonymous.
Answers are cached for `CACHE_SECONDS`, so a service asks identity at most once per credential
per few seconds, and a deleted key stops working within 5 s. Handlers then call
`require_caller()` (401 when anonymous) or `optional_caller()`.

Credentials are never logged: the cache keys are digests.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from chutes.identity.v1 import identity_pb2, identity_pb2_grpc
from services.kit.caller import AUTH_METHOD_HEADER, USER_ID_HEADER
from services.kit.errors import DomainError, Unauthenticated, Unavailable
from services.kit.roles import Role, has_role

#: How long an answer about a credential is reused. Must stay under 5 s (revocation promise).
CACHE_SECONDS = 4.0
_MAX_CACHED = 50_000

#: The REST request as the gateway saw it (set by the transcoder; stripped from clients).
ORIGINAL_METHOD_HEADER = "x-envoy-original-method"
ORIGINAL_PATH_HEADER = "x-envoy-original-path"


@dataclass(frozen=True)
class Scope:
    """What a scoped API key may touch: an object type, optionally one object and one action."""

    object_type: str
    object_id: str | None = None
    action: str | None = None


@dataclass(frozen=True)
class Caller:
    user_id: str
    username: str
    permissions_bitmask: int = 0
    netuids: tuple[int, ...] = ()
    balance: float = 0.0
    #: Hotkey callers and admin keys; scoped keys are not.
    admin: bool = True
    scopes: tuple[Scope, ...] = field(default_factory=tuple)
    auth_method: str = "hotkey"
    api_key_id: str = ""

    def has_role(self, role: Role) -> bool:
        return has_role(self.permissions_bitmask, role)


class CallerLookup(Protocol):
    """Where callers come from: the identity service (over gRPC), or identity's own store."""

    async def by_api_key(self, authorization: str) -> Caller:
        """Raise Unauthenticated for a malformed or unknown key, Unavailable if it cannot tell."""
        ...

    async def by_user_id(self, user_id: str) -> Caller:
        """Raise Unauthenticated for an unknown user, Unavailable if it cannot tell."""
        ...


class MalformedCredential(Unauthenticated):
    """A credential that cannot be a key at all: refused even on routes that allow anonymity."""


_caller: ContextVar[Caller | None] = ContextVar("caller", default=None)
_failure: ContextVar[DomainError | None] = ContextVar("caller_failure", default=None)


def optional_caller() -> Caller | None:
    """The caller, or None when anonymous (or holding a key that matches no user, as the real
    API treats it on optional routes). Raises when identity could not be asked."""
    failure = _failure.get()
    if failure is not None and type(failure) is not Unauthenticated:
        raise failure
    return _caller.get()


def require_caller() -> Caller:
    """The caller; 401 when anonymous or when the credential did not verify."""
    failure = _failure.get()
    if failure is not None:
        raise failure
    caller = _caller.get()
    if caller is None:
        raise Unauthenticated("Authentication required")
    return caller


def scope_allows(scopes: tuple[Scope, ...], method: str, path: str) -> bool:
    """Whether a scoped key may make this REST request (spec 2.4, with the intended object
    type: the first path segment, where the real API takes the last one and so refuses almost
    everything)."""
    segments = [s for s in path.split("?", 1)[0].split("/") if s]
    if not segments:
        return False
    object_type = segments[0]
    object_id = segments[1] if len(segments) > 1 else None
    action = {
        "GET": "read",
        "HEAD": "read",
        "POST": "write",
        "PUT": "write",
        "PATCH": "write",
        "DELETE": "delete",
    }.get(method.upper())
    if method.upper() == "POST" and re.match(r"^/chutes/[^/]+/.+$", path):
        action = "invoke"
    return any(
        scope.object_type == object_type
        and (scope.object_id is None or scope.object_id == object_id)
        and (scope.action is None or scope.action == action)
        for scope in scopes
    )


class Authenticator:
    def __init__(self, lookup: CallerLookup) -> None:
        self.lookup = lookup
        self._cache: dict[str, tuple[float, Caller | DomainError]] = {}

    async def _cached(self, kind: str, credential: str) -> Caller | DomainError:
        key = kind + hashlib.sha256(credential.encode()).hexdigest()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        answer: Caller | DomainError
        try:
            answer = await (
                self.lookup.by_api_key(credential) if kind == "k" else self.lookup.by_user_id(credential)
            )
        except Unauthenticated as refused:
            answer = refused
        # Other errors (identity unavailable) are not cached: the next call asks again.
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[key] = (now + CACHE_SECONDS, answer)
        return answer

    async def resolve(self, metadata: Mapping[str, str]) -> None:
        """Bind the caller of the current call (see module doc). Never raises: failures are kept
        for the handler, so routes that need no caller are not affected by them."""
        _caller.set(None)
        _failure.set(None)
        try:
            user_id = metadata.get(USER_ID_HEADER)
            authorization = metadata.get("authorization")
            if user_id:
                answer = await self._cached("u", user_id)
            elif authorization is not None:
                answer = await self._cached("k", authorization)
            else:
                return
        except DomainError as failure:
            _failure.set(failure)
            return
        if isinstance(answer, DomainError):
            _failure.set(answer)
            return
        if user_id:
            answer = Caller(**{**answer.__dict__, "auth_method": metadata.get(AUTH_METHOD_HEADER, "hotkey")})
        elif not answer.admin and not scope_allows(
            answer.scopes, metadata.get(ORIGINAL_METHOD_HEADER, ""), metadata.get(ORIGINAL_PATH_HEADER, "")
        ):
            _failure.set(Unauthenticated("Invalid token or user not found"))
            return
        _caller.set(answer)


def scope_to_proto(scope: Scope) -> identity_pb2.ApiKeyScope:
    return identity_pb2.ApiKeyScope(
        object_type=scope.object_type, object_id=scope.object_id, action=scope.action
    )


def caller_to_proto(caller: Caller) -> identity_pb2.Caller:
    return identity_pb2.Caller(
        user_id=caller.user_id,
        username=caller.username,
        permissions_bitmask=caller.permissions_bitmask,
        netuids=caller.netuids,
        balance=caller.balance,
        admin=caller.admin,
        scopes=[scope_to_proto(s) for s in caller.scopes],
        auth_method=caller.auth_method,
        api_key_id=caller.api_key_id,
    )


def caller_from_proto(message: identity_pb2.Caller) -> Caller:
    return Caller(
        user_id=message.user_id,
        username=message.username,
        permissions_bitmask=message.permissions_bitmask,
        netuids=tuple(message.netuids),
        balance=message.balance,
        admin=message.admin,
        scopes=tuple(
            Scope(
                s.object_type,
                s.object_id if s.HasField("object_id") else None,
                s.action if s.HasField("action") else None,
            )
            for s in message.scopes
        ),
        auth_method=message.auth_method,
        api_key_id=message.api_key_id,
    )


class IdentityClient:
    """CallerLookup over gRPC, for every service but identity itself."""

    TIMEOUT_SECONDS = 2.0

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = identity_pb2_grpc.IdentityInternalServiceStub(channel)

    async def by_api_key(self, authorization: str) -> Caller:
        request = identity_pb2.AuthenticateApiKeyRequest(authorization=authorization)
        try:
            return caller_from_proto(
                await self.stub.AuthenticateApiKey(request, timeout=self.TIMEOUT_SECONDS)
            )
        except grpc.aio.AioRpcError as error:
            raise _refusal(error) from None

    async def find_user(self, user_id_or_name: str) -> Caller | None:
        """A user by id or name (share targets); None when there is none."""
        request = identity_pb2.FindUserRequest(user_id_or_name=user_id_or_name)
        try:
            return caller_from_proto(await self.stub.FindUser(request, timeout=self.TIMEOUT_SECONDS))
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _refusal(error) from None

    async def by_user_id(self, user_id: str) -> Caller:
        request = identity_pb2.GetCallerRequest(user_id=user_id)
        try:
            return caller_from_proto(await self.stub.GetCaller(request, timeout=self.TIMEOUT_SECONDS))
        except grpc.aio.AioRpcError as error:
            raise _refusal(error) from None


def _refusal(error: grpc.aio.AioRpcError) -> DomainError:
    code = error.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return MalformedCredential(error.details() or "Missing or invalid authorization header(s)")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND):
        return Unauthenticated(error.details() or "Invalid token or user not found")
    return Unavailable("Identity service unavailable, try again shortly")
