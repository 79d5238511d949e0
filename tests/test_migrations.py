"""Each service's migrations build exactly the tables its models declare.

Migrations are generated from the models (`chutes-suite revision SERVICE -m ...`); this test
applies every service's history to an empty database and asks Alembic's autogenerate what it
would still change. Anything it finds is drift: a model changed without a migration, or a
migration that no model describes.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from services.kit.db import asyncpg_url
from services.kit.migrations import metadata_of, not_version_table, upgrade
from services.kit.settings import SERVICE_NAMES


def _diff(connection: Connection, service: str) -> list[Any]:
    connection.execute(sa.text(f'SET search_path TO "{service}"'))
    context = MigrationContext.configure(
        connection,
        opts={"compare_type": True, "compare_server_default": True, "include_name": not_version_table},
    )
    return list(compare_metadata(context, metadata_of(service)))


async def _drift(url: str, service: str) -> list[Any]:
    engine = create_async_engine(asyncpg_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_diff, service)
    finally:
        await engine.dispose()


async def _create_database(url: str, name: str) -> None:
    engine = create_async_engine(asyncpg_url(url), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def migrated_url(database_url: str) -> str:
    name = f"drift_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(database_url, name))
    url = database_url.rsplit("/", 1)[0] + "/" + name
    for service in SERVICE_NAMES:
        upgrade(service, url)
    return url


# The generated `discoverable` column cannot be compared, only reported (a warning, not drift).
@pytest.mark.filterwarnings("ignore:Computed default on chutes.discoverable")
@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_models_and_migrations_agree(migrated_url: str, service: str) -> None:
    assert asyncio.run(_drift(migrated_url, service)) == []
