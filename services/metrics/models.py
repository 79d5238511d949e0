"""The metrics schema's tables: none yet. The metrics issue declares them here, then writes
the migration with `chutes-suite revision metrics -m ...`."""

from __future__ import annotations

from sqlalchemy.orm import registry
from sqlmodel import SQLModel


class MetricsTable(SQLModel, registry=registry()):
    """The base of the metrics schema's tables (its own metadata)."""


metadata = MetricsTable.metadata
