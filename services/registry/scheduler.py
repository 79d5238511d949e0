"""How many instances each chute should have, and where: the registry decides, miners carry out.

`plan()` is the whole decision, a pure function of what the tables say (chutes with demand or
instances, connected nodes and their free GPUs) and of recent utilization:
- a chute is wanted from a warmup or a cold call (`chute_demand.wanted_at`) and stays in use while
  it is invoked; after `shutdown_after_seconds` (300 when unset) without either it scales to zero;
- a wanted chute has at least one instance; it gets one more while utilization is above its
  `scaling_threshold` (0.75) and it has fewer than `max_instances` (1), and one fewer once
  utilization falls below half the threshold;
- instances of an older version (a redeploy) keep serving until an instance of the current version
  is ready, then stop: a rolling update without a failed call;
- an instance is placed on the connected node with the most free GPUs that the chute's node
  selector accepts, `gpu_count` of them.
`Scheduler` applies the plan every TICK_SECONDS (or at once when woken) in one transaction that
holds an advisory lock, so that with several registry replicas only one decides at a time.

Utilization comes from the metrics service (utilization.py asks it every second; it computes it
from the invocation records); each chute's target and latest change are kept here, and the
metrics service writes them into its capacity log (RegistryInternalService.ListFleet).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from chutes.chute import NodeSelector
from services.kit.db import Database, log_failure
from services.registry import bounties, fleet_store

log = logging.getLogger(__name__)

TICK_SECONDS = 0.5
#: A node whose miner disconnected keeps its instances this long (a miner restart), then loses them.
LOST_NODE_GRACE_SECONDS = 5.0
#: A node whose stream has not been confirmed this long is lost even if marked connected (the
#: registry process that held its stream died); streams confirm every few seconds.
STALE_NODE_SECONDS = 20.0
DEFAULT_SHUTDOWN_AFTER_SECONDS = 300
DEFAULT_SCALING_THRESHOLD = 0.75
DEFAULT_MAX_INSTANCES = 1
#: The scheduler's advisory lock (any constant shared by the registry replicas).
_LOCK_KEY = 0x63687574


@dataclass(frozen=True)
class Launch:
    chute_id: str
    version: str
    node_id: str
    devices: tuple[int, ...]


@dataclass(frozen=True)
class Stop:
    instance_id: str
    node_id: str


@dataclass(frozen=True)
class JobLaunch:
    job_id: str
    node_id: str
    devices: tuple[int, ...]


@dataclass
class Plan:
    launches: list[Launch] = field(default_factory=list)
    job_launches: list[JobLaunch] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)
    #: Chutes that want an instance that no node can take (why they stay cold).
    unplaceable: list[str] = field(default_factory=list)
    #: Each chute's desired count of its current version.
    targets: dict[str, int] = field(default_factory=dict)
    #: What changed for a chute: "scaled_up", "scaled_down", "scale_up_skipped" (no node fits).
    actions: dict[str, str] = field(default_factory=dict)


@dataclass
class _Node:
    node_id: str
    free: dict[str, list[int]]  # gpu identifier -> free device indexes
    tee: bool = False  # offers a TEE (TEE chutes run only there)

    def take(self, supported: Sequence[str], count: int) -> tuple[int, ...] | None:
        for gpu in sorted(supported, key=lambda g: -len(self.free.get(g, []))):
            free = self.free.get(gpu, [])
            if len(free) >= count:
                taken, self.free[gpu] = free[:count], free[count:]
                return tuple(taken)
        return None

    def capacity(self, supported: Sequence[str]) -> int:
        return max((len(self.free.get(gpu, [])) for gpu in supported), default=0)


def nodes_of(rows: Sequence[Mapping[str, Any]]) -> list[_Node]:
    nodes = []
    for row in rows:
        used = set(json.loads(row["used"]))
        free: dict[str, list[int]] = {}
        for gpu in json.loads(row["gpus"]):
            if gpu["device_index"] not in used:
                free.setdefault(gpu["gpu_identifier"], []).append(gpu["device_index"])
        nodes.append(_Node(row["node_id"], free, bool(row.get("tee"))))
    return nodes


def desired_count(chute: Mapping[str, Any], running: int, utilization: float, now: datetime) -> int:
    """How many instances of its current version the chute should have."""
    if chute["disabled"] or not chute["has_cords"]:
        return 0
    seen = [t for t in (chute["wanted_at"], chute["last_invoked_at"]) if t is not None]
    idle_after = timedelta(seconds=chute["shutdown_after_seconds"] or DEFAULT_SHUTDOWN_AFTER_SECONDS)
    if not seen or now - max(seen) > idle_after:
        return 0
    threshold = chute["scaling_threshold"] or DEFAULT_SCALING_THRESHOLD
    most = chute["max_instances"] or DEFAULT_MAX_INSTANCES
    wanted = max(running, 1)
    if utilization > threshold:
        wanted = running + 1
    elif utilization < threshold / 2 and running > 1:
        wanted = running - 1
    return max(1, min(wanted, most))


def plan(
    chutes: Sequence[Mapping[str, Any]],
    node_rows: Sequence[Mapping[str, Any]],
    utilization: Callable[[str], float],
    now: datetime,
    jobs: Sequence[Mapping[str, Any]] = (),
) -> Plan:
    decided = Plan()
    nodes = nodes_of(node_rows)
    # Jobs first: each is a user's explicit request, and waits (pending) until a node is free.
    for job in jobs:
        selector = NodeSelector(**json.loads(job["node_selector"]))
        placed = _place(nodes, selector)
        if placed is not None:
            node, devices = placed
            decided.job_launches.append(JobLaunch(job["job_id"], node.node_id, devices))
    for chute in chutes:
        instances = [i for i in json.loads(chute["instances"]) if i["state"] != "stopping"]
        current = [i for i in instances if i["version"] == chute["version"]]
        old = [i for i in instances if i["version"] != chute["version"]]
        ready = [i for i in current if i["state"] == "ready"]
        target = desired_count(chute, len(current), utilization(chute["chute_id"]), now)
        decided.targets[chute["chute_id"]] = target
        if target < len(current):
            decided.actions[chute["chute_id"]] = "scaled_down"
        # Surplus: not-yet-ready instances go first, then the oldest.
        surplus = sorted(current, key=lambda i: (i["state"] == "ready", i["created_at"]))
        for instance in surplus[: max(0, len(current) - target)]:
            decided.stops.append(Stop(instance["instance_id"], instance["node_id"]))
        if ready or target == 0:
            decided.stops.extend(Stop(i["instance_id"], i["node_id"]) for i in old)
        missing = target - len(current)
        if missing <= 0:
            continue
        selector = NodeSelector(**json.loads(chute["node_selector"]))
        decided.actions[chute["chute_id"]] = "scaled_up"
        for placing in range(missing):
            placed = _place(nodes, selector, tee=bool(chute.get("tee")))
            if placed is None:
                decided.unplaceable.append(chute["chute_id"])
                if placing == 0:
                    decided.actions[chute["chute_id"]] = "scale_up_skipped"
                break
            node, devices = placed
            decided.launches.append(Launch(chute["chute_id"], chute["version"], node.node_id, devices))
    return decided


def _place(
    nodes: Sequence[_Node], selector: NodeSelector, *, tee: bool = False
) -> tuple[_Node, tuple[int, ...]] | None:
    """The node with the most free GPUs the selector accepts (offering a TEE when `tee`), and the
    GPUs taken there."""
    supported = selector.supported_gpus
    fitting = [node for node in nodes if node.tee or not tee]
    for node in sorted(fitting, key=lambda n: -n.capacity(supported)):
        devices = node.take(supported, selector.gpu_count)
        if devices is not None:
            return node, devices
    return None


class Scheduler:
    def __init__(self, db: Database, utilization: Callable[[str], float]) -> None:
        self.db = db
        self.utilization = utilization
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: The last plan's chutes that no node could take (warmup explains the wait with it).
        self.unplaceable: frozenset[str] = frozenset()
        #: The last plan's targets, and each chute's latest change with when (for the capacity log).
        self.targets: dict[str, int] = {}
        self.actions: dict[str, tuple[str, datetime]] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def wake(self) -> None:
        """Decide now (demand or an instance changed)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log_failure(log, "scheduler: tick failed")
            try:
                await asyncio.wait_for(self._wake.wait(), TICK_SECONDS)
            except TimeoutError:
                pass
            self._wake.clear()

    async def tick(self) -> Plan | None:
        async with self.db.raw() as connection, connection.transaction():
            if not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", _LOCK_KEY):
                return None
            lost = await fleet_store.forget_lost_nodes(
                connection, LOST_NODE_GRACE_SECONDS, STALE_NODE_SECONDS
            )
            if lost:
                log.warning("scheduler: %d instance(s) of disconnected nodes removed", lost)
            # Bounties expire here rather than by a cron (reads ignore expired ones anyway).
            await bounties.expire(connection)
            now = await connection.fetchval("SELECT now()")
            decided = plan(
                await fleet_store.scaling_view(connection),
                await fleet_store.connected_nodes(connection, STALE_NODE_SECONDS),
                self.utilization,
                now,
                await fleet_store.pending_jobs(connection),
            )
            for job in decided.job_launches:
                instance_id = await fleet_store.launch_job(connection, job.job_id, job.node_id, job.devices)
                log.info(
                    "scheduler: job %s runs on instance %s on node %s", job.job_id, instance_id, job.node_id
                )
            for stop in decided.stops:
                await fleet_store.stop(connection, stop.instance_id, stop.node_id)
            for launch in decided.launches:
                instance_id = await fleet_store.launch(
                    connection, launch.chute_id, launch.version, launch.node_id, launch.devices
                )
                log.info(
                    "scheduler: launching %s of chute %s on node %s",
                    instance_id,
                    launch.chute_id,
                    launch.node_id,
                )
            await connection.execute(
                "DELETE FROM rolling_updates r WHERE NOT EXISTS (SELECT 1 FROM instances i"
                " WHERE i.chute_id = r.chute_id AND i.version = r.old_version)"
            )
        self.unplaceable = frozenset(decided.unplaceable)
        self.targets = decided.targets
        for chute_id, action in decided.actions.items():
            # A chute no node can take is skipped every tick: keep when that began.
            if self.actions.get(chute_id, ("", now))[0] != action or action != "scale_up_skipped":
                self.actions[chute_id] = (action, now)
        for gone in self.actions.keys() - decided.targets.keys():
            del self.actions[gone]
        return decided
