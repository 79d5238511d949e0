"""Bounties and their cooldowns, manual boosts, and make_public's daily lock per subnet (issue 13):
what the real API keeps in Redis, in tables.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "make_public_locks",
        sa.Column("subnet", sa.Text(), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subnet"),
    )
    op.create_table(
        "bounties",
        sa.Column("chute_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notified_window", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["chute_id"], ["chutes.chute_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("chute_id"),
    )
    op.create_table(
        "bounty_cooldowns",
        sa.Column("chute_id", sa.Text(), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["chute_id"], ["chutes.chute_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("chute_id"),
    )
    op.create_table(
        "chute_manual_boosts",
        sa.Column("chute_id", sa.Text(), nullable=False),
        sa.Column("boost", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["chute_id"], ["chutes.chute_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("chute_id"),
    )


def downgrade() -> None:
    op.drop_table("chute_manual_boosts")
    op.drop_table("bounty_cooldowns")
    op.drop_table("bounties")
    op.drop_table("make_public_locks")
