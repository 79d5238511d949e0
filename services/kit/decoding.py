"""What a request may hold, checked as it is decoded: every service answers bad bytes with 400.

Strings reach the services from REST paths and bodies, so a client can send invalid UTF-8 (which
protobuf refuses to decode: gRPC itself would answer UNKNOWN, naming protobuf's exception) or NUL
characters (which PostgreSQL refuses to store or compare: a 500 deep in a query). Both become
INVALID_ARGUMENT (REST 400) before any handler runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf import message
from google.protobuf.descriptor import FieldDescriptor

from services.kit.errors import InvalidArgument

NOT_UTF8 = "The request is not valid: its text must be UTF-8"
HAS_NUL = "The request is not valid: NUL characters are not allowed"


class Undecodable:
    """What the deserializer hands on instead of a message it refused (raised in the handler's
    task, where the interceptor turns it into a status)."""

    __slots__ = ("detail",)

    def __init__(self, detail: str) -> None:
        self.detail = detail


def checked_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            request = deserialize(data)
        except message.DecodeError:
            return Undecodable(NOT_UTF8)
        if isinstance(request, message.Message) and has_nul(request):
            return Undecodable(HAS_NUL)
        return request

    return decode


def has_nul(msg: message.Message) -> bool:
    """Whether any string in the message, however deep, holds a NUL character."""
    for field, value in msg.ListFields():
        if field.type == FieldDescriptor.TYPE_STRING:
            if any("\x00" in v for v in value) if field.is_repeated else "\x00" in value:
                return True
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            entry = field.message_type
            if entry is not None and entry.GetOptions().map_entry:
                if any(_nul_in(k) or _nul_in(v) for k, v in value.items()):
                    return True
            elif any(has_nul(item) for item in value) if field.is_repeated else has_nul(value):
                return True
    return False


def _nul_in(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    return isinstance(value, message.Message) and has_nul(value)


def refuse_undecodable(request: Any) -> None:
    if isinstance(request, Undecodable):
        raise InvalidArgument(request.detail)


async def checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A client stream whose refused messages raise InvalidArgument when they are reached."""
    async for request in requests:
        refuse_undecodable(request)
        yield request
