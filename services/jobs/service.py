"""The jobs service's gRPC servicer: the seven job routes (spec 5).

Users create, read, delete jobs and download their files; a job's instance reports with the job
JWT from its status URL (finish, upload, complete). The registry runs jobs
(services/jobs/dispatch.py), output files live in storage (services/jobs/storage.py), tokens are
services/jobs/tokens.py and the upload body is parsed as it streams (services/jobs/uploads.py).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

from google.api import httpbody_pb2
from google.protobuf import json_format

from chutes.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from services.jobs import store, views
from services.jobs.dispatch import ChuteGone, Registry, Sweeper, schedule_request_of
from services.jobs.storage import StorageNotFound, storage_from, valid_key
from services.jobs.store import JobRow
from services.jobs.tokens import JobTokens, file_id_of, secret_of
from services.jobs.uploads import FormStream, boundary_of
from services.kit.auth import require_caller
from services.kit.channels import channel_at
from services.kit.db import Database
from services.kit.errors import (
    InvalidArgument,
    NotFound,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
)
from services.kit.requests import Context
from services.kit.server import Closable, GrpcService, ServiceContext, ServiceSpec
from services.kit.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_DISK_GB = 10


def _integral(value: Any) -> Any:
    """JSON through a protobuf Struct turns every number into a double; give integers back
    their type (a job's `epochs: 2` must not reach it as 2.0)."""
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return int(value)
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value


def disk_gb_of(args: dict[str, Any]) -> int:
    """The `_disk_gb` rule (spec 5.2): absent = 10, else a number with 10 < x < 1000."""
    if "_disk_gb" not in args:
        return DEFAULT_DISK_GB
    value = args["_disk_gb"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 10 < value < 1000:
        raise InvalidArgument("Invalid disk size specified")
    return int(value)


def quota_refusal(quotas: dict[str, int], default: int, chute_id: str, counts: tuple[int, int]) -> str | None:
    """Why a new job would exceed the daily quotas, or None (spec 5.2)."""
    chute_quota = quotas.get(chute_id, quotas.get("*", default))
    total_quota = quotas.get("global", quotas.get("*", default))
    chute_count, total_count = counts
    if not chute_quota or chute_count >= chute_quota:
        return f"Daily job quota exceeded: {chute_count} of {chute_quota} jobs today for chute {chute_id}"
    if total_count >= total_quota:
        return f"Daily job quota exceeded: {total_count} of {total_quota} jobs today in total"
    return None


def storage_key(row: JobRow, filename: str) -> str:
    created: datetime = row["created_at"]
    return f"jobs/{row['chute_id']}/{created:%Y-%m-%d}/{row['job_id']}/outputs/{filename}"


def content_disposition(filename: str) -> str:
    """`attachment; filename="..."` as the real API sends it; gRPC metadata is ASCII, so other
    names also get the RFC 5987 form."""
    ascii_name = filename.encode("ascii", "replace").decode().replace("\\", "_").replace('"', "_")
    ascii_name = "".join(c if c.isprintable() else "_" for c in ascii_name)
    value = f'attachment; filename="{ascii_name}"'
    if ascii_name != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


class JobsServicer(jobs_pb2_grpc.JobsServiceServicer):
    def __init__(self, context: ServiceContext) -> None:
        if context.db is None:
            raise RuntimeError("the jobs service needs a database (CHUTES_DATABASE_URL)")
        self.db: Database = context.db
        self.settings: Settings = context.settings
        self.tokens = JobTokens(secret_of(context.settings))
        self.storage = storage_from(context.settings)
        self.registry = Registry(channel_at(context.settings.address_of("registry")))
        self.sweeper = Sweeper(
            self.db, self.registry, self.schedule_request, context.settings.job_pending_timeout_seconds
        )

    # ---- helpers ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        host = self.settings.gateway_host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{self.settings.gateway_port}"

    def schedule_request(self, row: JobRow) -> Any:
        status_url = f"{self.base_url}/jobs/{row['job_id']}?token={self.tokens.mint(row['job_id'])}"
        return schedule_request_of(row, status_url)

    async def _owned(self, job_id: str, missing: str) -> JobRow:
        caller = require_caller()
        async with self.db.engine.connect() as connection:
            row = await store.get_job(connection, job_id)
        if row is None or row["user_id"] != caller.user_id:
            raise NotFound(missing)
        return row

    def _job_token(self, token: str, job_id: str) -> None:
        """401 unless `token` is the job token (not a file token) of `job_id`."""
        if self.tokens.verify(token, job_id).filename is not None:
            raise Unauthenticated("Missing or invalid JWT")

    @staticmethod
    def _open(row: JobRow | None, job_id: str) -> JobRow:
        if row is None:
            raise Unauthenticated(f"job_id={job_id} not found!")
        if row["finished_at"] is not None:
            raise InvalidArgument("Job already finished")
        return row

    # ---- user routes --------------------------------------------------------------------------

    async def CreateJob(self, request: jobs_pb2.CreateJobRequest, context: Context) -> jobs_pb2.Job:
        caller = require_caller()
        chute = await self.registry.chute_for(request.chute_id, caller.user_id, caller.auth_method)
        definition = (
            next((job for job in chute.jobs if job.name == request.method), None)
            if chute is not None and chute.chute_id == request.chute_id
            else None
        )
        if chute is None or definition is None:
            raise NotFound(f"Chute {request.chute_id} not found")
        args: dict[str, Any] = _integral(json_format.MessageToDict(request.job_args))
        args["_disk_gb"] = disk_gb_of(args)
        multiplier = chute.node_selector.compute_multiplier or 1.0
        if list(chute.supported_gpus) == ["h200"]:
            multiplier *= 16
        async with self.db.engine.begin() as connection:
            await store.lock_user(connection, caller.user_id)
            refusal = quota_refusal(
                await store.quotas_of(connection, caller.user_id, chute.chute_id),
                self.settings.default_job_quota,
                chute.chute_id,
                await store.jobs_today(connection, caller.user_id, chute.chute_id),
            )
            if refusal:
                raise TooManyRequests(refusal)
            row = await store.insert_job(
                connection,
                {
                    "job_id": str(uuid.uuid4()),
                    "user_id": caller.user_id,
                    "chute_id": chute.chute_id,
                    "version": chute.version,
                    "chutes_version": chute.chutes_version or None,
                    "method": request.method,
                    "job_args": args,
                    "compute_multiplier": multiplier,
                    "disk_gb": args["_disk_gb"],
                    "timeout": definition.timeout if definition.HasField("timeout") else None,
                    "chute": views.chute_snapshot(chute),
                },
            )
        try:
            if await self.registry.schedule(self.schedule_request(row)):
                async with self.db.engine.begin() as connection:
                    await store.mark_scheduled(connection, row["job_id"])
        except ChuteGone:
            pass  # deleted meanwhile: the sweeper ends the job
        return views.job_message(row)

    async def GetJob(self, request: jobs_pb2.GetJobRequest, context: Context) -> jobs_pb2.Job:
        row = await self._owned(request.job_id, "Job not found, or does not belong to you")
        return views.job_message(row)

    async def DeleteJob(
        self, request: jobs_pb2.DeleteJobRequest, context: Context
    ) -> jobs_pb2.DeleteJobResponse:
        row = await self._owned(request.job_id, f"Job {request.job_id} not found or does not belong to you")
        if row["finished_at"] is None and not await self.registry.cancel(row["job_id"], "user initiated"):
            raise Unavailable("Could not stop the job's instance, try again shortly")
        await self.storage.delete(store.storage_keys(row))
        async with self.db.engine.begin() as connection:
            await store.delete_job(connection, row["job_id"])
        return jobs_pb2.DeleteJobResponse(job_id=row["job_id"], deleted=True)

    async def DownloadJobFile(
        self, request: jobs_pb2.DownloadJobFileRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        row = await self._owned(request.job_id, "Job not found, or does not belong to you")
        entry = (row["output_files"] or {}).get(request.file_id)
        if not isinstance(entry, dict) or not entry.get("uploaded"):
            raise NotFound(f"Job output file not found: {request.file_id}")
        try:
            chunks = await self.storage.open(str(entry["path"]))
        except StorageNotFound:
            raise NotFound(f"Job output file not found: {request.file_id}") from None
        # Envoy's transcoder passes initial metadata on as response headers.
        await context.send_initial_metadata(
            (("content-disposition", content_disposition(entry["filename"])),)
        )
        first = True
        async for chunk in chunks:
            yield httpbody_pb2.HttpBody(content_type="application/octet-stream" if first else "", data=chunk)
            first = False
        if first:  # an empty file: still one message, for the content type
            yield httpbody_pb2.HttpBody(content_type="application/octet-stream")

    # ---- the instance's routes (job token) ----------------------------------------------------

    async def FinishJob(self, request: jobs_pb2.FinishJobRequest, context: Context) -> jobs_pb2.Job:
        self._job_token(request.token, request.job_id)
        outcome = request.outcome
        filenames = list(dict.fromkeys(outcome.output_filenames))
        for name in filenames:
            if not valid_key(name):
                raise InvalidArgument(f"Invalid output filename: {name!r}")
        status = outcome.status or "error"
        if status == "complete" and filenames:
            status = "complete_pending_uploads"
        result: Any = json_format.MessageToDict(outcome.result) if outcome.HasField("result") else "error"
        async with self.db.engine.begin() as connection:
            row = self._open(await store.get_job(connection, request.job_id, for_update=True), request.job_id)
            files = {
                file_id_of(row["job_id"], name): {
                    "filename": name,
                    "path": storage_key(row, name),
                    "uploaded": False,
                }
                for name in filenames
            }
            dropped = set(store.storage_keys(row)) - {entry["path"] for entry in files.values()}
            row = await store.finish_job(
                connection,
                row["job_id"],
                status=status,
                result=_integral(result),
                error_detail=outcome.detail or None,
                output_files=files,
            )
        if dropped:  # a repeated report that lists fewer files
            await self.storage.delete(sorted(dropped))
        urls = {
            name: f"{self.base_url}/jobs/{row['job_id']}/upload?token={self.tokens.mint(row['job_id'], name)}"
            for name in filenames
        }
        return views.job_message(row, urls)

    async def UploadJobFile(
        self, request_iterator: AsyncIterator[jobs_pb2.UploadJobFileRequest], context: Context
    ) -> jobs_pb2.UploadJobFileResponse:
        first = await anext(request_iterator, None)
        if first is None:
            raise Unauthenticated("Missing or invalid JWT")
        job_id = first.job_id
        claims = self.tokens.verify(first.token, job_id)
        if claims.filename is None:
            raise Unauthenticated("Missing or invalid JWT")
        filename = claims.filename
        async with self.db.engine.connect() as connection:
            row = self._open(await store.get_job(connection, job_id), job_id)
        file_id = file_id_of(job_id, filename)
        entry = (row["output_files"] or {}).get(file_id)
        if not isinstance(entry, dict):
            raise NotFound(f"File {filename} not found in job output files")
        key = str(entry["path"])

        async def chunks() -> AsyncIterator[bytes]:
            yield first.file.data
            async for message in request_iterator:
                yield message.file.data

        form = FormStream(boundary_of(first.file.content_type), chunks(), filename)
        await self.storage.write(key, form.file_bytes())
        async with self.db.engine.begin() as connection:
            marked = await store.mark_uploaded(connection, job_id, file_id)
        if not marked:  # finished or deleted while the bytes streamed
            await self.storage.delete([key])
            raise InvalidArgument("Job already finished")
        return jobs_pb2.UploadJobFileResponse(
            status="success", filename=filename, file_id=file_id, path=key, uploaded=True
        )

    async def CompleteJob(self, request: jobs_pb2.CompleteJobRequest, context: Context) -> jobs_pb2.Job:
        self._job_token(request.token, request.job_id)
        async with self.db.engine.begin() as connection:
            row = self._open(await store.get_job(connection, request.job_id, for_update=True), request.job_id)
            files: dict[str, Any] = row["output_files"] or {}
            status: str = row["status"]
            detail: str | None = row["error_detail"]
            missing = [str(entry.get("filename")) for entry in files.values() if not entry.get("uploaded")]
            if missing:
                line = f"Failed to upload files: {', '.join(missing)}"
                if status.startswith("complete"):
                    status, detail = "partial_failure", line
                else:
                    detail = f"{detail}\n{line}" if detail else line
            elif files and status.startswith("complete"):
                status = "complete"
            ended = await store.end_job(connection, row["job_id"], status=status, error_detail=detail)
        assert ended is not None  # the row was locked and unfinished
        return views.job_message(ended)


async def _run_beside(servicer: object, settings: Settings) -> list[Closable]:
    """The sweeper: schedules what the registry has not taken, ends what is over."""
    assert isinstance(servicer, JobsServicer)
    servicer.sweeper.start()
    return [servicer.sweeper]


SPEC = ServiceSpec(
    name="jobs",
    grpc_services=(GrpcService.of(jobs_pb2, jobs_pb2_grpc, "JobsService"),),
    make_servicer=JobsServicer,
    start_side_servers=_run_beside,
)
