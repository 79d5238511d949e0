"""Public copies of an integrated subnet's chutes (spec/chutes-api.md 4.3, POST
/chutes/make_public): a subnet admin publishes up to `max_public_chutes` of the subnet's chutes
as public, immutable copies owned by them, once a day per subnet.

A copy's id is uuid5("public::{source_chute_id}") and its tagline "PUBLIC_COPY:{source_chute_id}",
so publishing a source again finds its copy: unchanged (same version), or updated in place. The
subnet's other copies (public, immutable, tagged, named for the subnet) are stale and deleted
with their instances. The real API keeps the daily lock in Redis (86400 s TTL) and recognises
copies by their owner being a subnet admin; here the lock is a row, and immutability (which only
make_public and teeify give) with the tag and the subnet's name marks a copy.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kit.caller import Caller
from services.kit.errors import InvalidArgument, NotFound, PermissionDenied, TooManyRequests
from services.kit.roles import Role
from services.registry import store
from services.registry.deploy import rules
from services.registry.models import chutes, images, make_public_locks
from services.registry.subnets import INTEGRATED_SUBNETS, Subnet

LOCK_SECONDS = 86400
TAG = "PUBLIC_COPY:"
#: Columns a copy takes from its source (not the scaling knobs: public chutes are platform-scaled).
COPIED = (
    "name", "readme", "tool_description", "logo_id", "image_id", "code", "filename", "ref_str",
    "standard_template", "cords", "jobs", "node_selector", "concurrency", "revision",
    "allow_external_egress", "encrypted_fs", "tee", "lock_modules", "chutes_version",
)  # fmt: skip


@dataclass
class Outcome:
    """Per requested chute, its copy and "created" / "updated" / "unchanged"; the stale copies
    deleted; the ids of the copies created (which get a bounty once committed)."""

    chutes: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[dict[str, Any]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)


def copy_id(source_chute_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"public::{source_chute_id}"))


def _subnets_of(caller: Caller) -> list[Subnet]:
    """Checks 1-3: a non-empty request from a subnet_admin_assign user who administers a subnet."""
    if not caller.has_role(Role.SUBNET_ADMIN_ASSIGN):
        raise PermissionDenied("Requires subnet_admin_assign role")
    mine = [s for s in INTEGRATED_SUBNETS if s.netuid in caller.netuids]
    if not mine:
        raise PermissionDenied("You do not administer any integrated subnet")
    return mine


async def _sources(
    connection: AsyncConnection, chute_ids: Sequence[str], mine: Sequence[Subnet]
) -> tuple[Subnet, list[Mapping[Any, Any]]]:
    """Checks 4-5: every id a UUID of an existing chute of one of the caller's subnets, all of
    one subnet, at most its max_public_chutes."""
    sources: list[Mapping[Any, Any]] = []
    subnets: set[Subnet] = set()
    for chute_id in chute_ids:
        try:
            uuid.UUID(chute_id)
        except ValueError:
            raise InvalidArgument(f"Invalid chute UUID: {chute_id}") from None
        query = (
            sa.select(chutes, images.c.patch_version)
            .join(images, images.c.image_id == chutes.c.image_id)
            .where(chutes.c.chute_id == chute_id)
        )
        row = (await connection.execute(query)).mappings().first()
        if row is None:
            raise NotFound(f"Chute not found: {chute_id}")
        subnet = next((s for s in mine if s.substring in row["name"].lower()), None)
        if subnet is None:
            raise PermissionDenied(f"Chute {chute_id} does not belong to a subnet you administer")
        sources.append(row)
        subnets.add(subnet)
    if len(subnets) > 1:
        raise InvalidArgument("All chutes must belong to the same subnet")
    [subnet] = subnets
    if len(sources) > subnet.max_public_chutes:
        raise InvalidArgument(
            f"At most {subnet.max_public_chutes} chutes of subnet {subnet.name} may be public"
        )
    return subnet, sources


async def _take_daily_lock(connection: AsyncConnection, subnet: Subnet) -> None:
    """Check 6: once a day per subnet (429 with the hours left), whoever of its admins asks. The
    advisory lock serialises two admins of one subnet; the row is written only on success (this
    transaction commits)."""
    await connection.execute(
        sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"make_public:{subnet.name}")))
    )
    left = (
        await connection.execute(
            sa.select(sa.extract("epoch", make_public_locks.c.until - sa.func.now())).where(
                make_public_locks.c.subnet == subnet.name, make_public_locks.c.until > sa.func.now()
            )
        )
    ).scalar()
    if left is not None:
        hours = max(1, int(left) // 3600)
        raise TooManyRequests(
            f"Subnet {subnet.name} already made chutes public today; try again in ~{hours} hours"
        )
    until = sa.func.now() + sa.text(f"interval '{LOCK_SECONDS} seconds'")
    statement = insert(make_public_locks).values(subnet=subnet.name, until=until)
    await connection.execute(
        statement.on_conflict_do_update(index_elements=["subnet"], set_={"until": statement.excluded.until})
    )


def _entry(row: Mapping[Any, Any], status: str, source_chute_id: str | None = None) -> dict[str, Any]:
    entry = {key: row[key] for key in ("chute_id", "name", "slug", "version", "created_at", "updated_at")}
    return entry | {"status": status, "source_chute_id": source_chute_id}


async def make_public(connection: AsyncConnection, caller: Caller, chute_ids: Sequence[str]) -> Outcome:
    """Validate in the real API's order, then create, update or keep each copy and delete the
    subnet's stale ones, in the caller's transaction."""
    if not chute_ids:
        raise InvalidArgument("Must provide at least one chute ID")
    subnet, sources = await _sources(connection, chute_ids, _subnets_of(caller))
    await _take_daily_lock(connection, subnet)
    outcome = Outcome()
    for source in sources:
        outcome.chutes.append(await _publish(connection, caller, source, outcome))
    kept = [copy_id(s["chute_id"]) for s in sources]
    stale = (
        (
            await connection.execute(
                sa.select(chutes).where(
                    chutes.c.public,
                    chutes.c.immutable,
                    chutes.c.tagline.startswith(TAG, autoescape=True),
                    chutes.c.name.ilike(f"%{subnet.substring}%"),
                    chutes.c.chute_id.not_in(kept),
                )
            )
        )
        .mappings()
        .all()
    )
    for row in stale:
        # Instances, shares and the bounty cascade; the miners hear of the deletion.
        await store.delete_chute(connection, row["chute_id"])
        await store.emit(
            connection, "chute_deleted", {"chute_id": row["chute_id"], "version": row["version"]}
        )
        outcome.deleted.append(_entry(row, "deleted"))
    return outcome


async def _publish(
    connection: AsyncConnection, caller: Caller, source: Mapping[Any, Any], outcome: Outcome
) -> dict[str, Any]:
    target = copy_id(source["chute_id"])
    version = rules.rule_9_version(source, source["code"])
    values = {key: source[key] for key in COPIED} | {
        "version": version,
        "user_id": caller.user_id,
        "username": caller.username,
        "max_instances": None,
        "scaling_threshold": None,
        "shutdown_after_seconds": None,
    }
    existing = (
        (await connection.execute(sa.select(chutes).where(chutes.c.chute_id == target).with_for_update()))
        .mappings()
        .first()
    )
    job_only = not source["cords"]
    if existing is not None and existing["version"] == version:
        return _entry(existing, "unchanged", source["chute_id"])
    if existing is not None:
        await store.update_chute(connection, target, values | {"updated_at": sa.func.now()})
        await store.emit(
            connection, "chute_updated", {"chute_id": target, "version": version, "job_only": job_only}
        )
        status = "updated"
    else:
        slug = await store.unique_slug(connection, rules.rule_19_slug_base(caller.username, source["name"]))
        await store.insert_chute(
            connection,
            values
            | {
                "chute_id": target,
                "slug": slug,
                "public": True,
                "immutable": True,
                "tagline": f"{TAG}{source['chute_id']}",
            },
        )
        await store.emit(
            connection, "chute_created", {"chute_id": target, "version": version, "job_only": job_only}
        )
        outcome.created.append(target)
        status = "created"
    row = (await connection.execute(sa.select(chutes).where(chutes.c.chute_id == target))).mappings().one()
    return _entry(row, status, source["chute_id"])
