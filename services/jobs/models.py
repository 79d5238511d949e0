"""The jobs schema: jobs (one run of a chute's job method, its outcome and output files) and the
operators' daily job quotas.

Migrations (migrations/versions/) are generated from these models; tests/test_migrations.py fails
when the two disagree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from services.kit.models import CREATED, TEXT, TIMESTAMP, UPDATED, table_of


class JobsTable(SQLModel, registry=registry()):
    """The base of the jobs schema's tables (its own metadata)."""


metadata = JobsTable.metadata


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_type=JSONB, nullable=nullable)


class Job(JobsTable, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        # Daily quotas count a user's jobs since midnight; the owner's reads are by job_id.
        sa.Index("jobs_user_created", "user_id", "created_at"),
        # The sweeper's pass: unfinished jobs only.
        sa.Index("jobs_unfinished", "created_at", postgresql_where=sa.text("finished_at IS NULL")),
    )

    #: UUID v4.
    job_id: str = Field(primary_key=True, sa_type=TEXT)
    user_id: str = Field(sa_type=TEXT)
    chute_id: str = Field(sa_type=TEXT)
    #: The chute's version when the job was created.
    version: str = Field(sa_type=TEXT)
    chutes_version: str | None = Field(default=None, sa_type=TEXT)
    method: str = Field(sa_type=TEXT)
    #: The JSON object posted to create the job (`_disk_gb` normalised to an integer).
    job_args: dict[str, Any] = _json(nullable=False)
    #: pending, complete_pending_uploads, complete, partial_failure, error, or what the
    #: instance reported.
    status: str = Field(default="pending", sa_type=TEXT, sa_column_kwargs={"server_default": "pending"})
    error_detail: str | None = Field(default=None, sa_type=TEXT)
    #: What the job function returned (any JSON), as the instance reported it.
    result: Any = _json()
    #: file_id -> {"filename", "path" (storage key), "uploaded"}; null until the instance reports.
    output_files: dict[str, Any] | None = _json()
    #: The instance the registry placed the job on; null until placed.
    instance_id: str | None = Field(default=None, sa_type=TEXT)
    active: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    verified: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    compute_multiplier: float = Field(sa_type=sa.Float)
    disk_gb: int = Field(default=10, sa_column_kwargs={"server_default": "10"})
    #: The job definition's run time limit in seconds; null = none.
    timeout: int | None = Field(default=None)
    #: The chute as the job saw it at creation (Job.chute, a MinimalChute, with its image).
    chute: dict[str, Any] = _json(nullable=False)
    #: When the registry accepted the job (ScheduleJob answered); null: the sweeper retries.
    scheduled_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)
    #: When the job's instance was first seen placed or running.
    started_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)
    last_queried_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)
    created_at: datetime | None = CREATED()
    updated_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)
    #: Set when the job is over (completed by its instance, or ended in error); then final.
    finished_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)


class JobQuota(JobsTable, table=True):
    """A daily job quota an operator sets: per user and chute, `*` for any chute, or `global`
    for the user's total; without a row the setting `default_job_quota` applies."""

    __tablename__ = "job_quotas"

    user_id: str = Field(primary_key=True, sa_type=TEXT)
    chute_id: str = Field(primary_key=True, sa_type=TEXT)
    quota: int = Field(sa_type=sa.BigInteger)
    updated_at: datetime | None = UPDATED()


JOBS = table_of(Job)
JOB_QUOTAS = table_of(JobQuota)
