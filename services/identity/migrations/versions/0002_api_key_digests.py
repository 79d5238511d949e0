"""API keys keep a sha256 of the whole key beside the argon2 hash, so a wrong secret costs a
hash, not argon2 (issue 16, defect 11).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Null for keys made before: they verify with argon2 once, which fills it in.
    op.add_column("api_keys", sa.Column("key_digest", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "key_digest")
