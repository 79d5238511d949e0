"""Every query of the metrics service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

#: An invocation record, in the order of the `invocations` columns below.
Record = tuple[
    str, str, str | None, str, str | None, int, float, float | None, int, int, str | None, datetime
]

_ADD_INVOCATIONS = """
INSERT INTO invocations (invocation_id, chute_id, instance_id, path, user_id, status, duration_ms,
                         ttfb_ms, bytes_in, bytes_out, error, started_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::smallint[],
                     $7::float8[], $8::float8[], $9::bigint[], $10::bigint[], $11::text[],
                     $12::timestamptz[])
ON CONFLICT (invocation_id) DO NOTHING
RETURNING chute_id, error IS NULL AS answered
"""


async def add_invocations(connection: Any, records: list[Record]) -> list[str]:
    """Record invocations (one statement; ids already recorded are skipped). Returns the chute of
    each newly recorded call that an instance answered."""
    columns = [list(column) for column in zip(*records, strict=True)]
    rows = await connection.fetch(_ADD_INVOCATIONS, *columns)
    return [row["chute_id"] for row in rows if row["answered"]]
