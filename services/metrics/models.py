"""The metrics schema's tables: one record per invocation of a chute, from the gateway's access
log (services/metrics/records.py); the capacity log computed from them (capacity.py); the
miner means of the last day (means.py)."""

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
    #: Token usage, when the response carried one (an OpenAI-shaped `usage`: read by the gateway
    #: as the answer passed, gateway/usage.lua); None otherwise.
    input_tokens: int | None = None
    output_tokens: int | None = None
    #: From the request to the response's first body chunk (the first token of a stream).
    first_token_ms: float | None = None
    #: Output tokens over the time the body took after its first chunk.
    tokens_per_second: float | None = None


class CapacityLog(MetricsTable, table=True):
    """A chute's load and the scheduler's decision at one moment (the real API's capacity_log,
    which its autoscaler writes on each run; here every CAPACITY_LOG_SECONDS and at each change).
    Request counts are floats, as the real table has them."""

    __tablename__ = "capacity_log"

    chute_id: str = Field(primary_key=True, sa_type=TEXT)
    timestamp: datetime = Field(primary_key=True, sa_type=TIMESTAMP)
    utilization_current: float
    utilization_5m: float
    utilization_15m: float
    utilization_1h: float
    rate_limit_ratio_5m: float
    rate_limit_ratio_15m: float
    rate_limit_ratio_1h: float
    total_requests_5m: float
    total_requests_15m: float
    total_requests_1h: float
    completed_requests_5m: float
    completed_requests_15m: float
    completed_requests_1h: float
    rate_limited_requests_5m: float
    rate_limited_requests_15m: float
    rate_limited_requests_1h: float
    instance_count: int
    #: no_action, scaled_up, scaled_down, scale_up_skipped (no node could take it).
    action_taken: str = Field(sa_type=TEXT)
    target_count: int
    effective_multiplier: float


class MinerMean(MetricsTable, table=True):
    """Per instance of a chute: its average over the last day of invocations (the real API's
    llm_means, rebuilt whole on a schedule)."""

    __tablename__ = "miner_means"

    chute_id: str = Field(primary_key=True, sa_type=TEXT)
    instance_id: str = Field(primary_key=True, sa_type=TEXT)
    miner_hotkey: str = Field(sa_type=TEXT)
    avg_tps: float
    avg_output_tokens: float


metadata = MetricsTable.metadata
invocations = table_of(Invocation)
