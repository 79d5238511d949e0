"""Nodes of miners, instances placed on them (node, GPUs, state), chute demand for scaling, and an
index for each node's work in the outbox.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("node_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("gpus", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False),
        sa.Column("simulated", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("connected", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "last_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("node_id"),
        sa.UniqueConstraint("user_id", "name", name="nodes_miner_name"),
    )
    op.create_table(
        "chute_demand",
        sa.Column("chute_id", sa.Text(), nullable=False),
        sa.Column("wanted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_invoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["chute_id"], ["chutes.chute_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("chute_id"),
    )
    op.add_column("instances", sa.Column("node_id", sa.Text(), nullable=True))
    op.add_column(
        "instances",
        sa.Column(
            "device_indexes", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False
        ),
    )
    op.add_column("instances", sa.Column("state", sa.Text(), server_default="launching", nullable=False))
    op.create_foreign_key(
        "instances_node_id_fkey", "instances", "nodes", ["node_id"], ["node_id"], ondelete="CASCADE"
    )
    op.create_index(
        "outbox_node_work",
        "outbox",
        [sa.literal_column("(payload ->> 'node_id')"), "event_id"],
        unique=False,
        postgresql_where=sa.text("kind = ANY (ARRAY['instance_launch'::text, 'instance_stop'::text])"),
    )
    # Whatever removes an instance the registry still wanted it running (its chute deleted or
    # disabled, its node lost) tells the node to stop it, in the same transaction. Rows the
    # scheduler stops ('stopping') or that miners reported gone ('gone') were told already.
    op.execute(
        """
        CREATE FUNCTION stop_removed_instance() RETURNS trigger AS $$
        BEGIN
          IF OLD.node_id IS NOT NULL AND OLD.state NOT IN ('stopping', 'gone') THEN
            INSERT INTO outbox (kind, payload) VALUES (
              'instance_stop', json_build_object('node_id', OLD.node_id, 'instance_id', OLD.instance_id));
          END IF;
          RETURN NULL;
        END $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        "CREATE TRIGGER stop_removed_instance AFTER DELETE ON instances"
        " FOR EACH ROW EXECUTE FUNCTION stop_removed_instance()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER stop_removed_instance ON instances")
    op.execute("DROP FUNCTION stop_removed_instance()")
    op.drop_index(
        "outbox_node_work",
        table_name="outbox",
        postgresql_where=sa.text("kind = ANY (ARRAY['instance_launch'::text, 'instance_stop'::text])"),
    )
    op.drop_constraint("instances_node_id_fkey", "instances", type_="foreignkey")
    op.drop_column("instances", "state")
    op.drop_column("instances", "device_indexes")
    op.drop_column("instances", "node_id")
    op.drop_table("chute_demand")
    op.drop_table("nodes")
