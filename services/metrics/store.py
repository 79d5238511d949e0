"""Every query of the metrics service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

#: An invocation record, in the order of the `invocations` columns below.
Record = tuple[
    str, str, str | None, str, str | None, int, float, float | None, int, int, str | None, datetime,
    int | None, int | None, float | None, float | None,
]  # fmt: skip

_ADD_INVOCATIONS = """
INSERT INTO invocations (invocation_id, chute_id, instance_id, path, user_id, status, duration_ms,
                         ttfb_ms, bytes_in, bytes_out, error, started_at, input_tokens,
                         output_tokens, first_token_ms, tokens_per_second)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::smallint[],
                     $7::float8[], $8::float8[], $9::bigint[], $10::bigint[], $11::text[],
                     $12::timestamptz[], $13::integer[], $14::integer[], $15::float8[], $16::float8[])
ON CONFLICT (invocation_id) DO NOTHING
RETURNING chute_id, error IS NULL AS answered
"""


async def add_invocations(connection: Any, records: list[Record]) -> list[str]:
    """Record invocations (one statement; ids already recorded are skipped). Returns the chute of
    each newly recorded call that an instance answered."""
    columns = [list(column) for column in zip(*records, strict=True)]
    rows = await connection.fetch(_ADD_INVOCATIONS, *columns)
    return [row["chute_id"] for row in rows if row["answered"]]


# ---- load: what the capacity log and the scheduler read (capacity.py) ------------------------

#: The windows utilization is computed over (seconds); `current` is the last 30 seconds.
UTILIZATION_WINDOWS = {"current": 30, "5m": 300, "15m": 900, "1h": 3600}
#: The windows requests are counted over.
COUNT_WINDOWS = {"5m": 300, "15m": 900, "1h": 3600}
#: Calls that started this long before the longest window are not read: a call longer than this
#: counts only the part after it (keeps the scan on the (chute_id, started_at) index short).
LONGEST_CALL_SECONDS = 300


#: The windows read every tick (what scaling reacts on) and those read every LONG_SECONDS: the
#: hour of records is most of the work (0.33 s for 800k rows of 10 chutes, 190 calls/s), the
#: last five minutes a twelfth of it.
SHORT_WINDOWS = ("current", "5m")
LONG_WINDOWS = ("15m", "1h")


def _load_query(windows: tuple[str, ...]) -> str:
    busy = [
        f"COALESCE(sum(GREATEST(0, EXTRACT(EPOCH FROM LEAST(ended_at, $2::timestamptz)"
        f" - GREATEST(started_at, $2::timestamptz - interval '{seconds} seconds'))))"
        f" FILTER (WHERE answered), 0)::float8 AS busy_{name}"
        for name, seconds in UTILIZATION_WINDOWS.items()
        if name in windows
    ]
    counts = [
        f"count(*) FILTER (WHERE {what}started_at > $2::timestamptz - interval '{seconds} seconds')::float8"
        f" AS {kind}_{name}"
        for name, seconds in COUNT_WINDOWS.items()
        if name in windows
        for kind, what in (("total", ""), ("completed", "completed AND "), ("rate_limited", "limited AND "))
    ]
    longest = max(UTILIZATION_WINDOWS[name] for name in windows) + LONGEST_CALL_SECONDS
    # Answered: an instance held the call (the gateway's own answers, like the cold 503, held
    # none). Rate-limited: refused with 429 by an instance, or by the gateway's per-instance caps
    # (Envoy's circuit-breaker "overflow").
    return f"""
    WITH calls AS (
      SELECT chute_id, started_at, started_at + duration_ms * interval '1 millisecond' AS ended_at,
             error IS NULL AS answered,
             error IS NULL AND status <> 429 AS completed,
             status = 429 OR COALESCE(error LIKE '%overflow%', false) AS limited
      FROM invocations
      WHERE chute_id = ANY($1::text[]) AND started_at > $2::timestamptz - interval '{longest} seconds'
    )
    SELECT chute_id, {", ".join(busy + counts)} FROM calls GROUP BY chute_id
    """


_LOADS: dict[tuple[str, ...], str] = {
    windows: _load_query(windows) for windows in (SHORT_WINDOWS, LONG_WINDOWS)
}


async def load(
    connection: Any, chute_ids: list[str], now: datetime, windows: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """Per chute, for SHORT_WINDOWS or LONG_WINDOWS: seconds its instances were busy in each
    utilization window (`busy_5m`, ...) and its total, completed and rate-limited calls in each
    count window (`total_5m`, ...)."""
    rows = await connection.fetch(_LOADS[windows], chute_ids, now)
    return {row["chute_id"]: dict(row) for row in rows}


_CAPACITY_COLUMNS = (
    "chute_id", "timestamp", "utilization_current", "utilization_5m", "utilization_15m", "utilization_1h",
    "rate_limit_ratio_5m", "rate_limit_ratio_15m", "rate_limit_ratio_1h",
    "total_requests_5m", "total_requests_15m", "total_requests_1h",
    "completed_requests_5m", "completed_requests_15m", "completed_requests_1h",
    "rate_limited_requests_5m", "rate_limited_requests_15m", "rate_limited_requests_1h",
    "instance_count", "action_taken", "target_count", "effective_multiplier",
)  # fmt: skip
_ADD_CAPACITY = (
    f"INSERT INTO capacity_log ({', '.join(_CAPACITY_COLUMNS)})"
    f" VALUES ({', '.join(f'${i}' for i in range(1, len(_CAPACITY_COLUMNS) + 1))})"
    " ON CONFLICT (chute_id, timestamp) DO NOTHING"
)
#: The capacity log's writer (one metrics replica at a time): any constant the replicas share.
_CAPACITY_LOCK = 0x6D657472


async def add_capacity_rows(connection: Any, rows: list[dict[str, Any]]) -> bool:
    """Log rows (dicts keyed by column); False, writing nothing, when another replica is writing."""
    async with connection.transaction():
        if not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", _CAPACITY_LOCK):
            return False
        await connection.executemany(_ADD_CAPACITY, [[row[c] for c in _CAPACITY_COLUMNS] for row in rows])
    return True


async def latest_capacity(connection: Any) -> list[Any]:
    """The latest capacity-log row of every chute, by total_requests_1h descending."""
    rows: list[Any] = await connection.fetch(
        """
        SELECT * FROM (SELECT DISTINCT ON (chute_id) * FROM capacity_log
                       ORDER BY chute_id, timestamp DESC) latest
        ORDER BY total_requests_1h DESC, chute_id
        """
    )
    return rows


# ---- miner means (means.py) --------------------------------------------------------------------

#: Per instance, over its calls of the last day that it answered: the mean tokens per second and
#: output tokens of the calls that reported usage (gateway/usage.lua); 0 when none did (the rows
#: still say which instances served the chute that day).
_MEANS = """
SELECT chute_id, instance_id, COALESCE(avg(tokens_per_second), 0)::float8 AS avg_tps,
       COALESCE(avg(output_tokens), 0)::float8 AS avg_output_tokens
FROM invocations
WHERE instance_id = ANY($1::text[]) AND started_at > now() - interval '1 day' AND error IS NULL
GROUP BY chute_id, instance_id
"""


_MEANS_LOCK = 0x6D65616E


async def replace_miner_means(connection: Any, hotkeys: dict[str, str]) -> int:
    """Rebuild the miner means of the instances `hotkeys` names (instance id -> miner hotkey)
    at once: readers see the old table or the new one. Returns the rows written."""
    async with connection.transaction():
        if not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", _MEANS_LOCK):
            return 0  # another replica rebuilds them now
        rows = await connection.fetch(_MEANS, list(hotkeys))
        await connection.execute("DELETE FROM miner_means")
        await connection.executemany(
            "INSERT INTO miner_means (chute_id, instance_id, miner_hotkey, avg_tps, avg_output_tokens)"
            " VALUES ($1, $2, $3, $4, $5)",
            [
                (
                    r["chute_id"],
                    r["instance_id"],
                    hotkeys[r["instance_id"]],
                    r["avg_tps"],
                    r["avg_output_tokens"],
                )
                for r in rows
            ],
        )
    return len(rows)


async def miner_means(connection: Any, chute_id: str) -> list[Any]:
    rows: list[Any] = await connection.fetch(
        "SELECT miner_hotkey, instance_id, avg_tps, avg_output_tokens FROM miner_means"
        " WHERE chute_id = $1 ORDER BY avg_output_tokens DESC, instance_id",
        chute_id,
    )
    return rows
