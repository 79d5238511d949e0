"""RegistryInternalService: where jobs run, for the jobs service; the chute history's GPU counts,
the chutes' invocation counts and the fleet with the scheduler's decisions, for the metrics
service; a TEE chute's instances and their nodes' keys, for the attestation service.

The jobs service owns jobs (rows, tokens, files); the registry places each job's instance on
exactly one node: ScheduleJob records the launch, the scheduler places it in the transaction
that writes the instance row and the node's work, so no two miners ever run the same job.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from chutes.registry.v1 import internal_pb2, internal_pb2_grpc
from services.kit.caller import caller_from_proto
from services.kit.db import Database
from services.kit.errors import NotFound
from services.kit.requests import Context
from services.registry import fleet_store, store
from services.registry.pricing import multiplier_factors, selector_of
from services.registry.scheduler import Scheduler
from services.registry.subnets import substrings_managed_by

_STATES = {
    "pending": internal_pb2.JOB_PLACEMENT_STATE_PENDING,
    "placed": internal_pb2.JOB_PLACEMENT_STATE_PLACED,
    "running": internal_pb2.JOB_PLACEMENT_STATE_RUNNING,
    "ended": internal_pb2.JOB_PLACEMENT_STATE_ENDED,
}


def placement_message(row: Any) -> internal_pb2.JobPlacement:
    return internal_pb2.JobPlacement(
        job_id=row["job_id"],
        state=_STATES[row["state"]],
        instance_id=row["instance_id"] or "",
        reason=row["reason"],
        succeeded=row["succeeded"],
    )


class JobPlacementServicer(internal_pb2_grpc.RegistryInternalServiceServicer):
    def __init__(self, db: Database, scheduler: Scheduler) -> None:
        self.db = db
        #: Woken when a job waits for a node; its decisions are part of the fleet's answer.
        self.scheduler = scheduler
        self.on_change = scheduler.wake
        #: Per chute, the fleet row (and the scheduler's decisions) its ChuteFleet was built from.
        self._fleet_cache: dict[str, tuple[tuple[Any, ...], internal_pb2.ChuteFleet]] = {}

    async def ScheduleJob(
        self, request: internal_pb2.ScheduleJobRequest, context: Context
    ) -> internal_pb2.JobPlacement:
        async with self.db.raw() as connection, connection.transaction():
            row = await fleet_store.schedule_job(
                connection,
                request.job_id,
                request.chute_id,
                request.method,
                request.data_json,
                request.status_url,
                request.disk_gb or 10,
            )
        if row is None:
            raise NotFound(f"Chute {request.chute_id} has no job {request.method!r}")
        self.on_change()
        return placement_message(row)

    async def CancelJob(
        self, request: internal_pb2.CancelJobRequest, context: Context
    ) -> internal_pb2.JobPlacement:
        async with self.db.raw() as connection, connection.transaction():
            row = await fleet_store.cancel_job(connection, request.job_id, request.reason)
        if row is None:
            raise NotFound(f"Job {request.job_id} was never scheduled")
        return placement_message(row)

    async def GetJobPlacements(
        self, request: internal_pb2.GetJobPlacementsRequest, context: Context
    ) -> internal_pb2.GetJobPlacementsResponse:
        async with self.db.raw() as connection:
            rows = await fleet_store.job_launches_of(connection, list(request.job_ids))
        return internal_pb2.GetJobPlacementsResponse(placements=[placement_message(r) for r in rows])

    async def ListGpuCounts(
        self, request: internal_pb2.ListGpuCountsRequest, context: Context
    ) -> internal_pb2.ListGpuCountsResponse:
        async with self.db.raw() as connection:
            rows = await store.gpu_counts(connection)
        return internal_pb2.ListGpuCountsResponse(
            items=[internal_pb2.ChuteGpuCount(chute_id=r["chute_id"], gpu_count=r["gpu_count"]) for r in rows]
        )

    async def AddInvocations(
        self, request: internal_pb2.AddInvocationsRequest, context: Context
    ) -> internal_pb2.AddInvocationsResponse:
        counts: dict[str, int] = {}
        for item in request.counts:
            if item.count > 0:
                counts[item.chute_id] = counts.get(item.chute_id, 0) + item.count
        async with self.db.raw() as connection:
            await store.add_invocations(connection, counts)
        return internal_pb2.AddInvocationsResponse()

    async def ListFleet(
        self, request: internal_pb2.ListFleetRequest, context: Context
    ) -> internal_pb2.ListFleetResponse:
        async with self.db.raw() as connection:
            rows = await store.fleet(connection, request.standard_template, request.chute_ids)
        chutes = [self._fleet_message(row) for row in rows]
        if not request.standard_template and not request.chute_ids:
            # The whole fleet: forget the chutes that left it.
            self._fleet_cache = {
                chute_id: self._fleet_cache[chute_id] for chute_id in (r["chute_id"] for r in rows)
            }
        return internal_pb2.ListFleetResponse(chutes=chutes)

    async def GetTeeInstances(
        self, request: internal_pb2.GetTeeInstancesRequest, context: Context
    ) -> internal_pb2.TeeInstances:
        caller = caller_from_proto(request.caller) if request.HasField("caller") else None
        patterns = [f"%{s}%" for s in substrings_managed_by(caller, admin_only=False)]
        viewer = store.Viewer(caller.user_id if caller else None, patterns)
        async with self.db.raw() as connection:
            row = await store.tee_instances(connection, request.chute_id_or_name, viewer)
        if row is None:
            raise NotFound("Chute not found")
        return internal_pb2.TeeInstances(
            chute_id=row["chute_id"],
            tee=row["tee"],
            chutes_version=row["chutes_version"],
            code_sha256=row["code_sha256"],
            instances=[
                internal_pb2.TeeInstance(
                    instance_id=i["instance_id"],
                    host=i["host"],
                    port=i["port"] or 0,
                    node_id=i["node_id"] or "",
                    node_tee=i["node_tee"],
                    node_tee_public_key=bytes.fromhex(i["node_tee_public_key"]),
                )
                for i in json.loads(row["instances"])
            ],
        )

    def _fleet_message(self, row: Any) -> internal_pb2.ChuteFleet:
        """The chute's ChuteFleet; the last one built while the row and the scheduler's decisions
        for it are unchanged (the whole fleet is asked every second, and mostly unchanged)."""
        chute_id = row["chute_id"]
        target = self.scheduler.targets.get(chute_id)
        action = self.scheduler.actions.get(chute_id)
        key = (tuple(row.values()), target, action)
        cached = self._fleet_cache.get(chute_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        chute = fleet_message(row)
        if target is not None:
            chute.target_count = target
        if action is not None:
            chute.last_action = action[0]
            chute.last_action_at.FromDatetime(action[1])
        self._fleet_cache[chute_id] = (key, chute)
        return chute


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def fleet_message(row: Any) -> internal_pb2.ChuteFleet:
    """A fleet row's ChuteFleet, without the scheduler's part."""
    multiplier = 1.0
    for factor in multiplier_factors(row, selector_of(json.loads(row["node_selector"]))).values():
        multiplier *= factor
    chute = internal_pb2.ChuteFleet(
        chute_id=row["chute_id"],
        name=row["name"],
        public=row["public"],
        standard_template=row["standard_template"],
        invocation_count=row["invocation_count"],
        concurrency=row["concurrency"],
        effective_multiplier=multiplier,
    )
    for instance in json.loads(row["instances"]):
        added = chute.instances.add(
            instance_id=instance["instance_id"],
            miner_hotkey=instance["miner_hotkey"],
            active=instance["active"],
        )
        if instance["ready_at"]:
            ready_at = datetime.fromisoformat(instance["ready_at"])
            if ready_at.tzinfo is None:
                ready_at = ready_at.replace(tzinfo=UTC)
            added.ready_at.FromMicroseconds((ready_at - _EPOCH) // _MICROSECOND)
    return chute
