"""The metrics schema's tables: one record per invocation of a chute, from the gateway's access
log (services/metrics/records.py)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from services.kit.models import TEXT, TIMESTAMP, table_of


class MetricsTable(SQLModel, registry=registry()):
    """The base of the metrics schema's tables (its own metadata)."""


class Invocation(MetricsTable, table=True):
    """One call to a chute host, as the gateway logged it when the response ended."""

    __tablename__ = "invocations"
    __table_args__ = (sa.Index("invocations_chute_started", "chute_id", "started_at"),)

    #: The gateway's x-request-id, answered to the caller as X-Chutes-InvocationID.
    invocation_id: str = Field(primary_key=True, sa_type=TEXT)
    chute_id: str = Field(sa_type=TEXT)
    #: The instance that answered; None when none did (the cold 503).
    instance_id: str | None = Field(default=None, sa_type=TEXT)
    #: The cord's path, without the query string.
    path: str = Field(sa_type=TEXT)
    #: The caller as the instance saw it (x-chutes-user-id); None for anonymous calls.
    user_id: str | None = Field(default=None, sa_type=TEXT)
    status: int = Field(sa_type=sa.SmallInteger)
    duration_ms: float
    #: Until the instance's first byte; None when no instance answered.
    ttfb_ms: float | None = None
    bytes_in: int = Field(sa_type=sa.BigInteger)
    bytes_out: int = Field(sa_type=sa.BigInteger)
    #: Why the gateway answered itself (Envoy's response code details: `no_healthy_upstream`, ...);
    #: None when the instance answered.
    error: str | None = Field(default=None, sa_type=TEXT)
    started_at: datetime = Field(sa_type=TIMESTAMP)


metadata = MetricsTable.metadata
invocations = table_of(Invocation)
