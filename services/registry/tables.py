"""The registry schema as SQLAlchemy Core tables (migrations/ creates them; these mirror it)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

_TIME = sa.DateTime(timezone=True)

images = sa.Table(
    "images",
    metadata,
    sa.Column("image_id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text),
    sa.Column("username", sa.Text),
    sa.Column("name", sa.Text),
    sa.Column("tag", sa.Text),
    sa.Column("readme", sa.Text),
    sa.Column("logo_id", sa.Text),
    sa.Column("public", sa.Boolean),
    sa.Column("status", sa.Text),
    sa.Column("chutes_version", sa.Text),
    sa.Column("patch_version", sa.Text),
    sa.Column("build_started_at", _TIME),
    sa.Column("build_completed_at", _TIME),
    sa.Column("created_at", _TIME),
    sa.Column("updated_at", _TIME),
)

chutes = sa.Table(
    "chutes",
    metadata,
    sa.Column("chute_id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text),
    sa.Column("username", sa.Text),
    sa.Column("name", sa.Text),
    sa.Column("tagline", sa.Text),
    sa.Column("readme", sa.Text),
    sa.Column("tool_description", sa.Text),
    sa.Column("image_id", sa.Text),
    sa.Column("logo_id", sa.Text),
    sa.Column("public", sa.Boolean),
    sa.Column("standard_template", sa.Text),
    sa.Column("cords", postgresql.JSONB),
    sa.Column("jobs", postgresql.JSONB),
    sa.Column("node_selector", postgresql.JSONB),
    sa.Column("slug", sa.Text),
    sa.Column("code", sa.Text),
    sa.Column("filename", sa.Text),
    sa.Column("ref_str", sa.Text),
    sa.Column("version", sa.Text),
    sa.Column("concurrency", sa.Integer),
    sa.Column("boost", sa.Float),
    sa.Column("chutes_version", sa.Text),
    sa.Column("revision", sa.Text),
    sa.Column("openrouter", sa.Boolean),
    sa.Column("discount", sa.Float),
    sa.Column("max_instances", sa.Integer),
    sa.Column("scaling_threshold", sa.Float),
    sa.Column("shutdown_after_seconds", sa.Integer),
    sa.Column("allow_external_egress", sa.Boolean),
    sa.Column("encrypted_fs", sa.Boolean),
    sa.Column("tee", sa.Boolean),
    sa.Column("lock_modules", sa.Boolean),
    sa.Column("immutable", sa.Boolean),
    sa.Column("disabled", sa.Boolean),
    sa.Column("invocation_count", sa.BigInteger),
    sa.Column("created_at", _TIME),
    sa.Column("updated_at", _TIME),
)

chute_history = sa.Table(
    "chute_history",
    metadata,
    sa.Column("entry_id", sa.Text, primary_key=True),
    sa.Column("chute_id", sa.Text),
    sa.Column("user_id", sa.Text),
    sa.Column("created_at", _TIME),
    sa.Column("updated_at", _TIME),
    sa.Column("deleted_at", _TIME),
)

chute_shares = sa.Table(
    "chute_shares",
    metadata,
    sa.Column("chute_id", sa.Text, primary_key=True),
    sa.Column("shared_by", sa.Text, primary_key=True),
    sa.Column("shared_to", sa.Text, primary_key=True),
    sa.Column("shared_at", _TIME),
)

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("instance_id", sa.Text, primary_key=True),
    sa.Column("chute_id", sa.Text),
    sa.Column("version", sa.Text),
    sa.Column("miner_hotkey", sa.Text),
    sa.Column("region", sa.Text),
    sa.Column("active", sa.Boolean),
    sa.Column("verified", sa.Boolean),
    sa.Column("last_verified_at", _TIME),
)

rolling_updates = sa.Table(
    "rolling_updates",
    metadata,
    sa.Column("chute_id", sa.Text, primary_key=True),
    sa.Column("old_version", sa.Text),
    sa.Column("new_version", sa.Text),
    sa.Column("started_at", _TIME),
    sa.Column("permitted", postgresql.JSONB),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("event_id", sa.BigInteger, primary_key=True),
    sa.Column("kind", sa.Text),
    sa.Column("payload", postgresql.JSONB),
    sa.Column("created_at", _TIME),
)
