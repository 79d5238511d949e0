"""The registry schema: images, chutes and their history, shares, instances, rolling updates,
bounties and boosts, and the event outbox.

Owner usernames are copied onto images and chutes: the registry never reads identity's tables,
and usernames never change, so the copy cannot go stale. History rows and outbox notifications
are written by triggers (migrations/versions/0001), which models do not describe.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from services.kit.models import CREATED, RANDOM_ID, TEXT, TIMESTAMP, UPDATED, table_of


class RegistryTable(SQLModel, registry=registry()):
    """The base of the registry schema's tables (its own metadata)."""


def _text(*, default: str | None = None, **options: Any) -> Any:
    """A text column; `default` is also the server's default."""
    if default is None:
        return Field(sa_type=TEXT, **options)
    return Field(default=default, sa_type=TEXT, sa_column_kwargs={"server_default": default}, **options)


def _flag(default: bool = False) -> Any:
    """A non-null boolean with a server default."""
    return Field(default=default, sa_column_kwargs={"server_default": sa.true() if default else sa.false()})


def _json(nullable: bool = True, server_default: str | None = None) -> Any:
    kwargs = {"server_default": server_default} if server_default is not None else {}
    return Field(default=None, sa_type=JSONB, nullable=nullable, sa_column_kwargs=kwargs)


class Image(RegistryTable, table=True):
    """A registered image reference (the suite builds no images); its id is the SDK's Image.uid."""

    __tablename__ = "images"
    __table_args__ = (sa.Index("images_owner_name_tag", "user_id", "name", "tag", unique=True),)

    image_id: str = Field(primary_key=True, sa_type=TEXT)
    user_id: str = _text()
    username: str = _text()
    name: str = _text()
    tag: str = _text()
    readme: str = _text(default="")
    logo_id: str | None = Field(default=None, sa_type=TEXT)
    public: bool = _flag()
    status: str = _text(default="built and pushed")
    chutes_version: str | None = Field(default=None, sa_type=TEXT)
    patch_version: str = _text(default="initial")
    build_started_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)
    build_completed_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)
    created_at: datetime | None = CREATED()
    updated_at: datetime | None = UPDATED()


class Chute(RegistryTable, table=True):
    __tablename__ = "chutes"
    __table_args__ = (
        sa.Index("chutes_owner_name", "user_id", sa.text("lower(name)")),
        sa.Index("chutes_name", "name"),
        # The list's order: most invoked first; anonymous lists see only discoverable chutes.
        sa.Index("chutes_invocations", sa.text("invocation_count DESC"), "chute_id"),
        sa.Index(
            "chutes_discoverable",
            sa.text("invocation_count DESC"),
            "chute_id",
            postgresql_where=sa.text("discoverable"),
        ),
        sa.Index("chutes_owner_invocations", "user_id", sa.text("invocation_count DESC"), "chute_id"),
    )

    #: uuid5(NAMESPACE_OID, "{username}::chute::{name}").
    chute_id: str = Field(primary_key=True, sa_type=TEXT)
    user_id: str = _text()
    username: str = _text()
    name: str = _text()
    tagline: str = _text(default="")
    readme: str = _text(default="")
    tool_description: str | None = Field(default=None, sa_type=TEXT)
    image_id: str = _text(foreign_key="images.image_id")
    logo_id: str | None = Field(default=None, sa_type=TEXT)
    public: bool = _flag()
    standard_template: str | None = Field(default=None, sa_type=TEXT)
    cords: Any = _json(nullable=False, server_default="[]")
    jobs: Any = _json()
    node_selector: Any = _json(nullable=False)
    slug: str = _text(unique=True)
    code: str = _text()
    filename: str = _text()
    ref_str: str = _text()
    #: uuid5(NAMESPACE_OID, "{image_id}:{patch_version}:{code}").
    version: str = _text()
    concurrency: int | None = None
    boost: float | None = None
    chutes_version: str | None = Field(default=None, sa_type=TEXT)
    revision: str | None = Field(default=None, sa_type=TEXT)
    openrouter: bool = _flag()
    discount: float = Field(default=0.0, sa_column_kwargs={"server_default": "0"})
    max_instances: int | None = None
    scaling_threshold: float | None = None
    shutdown_after_seconds: int | None = None
    allow_external_egress: bool = _flag()
    encrypted_fs: bool = _flag()
    tee: bool = _flag()
    lock_modules: bool | None = None
    immutable: bool = _flag()
    disabled: bool = _flag()
    invocation_count: int = Field(default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"})
    created_at: datetime | None = CREATED()
    updated_at: datetime | None = UPDATED()
    #: What anonymous callers may list: public, or affine by name (stored, so the count of a list
    #: is an index-only scan).
    discoverable: bool | None = Field(
        default=None,
        sa_type=sa.Boolean,
        nullable=False,
        sa_column_args=[sa.Computed("public OR lower(name) LIKE '%affine%'", persisted=True)],
    )


class ChuteHistory(RegistryTable, table=True):
    """Every version a chute had, and when it was deleted (written by a trigger)."""

    __tablename__ = "chute_history"
    __table_args__ = (
        sa.Index("chute_history_user", "user_id", "updated_at"),
        sa.Index("chute_history_chute", "chute_id", "created_at"),
    )

    entry_id: str = Field(primary_key=True, sa_type=TEXT, sa_column_kwargs={"server_default": RANDOM_ID})
    chute_id: str = _text()
    user_id: str = _text()
    version: str = _text()
    name: str = _text()
    image_id: str = _text()
    public: bool
    standard_template: str | None = Field(default=None, sa_type=TEXT)
    cords: Any = _json()
    jobs: Any = _json()
    node_selector: Any = _json(nullable=False)
    slug: str = _text()
    code: str = _text()
    chutes_version: str | None = Field(default=None, sa_type=TEXT)
    created_at: datetime = Field(sa_type=TIMESTAMP)
    updated_at: datetime = Field(sa_type=TIMESTAMP)
    deleted_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)


class ChuteShare(RegistryTable, table=True):
    __tablename__ = "chute_shares"
    __table_args__ = (sa.Index("chute_shares_to", "shared_to", "chute_id"),)

    chute_id: str = Field(primary_key=True, sa_type=TEXT, foreign_key="chutes.chute_id", ondelete="CASCADE")
    shared_by: str = Field(primary_key=True, sa_type=TEXT)
    shared_to: str = Field(primary_key=True, sa_type=TEXT)
    shared_at: datetime | None = CREATED()


class Instance(RegistryTable, table=True):
    """A running copy of a chute on a miner's node. It takes traffic (the gateway routes to
    `host:port`) while it is active and verified; every change to a row is announced on the
    `registry_routing` channel (a trigger), so the gateway's routes follow the table."""

    __tablename__ = "instances"
    __table_args__ = (sa.Index("instances_chute", "chute_id"),)

    instance_id: str = Field(primary_key=True, sa_type=TEXT)
    chute_id: str = _text(foreign_key="chutes.chute_id", ondelete="CASCADE")
    version: str | None = Field(default=None, sa_type=TEXT)
    miner_hotkey: str | None = Field(default=None, sa_type=TEXT)
    region: str = _text(default="")
    #: Where the gateway reaches the instance's HTTP server (None until it has one).
    host: str | None = Field(default=None, sa_type=TEXT)
    port: int | None = None
    active: bool = _flag()
    verified: bool = _flag()
    #: The node running it (None for instances recorded without one) and its GPUs there.
    node_id: str | None = Field(default=None, sa_type=TEXT, foreign_key="nodes.node_id", ondelete="CASCADE")
    device_indexes: Any = _json(nullable=False, server_default="[]")
    #: launching -> started -> ready; stopping once the registry no longer wants it.
    state: str = _text(default="launching")
    #: Set when the instance runs a job (jobs service) instead of serving cords.
    job_id: str | None = Field(default=None, sa_type=TEXT, unique=True)
    last_verified_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)
    created_at: datetime | None = CREATED()
    updated_at: datetime | None = UPDATED()


class Node(RegistryTable, table=True):
    """One machine of one miner, with the GPUs it offers (MinerService.RegisterNode)."""

    __tablename__ = "nodes"
    __table_args__ = (sa.UniqueConstraint("user_id", "name", name="nodes_miner_name"),)

    #: uuid5(NAMESPACE_OID, "{miner user id}:{name}").
    node_id: str = Field(primary_key=True, sa_type=TEXT)
    #: The miner: the user whose credentials registered the node.
    user_id: str = _text()
    username: str = _text()
    name: str = _text()
    #: The IP address at which the gateway reaches the node's instances.
    host: str = _text()
    #: [{"gpu_identifier": "a100", "device_index": 0}, ...]
    gpus: Any = _json(nullable=False, server_default="[]")
    #: GPUs declared on a machine without them (CPU chutes on a laptop), never real hardware.
    simulated: bool = _flag()
    #: The TEE the node offers ("software"; None: none) and the hex Ed25519 key that signs its
    #: software quotes (chutes/tee.py).
    tee: str | None = Field(default=None, sa_type=TEXT)
    tee_public_key: str | None = Field(default=None, sa_type=TEXT)
    #: Whether the miner's work stream is open; `last_seen_at` is when that last changed or was
    #: confirmed.
    connected: bool = _flag()
    last_seen_at: datetime | None = CREATED()
    created_at: datetime | None = CREATED()


class JobLaunch(RegistryTable, table=True):
    """A job the jobs service asked to run (RegistryInternalService.ScheduleJob): pending until the
    scheduler places its instance on a node, ended when that instance is gone."""

    __tablename__ = "job_launches"
    __table_args__ = (
        sa.Index("job_launches_pending", "created_at", postgresql_where=sa.text("state = 'pending'")),
    )

    job_id: str = Field(primary_key=True, sa_type=TEXT)
    chute_id: str = _text(foreign_key="chutes.chute_id", ondelete="CASCADE")
    method: str = _text()
    data: Any = _json(nullable=False, server_default="{}")
    status_url: str = _text()
    disk_gb: int = Field(default=10, sa_column_kwargs={"server_default": "10"})
    #: pending -> placed -> running -> ended
    state: str = _text(default="pending")
    instance_id: str | None = Field(default=None, sa_type=TEXT)
    #: Why it ended (empty when its instance exited 0).
    reason: str = _text(default="")
    succeeded: bool = _flag()
    created_at: datetime | None = CREATED()
    ended_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)


class ChuteDemand(RegistryTable, table=True):
    """When a chute was last wanted (a warmup, a cold call) and last invoked: what scaling from
    and to zero reads."""

    __tablename__ = "chute_demand"

    chute_id: str = Field(primary_key=True, sa_type=TEXT, foreign_key="chutes.chute_id", ondelete="CASCADE")
    wanted_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)
    last_invoked_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)


class RollingUpdate(RegistryTable, table=True):
    """A redeploy of a chute that has instances, until the old version's instances are gone."""

    __tablename__ = "rolling_updates"

    chute_id: str = Field(primary_key=True, sa_type=TEXT, foreign_key="chutes.chute_id", ondelete="CASCADE")
    old_version: str = _text()
    new_version: str = _text()
    started_at: datetime | None = CREATED()
    permitted: Any = _json(nullable=False, server_default="{}")


class Bounty(RegistryTable, table=True):
    """A reward for the first miner whose instance makes a cold chute routable (spec/chutes-api.md
    6: Redis keys there). Live while `expires_at` is ahead: readers filter on it, and the
    scheduler's tick deletes expired rows, so no cron is needed."""

    __tablename__ = "bounties"

    chute_id: str = Field(primary_key=True, sa_type=TEXT, foreign_key="chutes.chute_id", ondelete="CASCADE")
    created_at: datetime | None = CREATED()
    expires_at: datetime = Field(sa_type=TIMESTAMP)
    #: The 30-second window (unix seconds // 30) of the last notification to miners: at most one
    #: per chute per window.
    notified_window: int | None = Field(default=None, sa_type=sa.BigInteger)


class BountyCooldown(RegistryTable, table=True):
    """No new bounty for a chute before `until` (600 s after a bounty is created or claimed)."""

    __tablename__ = "bounty_cooldowns"

    chute_id: str = Field(primary_key=True, sa_type=TEXT, foreign_key="chutes.chute_id", ondelete="CASCADE")
    until: datetime = Field(sa_type=TIMESTAMP)


class ChuteManualBoost(RegistryTable, table=True):
    """A billing admin's multiplier for a chute, 1.0..4.0 (IncreaseChuteBounty)."""

    __tablename__ = "chute_manual_boosts"

    chute_id: str = Field(primary_key=True, sa_type=TEXT, foreign_key="chutes.chute_id", ondelete="CASCADE")
    boost: float


class PublicationLock(RegistryTable, table=True):
    """An integrated subnet made chutes public: the next time it may is `until` (once a day,
    shared by all the subnet's admins)."""

    __tablename__ = "make_public_locks"

    subnet: str = Field(primary_key=True, sa_type=TEXT)
    until: datetime = Field(sa_type=TIMESTAMP)


class OutboxEvent(RegistryTable, table=True):
    """A change for later consumers (miners' work streams), written in the same transaction as the
    change itself and announced with NOTIFY by a trigger. Work for a node (`instance_launch`,
    `instance_stop`) names the node in `payload.node_id`."""

    __tablename__ = "outbox"
    __table_args__ = (
        sa.Index(
            "outbox_node_work",
            sa.text("(payload ->> 'node_id')"),
            "event_id",
            postgresql_where=sa.text("kind = ANY (ARRAY['instance_launch'::text, 'instance_stop'::text])"),
        ),
    )

    event_id: int | None = Field(
        default=None, primary_key=True, sa_type=sa.BigInteger, sa_column_args=[sa.Identity()]
    )
    kind: str = _text()
    payload: Any = _json(nullable=False)
    created_at: datetime | None = CREATED()


metadata = RegistryTable.metadata
images = table_of(Image)
chutes = table_of(Chute)
chute_history = table_of(ChuteHistory)
chute_shares = table_of(ChuteShare)
instances = table_of(Instance)
rolling_updates = table_of(RollingUpdate)
nodes = table_of(Node)
chute_demand = table_of(ChuteDemand)
job_launches = table_of(JobLaunch)
outbox = table_of(OutboxEvent)
bounties = table_of(Bounty)
bounty_cooldowns = table_of(BountyCooldown)
chute_manual_boosts = table_of(ChuteManualBoost)
make_public_locks = table_of(PublicationLock)
