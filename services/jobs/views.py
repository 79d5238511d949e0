"""Rows of the jobs schema to protobuf messages, and the chute snapshot a job keeps."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

from chutes.jobs.v1 import jobs_pb2
from chutes.registry.v1 import registry_pb2
from services.jobs.store import JobRow
from services.kit.messages import timestamp


def chute_snapshot(chute: registry_pb2.Chute) -> dict[str, Any]:
    """What a job keeps of its chute: the MinimalChute of every answer about the job."""
    image = chute.image
    return {
        "chute_id": chute.chute_id,
        "name": chute.name,
        "public": chute.public,
        "version": chute.version,
        "slug": chute.slug,
        "chutes_version": chute.chutes_version,
        "preemptible": chute.preemptible,
        "tee": chute.tee,
        "image": {
            "image_id": image.image_id,
            "name": image.name,
            "tag": image.tag,
            "public": image.public,
            "chutes_version": image.chutes_version,
            "patch_version": image.patch_version,
        },
    }


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def _value(value: Any) -> struct_pb2.Value:
    return json_format.ParseDict(value, struct_pb2.Value())


def job_message(row: JobRow, output_storage_urls: dict[str, str] | None = None) -> jobs_pb2.Job:
    snapshot = dict(row["chute"] or {})
    image = snapshot.pop("image", None) or {}
    message = jobs_pb2.Job(
        job_id=row["job_id"],
        user_id=row["user_id"],
        chute_id=row["chute_id"],
        version=row["version"],
        chutes_version=row["chutes_version"] or "",
        method=row["method"],
        instance_id=row["instance_id"] or "",
        active=row["active"],
        verified=row["verified"],
        last_queried_at=timestamp(row["last_queried_at"]),
        created_at=timestamp(row["created_at"]),
        updated_at=timestamp(row["updated_at"]),
        finished_at=timestamp(row["finished_at"]),
        job_args=_struct(row["job_args"] or {}),
        chute=jobs_pb2.MinimalChute(**snapshot, image=jobs_pb2.MinimalImage(**image)),
        output_storage_urls=output_storage_urls or {},
        status=row["status"],
        error_detail=row["error_detail"] or "",
    )
    if row["result"] is not None:
        message.result.CopyFrom(_value(row["result"]))
    if row["output_files"] is not None:
        message.output_files.CopyFrom(_struct(row["output_files"]))
    if row["instance_id"]:
        message.instance.CopyFrom(
            jobs_pb2.MinimalInstance(
                instance_id=row["instance_id"], active=row["active"], verified=row["verified"]
            )
        )
    return message
