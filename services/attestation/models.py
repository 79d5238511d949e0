"""The attestation schema's tables: none yet. The attestation issue declares them here, then writes
the migration with `chutes-suite revision attestation -m ...`."""

from __future__ import annotations

from sqlalchemy.orm import registry
from sqlmodel import SQLModel


class AttestationTable(SQLModel, registry=registry()):
    """The base of the attestation schema's tables (its own metadata)."""


metadata = AttestationTable.metadata
