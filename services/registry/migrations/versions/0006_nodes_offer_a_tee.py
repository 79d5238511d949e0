"""Nodes offer a TEE: its kind and the key that signs its software quotes (issue 12).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nodes", sa.Column("tee", sa.Text(), nullable=True))
    op.add_column("nodes", sa.Column("tee_public_key", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("nodes", "tee_public_key")
    op.drop_column("nodes", "tee")
