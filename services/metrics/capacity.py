"""Utilization and the capacity log, from the invocation records (records.py writes them).

Every TICK_SECONDS, for each chute with instances or demand (the registry's fleet, asked over
gRPC), from the records of the last hour:
- utilization over a window = seconds calls spent in the chute's instances within the window,
  over what its routable instances could hold in it: concurrency x, per instance, the part of
  the window since it became routable. So a chute that just got its first or a second instance
  is not diluted by the time before it had them. Instances stopped during the window no longer
  count in the denominator while their calls still count: after a scale-in a window may read
  above 1 until it has passed.
- rate-limit ratio = rate-limited / (rate-limited + completed), as the real autoscaler has it.
The numbers stay in memory for the registry's scheduler (ListUtilization; the registry asks every
second) and go to the capacity log every `capacity_log_seconds` per chute, and at once when the
scheduler changed something for it (its action and target come with the fleet).

Records reach the table about a second after a call ends (the gateway's ALS flush, 0.5 s, then
records.py's, 0.5 s): calls still running count once they end.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import grpc

from chutes.metrics.v1 import internal_pb2 as metrics_internal_pb2
from chutes.registry.v1 import internal_pb2, internal_pb2_grpc
from services.kit.db import Database
from services.metrics import store

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
REGISTRY_SECONDS = 5.0


def held_seconds(chute: internal_pb2.ChuteFleet, window: float, now: datetime) -> float:
    """Instance-seconds the chute's routable instances were available within the window."""
    held = 0.0
    for instance in chute.instances:
        if instance.active and instance.HasField("ready_at"):
            since = (now - instance.ready_at.ToDatetime(UTC)).total_seconds()
            held += min(window, max(0.0, since))
    return held


def ratio(part: float, other: float) -> float:
    return part / (part + other) if part + other > 0 else 0.0


def load_row(chute: internal_pb2.ChuteFleet, seen: Any, now: datetime) -> dict[str, Any]:
    """The capacity-log columns of a chute (without action and target) from its records' sums."""
    row: dict[str, Any] = {"chute_id": chute.chute_id, "timestamp": now}
    for name, seconds in store.UTILIZATION_WINDOWS.items():
        capacity = chute.concurrency * held_seconds(chute, seconds, now)
        busy = seen[f"busy_{name}"] if seen is not None else 0.0
        row[f"utilization_{name}"] = busy / capacity if capacity > 0 else 0.0
    for name in store.COUNT_WINDOWS:
        counts = {
            kind: float(seen[f"{kind}_{name}"]) if seen else 0.0
            for kind in ("total", "completed", "rate_limited")
        }
        row[f"total_requests_{name}"] = counts["total"]
        row[f"completed_requests_{name}"] = counts["completed"]
        row[f"rate_limited_requests_{name}"] = counts["rate_limited"]
        row[f"rate_limit_ratio_{name}"] = ratio(counts["rate_limited"], counts["completed"])
    row["instance_count"] = len(chute.instances)
    row["effective_multiplier"] = chute.effective_multiplier
    return row


def load_message(row: dict[str, Any]) -> metrics_internal_pb2.ChuteLoad:
    return metrics_internal_pb2.ChuteLoad(
        chute_id=row["chute_id"],
        **{
            name: row[name]
            for name in metrics_internal_pb2.ChuteLoad.DESCRIPTOR.fields_by_name
            if name != "chute_id"
        },
    )


class Capacity:
    def __init__(
        self, db: Database, registry: internal_pb2_grpc.RegistryInternalServiceAsyncStub, log_seconds: float
    ) -> None:
        self.db = db
        self.registry = registry
        self.log_seconds = log_seconds
        #: The latest numbers of every chute in the fleet, and when they were computed.
        self.latest: list[metrics_internal_pb2.ChuteLoad] = []
        self.computed_at: datetime | None = None
        self._logged_at: dict[str, datetime] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self.tick()
                failing = False
            except grpc.aio.AioRpcError as error:
                # The registry starts before metrics but may restart: keep the last numbers.
                if not failing:
                    log.warning("capacity: the registry did not answer (%s)", error.code())
                failing = True
            except Exception:
                log.exception("capacity: computing utilization failed")
            await asyncio.sleep(TICK_SECONDS)

    async def tick(self) -> list[dict[str, Any]]:
        """Compute every chute's numbers; log those due. Returns the rows logged."""
        fleet = await self.registry.ListFleet(internal_pb2.ListFleetRequest(), timeout=REGISTRY_SECONDS)
        now = datetime.now(UTC)
        async with self.db.raw() as connection:
            seen = await store.load(connection, [c.chute_id for c in fleet.chutes], now)
        rows = [load_row(chute, seen.get(chute.chute_id), now) for chute in fleet.chutes]
        self.latest, self.computed_at = [load_message(row) for row in rows], now
        due = [row for chute, row in zip(fleet.chutes, rows, strict=True) if self._due(chute, row, now)]
        if due:
            async with self.db.raw() as connection:
                if not await store.add_capacity_rows(connection, due):
                    return []
            for row in due:
                self._logged_at[row["chute_id"]] = now
        return due

    def _due(self, chute: internal_pb2.ChuteFleet, row: dict[str, Any], now: datetime) -> bool:
        """Whether to log the chute now; sets the row's action and target."""
        last = self._logged_at.get(chute.chute_id)
        acted = bool(chute.last_action) and (last is None or chute.last_action_at.ToDatetime(UTC) > last)
        row["action_taken"] = chute.last_action if acted else "no_action"
        active = sum(1 for i in chute.instances if i.active)
        row["target_count"] = chute.target_count if chute.HasField("target_count") else active
        if acted:
            return True
        # Chutes idle for an hour with nothing running are not logged again (demand rows stay).
        if not chute.instances and not row["total_requests_1h"]:
            return False
        return last is None or (now - last).total_seconds() >= self.log_seconds
