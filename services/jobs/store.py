"""Every query of the jobs service: SQLAlchemy Core on the jobs schema's tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.jobs.models import JOB_QUOTAS, JOBS

JobRow = Mapping[str, Any]

_NOW = sa.func.now()


async def get_job(connection: AsyncConnection, job_id: str, *, for_update: bool = False) -> JobRow | None:
    query = sa.select(JOBS).where(JOBS.c.job_id == job_id)
    if for_update:
        query = query.with_for_update()
    row = (await connection.execute(query)).mappings().first()
    return dict(row) if row is not None else None


async def lock_user(connection: AsyncConnection, user_id: str) -> None:
    """Serialise a user's job creations until the transaction ends (quota checks then hold)."""
    await connection.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("jobs:" + user_id))))


async def jobs_today(connection: AsyncConnection, user_id: str, chute_id: str) -> tuple[int, int]:
    """The user's jobs created since midnight (database time): for this chute, and in total."""
    query = sa.select(
        sa.func.count().filter(JOBS.c.chute_id == chute_id),
        sa.func.count(),
    ).where(JOBS.c.user_id == user_id, JOBS.c.created_at >= sa.func.date_trunc("day", _NOW))
    row = (await connection.execute(query)).one()
    return int(row[0]), int(row[1])


async def quotas_of(connection: AsyncConnection, user_id: str, chute_id: str) -> dict[str, int]:
    """The user's quota rows that apply: keyed by chute_id, "*" and "global"."""
    query = sa.select(JOB_QUOTAS.c.chute_id, JOB_QUOTAS.c.quota).where(
        JOB_QUOTAS.c.user_id == user_id, JOB_QUOTAS.c.chute_id.in_([chute_id, "*", "global"])
    )
    return {row.chute_id: int(row.quota) for row in await connection.execute(query)}


async def insert_job(connection: AsyncConnection, values: Mapping[str, Any]) -> JobRow:
    row = (await connection.execute(sa.insert(JOBS).values(**values).returning(JOBS))).mappings().one()
    return dict(row)


async def finish_job(
    connection: AsyncConnection,
    job_id: str,
    *,
    status: str,
    result: Any,
    error_detail: str | None,
    output_files: dict[str, Any],
) -> JobRow:
    query = (
        sa.update(JOBS)
        .where(JOBS.c.job_id == job_id)
        .values(
            status=status,
            # A JSON null result must stay a JSON value, not SQL NULL.
            result=sa.cast(sa.literal(result, JSONB(none_as_null=False)), JSONB),
            error_detail=error_detail,
            output_files=output_files,
            updated_at=_NOW,
            last_queried_at=_NOW,
        )
        .returning(JOBS)
    )
    return dict((await connection.execute(query)).mappings().one())


async def mark_uploaded(connection: AsyncConnection, job_id: str, file_id: str) -> bool:
    """Mark one output file uploaded; False if the job is finished (or the file not listed)."""
    query = (
        sa.update(JOBS)
        .where(
            JOBS.c.job_id == job_id,
            JOBS.c.finished_at.is_(None),
            JOBS.c.output_files.has_key(file_id),
        )
        .values(
            output_files=sa.func.jsonb_set(
                JOBS.c.output_files, sa.literal([file_id, "uploaded"], sa.ARRAY(sa.Text)), sa.text("'true'")
            ),
            updated_at=_NOW,
        )
        .returning(JOBS.c.job_id)
    )
    return (await connection.execute(query)).first() is not None


async def end_job(
    connection: AsyncConnection, job_id: str, *, status: str, error_detail: str | None
) -> JobRow | None:
    """Finish a job for good (completed, or ended in error); None if it was already finished."""
    query = (
        sa.update(JOBS)
        .where(JOBS.c.job_id == job_id, JOBS.c.finished_at.is_(None))
        .values(status=status, error_detail=error_detail, updated_at=_NOW, finished_at=_NOW, active=False)
        .returning(JOBS)
    )
    row = (await connection.execute(query)).mappings().first()
    return dict(row) if row is not None else None


async def delete_job(connection: AsyncConnection, job_id: str) -> None:
    await connection.execute(sa.delete(JOBS).where(JOBS.c.job_id == job_id))


async def unfinished_jobs(connection: AsyncConnection, limit: int = 1000) -> list[JobRow]:
    query = sa.select(JOBS).where(JOBS.c.finished_at.is_(None)).order_by(JOBS.c.created_at).limit(limit)
    return [dict(row) for row in (await connection.execute(query)).mappings()]


async def mark_scheduled(connection: AsyncConnection, job_id: str) -> None:
    await connection.execute(
        sa.update(JOBS)
        .where(JOBS.c.job_id == job_id, JOBS.c.scheduled_at.is_(None))
        .values(scheduled_at=_NOW)
    )


async def set_placement(
    connection: AsyncConnection, job_id: str, *, instance_id: str | None, active: bool, started: bool
) -> None:
    values: dict[str, Any] = {"instance_id": instance_id, "active": active, "verified": active}
    if started:
        values["started_at"] = sa.func.coalesce(JOBS.c.started_at, _NOW)
    await connection.execute(
        sa.update(JOBS).where(JOBS.c.job_id == job_id, JOBS.c.finished_at.is_(None)).values(**values)
    )


async def set_quota(connection: AsyncConnection, user_id: str, chute_id: str, quota: int) -> None:
    """Set (insert or replace) a quota row; for operators and tests."""
    statement = insert(JOB_QUOTAS).values(user_id=user_id, chute_id=chute_id, quota=quota)
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=[JOB_QUOTAS.c.user_id, JOB_QUOTAS.c.chute_id],
            set_={"quota": quota, "updated_at": _NOW},
        )
    )


def storage_keys(row: JobRow) -> list[str]:
    """Storage keys of a job's output files."""
    files = row.get("output_files") or {}
    return [str(entry["path"]) for entry in files.values() if isinstance(entry, dict) and entry.get("path")]
