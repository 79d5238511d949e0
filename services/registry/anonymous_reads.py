"""Anonymous `GET /chutes/<uuid>` without gRPC (issue 14).

The gateway sends an anonymous GET of a chute by id (no `Authorization`, no signature headers)
to the registry's plain HTTP endpoint, the one that answers its invocation checks, with the Host
`ANONYMOUS_READS_HOST`, instead of transcoding it to GetChuteJson: a grpc.aio call costs the
registry ~250 µs of CPU and the transcoder its share in Envoy, while this endpoint answers a cached
answer in the event-loop step that read the request (bench/README.md, issue 14). The answer is
GetChuteJson's, from the same read cache (services/registry/views.py ReadCache, kept fresh by
freshness.py) and the same JSON printer: the bytes a REST client gets do not depend on the way.

The Host decides which the endpoint serves. Checks of chute calls carry the chute's own host
(`{slug}.{domain}`, always with a dot), which the gateway routes only for chute hosts, so a check
can never be mistaken for a read and answered 200.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from services.kit import authz_http
from services.kit.authz_http import AuthzRequest, Verdict
from services.kit.db import DATABASE_UNAVAILABLE, database_unreachable
from services.kit.errors import NotFound
from services.kit.headers import ANONYMOUS_READS_HOST
from services.kit.server import Closable
from services.kit.settings import Settings
from services.registry import store
from services.registry.invocations import InvocationAuthorizer

if TYPE_CHECKING:
    from services.registry.service import RegistryServicer

log = logging.getLogger(__name__)

#: What the gateway routes here: `/chutes/<lower-case uuid>`, the query string ignored (as the
#: transcoder ignores parameters GetChuteRequest does not have).
_PATH = re.compile(r"/chutes/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?:\?.*)?")
_ANONYMOUS = store.Viewer(None, [])
_JSON = {"content-type": "application/json"}
#: GetChute's NOT_FOUND, as the gateway answers it on the transcoded way (404, `{"detail"}`).
_NOT_FOUND = "Chute not found, or does not belong to you"


class AnonymousReads:
    def __init__(self, servicer: RegistryServicer) -> None:
        self.servicer = servicer

    @staticmethod
    def _reference(request: AuthzRequest) -> str | None:
        match = _PATH.fullmatch(request.path) if request.method == "GET" else None
        return match.group(1) if match else None

    def known(self, request: AuthzRequest) -> Verdict | None:
        """A cached answer, at once; None to build it (`answer`)."""
        reference = self._reference(request)
        if reference is None:
            return Verdict(denied="Not Found", status=404)
        cached = self.servicer.cached_chute(reference, _ANONYMOUS)
        if cached is None:
            return None
        answer, live = cached
        return Verdict(upstream_headers=_JSON, body=answer.json(live))

    async def answer(self, request: AuthzRequest) -> Verdict:
        reference = self._reference(request)
        if reference is None:
            return Verdict(denied="Not Found", status=404)
        try:
            answer, live = await self.servicer.get_chute(reference, _ANONYMOUS)
        except NotFound:
            return Verdict(denied=_NOT_FOUND, status=404)
        except Exception as error:
            # What the kit's interceptor answers on the transcoded way: 503 while the database
            # cannot be reached, else 500 (and the traceback in the log, not to the client).
            if database_unreachable(error):
                log.warning("anonymous read: database unreachable (%s)", type(error).__name__)
                return Verdict(denied=DATABASE_UNAVAILABLE, status=503)
            log.exception("anonymous read of %s failed", reference)
            return Verdict(denied="Internal server error", status=500)
        return Verdict(upstream_headers=_JSON, body=answer.json(live))


async def serve_checks_and_reads(servicer: RegistryServicer, settings: Settings) -> list[Closable]:
    """The plain HTTP endpoint on `settings.registry_authz_address`: the gateway's invocation
    checks (invocations.py) and, by Host, anonymous reads."""
    authorizer = InvocationAuthorizer(servicer.db, servicer.identity, settings.chute_domain)
    reads = AnonymousReads(servicer)

    def known(request: AuthzRequest) -> Verdict | None:
        if request.headers.get("host") == ANONYMOUS_READS_HOST:
            return reads.known(request)
        return authorizer.known(request)

    async def check(request: AuthzRequest) -> Verdict:
        if request.headers.get("host") == ANONYMOUS_READS_HOST:
            return await reads.answer(request)
        return await authorizer.verdict(request)

    host, _, port = settings.registry_authz_address.rpartition(":")
    return [await authz_http.serve(check, settings.bind_host or host, int(port), known)]
