"""Who may call a chute at its host: the registry's check of invocations, for the gateway.

Envoy asks it (HTTP-mode ext_authz, services/kit/authz_http.py) before every request to
`{slug}.{chute_domain}`, after identity's signature check, which runs first for hotkey-signed
requests and sets `x-chutes-user-id`. The verdict, in order:
- the caller: the verified `x-chutes-user-id`, else an API key in `Authorization`, resolved by the
  kit's Authenticator (identity over gRPC, answers cached `auth.CACHE_SECONDS`, so a deleted key
  stops working within 5 s); none, or one that does not verify: 401;
- the chute: one query by slug with the visibility of every read (`store.invocable_chute`: public,
  own, shared, subnet roles), its answer cached `DECISION_SECONDS` per caller and slug, so an
  unshare (or a chute made private) bites within 5 s; hidden or unknown: 404, never a 403;
- a scoped API key must reach that chute (`chutes`/`invoke` on its id, or an `invocations` scope);
- allowed: the instance gets the caller as `x-chutes-user-id`, and the gateway may reuse the
  allow for `EDGE_REUSE_SECONDS` without asking (gateway/verdicts.lua), so a sporadic call does
  not pay this round trip. Every bound adds up to at most 5 s: a verdict is given only while the
  caller's and the decision's cached answers hold, then reused at the edge for 1 s more.
Identity or the database unreachable: 503 (the gateway never lets a call through unchecked).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time

from services.kit.auth import Authenticator
from services.kit.authz_http import AuthzRequest, Verdict
from services.kit.caller import Caller, CallerLookup, scope_allows
from services.kit.db import Database
from services.kit.errors import DomainError
from services.kit.headers import USER_ID_HEADER, VERDICT_REUSE_HEADER
from services.registry import store
from services.registry.subnets import substrings_managed_by

log = logging.getLogger(__name__)

#: How long a decision (caller, slug) -> chute is reused. With the caller cache (4 s, a separate
#: bound for revoked keys) both stay under the 5 s promise.
DECISION_SECONDS = 3.0
#: How long the gateway may reuse an allow (per Envoy worker). With the caller cache:
#: auth.CACHE_SECONDS + EDGE_REUSE_SECONDS <= 5.
EDGE_REUSE_SECONDS = 1.0
_EDGE_REUSE = {VERDICT_REUSE_HEADER: str(int(EDGE_REUSE_SECONDS * 1000))}
_MAX_DECISIONS = 50_000

NO_CHUTE = "No matching chute found!"
NO_CREDENTIALS = "Authentication required"
BAD_CREDENTIALS = "Invalid token or user not found"
UNAVAILABLE = "Authorization unavailable, try again shortly"


class _Callers(Authenticator):
    """The kit's Authenticator (its cache and identity lookups), asked for a Caller directly:
    scoped keys are judged here on the chute, which the REST path rule cannot name."""

    async def caller(self, user_id: str | None, authorization: str | None) -> Caller | DomainError | None:
        if user_id:
            return await self._cached("u", user_id)
        if authorization:
            return await self._cached("k", authorization)
        return None

    def expires(self, user_id: str | None, authorization: str | None) -> float | None:
        """When the cached answer about this caller's credential runs out (monotonic), None when
        none is cached. Mirrors Authenticator._cached's key: should it change, this finds
        nothing and verdicts are simply not reused."""
        kind, credential = ("u", user_id) if user_id else ("k", authorization or "")
        hit = self._cache.get(kind + hashlib.sha256(credential.encode()).hexdigest())
        return None if hit is None else hit[0]


def _may_invoke(caller: Caller, chute_id: str) -> bool:
    if caller.admin:  # hotkey callers and unscoped keys
        return True
    return scope_allows(caller.scopes, "POST", f"/chutes/{chute_id}/invoke") or any(
        scope.object_type == "invocations" and scope.object_id in (None, chute_id) for scope in caller.scopes
    )


class InvocationAuthorizer:
    def __init__(self, db: Database, lookup: CallerLookup, chute_domain: str) -> None:
        self.db = db
        self.callers = _Callers(lookup)
        self.suffix = "." + chute_domain.strip(".").lower()
        self._decisions: dict[tuple[str, tuple[str, ...], str], tuple[float, str | None]] = {}
        #: Verdicts by (verified user id, Authorization, host), each kept only as long as both the
        #: caller's and the decision's cached answers it was made of: `known` answers from it.
        self._verdicts: dict[tuple[str, str, str], tuple[float, Verdict]] = {}
        #: Concurrent misses of one decision share one query.
        self._pending: dict[tuple[str, tuple[str, ...], str], asyncio.Future[tuple[str | None, float]]] = {}

    def slug_of(self, host: str) -> str | None:
        host = host.strip().lower()
        if host.startswith("["):
            return None
        host = host.rpartition(":")[0] if ":" in host else host
        if not host.endswith(self.suffix):
            return None
        slug = host[: -len(self.suffix)]
        return slug or None

    def known(self, request: AuthzRequest) -> Verdict | None:
        """The verdict `verdict` would give now, when every answer it needs is cached (most
        calls): served without a task (services/kit/authz_http.py)."""
        headers = request.headers
        key = (headers.get(USER_ID_HEADER, ""), headers.get("authorization", ""), headers.get("host", ""))
        hit = self._verdicts.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    async def verdict(self, request: AuthzRequest) -> Verdict:
        headers = request.headers
        user_id, authorization = headers.get(USER_ID_HEADER), headers.get("authorization")
        verdict, reusable_until = await self._verdict(user_id, authorization, headers.get("host", ""))
        if reusable_until is not None:
            # Never longer than the caller's cached answer it came from (the revocation bound).
            caller_expires = self.callers.expires(user_id, authorization)
            if caller_expires is not None:
                if verdict.upstream_headers is not None:  # an allow: the edge may reuse it too
                    verdict = Verdict(upstream_headers={**verdict.upstream_headers, **_EDGE_REUSE})
                if len(self._verdicts) >= _MAX_DECISIONS:
                    self._verdicts.clear()
                key = (user_id or "", authorization or "", headers.get("host", ""))
                self._verdicts[key] = (min(caller_expires, reusable_until), verdict)
        return verdict

    async def _verdict(
        self, user_id: str | None, authorization: str | None, host: str
    ) -> tuple[Verdict, float | None]:
        """The verdict, and until when it may be reused as far as the chute's decision goes
        (None: not at all, e.g. a failure)."""
        try:
            caller = await self.callers.caller(user_id, authorization)
        except DomainError:  # identity could not be asked
            return Verdict(denied=UNAVAILABLE, status=503), None
        if caller is None:
            return Verdict(denied=NO_CREDENTIALS), None
        if isinstance(caller, DomainError):
            return Verdict(denied=caller.detail), math.inf
        slug = self.slug_of(host)
        if slug is None:
            return Verdict(denied=NO_CHUTE, status=404), math.inf
        try:
            chute_id, expires = await self._decision(caller, slug)
        except Exception:
            log.exception("invocation check of %s failed", slug)
            return Verdict(denied=UNAVAILABLE, status=503), None
        if chute_id is None:
            return Verdict(denied=NO_CHUTE, status=404), expires
        if not _may_invoke(caller, chute_id):
            return Verdict(denied=BAD_CREDENTIALS), expires
        return Verdict(upstream_headers={USER_ID_HEADER: caller.user_id}), expires

    async def _decision(self, caller: Caller, slug: str) -> tuple[str | None, float]:
        """The chute `caller` may invoke at `slug` (None: hidden or unknown), and until when that
        answer is reused."""
        patterns = tuple(f"%{s}%" for s in substrings_managed_by(caller, admin_only=False))
        key = (caller.user_id, patterns, slug)
        now = time.monotonic()
        hit = self._decisions.get(key)
        if hit is not None and hit[0] > now:
            return hit[1], hit[0]
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[tuple[str | None, float]] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            async with self.db.raw() as connection:
                chute_id = await store.invocable_chute(
                    connection, slug, store.Viewer(caller.user_id, list(patterns))
                )
        except BaseException as failure:
            # Waiters fail too (a 503 each), cancellation included.
            future.set_exception(failure if isinstance(failure, Exception) else RuntimeError("cancelled"))
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        finally:
            del self._pending[key]
        expires = now + DECISION_SECONDS
        future.set_result((chute_id, expires))
        if len(self._decisions) >= _MAX_DECISIONS:
            self._decisions.clear()
        self._decisions[key] = (expires, chute_id)
        return chute_id, expires
