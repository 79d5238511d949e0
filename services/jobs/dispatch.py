"""How jobs reach instances, and what the jobs service does about what becomes of them.

The registry places jobs (RegistryInternalService: ScheduleJob, CancelJob, GetJobPlacements);
the jobs service keeps each job's row honest on its own with a sweeper (every SWEEP_SECONDS):

- a job the registry has not accepted yet (it was unavailable, or not built yet: UNIMPLEMENTED)
  is scheduled again;
- a placement that ENDED while its job is unfinished ends the job in error with the reason
  ("Instance was terminated: its node was lost");
- a job running longer than its definition's timeout is cancelled and ends in error
  ("Job timed out after N s");
- a job no node took within `job_pending_timeout_seconds` is cancelled and ends in error, so
  nothing stays pending forever.

`decide()` is the rule, a pure function of a job, its placement and the time.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc

from chutes.registry.v1 import internal_pb2, internal_pb2_grpc, registry_pb2, registry_pb2_grpc
from services.jobs import store
from services.jobs.store import JobRow
from services.kit.db import Database, log_failure
from services.kit.errors import Unavailable
from services.kit.headers import AUTH_METHOD_HEADER, USER_ID_HEADER

log = logging.getLogger(__name__)

#: Seconds between two passes of the sweeper.
SWEEP_SECONDS = 2.0
#: While the registry cannot take jobs, scheduling is retried at most this often (doubling from
#: SWEEP_SECONDS), so a backlog of pending jobs does not become a stream of failing calls.
MAX_SCHEDULE_BACKOFF_SECONDS = 60.0
#: Per-call deadline of the registry's RPCs.
CALL_SECONDS = 5.0

State = internal_pb2.JobPlacementState
PENDING, PLACED, RUNNING, ENDED = (
    internal_pb2.JOB_PLACEMENT_STATE_PENDING,
    internal_pb2.JOB_PLACEMENT_STATE_PLACED,
    internal_pb2.JOB_PLACEMENT_STATE_RUNNING,
    internal_pb2.JOB_PLACEMENT_STATE_ENDED,
)

#: Codes that mean "the registry cannot take this now": keep the job, try again later.
_LATER = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ChuteGone(Exception):
    """The registry has no such chute or job method any more."""


class Registry:
    """The registry's RPCs as the jobs service uses them."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.public = registry_pb2_grpc.RegistryServiceStub(channel)
        self.internal = internal_pb2_grpc.RegistryInternalServiceStub(channel)

    async def chute_for(self, chute_id: str, user_id: str, auth_method: str) -> registry_pb2.Chute | None:
        """The chute as the caller sees it (the registry's visibility rules); None if invisible."""
        metadata = ((USER_ID_HEADER, user_id), (AUTH_METHOD_HEADER, auth_method))
        try:
            chute: registry_pb2.Chute = await self.public.GetChute(
                registry_pb2.GetChuteRequest(chute_id_or_name=chute_id),
                metadata=metadata,
                timeout=CALL_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            log.warning("registry GetChute failed: %s %s", error.code(), error.details())
            raise Unavailable("The registry is unavailable, try again shortly") from None
        return chute

    async def schedule(self, request: internal_pb2.ScheduleJobRequest) -> bool:
        """True when the registry accepted the job; False when it cannot now (retry later)."""
        try:
            await self.internal.ScheduleJob(request, timeout=CALL_SECONDS)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise ChuteGone(error.details() or "chute not found") from None
            if error.code() not in _LATER:
                log.warning("ScheduleJob %s: %s %s", request.job_id, error.code(), error.details())
            return False
        return True

    async def cancel(self, job_id: str, reason: str) -> bool:
        """Stop the job's instance; True when done or nothing to stop, False if the registry
        could not be asked."""
        try:
            await self.internal.CancelJob(
                internal_pb2.CancelJobRequest(job_id=job_id, reason=reason), timeout=CALL_SECONDS
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
                return True  # never scheduled (or no registry side yet): nothing runs it
            log.warning("CancelJob %s: %s %s", job_id, error.code(), error.details())
            return False
        return True

    async def placements(self, job_ids: list[str]) -> dict[str, internal_pb2.JobPlacement] | None:
        """Placements by job id (jobs never scheduled are absent); None if unavailable."""
        try:
            answer = await self.internal.GetJobPlacements(
                internal_pb2.GetJobPlacementsRequest(job_ids=job_ids), timeout=CALL_SECONDS
            )
        except grpc.aio.AioRpcError as error:
            if error.code() not in _LATER:
                log.warning("GetJobPlacements: %s %s", error.code(), error.details())
            return None
        return {placement.job_id: placement for placement in answer.placements}


# ---- the rule ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What to do about one unfinished job."""

    #: "schedule", "track" (record instance and state), "fail" (end in error), or "wait".
    action: str
    detail: str = ""
    #: With "fail": cancel the placement first (the instance may still run).
    cancel: bool = False


def _age(since: datetime | None, now: datetime) -> float:
    return (now - since).total_seconds() if since is not None else 0.0


def decide(
    job: JobRow, placement: internal_pb2.JobPlacement | None, now: datetime, pending_limit: float
) -> Decision:
    """The sweeper's rule for one unfinished job (module doc)."""
    timeout = job.get("timeout")
    started_at = job.get("started_at")
    if placement is not None and placement.state == ENDED:
        if placement.succeeded:
            # Exited 0 without completing: it reported what it could, the rest is lost.
            return Decision("fail", "Instance exited without completing the job")
        return Decision("fail", f"Instance was terminated: {placement.reason or 'unknown reason'}")
    running = placement is not None and placement.state in (PLACED, RUNNING)
    if running or started_at is not None:
        if timeout and _age(started_at or now, now) > timeout:
            return Decision("fail", f"Job timed out after {timeout} s", cancel=True)
        return Decision("track") if running else Decision("wait")
    if _age(job.get("created_at"), now) > pending_limit:
        return Decision("fail", f"Job was not placed on any node within {pending_limit:g} s", cancel=True)
    if job.get("scheduled_at") is None or placement is None:
        return Decision("schedule")
    return Decision("wait")


# ---- the sweeper ------------------------------------------------------------------------------


class Sweeper:
    """The background pass over unfinished jobs (module doc); `close()` stops it."""

    def __init__(
        self,
        db: Database,
        registry: Registry,
        schedule_request: Callable[[JobRow], internal_pb2.ScheduleJobRequest],
        pending_limit: float,
    ) -> None:
        self.db = db
        self.registry = registry
        self.schedule_request = schedule_request
        self.pending_limit = pending_limit
        self._task: asyncio.Task[None] | None = None
        self._schedule_backoff = 0.0
        self._next_schedule_at = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="jobs-sweeper")

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log_failure(log, "job sweep failed")
            await asyncio.sleep(SWEEP_SECONDS)

    async def sweep(self) -> None:
        async with self.db.engine.connect() as connection:
            jobs = await store.unfinished_jobs(connection)
        if not jobs:
            return
        scheduled = [job["job_id"] for job in jobs if job["scheduled_at"] is not None]
        placements = await self.registry.placements(scheduled) if scheduled else {}
        if placements is None:
            placements = {}
            known = False  # the registry cannot be asked: judge only what needs no placement
        else:
            known = True
        now = datetime.now(UTC)
        for job in jobs:
            placement = placements.get(job["job_id"])
            if not known and job["scheduled_at"] is not None:
                continue
            await self._apply(job, placement, decide(job, placement, now, self.pending_limit))

    async def _apply(
        self, job: JobRow, placement: internal_pb2.JobPlacement | None, decision: Decision
    ) -> None:
        job_id = job["job_id"]
        if decision.action == "schedule":
            loop = asyncio.get_running_loop()
            if loop.time() < self._next_schedule_at:
                return
            try:
                accepted = await self.registry.schedule(self.schedule_request(job))
            except ChuteGone as gone:
                await self._fail(job_id, f"Chute could not run the job: {gone}")
                return
            if accepted:
                self._schedule_backoff = 0.0
                async with self.db.engine.begin() as connection:
                    await store.mark_scheduled(connection, job_id)
            else:  # the registry cannot take jobs now: none this pass, fewer tries from now on
                self._schedule_backoff = min(
                    MAX_SCHEDULE_BACKOFF_SECONDS, max(SWEEP_SECONDS, 2 * self._schedule_backoff)
                )
                self._next_schedule_at = loop.time() + self._schedule_backoff
        elif decision.action == "track" and placement is not None:
            if (
                placement.instance_id != (job["instance_id"] or "")
                or (placement.state == RUNNING) != job["active"]
            ):
                async with self.db.engine.begin() as connection:
                    await store.set_placement(
                        connection,
                        job_id,
                        instance_id=placement.instance_id or None,
                        active=placement.state == RUNNING,
                        started=True,
                    )
        elif decision.action == "fail":
            if decision.cancel and not await self.registry.cancel(job_id, decision.detail):
                return  # try again next pass: the instance must not outlive the job's end
            await self._fail(job_id, decision.detail)

    async def _fail(self, job_id: str, detail: str) -> None:
        async with self.db.engine.begin() as connection:
            ended = await store.end_job(connection, job_id, status="error", error_detail=detail)
        if ended is not None:
            log.info("job %s ended in error: %s", job_id, detail)


def job_data_of(job_args: dict[str, object]) -> dict[str, object]:
    """The keyword arguments the job function gets: its args without `_disk_gb`, which is the
    platform's (ScheduleJobRequest.disk_gb), not the function's."""
    return {name: value for name, value in job_args.items() if name != "_disk_gb"}


def schedule_request_of(job: JobRow, status_url: str) -> internal_pb2.ScheduleJobRequest:
    return internal_pb2.ScheduleJobRequest(
        job_id=job["job_id"],
        chute_id=job["chute_id"],
        method=job["method"],
        data_json=json.dumps(job_data_of(job["job_args"])),
        status_url=status_url,
        disk_gb=int(job["disk_gb"]),
    )
