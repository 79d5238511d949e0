"""Bounties: a reward for the first miner whose instance makes a cold chute routable
(spec/chutes-api.md 6, chutes-runtime.md 3.2, 4 and 6.4), in Postgres where the real API keeps
Redis keys with TTLs.

- A cold call (activity.py) or a warmup of a chute with no routable instance creates one, unless
  the chute is disabled, already has one, or is in its cooldown (600 s after a bounty is created
  or claimed). Lifetime: 86400 s for public chutes, 3600 s for private ones (7200 s when affine),
  3600 s from a billing admin's IncreaseChuteBounty.
- Its amount grows with its age, min(3 x seconds + 100, 86400); its boost of the compute
  multiplier ramps from 1.5 to 2.5 over 180 minutes.
- The first instance of the chute to become routable claims it (miners.py, ReportInstance READY).
- Expiry needs no cron: every read filters on `expires_at > now()`, and the scheduler's tick
  deletes what has expired (`expire`).
- Miners hear of a bounty through a `bounty_change` event in the outbox, at most once per chute
  per 30-second window.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

AMOUNT_BASE, AMOUNT_PER_SECOND, AMOUNT_MAX = 100, 3, 86400
BOOST_START, BOOST_END, BOOST_RAMP_SECONDS = 1.5, 2.5, 180 * 60
COOLDOWN_SECONDS = 600
#: Lifetime of a bounty made by IncreaseChuteBounty.
INCREASE_LIFETIME_SECONDS = 3600
NOTIFY_WINDOW_SECONDS = 30
#: A billing admin's manual boost is kept only within this range (others are ignored).
MANUAL_BOOST_RANGE = (1.0, 4.0)


def amount(age_seconds: float) -> int:
    return int(min(AMOUNT_PER_SECOND * max(age_seconds, 0.0) + AMOUNT_BASE, AMOUNT_MAX))


def boost(age_seconds: float) -> float:
    ramp = min(max(age_seconds, 0.0) / BOOST_RAMP_SECONDS, 1.0)
    return BOOST_START + (BOOST_END - BOOST_START) * ramp


#: Creates the bounty if the chute may have one ($2: lifetime in seconds, NULL: by the chute's
#: kind) and starts its cooldown, in one statement (two callers cannot both create). An expired
#: row counts as absent. Returns the chute id when created.
_CREATE = """
WITH fresh AS (
  INSERT INTO bounties (chute_id, created_at, expires_at)
  SELECT c.chute_id, now(), now() + make_interval(secs => COALESCE($2::float8,
           CASE WHEN c.public THEN 86400 WHEN lower(c.name) LIKE '%affine%' THEN 7200 ELSE 3600 END))
  FROM chutes c
  WHERE c.chute_id = $1 AND NOT c.disabled
    AND NOT EXISTS (SELECT 1 FROM bounty_cooldowns k WHERE k.chute_id = c.chute_id AND k.until > now())
    AND ($3 OR NOT EXISTS (SELECT 1 FROM instances i WHERE i.chute_id = c.chute_id
                           AND i.active AND i.verified AND i.job_id IS NULL))
  ON CONFLICT (chute_id) DO UPDATE
    SET created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, notified_window = NULL
    WHERE bounties.expires_at <= now()
  RETURNING chute_id
)
INSERT INTO bounty_cooldowns (chute_id, until)
SELECT chute_id, now() + make_interval(secs => $4) FROM fresh
ON CONFLICT (chute_id) DO UPDATE SET until = EXCLUDED.until
RETURNING chute_id
"""

#: Live bounties ($1 NULL: all) with their ages, as floats of seconds.
_LIVE = """
SELECT chute_id, extract(epoch FROM created_at)::float8 AS created_at,
       extract(epoch FROM now() - created_at)::float8 AS age,
       extract(epoch FROM expires_at - now())::float8 AS remaining
FROM bounties
WHERE expires_at > now() AND ($1::text[] IS NULL OR chute_id = ANY($1::text[]))
ORDER BY created_at, chute_id
"""


async def create(
    connection: Any, chute_id: str, lifetime: float | None = None, *, even_if_hot: bool = False
) -> bool:
    """Create the chute's bounty if it may have one (see the module). `even_if_hot`: a billing
    admin's bounty does not need the chute to be cold."""
    created = await connection.fetchval(_CREATE, chute_id, lifetime, even_if_hot, float(COOLDOWN_SECONDS))
    return created is not None


async def live(connection: Any, chute_ids: list[str] | None = None) -> list[Any]:
    rows: list[Any] = await connection.fetch(_LIVE, chute_ids)
    return rows


async def notify(connection: Any, chute_id: str) -> bool:
    """Tell miners of the chute's live bounty (a `bounty_change` event), unless they were told in
    this 30-second window. True when told."""
    row = await connection.fetchrow(
        """
        UPDATE bounties SET notified_window = floor(extract(epoch FROM now()) / $2)::bigint
        WHERE chute_id = $1 AND expires_at > now()
          AND notified_window IS DISTINCT FROM floor(extract(epoch FROM now()) / $2)::bigint
        RETURNING extract(epoch FROM now() - created_at)::float8 AS age
        """,
        chute_id,
        NOTIFY_WINDOW_SECONDS,
    )
    if row is None:
        return False
    payload = {"chute_id": chute_id, "bounty": amount(row["age"]), "bounty_boost": boost(row["age"])}
    await connection.execute(
        "INSERT INTO outbox (kind, payload) VALUES ('bounty_change', $1::jsonb)", json.dumps(payload)
    )
    return True


async def cold(connection: Any, chute_id: str) -> None:
    """A chute was called or warmed with no routable instance: a bounty (if it may have one), and
    miners told of it."""
    async with connection.transaction():
        if await create(connection, chute_id):
            log.info("bounty created for chute %s", chute_id)
        await notify(connection, chute_id)


async def claim(connection: Any, chute_id: str) -> int | None:
    """An instance of the chute became routable: it takes the live bounty (the amount it was
    worth), and the cooldown starts. None when there was none."""
    async with connection.transaction():
        age = await connection.fetchval(
            "DELETE FROM bounties WHERE chute_id = $1 AND expires_at > now()"
            " RETURNING extract(epoch FROM now() - created_at)::float8",
            chute_id,
        )
        if age is None:
            return None
        await connection.execute(
            "INSERT INTO bounty_cooldowns (chute_id, until) VALUES ($1, now() + make_interval(secs => $2))"
            " ON CONFLICT (chute_id) DO UPDATE SET until = EXCLUDED.until",
            chute_id,
            float(COOLDOWN_SECONDS),
        )
    return amount(age)


async def expire(connection: Any) -> None:
    """Drop expired bounties and cooldowns (reads already ignore them; this keeps tables small)."""
    await connection.execute("DELETE FROM bounties WHERE expires_at <= now()")
    await connection.execute("DELETE FROM bounty_cooldowns WHERE until <= now()")


@dataclass(frozen=True)
class Increase:
    """IncreaseChuteBounty's answer: the real API's four fields."""

    bounty_created: bool
    bounty_existed: bool | None
    notification_sent: bool
    amount: int | None


async def increase(connection: Any, chute_id: str, manual_boost: float | None) -> Increase | None:
    """A billing admin's bounty (lifetime 3600 s) and manual boost; None when no such chute."""
    async with connection.transaction():
        if await connection.fetchval("SELECT 1 FROM chutes WHERE chute_id = $1", chute_id) is None:
            return None
        created = await create(connection, chute_id, INCREASE_LIFETIME_SECONDS, even_if_hot=True)
        [current] = await live(connection, [chute_id]) or [None]
        notified = current is not None and await notify(connection, chute_id)
        low, high = MANUAL_BOOST_RANGE
        if manual_boost is not None and low <= manual_boost <= high:
            await connection.execute(
                "INSERT INTO chute_manual_boosts (chute_id, boost) VALUES ($1, $2)"
                " ON CONFLICT (chute_id) DO UPDATE SET boost = EXCLUDED.boost",
                chute_id,
                manual_boost,
            )
    worth = amount(current["age"]) if current is not None else None
    return Increase(
        bounty_created=created,
        bounty_existed=None if worth is None else not created,
        notification_sent=notified,
        amount=worth,
    )
