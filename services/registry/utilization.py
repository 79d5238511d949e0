"""Utilization as the scheduler reads it: from the metrics service, which computes it from the
invocation records (services/metrics/capacity.py), asked every POLL_SECONDS.

What the scheduler scales on is `max(utilization_current, utilization_5m)`: the 30-second number
lets a chute scale out as soon as it is busy, the 5-minute mean keeps it from scaling back in
until the load has been low for a while (the real autoscaler scales on the 5 and 15 minute
means). If the metrics service cannot be asked for longer than STALE_SECONDS, utilization reads
0: no scale-out on stale numbers; the cold-call path (activity.py) does not depend on this.

Reacting takes longer than when the registry summed the access log itself: a call's end reaches
ListUtilization 0.76-1.03 s later (median 0.79 s over 12 calls: the gateway's ALS flush, the
records' flush, the 1 s computation), then up to POLL_SECONDS here and a scheduler tick, about
1 s more on average than before. The windows count only the time instances were routable, so a
newly busy chute crosses its threshold sooner: 4 callers on a 4-slot echo chute got its second
instance placed 2.0-3.7 s after the load began, against 15.6 s with the old 30 s window.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from chutes.metrics.v1 import internal_pb2, internal_pb2_grpc
from services.kit.channels import channel_at

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
STALE_SECONDS = 30.0
METRICS_SECONDS = 2.0


class MetricsUtilization:
    def __init__(self, metrics_address: str) -> None:
        self.metrics = internal_pb2_grpc.MetricsInternalServiceStub(channel_at(metrics_address))
        self._basis: dict[str, float] = {}
        #: When the numbers were last fetched (starting now: the metrics service starts after us).
        self._fetched_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def __call__(self, chute_id: str) -> float:
        """The chute's utilization to scale on (0 when unknown or stale)."""
        if time.monotonic() - self._fetched_at > STALE_SECONDS:
            return 0.0
        return self._basis.get(chute_id, 0.0)

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def fetch(self) -> None:
        loads = await self.metrics.ListUtilization(
            internal_pb2.ListUtilizationRequest(), timeout=METRICS_SECONDS
        )
        self._basis = {c.chute_id: max(c.utilization_current, c.utilization_5m) for c in loads.items}
        self._fetched_at = time.monotonic()

    async def _poll(self) -> None:
        warned = False
        while True:
            try:
                await self.fetch()
                warned = False
            except grpc.aio.AioRpcError as error:
                # Metrics starts after the registry: failures matter once the numbers are stale.
                if not warned and time.monotonic() - self._fetched_at > STALE_SECONDS:
                    log.warning(
                        "utilization: the metrics service has not answered for %ss (%s); scaling out waits",
                        STALE_SECONDS,
                        error.code(),
                    )
                    warned = True
            await asyncio.sleep(POLL_SECONDS)
