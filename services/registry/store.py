"""Every query about chutes (image_store.py: images; fleet_store.py: nodes, instances, routes).

The reads every client makes (get a chute, list chutes, get code) are single SQL statements on
the raw asyncpg connection (no ORM, no SQL compilation; asyncpg keeps each prepared statement per
connection). Writes run SQLAlchemy Core on the models' tables inside the caller's transaction,
and every change to a chute writes its event into the outbox in that same transaction.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import RowMapping
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.registry.models import (
    bounties,
    chute_history,
    chute_shares,
    chutes,
    instances,
    outbox,
    rolling_updates,
)

# ---- SQL of the read paths ---------------------------------------------------------------------

#: Columns of the image joined to a chute, prefixed `i_` (for SQL that selects chute + image).
IMAGE_COLUMNS = (
    "image_id", "user_id", "username", "name", "tag", "readme", "logo_id", "public", "status",
    "chutes_version", "patch_version", "build_started_at", "build_completed_at", "created_at",
)  # fmt: skip
IMAGE_SELECT = ", ".join(f"i.{c} AS i_{c}" for c in IMAGE_COLUMNS)
#: Every chute column a response shows: all but `code`, which can be 150 kB and is served alone.
CHUTE_SELECT = ", ".join(
    f"c.{c}"
    for c in (
        "chute_id", "user_id", "username", "name", "tagline", "readme", "tool_description", "image_id",
        "logo_id", "public", "standard_template", "cords", "jobs", "node_selector", "slug", "version",
        "concurrency", "boost", "chutes_version", "revision", "openrouter", "discount", "max_instances",
        "scaling_threshold", "shutdown_after_seconds", "allow_external_egress", "encrypted_fs", "tee",
        "lock_modules", "immutable", "disabled", "invocation_count", "created_at", "updated_at",
    )
)  # fmt: skip
#: A chute's instances as JSON text (text, so that it can be part of a response cache key).
INSTANCES_SELECT = """COALESCE((SELECT json_agg(json_build_object(
    'instance_id', n.instance_id, 'region', n.region, 'active', n.active, 'verified', n.verified,
    'last_verified_at', n.last_verified_at) ORDER BY n.instance_id)
  FROM instances n WHERE n.chute_id = c.chute_id), '[]')::text AS instances"""

#: What a chute's response carries that changes without any write to the chute, so it is added to
#: cached responses at read time: its live bounty's age (seconds) and its manual boost.
LIVE_SELECT = """(SELECT extract(epoch FROM now() - b.created_at)::float8 FROM bounties b
    WHERE b.chute_id = c.chute_id AND b.expires_at > now()) AS bounty_age,
  (SELECT extract(epoch FROM b.expires_at - now())::float8 FROM bounties b
    WHERE b.chute_id = c.chute_id AND b.expires_at > now()) AS bounty_left,
  (SELECT m.boost FROM chute_manual_boosts m WHERE m.chute_id = c.chute_id) AS manual_boost"""

#: Who may see a chute: discoverable (public, or affine by name), the caller's own (`$2`, NULL when
#: anonymous), shared with the caller, or in a subnet the caller manages (`$3`, LIKE patterns).
_VISIBLE = """(c.discoverable OR c.user_id = $2 OR lower(c.name) LIKE ANY($3::text[])
       OR EXISTS (SELECT 1 FROM chute_shares s WHERE s.chute_id = c.chute_id AND s.shared_to = $2))"""

#: The chute a caller means by an id or exact name, as light as possible: what identifies its
#: response (for the cache), not the response. Among same-named chutes the caller's own comes
#: first, then the platform's.
_FIND_CHUTE = f"""
SELECT c.chute_id, c.updated_at, c.invocation_count, {INSTANCES_SELECT}, {LIVE_SELECT}
FROM chutes c
WHERE (c.chute_id = $1 OR c.name = $1) AND {_VISIBLE}
ORDER BY (c.user_id = $2) DESC NULLS LAST, (c.username = 'chutes') DESC, c.created_at
LIMIT 1
"""

#: The chute a caller means, whole, in one statement (`_FIND_CHUTE`'s choice, the columns of
#: `_CHUTE_ROWS` and the live values): a GET that is not in the read cache.
_GET_CHUTE = f"""
SELECT {CHUTE_SELECT}, {IMAGE_SELECT}, {INSTANCES_SELECT}, {LIVE_SELECT}
FROM chutes c JOIN images i ON i.image_id = c.image_id
WHERE (c.chute_id = $1 OR c.name = $1) AND {_VISIBLE}
ORDER BY (c.user_id = $2) DESC NULLS LAST, (c.username = 'chutes') DESC, c.created_at
LIMIT 1
"""

#: Whole rows for building responses, by id.
_CHUTE_ROWS = f"""
SELECT {CHUTE_SELECT}, {IMAGE_SELECT}, {INSTANCES_SELECT}
FROM chutes c JOIN images i ON i.image_id = c.image_id
WHERE c.chute_id = ANY($1::text[])
"""

#: A chute's code, for callers who may see it (subnet admins only through their role).
_CHUTE_CODE = f"""
SELECT c.code FROM chutes c
WHERE (c.chute_id = $1 OR c.name = $1) AND {_VISIBLE}
ORDER BY (c.user_id = $2) DESC NULLS LAST, (c.username = 'chutes') DESC, c.created_at
LIMIT 1
"""


#: A chute with its routable serving instances and their nodes' TEE: whom the attestation
#: service asks for evidence (RegistryInternalService.GetTeeInstances).
_TEE_INSTANCES = f"""
SELECT c.chute_id, c.tee, COALESCE(c.chutes_version, '') AS chutes_version,
       encode(sha256(convert_to(c.code, 'UTF8')), 'hex') AS code_sha256,
       COALESCE((SELECT json_agg(json_build_object(
           'instance_id', i.instance_id, 'host', i.host, 'port', i.port, 'node_id', i.node_id,
           'node_tee', COALESCE(n.tee, ''), 'node_tee_public_key', COALESCE(n.tee_public_key, ''))
           ORDER BY i.created_at)
         FROM instances i LEFT JOIN nodes n ON n.node_id = i.node_id
         WHERE i.chute_id = c.chute_id AND i.active AND i.verified AND i.job_id IS NULL
           AND i.host IS NOT NULL), '[]')::text AS instances
FROM chutes c
WHERE (c.chute_id = $1 OR c.name = $1) AND {_VISIBLE}
ORDER BY (c.user_id = $2) DESC NULLS LAST, (c.username = 'chutes') DESC, c.created_at
LIMIT 1
"""


@dataclass(frozen=True)
class Viewer:
    """Who is reading, as the visibility SQL takes it: their user id (None when anonymous) and the
    LIKE patterns of the subnets whose chutes their roles reach."""

    user_id: str | None
    subnet_patterns: list[str]


async def find_chute(connection: Any, reference: str, viewer: Viewer) -> Any:
    """The light row (id, updated_at, instances, live bounty and boost) of the chute `reference`
    names, if visible."""
    return await connection.fetchrow(_FIND_CHUTE, reference, viewer.user_id, viewer.subnet_patterns)


async def get_chute(connection: Any, reference: str, viewer: Viewer) -> Any:
    """The whole row (chute, image as `i_*`, instances, live values) of the chute `reference`
    names, if visible: one round trip."""
    return await connection.fetchrow(_GET_CHUTE, reference, viewer.user_id, viewer.subnet_patterns)


async def tee_instances(connection: Any, reference: str, viewer: Viewer) -> Any:
    """The chute `reference` names, if visible, with what evidence collection needs."""
    return await connection.fetchrow(_TEE_INSTANCES, reference, viewer.user_id, viewer.subnet_patterns)


async def chute_rows(connection: Any, chute_ids: Sequence[str]) -> list[Any]:
    """Whole rows (chute, its image as `i_*`, its instances) for building responses."""
    rows: list[Any] = await connection.fetch(_CHUTE_ROWS, list(chute_ids))
    return rows


async def chute_code(connection: Any, reference: str, viewer: Viewer) -> str | None:
    code: str | None = await connection.fetchval(
        _CHUTE_CODE, reference, viewer.user_id, viewer.subnet_patterns
    )
    return code


@dataclass(frozen=True)
class ChuteFilter:
    """The list's filters, as `GET /chutes/` takes them (empty strings and None: not given)."""

    caller_id: str | None
    include_public: bool
    template: str | None = None
    name: str = ""
    exclude: str = ""
    image: str = ""
    slug: str = ""


async def list_chutes(
    connection: Any, wanted: ChuteFilter, *, limit: int, offset: int
) -> tuple[int, list[Any]]:
    """The total and one page of light rows, most invoked first. Shared chutes are not listed
    (only readable), as in the real API."""
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    if wanted.caller_id is None:
        where = ["c.discoverable"]
    elif wanted.include_public:
        where = [f"(c.discoverable OR c.user_id = {param(wanted.caller_id)})"]
    else:
        where = [f"c.user_id = {param(wanted.caller_id)}"]
    source = "chutes c"
    if wanted.template is not None and wanted.template.strip():
        where.append(
            "c.standard_template IS NULL"
            if wanted.template == "other"
            else f"c.standard_template = {param(wanted.template)}"
        )
    if wanted.name:
        where.append(f"c.name ILIKE {param('%' + wanted.name + '%')}")
    if wanted.exclude:
        where.append(f"c.name NOT ILIKE {param('%' + wanted.exclude + '%')}")
    if wanted.image:
        source = "chutes c JOIN images i ON i.image_id = c.image_id"
        where.append(f"(i.name || ':' || i.tag) ILIKE {param('%' + wanted.image + '%')}")
    if wanted.slug:
        where.append(f"c.slug ILIKE {param(wanted.slug)}")
    condition = " AND ".join(where)
    page_sql = (
        f"SELECT c.chute_id, c.updated_at, c.invocation_count, {INSTANCES_SELECT}, {LIVE_SELECT}"
        f" FROM {source} WHERE {condition}"
        f" ORDER BY c.invocation_count DESC, c.chute_id LIMIT {int(limit)} OFFSET {int(offset)}"
    )
    total: int = await connection.fetchval(f"SELECT count(*) FROM {source} WHERE {condition}", *params)
    return total, await connection.fetch(page_sql, *params)


# ---- chutes: writes ----------------------------------------------------------------------------

_SLUG_SUFFIX = string.ascii_lowercase + string.digits


async def unique_slug(connection: AsyncConnection, base: str) -> str:
    """`base`, or `base-xxxxx` with a random suffix while the slug is taken."""
    slug = base
    while (await connection.execute(sa.select(chutes.c.chute_id).where(chutes.c.slug == slug))).first():
        slug = f"{base}-{''.join(secrets.choice(_SLUG_SUFFIX) for _ in range(5))}"
    return slug


async def deployments_today(connection: AsyncConnection, user_id: str) -> int:
    """How many of the user's chutes were created, updated or deleted in the last 24 hours."""
    since = sa.func.now() - sa.text("interval '24 hours'")
    count: int = (
        await connection.execute(
            sa.select(sa.func.count())
            .select_from(chute_history)
            .where(
                chute_history.c.user_id == user_id,
                sa.or_(
                    chute_history.c.created_at > since,
                    chute_history.c.updated_at > since,
                    chute_history.c.deleted_at > since,
                ),
            )
        )
    ).scalar_one()
    return count


async def lock_own_chute_named(connection: AsyncConnection, user_id: str, name: str) -> RowMapping | None:
    """The user's chute of that name (any case), locked for the rest of the transaction."""
    query = (
        sa.select(chutes)
        .where(chutes.c.user_id == user_id, sa.func.lower(chutes.c.name) == name.lower())
        .with_for_update()
    )
    return (await connection.execute(query)).mappings().first()


async def lock_own_chute(connection: AsyncConnection, user_id: str, reference: str) -> RowMapping | None:
    """The user's chute by id or exact name, locked for the rest of the transaction."""
    query = (
        sa.select(chutes.c.chute_id, chutes.c.immutable, chutes.c.public, chutes.c.version)
        .where(
            sa.or_(chutes.c.chute_id == reference, chutes.c.name == reference),
            chutes.c.user_id == user_id,
        )
        .with_for_update()
    )
    return (await connection.execute(query)).mappings().first()


async def lock_chute(connection: AsyncConnection, chute_id: str) -> RowMapping | None:
    """Any chute by id, locked for the rest of the transaction."""
    query = (
        sa.select(chutes.c.chute_id, chutes.c.user_id, chutes.c.name, chutes.c.version)
        .where(chutes.c.chute_id == chute_id)
        .with_for_update()
    )
    return (await connection.execute(query)).mappings().first()


async def insert_chute(connection: AsyncConnection, values: Mapping[str, Any]) -> None:
    await connection.execute(chutes.insert().values(**values))


async def update_chute(connection: AsyncConnection, chute_id: str, values: Mapping[str, Any]) -> None:
    await connection.execute(chutes.update().where(chutes.c.chute_id == chute_id).values(**values))


async def delete_chute(connection: AsyncConnection, chute_id: str) -> None:
    """Shares, instances and rolling updates cascade; history keeps the deletion time."""
    await connection.execute(chutes.delete().where(chutes.c.chute_id == chute_id))


async def delete_bounty(connection: AsyncConnection, chute_id: str) -> None:
    await connection.execute(bounties.delete().where(bounties.c.chute_id == chute_id))


async def instances_per_miner(connection: AsyncConnection, chute_id: str) -> dict[str, int]:
    """How many instances of the chute each miner runs ("" for instances without a miner)."""
    counts = (
        await connection.execute(
            sa.select(instances.c.miner_hotkey, sa.func.count())
            .where(instances.c.chute_id == chute_id)
            .group_by(instances.c.miner_hotkey)
        )
    ).all()
    return {hotkey or "": count for hotkey, count in counts}


async def delete_instances(connection: AsyncConnection, chute_id: str) -> None:
    await connection.execute(instances.delete().where(instances.c.chute_id == chute_id))


async def replace_rolling_update(
    connection: AsyncConnection, chute_id: str, started: tuple[str, str, dict[str, int]] | None
) -> None:
    """Forget the chute's rolling update; record `(old_version, new_version, permitted)` if given."""
    await connection.execute(rolling_updates.delete().where(rolling_updates.c.chute_id == chute_id))
    if started is not None:
        old_version, new_version, permitted = started
        await connection.execute(
            rolling_updates.insert().values(
                chute_id=chute_id, old_version=old_version, new_version=new_version, permitted=permitted
            )
        )


async def emit(connection: AsyncConnection, kind: str, payload: Mapping[str, Any]) -> None:
    """An event into the outbox, in the caller's transaction (announced by NOTIFY on commit)."""
    await connection.execute(outbox.insert().values(kind=kind, payload=json.loads(json.dumps(payload))))


# ---- shares ------------------------------------------------------------------------------------


async def own_chute_for_sharing(
    connection: AsyncConnection, user_id: str, reference: str
) -> RowMapping | None:
    """The user's chute by id or name (any case): its id, name and whether it is public."""
    query = sa.select(chutes.c.chute_id, chutes.c.name, chutes.c.public).where(
        chutes.c.user_id == user_id,
        sa.or_(sa.func.lower(chutes.c.name) == reference.lower(), chutes.c.chute_id == reference),
    )
    return (await connection.execute(query)).mappings().first()


async def share(connection: AsyncConnection, chute_id: str, shared_by: str, shared_to: str) -> None:
    await connection.execute(
        insert(chute_shares)
        .values(chute_id=chute_id, shared_by=shared_by, shared_to=shared_to)
        .on_conflict_do_nothing()
    )


async def unshare(connection: AsyncConnection, chute_id: str, shared_by: str, shared_to: str) -> None:
    await connection.execute(
        chute_shares.delete().where(
            chute_shares.c.chute_id == chute_id,
            chute_shares.c.shared_by == shared_by,
            chute_shares.c.shared_to == shared_to,
        )
    )


async def code_and_revision(connection: Any, chute_id: str) -> Any:
    """Any chute's code and pinned revision, by id (hf_info: no visibility check)."""
    return await connection.fetchrow("SELECT code, revision FROM chutes WHERE chute_id = $1", chute_id)


# ---- boosted and affine chutes -----------------------------------------------------------------


async def boosted_chutes(connection: Any) -> list[Any]:
    """Chutes with an autoscaler boost or a manual boost above 1."""
    rows: list[Any] = await connection.fetch(
        """
        SELECT c.chute_id, c.name, c.boost, m.boost AS manual_boost
        FROM chutes c LEFT JOIN chute_manual_boosts m ON m.chute_id = c.chute_id
        WHERE c.boost > 1 OR m.boost > 1
        ORDER BY c.chute_id
        """
    )
    return rows


async def affine_chutes(connection: Any) -> list[Any]:
    """Chutes whose name contains "affine" (any case), with whether one of their serving
    instances is routable."""
    rows: list[Any] = await connection.fetch(
        """
        SELECT c.chute_id, c.user_id, c.name,
               EXISTS (SELECT 1 FROM instances i WHERE i.chute_id = c.chute_id AND i.active
                       AND i.verified AND i.job_id IS NULL) AS has_active_instance
        FROM chutes c WHERE lower(c.name) LIKE '%affine%'
        ORDER BY c.created_at, c.chute_id
        """
    )
    return rows


# ---- invocations (the gateway's check of a call to a chute host) -------------------------------

#: The chute at a host, if the caller may invoke it: visible to them as `_VISIBLE` says (`$2` the
#: caller, `$3` their subnets' LIKE patterns), by slug (unique, indexed).
_INVOCABLE = f"SELECT c.chute_id FROM chutes c WHERE c.slug = $1 AND {_VISIBLE}"


async def invocable_chute(connection: Any, slug: str, viewer: Viewer) -> str | None:
    """The id of the chute at `{slug}.{domain}` when `viewer` may call it; None when there is no
    such chute or it is hidden from them (the same 404 to the caller)."""
    chute_id: str | None = await connection.fetchval(_INVOCABLE, slug, viewer.user_id, viewer.subnet_patterns)
    return chute_id


async def gpu_counts(connection: Any) -> list[Any]:
    """Every chute ever deployed with the GPU count of its latest history row where it is a number
    (the real API's GET /chutes/gpu_count_history)."""
    rows: list[Any] = await connection.fetch(
        """
        SELECT DISTINCT ON (chute_id) chute_id, (node_selector ->> 'gpu_count')::numeric::int AS gpu_count
        FROM chute_history WHERE jsonb_typeof(node_selector -> 'gpu_count') = 'number'
        ORDER BY chute_id, created_at DESC, updated_at DESC
        """
    )
    return rows


async def add_invocations(connection: Any, counts: Mapping[str, int]) -> None:
    """Add to chutes' `invocation_count` (one statement for the batch; unknown chutes are skipped).
    `updated_at` stays: the count is not an edit of the chute."""
    if counts:
        await connection.execute(
            """
            UPDATE chutes c SET invocation_count = c.invocation_count + n.count
            FROM unnest($1::text[], $2::bigint[]) AS n(chute_id, count)
            WHERE c.chute_id = n.chute_id
            """,
            list(counts),
            list(counts.values()),
        )


#: Chutes with their serving instances and what the compute multiplier reads: for the metrics
#: service (utilization, capacity log, miner means): the chutes `$2` names when given, else every
#: chute of template `$1` when given, else every chute with instances or demand. The ids come
#: first (the chutes are then read by key, not scanned) and the instances are aggregated in one
#: pass, not a subquery per chute: 80 -> ~45 ms for the 2,422 of 30,000 chutes metrics asks for
#: every second. Ties in created_at go by instance_id, so an unchanged chute reads the same.
_FLEET = """
WITH fleet AS (
  SELECT CASE WHEN cardinality($2::text[]) > 0 THEN $2::text[]
              WHEN $1 <> '' THEN ARRAY(SELECT chute_id FROM chutes WHERE standard_template = $1)
              ELSE ARRAY(SELECT chute_id FROM chute_demand
                         UNION SELECT chute_id FROM instances WHERE job_id IS NULL) END AS chute_ids
), fleet_instances AS (
  SELECT n.chute_id, json_agg(json_build_object(
           'instance_id', n.instance_id, 'miner_hotkey', COALESCE(n.miner_hotkey, ''),
           'active', n.active AND n.verified, 'ready_at', n.last_verified_at)
           ORDER BY n.created_at, n.instance_id)::text AS instances
  FROM instances n, fleet f
  WHERE n.chute_id = ANY(f.chute_ids) AND n.job_id IS NULL AND n.state <> 'stopping'
  GROUP BY n.chute_id
)
SELECT c.chute_id, c.name, c.public, c.username, c.created_at, c.boost, c.tee,
       c.node_selector::text AS node_selector, COALESCE(c.standard_template, '') AS standard_template,
       c.invocation_count, COALESCE(c.concurrency, 1) AS concurrency, COALESCE(i.instances, '[]') AS instances
FROM fleet f JOIN chutes c ON c.chute_id = ANY(f.chute_ids)
     LEFT JOIN fleet_instances i ON i.chute_id = c.chute_id
ORDER BY c.invocation_count DESC, c.chute_id
"""


async def fleet(connection: Any, standard_template: str = "", chute_ids: Sequence[str] = ()) -> list[Any]:
    rows: list[Any] = await connection.fetch(_FLEET, standard_template, list(chute_ids))
    return rows
