"""An instance's log for its chute's owner: `GET /instances/{instance_id}/logs?backfill=N`.

Who may read it (the real API's rule): the chute's owner, users it is shared with, admins of the
chute's subnet, and the support role; anyone else, like an unknown instance, gets 404. The log
itself is the instance's: its own endpoint (chutes/instance_logs.py) answers the backfill and
then follows the file the miner writes its output to; the registry relays those SSE bytes as
they come, until the client or the instance goes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from google.api import httpbody_pb2

from chutes.instance_logs import LOGS_PATH, MAX_BACKFILL
from services.kit.caller import Caller
from services.kit.errors import FieldViolation, NotFound, Unavailable, ValidationFailed
from services.kit.roles import Role
from services.registry.subnets import substrings_managed_by

DEFAULT_BACKFILL = 100
#: Connecting to the instance and its first answer; the stream itself may then idle forever.
CONNECT_SECONDS = 5.0

_READABLE_INSTANCE = """
SELECT i.host, i.port FROM instances i JOIN chutes c ON c.chute_id = i.chute_id
WHERE i.instance_id = $1
  AND ($4 OR c.user_id = $2 OR lower(c.name) LIKE ANY($3::text[])
       OR EXISTS (SELECT 1 FROM chute_shares s WHERE s.chute_id = c.chute_id AND s.shared_to = $2))
"""


def backfill_of(requested: int | None) -> int:
    backfill = DEFAULT_BACKFILL if requested is None else requested
    if not 0 <= backfill <= MAX_BACKFILL:
        raise ValidationFailed(
            [FieldViolation(("query", "backfill"), f"Input should be between 0 and {MAX_BACKFILL}")]
        )
    return backfill


async def readable_instance(connection: Any, instance_id: str, caller: Caller) -> tuple[str, int]:
    """Where the instance `caller` may read the log of listens; NotFound or Unavailable."""
    patterns = [f"%{s}%" for s in substrings_managed_by(caller, admin_only=True)]
    row = await connection.fetchrow(
        _READABLE_INSTANCE, instance_id, caller.user_id, patterns, caller.has_role(Role.CHUTES_SUPPORT)
    )
    if row is None:
        raise NotFound("Instance not found")
    if row["host"] is None or not row["port"]:
        raise Unavailable("The instance is not serving yet; try again shortly")
    return row["host"], row["port"]


async def relay(host: str, port: int, backfill: int) -> AsyncIterator[httpbody_pb2.HttpBody]:
    """The instance's log stream, as it comes."""
    timeout = httpx.Timeout(CONNECT_SECONDS, read=None)
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            url = f"http://{host}:{port}{LOGS_PATH}"
            async with client.stream("GET", url, params={"backfill": backfill}) as response:
                if response.status_code != 200:
                    raise Unavailable("The instance's log cannot be read right now")
                async for chunk in response.aiter_raw():
                    yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=chunk)
    except httpx.HTTPError:
        raise Unavailable("The instance cannot be reached right now") from None
