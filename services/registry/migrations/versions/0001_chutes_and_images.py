"""Images, chutes, their history, shares, instances, rolling updates and the event outbox.

Owner usernames are copied onto images and chutes: the registry never reads identity's tables,
and usernames never change, so the copy cannot go stale.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_NOW = sa.func.now()


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
    ]


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("image_id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("tag", sa.Text, nullable=False),
        sa.Column("readme", sa.Text, nullable=False, server_default=""),
        sa.Column("logo_id", sa.Text),
        sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("status", sa.Text, nullable=False, server_default="built and pushed"),
        sa.Column("chutes_version", sa.Text),
        sa.Column("patch_version", sa.Text, nullable=False, server_default="initial"),
        sa.Column("build_started_at", sa.DateTime(timezone=True)),
        sa.Column("build_completed_at", sa.DateTime(timezone=True)),
        *_timestamps(),
    )
    op.create_index("images_owner_name_tag", "images", ["user_id", "name", "tag"], unique=True)

    op.create_table(
        "chutes",
        sa.Column("chute_id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("tagline", sa.Text, nullable=False, server_default=""),
        sa.Column("readme", sa.Text, nullable=False, server_default=""),
        sa.Column("tool_description", sa.Text),
        sa.Column("image_id", sa.Text, sa.ForeignKey("images.image_id"), nullable=False),
        sa.Column("logo_id", sa.Text),
        sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("standard_template", sa.Text),
        sa.Column("cords", postgresql.JSONB, nullable=False, server_default="[]"),
        sa.Column("jobs", postgresql.JSONB),
        sa.Column("node_selector", postgresql.JSONB, nullable=False),
        sa.Column("slug", sa.Text, nullable=False, unique=True),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("ref_str", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("concurrency", sa.Integer),
        sa.Column("boost", sa.Float),
        sa.Column("chutes_version", sa.Text),
        sa.Column("revision", sa.Text),
        sa.Column("openrouter", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("discount", sa.Float, nullable=False, server_default="0"),
        sa.Column("max_instances", sa.Integer),
        sa.Column("scaling_threshold", sa.Float),
        sa.Column("shutdown_after_seconds", sa.Integer),
        sa.Column("allow_external_egress", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("encrypted_fs", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("tee", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("lock_modules", sa.Boolean),
        sa.Column("immutable", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("invocation_count", sa.BigInteger, nullable=False, server_default="0"),
        *_timestamps(),
    )
    op.create_index("chutes_owner_name", "chutes", ["user_id", sa.text("lower(name)")])
    op.create_index("chutes_name", "chutes", ["name"])
    # The list's order: most invoked first.
    op.create_index("chutes_invocations", "chutes", [sa.text("invocation_count DESC"), "chute_id"])

    op.create_table(
        "chute_history",
        sa.Column("entry_id", sa.Text, primary_key=True, server_default=sa.text("gen_random_uuid()::text")),
        sa.Column("chute_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("image_id", sa.Text, nullable=False),
        sa.Column("public", sa.Boolean, nullable=False),
        sa.Column("standard_template", sa.Text),
        sa.Column("cords", postgresql.JSONB),
        sa.Column("jobs", postgresql.JSONB),
        sa.Column("node_selector", postgresql.JSONB, nullable=False),
        sa.Column("slug", sa.Text, nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("chutes_version", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
    )
    op.create_index("chute_history_user", "chute_history", ["user_id", "updated_at"])
    op.create_index("chute_history_chute", "chute_history", ["chute_id", "created_at"])
    # As in the real API, history is written by triggers: every insert, every update that moves
    # updated_at (a redeploy or an edit), and the deletion time when the chute goes.
    op.execute(
        """
        CREATE FUNCTION record_chute_history() RETURNS trigger AS $$
        BEGIN
          IF TG_OP = 'DELETE' THEN
            UPDATE chute_history SET deleted_at = now() WHERE chute_id = OLD.chute_id AND deleted_at IS NULL;
            RETURN OLD;
          END IF;
          IF TG_OP = 'UPDATE' AND NEW.updated_at = OLD.updated_at THEN
            RETURN NEW;
          END IF;
          INSERT INTO chute_history (chute_id, user_id, version, name, image_id, public,
                                     standard_template, cords, jobs, node_selector, slug, code,
                                     chutes_version, created_at, updated_at)
          VALUES (NEW.chute_id, NEW.user_id, NEW.version, NEW.name, NEW.image_id, NEW.public,
                  NEW.standard_template, NEW.cords, NEW.jobs, NEW.node_selector, NEW.slug, NEW.code,
                  NEW.chutes_version, NEW.created_at, NEW.updated_at);
          RETURN NEW;
        END $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        "CREATE TRIGGER chute_history AFTER INSERT OR UPDATE OR DELETE ON chutes "
        "FOR EACH ROW EXECUTE FUNCTION record_chute_history()"
    )

    op.create_table(
        "chute_shares",
        sa.Column(
            "chute_id", sa.Text, sa.ForeignKey("chutes.chute_id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("shared_by", sa.Text, primary_key=True),
        sa.Column("shared_to", sa.Text, primary_key=True),
        sa.Column("shared_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
    )
    op.create_index("chute_shares_to", "chute_shares", ["shared_to", "chute_id"])

    op.create_table(
        "instances",
        sa.Column("instance_id", sa.Text, primary_key=True),
        sa.Column("chute_id", sa.Text, sa.ForeignKey("chutes.chute_id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Text),
        sa.Column("miner_hotkey", sa.Text),
        sa.Column("region", sa.Text, nullable=False, server_default=""),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("verified", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("last_verified_at", sa.DateTime(timezone=True)),
        *_timestamps(),
    )
    op.create_index("instances_chute", "instances", ["chute_id"])

    op.create_table(
        "rolling_updates",
        sa.Column(
            "chute_id", sa.Text, sa.ForeignKey("chutes.chute_id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("old_version", sa.Text, nullable=False),
        sa.Column("new_version", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.Column("permitted", postgresql.JSONB, nullable=False, server_default="{}"),
    )

    # Changes for later consumers (miners' WatchEvents), written in the same transaction as the
    # change itself and announced with NOTIFY.
    op.create_table(
        "outbox",
        sa.Column("event_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("payload", postgresql.JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
    )
    op.execute(
        """
        CREATE FUNCTION announce_event() RETURNS trigger AS $$
        BEGIN
          PERFORM pg_notify('registry_events', NEW.event_id::text);
          RETURN NEW;
        END $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        "CREATE TRIGGER announce_event AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION announce_event()"
    )


def downgrade() -> None:
    for table in (
        "outbox",
        "rolling_updates",
        "instances",
        "chute_shares",
        "chute_history",
        "chutes",
        "images",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    op.execute("DROP FUNCTION IF EXISTS record_chute_history()")
    op.execute("DROP FUNCTION IF EXISTS announce_event()")
