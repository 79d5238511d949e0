"""Token usage of each invocation, as the gateway read it from the response (issue 11).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("invocations", sa.Column("input_tokens", sa.Integer(), nullable=True))
    op.add_column("invocations", sa.Column("output_tokens", sa.Integer(), nullable=True))
    op.add_column("invocations", sa.Column("first_token_ms", sa.Float(), nullable=True))
    op.add_column("invocations", sa.Column("tokens_per_second", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("invocations", "tokens_per_second")
    op.drop_column("invocations", "first_token_ms")
    op.drop_column("invocations", "output_tokens")
    op.drop_column("invocations", "input_tokens")
