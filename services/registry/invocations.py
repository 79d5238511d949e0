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
- allowed: the instance gets the caller as `x-chutes-user-id`.
Identity or the database unreachable: 503 (the gateway never lets a call through unchecked).
"""

from __future__ import annotations

import asyncio
import logging
import time

from services.kit import authz_http
from services.kit.auth import Authenticator
from services.kit.authz_http import AuthzRequest, Verdict
from services.kit.caller import Caller, CallerLookup, scope_allows
from services.kit.db import Database
from services.kit.errors import DomainError
from services.kit.headers import USER_ID_HEADER
from services.kit.server import Closable
from services.kit.settings import Settings
from services.registry import store
from services.registry.subnets import substrings_managed_by

log = logging.getLogger(__name__)

#: How long a decision (caller, slug) -> chute is reused. With the caller cache (4 s, a separate
#: bound for revoked keys) both stay under the 5 s promise.
DECISION_SECONDS = 3.0
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
        #: Concurrent misses of one decision share one query.
        self._pending: dict[tuple[str, tuple[str, ...], str], asyncio.Future[str | None]] = {}

    def slug_of(self, host: str) -> str | None:
        host = host.strip().lower()
        if host.startswith("["):
            return None
        host = host.rpartition(":")[0] if ":" in host else host
        if not host.endswith(self.suffix):
            return None
        slug = host[: -len(self.suffix)]
        return slug or None

    async def verdict(self, request: AuthzRequest) -> Verdict:
        headers = request.headers
        try:
            caller = await self.callers.caller(headers.get(USER_ID_HEADER), headers.get("authorization"))
        except DomainError:  # identity could not be asked
            return Verdict(denied=UNAVAILABLE, status=503)
        if caller is None:
            return Verdict(denied=NO_CREDENTIALS)
        if isinstance(caller, DomainError):
            return Verdict(denied=caller.detail)
        slug = self.slug_of(headers.get("host", ""))
        if slug is None:
            return Verdict(denied=NO_CHUTE, status=404)
        try:
            chute_id = await self._decision(caller, slug)
        except Exception:
            log.exception("invocation check of %s failed", slug)
            return Verdict(denied=UNAVAILABLE, status=503)
        if chute_id is None:
            return Verdict(denied=NO_CHUTE, status=404)
        if not _may_invoke(caller, chute_id):
            return Verdict(denied=BAD_CREDENTIALS)
        return Verdict(upstream_headers={USER_ID_HEADER: caller.user_id})

    async def _decision(self, caller: Caller, slug: str) -> str | None:
        patterns = tuple(f"%{s}%" for s in substrings_managed_by(caller, admin_only=False))
        key = (caller.user_id, patterns, slug)
        now = time.monotonic()
        hit = self._decisions.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
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
        future.set_result(chute_id)
        if len(self._decisions) >= _MAX_DECISIONS:
            self._decisions.clear()
        self._decisions[key] = (now + DECISION_SECONDS, chute_id)
        return chute_id


async def serve_invocation_checks(servicer: object, settings: Settings) -> list[Closable]:
    """Start the check on `settings.registry_authz_address` (the registry's `start_side_servers`)."""
    from services.registry.service import RegistryServicer  # here: service.py imports this module

    assert isinstance(servicer, RegistryServicer)
    authorizer = InvocationAuthorizer(servicer.db, servicer.identity, settings.chute_domain)
    host, _, port = settings.registry_authz_address.rpartition(":")
    return [await authz_http.serve(authorizer.verdict, settings.bind_host or host, int(port))]
