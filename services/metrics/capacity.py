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
The numbers stay in memory for the registry's scheduler (ListUtilization, which leaves out the
chutes whose numbers are all 0; the registry asks every 0.5 s) and go to the capacity log every
`capacity_log_seconds` per chute, and at once when the scheduler changed something for it (its
action and target come with the fleet).

Records reach the table about a second after a call ends (the gateway's ALS flush, 0.5 s, then
records.py's, 0.5 s): calls still running count once they end.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from chutes.metrics.v1 import internal_pb2 as metrics_internal_pb2
from chutes.registry.v1 import internal_pb2, internal_pb2_grpc
from services.kit.db import Database, log_failure
from services.metrics import store

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
#: The 15-minute and hour windows are read this often (store.LONG_WINDOWS says why); in between,
#: their sums are the last ones read while the instances' part of the window is computed anew.
LONG_SECONDS = 15.0
REGISTRY_SECONDS = 5.0


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
#: The numbers ListUtilization answers (a ChuteLoad's fields besides the chute).
LOAD_FIELDS = tuple(
    name for name in metrics_internal_pb2.ChuteLoad.DESCRIPTOR.fields_by_name if name != "chute_id"
)


def _micros(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (what Timestamp.ToDatetime would be subtracted from)."""
    return (moment - _EPOCH) // _MICROSECOND


def _routable_for(chute: internal_pb2.ChuteFleet, now: datetime) -> list[float]:
    """Seconds each routable instance of the chute has been routable (in instance order)."""
    now_us = _micros(now)
    return [
        (now_us - (instance.ready_at.seconds * 1_000_000 + instance.ready_at.nanos // 1000)) / 1_000_000
        for instance in chute.instances
        if instance.active and instance.HasField("ready_at")
    ]


def _held(routable: list[float], window: float) -> float:
    held = 0.0
    for since in routable:
        held += min(window, max(0.0, since))
    return held


def held_seconds(chute: internal_pb2.ChuteFleet, window: float, now: datetime) -> float:
    """Instance-seconds the chute's routable instances were available within the window."""
    return _held(_routable_for(chute, now), window)


def ratio(part: float, other: float) -> float:
    return part / (part + other) if part + other > 0 else 0.0


def no_calls() -> dict[str, Any]:
    """The sums of a chute without records."""
    sums = {f"busy_{name}": 0.0 for name in store.UTILIZATION_WINDOWS}
    for name in store.COUNT_WINDOWS:
        sums |= {f"{kind}_{name}": 0.0 for kind in ("total", "completed", "rate_limited")}
    return sums


_NO_CALLS = no_calls()


def load_row(chute: internal_pb2.ChuteFleet, seen: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The capacity-log columns of a chute (without action and target) from its records' sums."""
    row: dict[str, Any] = {"chute_id": chute.chute_id, "timestamp": now}
    routable: list[float] | None = None
    for name, seconds in store.UTILIZATION_WINDOWS.items():
        busy = seen[f"busy_{name}"]
        if not busy:
            # 0 over any capacity: the instances' part of the window need not be computed.
            row[f"utilization_{name}"] = 0.0
            continue
        if routable is None:
            routable = _routable_for(chute, now)
        capacity = chute.concurrency * _held(routable, seconds)
        row[f"utilization_{name}"] = busy / capacity if capacity > 0 else 0.0
    for name in store.COUNT_WINDOWS:
        counts = {kind: float(seen[f"{kind}_{name}"]) for kind in ("total", "completed", "rate_limited")}
        row[f"total_requests_{name}"] = counts["total"]
        row[f"completed_requests_{name}"] = counts["completed"]
        row[f"rate_limited_requests_{name}"] = counts["rate_limited"]
        row[f"rate_limit_ratio_{name}"] = ratio(counts["rate_limited"], counts["completed"])
    row["instance_count"] = len(chute.instances)
    row["effective_multiplier"] = chute.effective_multiplier
    return row


def load_message(row: dict[str, Any]) -> metrics_internal_pb2.ChuteLoad:
    return metrics_internal_pb2.ChuteLoad(
        chute_id=row["chute_id"], **{name: row[name] for name in LOAD_FIELDS}
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
        self._long: dict[str, dict[str, Any]] = {}
        self._long_at: datetime | None = None
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
                log_failure(log, "capacity: computing utilization failed")
            await asyncio.sleep(TICK_SECONDS)

    async def tick(self) -> list[dict[str, Any]]:
        """Compute every chute's numbers; log those due. Returns the rows logged."""
        fleet = await self.registry.ListFleet(internal_pb2.ListFleetRequest(), timeout=REGISTRY_SECONDS)
        now = datetime.now(UTC)
        chute_ids = [c.chute_id for c in fleet.chutes]
        due = {c.chute_id for c in fleet.chutes if self._due(c, now)}
        async with self.db.raw() as connection:
            # Logged rows are read whole at their moment; in between, the long windows may lag.
            age = (now - self._long_at).total_seconds() if self._long_at is not None else None
            if age is None or age >= LONG_SECONDS or (due and age > 0):
                self._long = await store.load(connection, chute_ids, now, store.LONG_WINDOWS)
                self._long_at = now
            short = await store.load(connection, chute_ids, now, store.SHORT_WINDOWS)
        # A chute without records in the last hour has all its numbers 0 whatever its instances:
        # it gets a row only when one is logged, and no ChuteLoad (ListUtilization leaves out
        # the chutes whose numbers are all 0, which the scheduler reads as 0 anyway).
        latest, logged = [], []
        for chute in fleet.chutes:
            chute_id = chute.chute_id
            long, recent = self._long.get(chute_id), short.get(chute_id)
            if long is None and recent is None and chute_id not in due:
                continue
            row = load_row(chute, _NO_CALLS | (long or {}) | (recent or {}), now)
            if any(row[name] for name in LOAD_FIELDS):
                latest.append(load_message(row))
            if chute_id in due:
                self._decided(chute, row)
                logged.append(row)
        self.latest, self.computed_at = latest, now
        if logged:
            async with self.db.raw() as connection:
                if not await store.add_capacity_rows(connection, logged):
                    return []
            for row in logged:
                self._logged_at[row["chute_id"]] = now
        return logged

    def _acted(self, chute: internal_pb2.ChuteFleet) -> bool:
        """Whether the scheduler changed something for the chute since it was last logged."""
        last = self._logged_at.get(chute.chute_id)
        return bool(chute.last_action) and (last is None or chute.last_action_at.ToDatetime(UTC) > last)

    def _due(self, chute: internal_pb2.ChuteFleet, now: datetime) -> bool:
        if self._acted(chute):
            return True
        # Chutes idle for an hour with nothing running are not logged again (demand rows stay).
        if not chute.instances and not self._long.get(chute.chute_id, {}).get("total_1h"):
            return False
        last = self._logged_at.get(chute.chute_id)
        return last is None or (now - last).total_seconds() >= self.log_seconds

    def _decided(self, chute: internal_pb2.ChuteFleet, row: dict[str, Any]) -> None:
        """The scheduler's part of a logged row: its action since the last row, its target."""
        row["action_taken"] = chute.last_action if self._acted(chute) else "no_action"
        active = sum(1 for i in chute.instances if i.active)
        row["target_count"] = chute.target_count if chute.HasField("target_count") else active
