"""The jobs schema's tables: none yet. The jobs issue declares them here, then writes
the migration with `chutes-suite revision jobs -m ...`."""

from __future__ import annotations

from sqlalchemy.orm import registry
from sqlmodel import SQLModel


class JobsTable(SQLModel, registry=registry()):
    """The base of the jobs schema's tables (its own metadata)."""


metadata = JobsTable.metadata
