"""Small conversions between database values and protobuf messages, shared by services."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import message, timestamp_pb2


def has_field(msg: message.Message, name: str) -> bool:
    """`msg.HasField(name)` for a name held in a variable (the stubs type HasField with literals)."""
    return msg.HasField(name)


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for a datetime; None stays unset (the JSON key is then absent)."""
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp
