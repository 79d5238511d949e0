"""Utilization as the scheduler reads it: from the metrics service, which computes it from the
invocation records (services/metrics/capacity.py), asked every POLL_SECONDS.

What the scheduler scales on is `max(utilization_current, utilization_5m)`: the 30-second number
lets a chute scale out as soon as it is busy, the 5-minute mean keeps it from scaling back in
until the load has been low for a while (the real autoscaler scales on the 5 and 15 minute
means). If the metrics service cannot be asked for longer than STALE_SECONDS, utilization reads
0: no scale-out on stale numbers; the cold-call path (activity.py) does not depend on this.
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
        self._fetched_at = 0.0
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
        failing = False
        while True:
            try:
                await self.fetch()
                failing = False
            except grpc.aio.AioRpcError as error:
                # Metrics starts after the registry: the first polls may fail.
                if not failing:
                    log.warning("utilization: the metrics service did not answer (%s)", error.code())
                failing = True
            await asyncio.sleep(POLL_SECONDS)
