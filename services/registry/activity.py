"""What chutes are doing, from the gateway's access log (Envoy's gRPC ALS, one entry per call).

The registry reads it where scaling must react at once:
- a call answered "no healthy upstream" (the chute has no routable instance: the cold 503) marks
  the chute wanted, which starts an instance (scale from zero), and puts a bounty on it for the
  miner whose instance becomes routable first (bounties.py), as the real API's cold calls do;
- answered calls mark the chute in use (idle shutdown reads it).
Utilization (scaling out and in) comes from the metrics service's invocation records instead
(utilization.py): it needs windows of minutes to an hour, which the records hold.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from services.kit.db import Database, log_failure
from services.registry import bounties, fleet_store

log = logging.getLogger(__name__)

#: How often the in-use marks are written (one statement for every chute called meanwhile).
FLUSH_SECONDS = 1.0
CHUTE_HEADER = "x-chutes-chute-id"
NO_HEALTHY_UPSTREAM = "no_healthy_upstream"


class Activity(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    def __init__(self, db: Database, on_wanted: Callable[[], None]) -> None:
        self.db = db
        self.on_wanted = on_wanted
        self._invoked: set[str] = set()
        self._wanted: set[str] = set()
        self._flushing: asyncio.Task[None] | None = None

    def record(self, entry: Any) -> None:
        chute_id = entry.request.request_headers.get(CHUTE_HEADER)
        if not chute_id:
            return
        if entry.response.response_code_details == NO_HEALTHY_UPSTREAM:
            self._wanted.add(chute_id)
            return
        self._invoked.add(chute_id)

    async def StreamAccessLogs(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> als_pb2.StreamAccessLogsResponse:
        async for message in request_iterator:
            for entry in message.http_logs.log_entry:
                self.record(entry)
            if self._flushing is None or self._flushing.done():
                self._flushing = asyncio.create_task(self._flush_soon())
        return als_pb2.StreamAccessLogsResponse()

    async def _flush_soon(self) -> None:
        await asyncio.sleep(0 if self._wanted else FLUSH_SECONDS)
        wanted, self._wanted = self._wanted, set()
        invoked, self._invoked = self._invoked, set()
        try:
            async with self.db.raw() as connection:
                for chute_id in wanted:
                    await fleet_store.mark_wanted(connection, chute_id)
                    await bounties.cold(connection, chute_id)
                if invoked:
                    await fleet_store.mark_invoked(connection, sorted(invoked))
        except Exception:
            log_failure(log, "activity: recording demand failed")
            return
        if wanted:
            self.on_wanted()
