"""Rows of the metrics schema to protobuf messages (the miner means' pages are in means.py)."""

from __future__ import annotations

from typing import Any

from chutes.metrics.v1 import metrics_pb2
from chutes.registry.v1 import internal_pb2

PRIVATE_NAME = "[private chute]"
#: ChuteUtilization fields copied from the capacity-log row as they are.
_LOGGED = (
    "utilization_current", "utilization_5m", "utilization_15m", "utilization_1h",
    "rate_limit_ratio_5m", "rate_limit_ratio_15m", "rate_limit_ratio_1h",
    "total_requests_5m", "total_requests_15m", "total_requests_1h",
    "completed_requests_5m", "completed_requests_15m", "completed_requests_1h",
    "rate_limited_requests_5m", "rate_limited_requests_15m", "rate_limited_requests_1h",
    "instance_count", "action_taken", "target_count", "effective_multiplier",
)  # fmt: skip


def utilization_message(row: Any, chute: internal_pb2.ChuteFleet) -> metrics_pb2.ChuteUtilization:
    """A chute's latest capacity-log row, its instances now, and the real API's derived fields:
    the target is the scheduler's live one when it has decided, else the logged one."""
    active = sum(1 for i in chute.instances if i.active)
    target = chute.target_count if chute.HasField("target_count") else row["target_count"]
    message = metrics_pb2.ChuteUtilization(
        chute_id=row["chute_id"],
        name=chute.name if chute.public else PRIVATE_NAME,
        total_instance_count=len(chute.instances),
        active_instance_count=active,
        target=target,
        scalable=active < target,
        scale_allowance=max(0, target - active),
        avg_busy_ratio=row["utilization_1h"],
        total_invocations=row["total_requests_1h"],
        total_rate_limit_errors=row["rate_limited_requests_1h"],
        **{name: row[name] for name in _LOGGED},
    )
    message.timestamp.FromDatetime(row["timestamp"])
    return message
