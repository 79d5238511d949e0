"""MinerService: how miners register their nodes, receive their work and report their instances.

Work is the registry's outbox (instance_launch / instance_stop events naming the node): a
WatchWork stream sends what the node has not acknowledged yet, then follows the outbox's NOTIFY,
so nothing is lost across a restart of either side. An open stream is the node's liveness: when
it closes the node is marked disconnected, and the scheduler removes its instances after a grace.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg

from chutes.gpu import GPUS
from chutes.registry.v1 import miners_pb2, miners_pb2_grpc
from services.kit.auth import require_caller
from services.kit.caller import Caller
from services.kit.db import Database
from services.kit.errors import InvalidArgument, NotFound, PermissionDenied
from services.kit.requests import Context
from services.kit.roles import Role
from services.registry import bounties, fleet_store

log = logging.getLogger(__name__)

#: Sent on idle work streams, so that proxies (Envoy's stream idle timeout) keep them open.
KEEP_ALIVE_SECONDS = 5.0
_EVENTS_CHANNEL = "registry_events"

States = miners_pb2.InstanceState


def require_miner() -> Caller:
    caller = require_caller()
    if not caller.has_role(Role.MINER):
        raise PermissionDenied("Only miners may do this (a user with the miner role)")
    return caller


def work_message(row: Any) -> miners_pb2.Work:
    payload = json.loads(row["payload"])
    if row["kind"] == fleet_store.LAUNCH:
        job = payload.get("job")
        launch = miners_pb2.Launch(
            instance_id=payload["instance_id"],
            chute_id=payload["chute_id"],
            version=payload["version"],
            code=payload["code"],
            filename=payload["filename"],
            ref_str=payload["ref_str"],
            device_indexes=payload["device_indexes"],
            tee=payload.get("tee", False),
            job=miners_pb2.JobLaunch(
                job_id=job["job_id"],
                method=job["method"],
                data_json=job["data_json"],
                status_url=job["status_url"],
                disk_gb=job["disk_gb"],
            )
            if job
            else None,
        )
        return miners_pb2.Work(event_id=row["event_id"], launch=launch)
    return miners_pb2.Work(event_id=row["event_id"], stop=miners_pb2.Stop(instance_id=payload["instance_id"]))


class MinerServicer(miners_pb2_grpc.MinerServiceServicer):
    def __init__(self, db: Database, on_change: Callable[[], None]) -> None:
        self.db = db
        #: Wakes the scheduler (a node came or went, an instance is ready or gone).
        self.on_change = on_change

    async def RegisterNode(
        self, request: miners_pb2.RegisterNodeRequest, context: Context
    ) -> miners_pb2.Node:
        caller = require_miner()
        if not request.name.strip():
            raise InvalidArgument("A node needs a name")
        try:
            ipaddress.ip_address(request.host)
        except ValueError:
            raise InvalidArgument(f"A node's host must be an IP address, not {request.host!r}") from None
        unknown = sorted({g.gpu_identifier for g in request.gpus} - set(GPUS))
        if unknown:
            raise InvalidArgument(f"Unknown GPU(s): {', '.join(unknown)}")
        if request.tee not in ("", "software"):
            raise InvalidArgument(f'Unknown TEE {request.tee!r}: a node offers "software" or none')
        if bool(request.tee) != (len(request.tee_public_key) == 32):
            raise InvalidArgument("A node that offers a TEE gives its 32-byte Ed25519 key, and only then")
        gpus = [{"gpu_identifier": g.gpu_identifier, "device_index": g.device_index} for g in request.gpus]
        async with self.db.raw() as connection:
            row = await fleet_store.register_node(
                connection,
                user_id=caller.user_id,
                username=caller.username,
                name=request.name,
                host=request.host,
                gpus=gpus,
                simulated=request.simulated,
                tee=request.tee or None,
                tee_public_key=request.tee_public_key.hex() or None,
            )
        log.info(
            "node %s (%s) registered: %s%s",
            row["name"],
            row["node_id"],
            gpus,
            " (simulated)" * request.simulated,
        )
        return miners_pb2.Node(
            node_id=row["node_id"],
            name=row["name"],
            host=row["host"],
            gpus=request.gpus,
            simulated=row["simulated"],
            tee=row["tee"] or "",
            tee_public_key=bytes.fromhex(row["tee_public_key"] or ""),
        )

    async def WatchWork(
        self, request: miners_pb2.WatchWorkRequest, context: Context
    ) -> AsyncIterator[miners_pb2.Work]:
        caller = require_miner()
        async with self.db.raw() as connection:
            if await fleet_store.node_of_miner(connection, request.node_id, caller.user_id) is None:
                raise NotFound("No such node of yours")
        announced = asyncio.Event()
        listener: asyncpg.Connection = await asyncpg.connect(
            self.db.url, server_settings={"search_path": self.db.schema}
        )
        await listener.add_listener(_EVENTS_CHANNEL, lambda *_: announced.set())
        cursor = request.after_event_id
        try:
            async with self.db.raw() as connection:
                await fleet_store.set_connected(connection, request.node_id, True)
            self.on_change()
            while True:
                announced.clear()
                async with self.db.raw() as connection:
                    rows = await fleet_store.pending_work(connection, request.node_id, cursor)
                for row in rows:
                    cursor = row["event_id"]
                    yield work_message(row)
                try:
                    await asyncio.wait_for(announced.wait(), KEEP_ALIVE_SECONDS)
                except TimeoutError:
                    yield miners_pb2.Work(event_id=cursor, keep_alive=miners_pb2.KeepAlive())
                    async with self.db.raw() as connection:  # the node is still here
                        await fleet_store.set_connected(connection, request.node_id, True)
        finally:
            await listener.close()
            async with self.db.raw() as connection:
                await fleet_store.set_connected(connection, request.node_id, False)
            self.on_change()

    async def ReportInstance(
        self, request: miners_pb2.ReportInstanceRequest, context: Context
    ) -> miners_pb2.ReportInstanceResponse:
        caller = require_miner()
        async with self.db.raw() as connection:
            instance = await fleet_store.instance_of_miner(connection, request.instance_id, caller.user_id)
            if instance is None:
                raise NotFound("No such instance on your nodes")
            host = request.host or instance["node_host"]
            wanted = instance["state"] != "stopping"
            job_id = instance["job_id"]
            if request.state == States.INSTANCE_STATE_STARTED:
                await fleet_store.mark_started(connection, request.instance_id, host, request.port)
                if job_id:
                    await fleet_store.job_started(connection, job_id)
            elif request.state == States.INSTANCE_STATE_READY:
                # One transaction: nobody sees the chute routable with its bounty still unclaimed.
                async with connection.transaction():
                    wanted = await fleet_store.mark_ready(connection, request.instance_id, host, request.port)
                    # Routable from now on: the first such instance of the chute takes its bounty.
                    claimed = (
                        await bounties.claim(connection, instance["chute_id"])
                        if wanted and not job_id
                        else None
                    )
                if claimed is not None:
                    log.info("instance %s claimed a bounty of %d", request.instance_id, claimed)
            elif request.state in (States.INSTANCE_STATE_FAILED, States.INSTANCE_STATE_STOPPED):
                failed = request.state == States.INSTANCE_STATE_FAILED
                if failed:
                    log.warning("instance %s failed: %s", request.instance_id, request.reason[-2000:])
                if job_id:
                    # Exit 0 of a job instance that was not stopped: the job ran to its end.
                    succeeded = not failed and instance["state"] != "stopping"
                    reason = f"the job's instance failed: {request.reason[-1000:]}" if failed else ""
                    await fleet_store.job_instance_ended(connection, job_id, succeeded, reason)
                await fleet_store.forget_instance(connection, request.instance_id)
                wanted = False
            else:
                raise InvalidArgument("state must be STARTED, READY, FAILED or STOPPED")
        self.on_change()
        return miners_pb2.ReportInstanceResponse(wanted=wanted)
