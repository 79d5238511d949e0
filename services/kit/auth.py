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
import time
from collections.abc import Mapping
from contextvars import ContextVar

from services.kit.caller import Caller, CallerLookup, acts_on_its_path, scope_allows
from services.kit.errors import DomainError, Unauthenticated
from services.kit.headers import (
    AUTH_METHOD_HEADER,
    ORIGINAL_METHOD_HEADER,
    ORIGINAL_PATH_HEADER,
    USER_ID_HEADER,
)

#: How long an answer about a credential is reused. Must stay under 5 s (revocation promise).
CACHE_SECONDS = 4.0
_MAX_CACHED = 50_000


_caller: ContextVar[Caller | None] = ContextVar("caller", default=None)
_failure: ContextVar[DomainError | None] = ContextVar("caller_failure", default=None)
#: The REST method and path a scoped key was judged on (None for every other caller).
_judged: ContextVar[tuple[str, str] | None] = ContextVar("judged_request", default=None)


def judge_request(grpc_method: str, request: object) -> None:
    """A scoped key was allowed on its REST path: the request message must act on the objects
    that path names (`acts_on_its_path`), else the key is refused as a scope mismatch is."""
    judged = _judged.get()
    if judged is None or _caller.get() is None:
        return
    if not acts_on_its_path(grpc_method, request, *judged):
        _caller.set(None)
        _failure.set(Unauthenticated("Invalid token or user not found"))


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
        _judged.set(None)
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
        elif not answer.admin:
            rest = (metadata.get(ORIGINAL_METHOD_HEADER, ""), metadata.get(ORIGINAL_PATH_HEADER, ""))
            if not scope_allows(answer.scopes, *rest):
                _failure.set(Unauthenticated("Invalid token or user not found"))
                return
            _judged.set(rest)
        _caller.set(answer)
