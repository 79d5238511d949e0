"""Alembic migrations, one history per service, each in its own PostgreSQL schema.

A service keeps its revisions in `services/<name>/migrations/versions/`; its `env.py` is the two
lines that call `run_env()`. Revisions are generated from the service's models
(`services/<name>/models.py`, whose `metadata` holds only that schema's tables) by
`chutes-suite revision SERVICE -m MESSAGE`, and tests/test_migrations.py checks they agree.
`upgrade()` creates the schema if needed and applies every revision, recording progress in
`<schema>.alembic_version`, so services never share migration state.
"""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from services.kit.db import asyncpg_url

SERVICES_DIR = Path(__file__).resolve().parent.parent


def alembic_config(service: str, database_url: str) -> Config:
    """The Alembic configuration of one service (no alembic.ini: everything is derived)."""
    config = Config()
    config.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    config.attributes["database_url"] = database_url
    config.attributes["schema"] = service
    return config


def metadata_of(service: str) -> MetaData:
    """The tables one service's models declare."""
    metadata: MetaData = importlib.import_module(f"services.{service}.models").metadata
    return metadata


def revision(service: str, database_url: str, message: str) -> None:
    """Write the next revision of one service: what its models declare that its migrations (applied
    to `database_url` first) do not yet build."""
    config = alembic_config(service, database_url)
    command.upgrade(config, "head")
    command.revision(config, message=message, autogenerate=True)


def upgrade(service: str, database_url: str, revision: str = "head") -> None:
    """Bring one service's schema up to `revision`."""
    command.upgrade(alembic_config(service, database_url), revision)


def not_version_table(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate's filter: Alembic's own bookkeeping table is no model's."""
    return not (type_ == "table" and name == "alembic_version")


def _migrate(connection: Connection, schema: str) -> None:
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    connection.execute(text(f'SET search_path TO "{schema}"'))
    context.configure(
        connection=connection,
        target_metadata=metadata_of(schema),
        version_table_schema=schema,
        include_schemas=False,
        include_name=not_version_table,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(database_url: str, schema: str) -> None:
    engine = create_async_engine(asyncpg_url(database_url), poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_migrate, schema)
    finally:
        await engine.dispose()


def run_env() -> None:
    """The body of every service's `migrations/env.py`."""
    attributes = context.config.attributes
    asyncio.run(_run_online(attributes["database_url"], attributes["schema"]))
