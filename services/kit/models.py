"""SQLModel tables, one metadata per service.

Each service's `models.py` declares its tables on a base of its own with its own registry
(`class IdentityTable(SQLModel, registry=registry())`), so each service's metadata holds only the
tables of its own schema: Alembic autogenerates that service's
migrations from it, and tests/test_migrations.py checks that models and migrations agree. Tables
are declared without a schema: a service's connections put its schema on the search_path
(services/kit/db.py).
"""

from __future__ import annotations

from typing import Any, cast

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

#: Every string column is PostgreSQL `text` (SQLModel's default, VARCHAR, says nothing more here).
TEXT = sa.Text
TIMESTAMP = sa.DateTime(timezone=True)
#: A server-side random id (as PostgreSQL prints the default back, so that models and the
#: database compare equal).
RANDOM_ID = sa.text("(gen_random_uuid())::text")


def table_of(model: type[SQLModel]) -> sa.Table:
    """The Core table of a model, for queries on hot paths and in migrations."""
    return cast(sa.Table, model.__table__)  # type: ignore[attr-defined]


def CREATED() -> Any:
    """`created_at`: set by the database when the row is inserted."""
    return Field(
        default=None, sa_type=TIMESTAMP, nullable=False, sa_column_kwargs={"server_default": sa.func.now()}
    )


def UPDATED() -> Any:
    """`updated_at`: set by the database on insert; writers move it on every change."""
    return CREATED()
